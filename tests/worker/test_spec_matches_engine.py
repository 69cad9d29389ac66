"""The API names methods, architectures and datasets without importing torch; these must be
exactly the engine's registries, and the shapes it promises must be the data's."""

import pytest
import torch

from service import method_params, names, spec
from worker.engine.data import DATASETS, PLACEMENTS, load_dataset
from worker.engine.methods import METHOD_NAMES, create
from worker.engine.models import ARCHITECTURES, build_model


def test_same_names_on_both_sides() -> None:
    assert set(names.ARCHITECTURES) == set(ARCHITECTURES)
    assert set(method_params.METHODS) == set(METHOD_NAMES)
    assert set(names.DATASETS) == set(DATASETS)
    placement = spec.TrainSpec.model_fields["data_placement"].annotation
    assert set(placement.__args__) == set(PLACEMENTS)


@pytest.mark.parametrize(
    "options", [None, {"num_samples": 40, "num_classes": 4, "channels": 2, "size": 12}]
)
def test_dataset_shape_the_api_promises_is_the_data_shape(options: dict | None) -> None:
    name = "digits" if options is None else "synthetic"
    data_spec = spec.DataSpec(dataset=name, synthetic=options)
    num_classes, channels, size = data_spec.shape()
    data = load_dataset(name, 0.2, 0, options)
    assert (data.num_classes, data.input_shape) == (num_classes, (channels, size, size))


@pytest.mark.parametrize("arch", names.ARCHITECTURES)
def test_stage_counts_the_api_uses_are_the_models(arch: str) -> None:
    model = build_model(arch, 10, 3).eval()
    with torch.no_grad():
        _, features = model.forward_features(torch.zeros(1, 3, 32, 32))
    assert len(features.feats) == names.STAGES[arch]


REQUIRED = {"kdcl": {"peers": ["cnn_small"]}}
FROM_RUNNER = {  # what worker/runner.py adds for methods that follow a teacher's route
    "rco": {
        "route": [{"epoch": 2, "path": "unused.safetensors"}],
        "teacher_epochs": 2,
        "teacher_milestones": [],
        "student_epochs": 2,
    },
}


def test_every_method_param_model_builds_its_engine_method() -> None:
    """Each API params model, with its defaults, is accepted by the engine's method."""
    params_models = method_params.MethodParams.__args__[0].__args__  # type: ignore[attr-defined]
    assert {m.model_fields["name"].annotation.__args__[0] for m in params_models} == set(
        METHOD_NAMES
    )
    for model in params_models:
        name = model.model_fields["name"].annotation.__args__[0]
        params = model(name=name, **REQUIRED.get(name, {})).model_dump(exclude={"name"})
        teacher = build_model("resnet8", 10, 1) if model.needs_teacher else None
        method = create(
            name,
            student=build_model("resnet8", 10, 1),
            teacher=teacher,
            params=params | FROM_RUNNER.get(name, {}),
            input_shape=(1, 8, 8),
        )
        assert method.needs_teacher == model.needs_teacher
