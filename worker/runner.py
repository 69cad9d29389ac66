"""Glue between a job row and the engine: spec -> engine objects, engine callbacks -> jobs."""

import logging
import os
import socket
import uuid
from typing import Any

import torch

from service import datasets, jobs, store
from service.config import get_settings
from service.db import session_scope
from service.spec import JobSpec
from worker.engine import loop
from worker.engine.data import DataSplit, load_dataset
from worker.engine.methods import Method, registry
from worker.engine.models import build_model
from worker.exports import ExportError
from worker.outputs import TeacherInfo, teacher_route, write_outputs
from worker.reporter import JobReporter, LeaseLost
from worker.teachers import load_teacher

log = logging.getLogger(__name__)


ERROR_CODES: dict[type[Exception], str] = {
    loop.Diverged: "diverged",
    ExportError: "export_failed",
}


class JobFailed(Exception):
    """A failure with a code the user can act on."""

    def __init__(self, code: str, message: str, retryable: bool = False) -> None:
        super().__init__(message)
        self.error = {"code": code, "message": message, "retryable": retryable}


def run(job_id: str) -> str:
    """Claim the job, train, record the outcome. Returns the final status (or 'skipped')."""
    settings = get_settings()
    owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    with session_scope() as s:
        job = jobs.claim(s, job_id, owner, settings.lease_s)
        if job is None:  # a duplicate or stale delivery: someone else has it, or it is done
            log.info("job %s not claimable; skipping", job_id)
            return "skipped"
        spec = JobSpec.model_validate(job.spec)
    with JobReporter(job_id, owner, settings, spec.resources.max_runtime_s) as reporter:
        try:
            result = train(job_id, spec, reporter)
        except LeaseLost:
            log.warning("job %s: lease lost, another attempt owns it now", job_id)
            return "lost"
        except loop.Stopped:
            return _finish(job_id, owner, error=reporter.stop_error())
        except JobFailed as exc:
            return _finish(job_id, owner, error=exc.error)
        except Exception as exc:  # every failure reaches the job's status with a reason
            log.exception("job %s failed", job_id)
            code = next((c for t, c in ERROR_CODES.items() if isinstance(exc, t)), "training_error")
            message = f"{type(exc).__name__}: {exc}"
            return _finish(
                job_id, owner, error={"code": code, "retryable": False, "message": message}
            )
        return _finish(job_id, owner, result=result)


def _finish(
    job_id: str,
    owner: str,
    *,
    result: dict[str, Any] | None = None,
    error: dict[str, Any] | None = None,
) -> str:
    with session_scope() as s:
        status = jobs.finish(s, job_id, owner, result=result, error=error)
    return status or "lost"


def data_options(spec: JobSpec) -> dict[str, Any] | None:
    """What the engine's loader needs besides the split: an upload's file, by path."""
    if spec.data.upload is not None:
        return {"path": str(datasets.data_path(spec.data.upload))}
    return spec.data.synthetic.model_dump() if spec.data.synthetic else None


def train(job_id: str, spec: JobSpec, reporter: JobReporter) -> dict[str, Any]:
    device = _device(spec.train.device)
    data = load_dataset(
        spec.data.dataset, spec.data.val_fraction, spec.data.split_seed, data_options(spec)
    )
    torch.manual_seed(spec.train.seed)  # the student's initial weights
    student = build_model(spec.student.arch, data.num_classes, data.input_shape[0])
    teacher = load_teacher(spec.teacher) if spec.teacher else None
    if teacher is not None:
        _measure_teacher(teacher, spec, data, device, reporter)
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
    plan = _plan(job_id, spec, method, data, str(device))
    outcome = loop.train(plan, reporter)
    return write_outputs(job_id, spec, method, data, outcome, teacher, reporter)


def _measure_teacher(
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


def _plan(
    job_id: str, spec: JobSpec, method: Method, data: DataSplit, device: str
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
        spec=spec.resolved(),
    )


def _device(name: str) -> torch.device:
    try:
        return loop.resolve_device(name)
    except (RuntimeError, ValueError) as exc:
        raise JobFailed("device_unavailable", str(exc), retryable=True) from exc
