"""A job's spec -> the engine's objects (data, teacher, method, plan), the same on every rank."""

from dataclasses import dataclass
from typing import Any

import torch

from service import datasets, store
from service.spec import JobSpec
from worker.engine import loop
from worker.engine.data import DataSplit, load_dataset
from worker.engine.methods import Method, registry
from worker.engine.models import build_model
from worker.reporter import JobReporter
from worker.teachers import TeacherInfo, load_teacher, teacher_route


class JobFailed(Exception):
    """A failure with a code the user can act on."""

    def __init__(self, code: str, message: str, retryable: bool = False) -> None:
        super().__init__(message)
        self.error = {"code": code, "message": message, "retryable": retryable}


def data_options(spec: JobSpec) -> dict[str, Any] | None:
    """What the engine's loader needs besides the split: an upload's file, by path."""
    if spec.data.upload is not None:
        return {"path": str(datasets.data_path(spec.data.upload))}
    return spec.data.synthetic.model_dump() if spec.data.synthetic else None


@dataclass
class Built:
    """A job's engine objects, the same on every rank."""

    data: DataSplit
    teacher: TeacherInfo | None
    method: Method
    plan: loop.TrainPlan


def build(
    job_id: str,
    spec: JobSpec,
    device: str | torch.device,
    reporter: JobReporter | None = None,
) -> Built:
    """spec -> data, teacher, method and plan. Every rank of a job builds the same ones from
    the same seed; the one with the reporter (rank 0) also measures the teacher."""
    data = load_dataset(
        spec.data.dataset, spec.data.val_fraction, spec.data.split_seed, data_options(spec)
    )
    torch.manual_seed(spec.train.seed)  # the student's initial weights
    student = build_model(spec.student.arch, data.num_classes, data.input_shape[0])
    teacher = load_teacher(spec.teacher) if spec.teacher else None
    if teacher is not None and reporter is not None:
        measure_teacher(teacher, spec, data, loop.resolve_device(device), reporter)
    params = spec.method.model_dump(exclude={"name"})
    if spec.method.needs_route and spec.teacher and spec.teacher.job:  # a model has no route
        params |= teacher_route(spec.teacher.job) | {"student_epochs": spec.train.epochs}
    method = registry.create(
        spec.method.name,
        student=student,
        teacher=teacher.model if teacher else None,
        params=params,
        input_shape=data.input_shape,
    )
    return Built(data, teacher, method, plan_for(job_id, spec, method, data, device))


def measure_teacher(
    teacher: TeacherInfo,
    spec: JobSpec,
    data: DataSplit,
    device: torch.device,
    reporter: JobReporter,
) -> None:
    """The teacher on the student's validation split: an event and a model-card field."""
    teacher.val = loop.evaluate(
        teacher.model,
        data.val_x,
        data.val_y,
        spec.train.batch_size,
        device,
        spec.train.precision,
    )
    message = f"teacher val_acc {teacher.val['val_acc']:.4f}"
    reporter.event("teacher", message, job=teacher.job_id, arch=teacher.arch, **teacher.val)


def plan_for(
    job_id: str, spec: JobSpec, method: Method, data: DataSplit, device: str | torch.device
) -> loop.TrainPlan:
    train_spec = spec.train
    augment = spec.data.augment if spec.data.augment != "auto" else data.default_augment
    return loop.TrainPlan(
        method=method,
        data=data,
        epochs=train_spec.epochs,
        batch_size=train_spec.batch_size,
        optimizer=train_spec.optimizer.model_dump(),
        schedule=train_spec.schedule.model_dump(),
        seed=train_spec.seed,
        precision=train_spec.precision,
        device=device,
        augment=augment,
        checkpoint_dir=store.job_dir(job_id) / "checkpoints",
        route_every=getattr(spec.method, "route_every", 0),
        save_route=method.saves_route,
        spec=spec.model_dump(mode="json"),  # resolved at submission
        compile=train_spec.compile,
        data_placement=train_spec.data_placement,
    )


def job_device(name: str) -> torch.device:
    try:
        return loop.resolve_device(name)
    except (RuntimeError, ValueError) as exc:
        raise JobFailed("device_unavailable", str(exc), retryable=True) from exc
