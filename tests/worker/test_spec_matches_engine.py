"""Where the API and the engine meet, the job spec is the one source: its names and allowed
values must be exactly what the engine implements, and each params model's fields exactly
the keywords (names and types) its engine method takes, with no defaults of their own."""

import dataclasses
import inspect
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import pytest
import torch

from service.spec import job as job_spec
from service.spec import methods, names
from service.spec.methods import PARAMS_MODELS, method_name
from worker.engine.data import (
    AUGMENT_MODES,
    DATASETS,
    NORMALISATIONS,
    PLACEMENTS,
    load_dataset,
)
from worker.engine.data.builtin import synthetic
from worker.engine.device import DEVICES, PRECISIONS
from worker.engine.methods import METHOD_NAMES, create, registry
from worker.engine.methods.ddgsd import KERNELS
from worker.engine.methods.iekd import EXPLORATION, SPLITS
from worker.engine.methods.kdcl import ENSEMBLES
from worker.engine.optim import OPTIMIZERS, SCHEDULES, Optimizer, Schedule
from worker.engine.zoo import ARCHITECTURES, build_model
from worker.job import build
from worker.task.inputs import JobInputs

BASE = {"self", "student", "teacher", "input_shape"}  # every method's, from Method


def allowed(model: type, field: str) -> set[Any]:
    """The values a Literal field of a spec model admits."""
    annotation = model.model_fields[field].annotation
    return set(get_args(annotation))


def test_same_names_on_both_sides() -> None:
    assert set(names.ARCHITECTURES) == set(ARCHITECTURES)
    assert set(methods.METHODS) == set(METHOD_NAMES)
    assert set(names.DATASETS) == set(DATASETS)
    train, data = job_spec.TrainSpec, job_spec.DataSpec
    assert allowed(train, "data_placement") == set(PLACEMENTS)
    assert allowed(train, "precision") == set(PRECISIONS)
    assert allowed(train, "device") == set(DEVICES)
    assert allowed(data, "augment") == {"auto", *AUGMENT_MODES}  # auto: the dataset's own
    assert allowed(data, "normalisation") == {"auto", *NORMALISATIONS}
    assert allowed(job_spec.OptimizerSpec, "name") == set(OPTIMIZERS)
    assert allowed(job_spec.OptimizerSpec, "name") == set(job_spec.OPTIMIZER_DEFAULTS)
    assert allowed(job_spec.ScheduleSpec, "name") == set(SCHEDULES)


@pytest.mark.parametrize(
    ("model", "field", "engine"),
    [
        (methods.KDCLParams, "ensemble", ENSEMBLES),
        (methods.DDGSDParams, "mmd_kernel", KERNELS),
        (methods.IEKDParams, "split", SPLITS),
        (methods.IEKDParams, "exp_loss", EXPLORATION),
    ],
)
def test_method_choices_are_what_the_engine_implements(model, field, engine) -> None:
    assert allowed(model, field) == set(engine)


@pytest.mark.parametrize(
    "options", [None, {"num_samples": 40, "num_classes": 4, "channels": 2, "size": 12}]
)
def test_dataset_shape_the_api_promises_is_the_data_shape(options: dict | None) -> None:
    name = "digits" if options is None else "synthetic"
    data_spec = job_spec.DataSpec(dataset=name, synthetic=options)
    shape = data_spec.builtin_shape()
    kwargs = data_spec.synthetic_options().model_dump() if options else {}
    data = load_dataset(name, 0.2, 0, **kwargs)
    assert (data.num_classes, data.input_shape) == (
        shape.num_classes,
        (shape.channels, shape.size, shape.size),
    )


def test_synthetic_options_are_the_loaders_keywords() -> None:
    params = inspect.signature(synthetic).parameters.values()
    keywords = {p.name: p for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY}
    assert set(keywords) == set(job_spec.SyntheticOptions.model_fields)
    for name, field in job_spec.SyntheticOptions.model_fields.items():
        assert accepts(keywords[name].annotation, field.annotation), name


@pytest.mark.parametrize("arch", names.ARCHITECTURES)
def test_stage_counts_the_api_uses_are_the_models(arch: str) -> None:
    model = build_model(arch, 10, 3).eval()
    with torch.no_grad():
        _, features = model.forward_features(torch.zeros(1, 3, 32, 32))
    assert len(features.feats) == names.STAGES[arch]


# ---- each params model against its engine method's constructor


