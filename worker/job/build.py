"""The one translator from a resolved job spec to the engine's objects (data, teacher, method,
plan): every rank of a job builds the same ones from the same inputs and seed.

A method's params model (service/spec/methods.py) becomes its engine keywords field for
field; the few that the engine takes in another form are listed in CONSUMED and DERIVED, and
tests/worker/test_spec_matches_engine.py ties both sides."""

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from service.config import get_settings
from service.ingest import shards
from service.spec.job import JobSpec
from service.spec.methods import RCOParams
from worker.engine import loop
from worker.engine.data import (
    DataSplit,
    carve_holdout,
    imagenet_stats,
    load_dataset,
    with_stats,
)
from worker.engine.distributed import current_shard
from worker.engine.methods import Method, registry
from worker.engine.optim import Optimizer, Schedule
from worker.job.starts import start_student
from worker.job.stored_shards import loader_start, read_from_bucket
from worker.job.teachers import TeacherInfo, load_teacher
from worker.task.cache import Cache
from worker.task.inputs import JobInputs


@dataclass
class Built:
    """A job's engine objects, the same on every rank."""

    data: DataSplit
    teacher: TeacherInfo | None
    method: Method
    plan: loop.TrainPlan
    start: dict[str, Any] | None = None  # where the student's weights came from (not random)


def build(spec: JobSpec, inputs: JobInputs, device: str | torch.device) -> Built:
    data = load_data(spec, inputs)
    torch.manual_seed(spec.train.seed)  # the student's initial weights (a fresh head's too)
    student, start = start_student(spec, inputs, data.num_classes, data.input_shape[0])
    teacher = load_teacher(inputs.teacher) if inputs.teacher else None
    method = registry.create(
        spec.method.name,
        student=student,
        teacher=teacher.model if teacher else None,
        input_shape=data.input_shape,
        **method_kwargs(spec, inputs),
    )
    return Built(data, teacher, method, plan_for(spec, inputs, method, data, device), start)


def load_data(spec: JobSpec, inputs: JobInputs) -> DataSplit:
    """The job's train and validation splits, and the held-out part its method chooses on,
    normalised as the job says."""
    data = load_dataset(
        spec.data.dataset,
        spec.data.val_fraction,
        spec.data.split_seed,
        spec.data.augment,
        spec.data.image_size,
        **data_options(spec, inputs),
    )
    if (fraction := spec.method.holdout()) > 0:
        data = carve_holdout(data, fraction, spec.data.split_seed)
    init = spec.student.init
    if spec.data.normalisation_for(bool(init and init.pretrained)) == "imagenet":
        data = with_stats(data, *imagenet_stats(data.input_shape[0]))
    return data


def data_options(spec: JobSpec, inputs: JobInputs) -> dict[str, Any]:
    """The dataset's own options: an upload's file and how its shards are read (from a
    bucket, the store's or where a dataset registered by URI lies: through the worker's
    cache), a synthetic set's shape."""
    if spec.data.dataset == "upload":
        path = inputs.dataset_path
        assert path is not None
        if path.name == shards.INDEX:
            index, reading = shards.read(path), shard_reading(spec.train.data_placement)
            if read_from_bucket(index, inputs.dataset_key, Cache.default()):
                reading["loader_start"] = loader_start()
            return {"shards": index} | reading
        return {"path": str(path)}
    if spec.data.dataset == "synthetic":
        return spec.data.synthetic_options().model_dump()
    return {}


def shard_reading(placement: str) -> dict[str, Any]:
    """How an upload's shards are read: the most bytes held in memory (all for "device" and
    "host", none for "stream"), and the processes that decode them."""
    settings = get_settings()
    budget = {"stream": 0, "auto": settings.resident_bytes}.get(placement, 1 << 62)
    cores = max(1, len(os.sched_getaffinity(0)) // current_shard().world)
    return {"resident_bytes": budget, "workers": settings.data_workers or cores}


def _rco(spec: JobSpec, inputs: JobInputs) -> dict[str, Any]:
    """The anchors and stages admission checked, planned on the teacher's route."""
    params = spec.method
    assert isinstance(params, RCOParams)
    plan = params.plan(sorted(inputs.route), inputs.teacher_lr_drops, spec.train.epochs)
    return {
        "route": dict(inputs.route),
        "anchors": plan.anchors,
        "stage_epochs": plan.stage_epochs,
        "greedy": params.anchors == "greedy",
    }


# params fields the engine does not take as they are (build uses them), by method
CONSUMED: dict[str, tuple[str, ...]] = {
    "kdcl": ("holdout_fraction",),  # load_data carves the held-out part
    "rco": ("anchors", "every_n", "stage_epochs"),  # planned into DERIVED's keywords
}
# keywords made from the spec and the job's inputs, by method
DERIVED: dict[str, Callable[[JobSpec, JobInputs], dict[str, Any]]] = {"rco": _rco}


def method_kwargs(spec: JobSpec, inputs: JobInputs) -> dict[str, Any]:
    """The engine method's own keywords for this job."""
    name = spec.method.name
    kwargs = spec.method.model_dump(exclude={"name", *CONSUMED.get(name, ())})
    if derive := DERIVED.get(name):
        kwargs |= derive(spec, inputs)
    return kwargs


def measure_teacher(built: Built, spec: JobSpec, device: torch.device) -> dict[str, float]:
    """The teacher on the student's validation split (an event and a model-card field)."""
    assert built.teacher is not None
    data = built.data
    train = spec.train
    built.teacher.val = loop.evaluate(
        built.teacher.model, data.val, train.batch_size, device, train.precision
    )
    return built.teacher.val


def plan_for(
    spec: JobSpec,
    inputs: JobInputs,
    method: Method,
    data: DataSplit,
    device: str | torch.device,
) -> loop.TrainPlan:
    train = spec.train
    return loop.TrainPlan(
        method=method,
        data=data,
        epochs=train.epochs,
        batch_size=train.batch_size,
        optimizer=Optimizer(**train.optimizer.model_dump()),
        schedule=Schedule(**train.schedule.model_dump()),
        seed=train.seed,
        precision=train.precision,
        device=device,
        checkpoint_dir=inputs.job_dir / "checkpoints",
        spec=spec.model_dump(mode="json"),  # resolved at submission
        compile=train.compile,
        data_placement=train.data_placement,
    )