def keyword_params(fn: Any) -> dict[str, inspect.Parameter]:
    """A callable's named keyword parameters, without self, the Method base's and **kwargs."""
    params = inspect.signature(fn).parameters.values()
    kinds = (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return {p.name: p for p in params if p.kind in kinds and p.name not in BASE}


def accepts(engine: Any, allowed_by_spec: Any) -> bool:
    """Whether every value the spec's annotation admits is one the engine's annotation takes."""
    if engine == allowed_by_spec:
        return True
    origin = get_origin(allowed_by_spec)
    if origin is typing.Annotated:
        return accepts(engine, get_args(allowed_by_spec)[0])
    if origin is Literal:
        return all(takes(engine, value) for value in get_args(allowed_by_spec))
    if origin in (Union, types.UnionType):
        return all(accepts(engine, member) for member in get_args(allowed_by_spec))
    if get_origin(engine) in (Union, types.UnionType):
        return any(accepts(member, allowed_by_spec) for member in get_args(engine))
    if origin is list and get_origin(engine) is list:
        return accepts(get_args(engine)[0], get_args(allowed_by_spec)[0])
    return False


def takes(engine: Any, value: Any) -> bool:
    if get_origin(engine) in (Union, types.UnionType):
        return any(takes(member, value) for member in get_args(engine))
    return isinstance(engine, type) and type(value) is engine


def without_none(annotation: Any) -> Any:
    members = [a for a in get_args(annotation) if a is not type(None)]
    return Union[tuple(members)] if len(members) > 1 else members[0]  # noqa: UP007


def test_accepts_refuses_what_the_engine_would_not_take() -> None:
    """The checker itself: it must be able to fail."""
    assert accepts(str, Literal["a", "b"]) and accepts(float | None, float | None)
    assert accepts(list[str], list[Literal["x"]])
    assert not accepts(float, float | None)
    assert not accepts(int, float)
    assert not accepts(list[int], list[str])
    assert not accepts(int, Literal["a"])


SAMPLE_INPUTS = JobInputs(
    job_dir=Path("unused"),
    route={2: Path("epoch_0002.safetensors"), 4: Path("epoch_0004.safetensors")},
    teacher_lr_drops=[2],
)


def sample_spec(name: str) -> job_spec.JobSpec:
    method = {"name": name} | (build_required(name))
    return job_spec.JobSpec.model_validate(
        {
            "method": method,
            "student": {"arch": "resnet8"},
            "data": {"dataset": "digits"},
            "train": {"epochs": 4},
        }
    )


def build_required(name: str) -> dict[str, Any]:
    return {"peers": ["cnn_small"]} if name == "kdcl" else {}


@pytest.mark.parametrize("model", PARAMS_MODELS, ids=method_name)
def test_params_model_fields_are_the_engine_keywords(model: type) -> None:
    name = method_name(model)
    keywords = keyword_params(registry.METHODS.get(name).__init__)
    assert all(p.default is inspect.Parameter.empty for p in keywords.values()), (
        "the engine has no defaults of its own"
    )
    fields = {
        k: f.annotation
        for k, f in model.model_fields.items()
        if k != "name" and k not in build.CONSUMED.get(name, ())
    }
    derive = build.DERIVED.get(name)
    derived = set(derive(sample_spec(name), SAMPLE_INPUTS)) if derive else set()
    assert set(keywords) == set(fields) | derived
    for field, annotation in fields.items():
        if field in model.resolved_at_admission:  # None at submission, a value once admitted
            annotation = without_none(annotation)
        assert accepts(keywords[field].annotation, annotation), field


@pytest.mark.parametrize("model", PARAMS_MODELS, ids=method_name)
def test_build_makes_every_method_from_its_spec_defaults(model: type) -> None:
    """What worker/job/build.py passes binds to the constructor and builds the method."""
    name = method_name(model)
    job = sample_spec(name)
    teacher = build_model("resnet8", 10, 1) if model.needs_teacher else None
    facts = methods.TeacherFacts("teacher.job", "job_t", "resnet8", 10, 1, None, [2, 4], [2])
    job = job.model_copy(update={"method": job.method.resolve(job.facts(), facts)})
    kwargs = build.method_kwargs(job, SAMPLE_INPUTS)
    method = create(
        name,
        student=build_model("resnet8", 10, 1),
        teacher=teacher,
        input_shape=(1, 8, 8),
        **kwargs,
    )
    assert type(method).needs_teacher == model.needs_teacher


def test_optimizer_and_schedule_fields_are_the_engines() -> None:
    for engine, model in ((Optimizer, job_spec.OptimizerSpec), (Schedule, job_spec.ScheduleSpec)):
        fields = {f.name: f.type for f in dataclasses.fields(engine)}
        assert set(fields) == set(model.model_fields)
        for name, field in model.model_fields.items():
            assert accepts(fields[name], field.annotation), (engine.__name__, name)


@pytest.mark.parametrize(
    "schedule", [{"name": "multistep", "milestones": [3, 7]}, {"name": "cosine"}, {}]
)
def test_the_epochs_the_rate_drops_after_agree(schedule: dict[str, Any]) -> None:
    spec_schedule = job_spec.ScheduleSpec.model_validate(schedule)
    engine = Schedule(**spec_schedule.model_dump())
    assert spec_schedule.lr_drops() == engine.drops()
