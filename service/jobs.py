"""The job state machine. Every transition is one conditional UPDATE, so a duplicate
message, a stale worker or two watchdogs at once can never run a job twice."""

import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from service import paging, store
from service.db import get_or_404
from service.errors import Conflict, FieldError, InvalidSpec
from service.models import Dataset, Job, JobEvent, TeacherModel, utcnow
from service.names import FEATURELESS, STAGES
from service.spec import JobSpec, spec_problems

ROUTE_PREFIX = "checkpoints/route/"
TERMINAL = ("succeeded", "failed", "cancelled")
ACTIVE = ("running", "cancelling")
STATUSES = ("queued", *ACTIVE, *TERMINAL)


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:24]}"


def get_job(s: Session, job_id: str) -> Job:
    return get_or_404(s, Job, "job", job_id)


def _check_teacher(s: Session, spec: JobSpec) -> list[FieldError]:
    if spec.teacher is None:
        return []
    if spec.teacher.model is not None:
        return _check_model_teacher(s, spec, spec.teacher.model)
    job_id = spec.teacher.job or ""
    teacher = s.get(Job, job_id)
    if teacher is None:
        return [FieldError("teacher.job", f"no job {job_id!r}")]
    if teacher.status != "succeeded":
        return [
            FieldError(
                "teacher.job",
                f"job {teacher.id!r} is {teacher.status}, a teacher must have succeeded",
            )
        ]
    t = teacher.spec["student"]
    if problem := _teacher_fit(spec, t["arch"], t["num_classes"], t["in_channels"]):
        return [FieldError("teacher.job", problem)]
    if spec.method.needs_route:
        return _check_route(s, spec, teacher.id)
    return []


def _check_model_teacher(s: Session, spec: JobSpec, model_id: str) -> list[FieldError]:
    # FOR SHARE: a DELETE of the model waits for this job's row, then sees it
    model = s.get(TeacherModel, model_id, with_for_update={"read": True})
    if model is None:
        return [FieldError("teacher.model", f"no model {model_id!r}")]
    if spec.method.needs_route:
        hint = f'; use {{"job": "{model.source_job_id}"}}' if model.source_job_id else ""
        return [
            FieldError(
                "teacher.model",
                f"{spec.method.name} follows the teacher's route checkpoints, which only a "
                f"supervised job saves, not a model{hint}",
            )
        ]
    _, _, size = spec.data.shape()
    if model.input_size not in (None, size):
        return [
            FieldError(
                "teacher.model",
                f"model {model.id!r} takes {model.input_size}x{model.input_size} inputs, "
                f"this data is {size}x{size}",
            )
        ]
    if problem := _teacher_fit(spec, model.arch, model.num_classes, model.in_channels):
        return [FieldError("teacher.model", problem)]
    return []


def _resolve_dataset(s: Session, spec: JobSpec) -> list[FieldError]:
    """An uploaded dataset must exist; its row gives the spec its shape."""
    if spec.data.upload is None:
        return []
    # FOR SHARE: a DELETE of the dataset waits for this job's row, then sees it
    dataset = s.get(Dataset, spec.data.upload, with_for_update={"read": True})
    if dataset is None:
        return [FieldError("data.upload", f"no dataset {spec.data.upload!r}")]
    spec.data.with_upload_shape(dataset.num_classes, dataset.in_channels, dataset.input_size)
    return []


def _teacher_fit(spec: JobSpec, arch: str, num_classes: int, in_channels: int) -> str | None:
    """Why a teacher of this architecture and shape cannot teach this spec, if it cannot."""
    data_classes, data_channels, _ = spec.data.shape()
    if (num_classes, in_channels) != (data_classes, data_channels):
        return (
            f"teacher was trained for {num_classes} classes / {in_channels} channels, "
            f"this data has {data_classes} / {data_channels}"
        )
    if spec.method.needs_stage_features and arch in FEATURELESS:
        return f"{spec.method.name} needs stage features, which the teacher's {arch} does not have"
    stages = (STAGES[arch], STAGES[spec.student.arch])
    if spec.method.needs_same_stages and 0 not in stages and stages[0] != stages[1]:
        return (
            f"{spec.method.name} pairs stage by stage: the teacher has {stages[0]} stages, "
            f"the student {stages[1]}"
        )
    return None


def route_epochs(s: Session, job_id: str) -> list[int]:
    """The epochs of a job's saved route checkpoints (RCO's anchors), ascending."""
    arts = store.list_artifacts(s, job_id, "checkpoint")
    return sorted(a.epoch for a in arts if a.name.startswith(ROUTE_PREFIX) and a.epoch)


def _check_route(s: Session, spec: JobSpec, teacher_id: str) -> list[FieldError]:
    epochs = route_epochs(s, teacher_id)
    if not epochs:
        return [
            FieldError(
                "teacher.job",
                f"job {teacher_id!r} saved no route checkpoints; "
                "train the teacher with method supervised",
            )
        ]
    anchors = getattr(spec.method, "anchors", None)
    if isinstance(anchors, list) and (missing := sorted(set(anchors) - set(epochs))):
        return [
            FieldError(
                "method.anchors",
                f"no route checkpoint at epochs {missing}; the teacher has {epochs}",
            )
        ]
    stage_epochs = getattr(spec.method, "stage_epochs", None)
    if isinstance(anchors, list) and stage_epochs is not None:
        stages = len(set(anchors) | {epochs[-1]})  # the converged teacher always ends it
        if len(stage_epochs) != stages:
            return [FieldError("method.stage_epochs", f"needs one entry per anchor ({stages})")]
    return []


def create_job(
    s: Session,
    spec: JobSpec,
    *,
    idempotency_key: str | None = None,
    request_hash: str | None = None,
) -> tuple[Job, bool]:
    """Validate against the database and insert a queued job. Returns (job, created)."""
    idempotency_key = idempotency_key or None
    if idempotency_key:
        existing = s.scalar(select(Job).where(Job.idempotency_key == idempotency_key))
        if existing is not None:
            if existing.request_hash != request_hash:
                raise Conflict(
                    "Idempotency-Key was used with a different request body",
                    code="idempotency_key_reused",
                )
            return existing, False
    if errors := _resolve_dataset(s, spec):
        raise InvalidSpec(errors)
    errors = [FieldError(f, m) for f, m in spec_problems(spec)] + _check_teacher(s, spec)
    if errors:
        raise InvalidSpec(errors)
    resolved = spec.resolved()
    job = Job(
        id=new_id("job"),
        name=spec.name or spec.method.name,
        status="queued",
        method=spec.method.name,
        spec=resolved,
        queue=spec.resources.queue,
        teacher_job_id=spec.teacher.job if spec.teacher else None,
        teacher_model_id=spec.teacher.model if spec.teacher else None,
        dataset_id=spec.data.upload,
        idempotency_key=idempotency_key,
        request_hash=request_hash,
        max_attempts=spec.resources.max_attempts,
        progress={},
        metrics={},
    )
    s.add(job)
    s.flush()
    add_event(s, job.id, "status", "job queued", status="queued")
    return job, True


def add_event(s: Session, job_id: str, type_: str, message: str = "", **data: Any) -> None:
    s.add(JobEvent(job_id=job_id, type=type_, message=message, data=data))


def list_events(s: Session, job_id: str, *, after: int = 0, limit: int = 100) -> list[JobEvent]:
    get_job(s, job_id)
    q = (
        select(JobEvent)
        .where(JobEvent.job_id == job_id, JobEvent.id > after)
        .order_by(JobEvent.id)
        .limit(limit)
    )
    return list(s.scalars(q))


def list_jobs(
    s: Session, *, status: str | None = None, limit: int = 50, cursor: str | None = None
) -> tuple[list[Job], str | None]:
    """Newest first; the cursor names the last job of the previous page."""
    where = [Job.status == status] if status else []
    return paging.newest_first(s, Job, *where, limit=limit, cursor=cursor)


def unfinished_users(s: Session, column: Any, ident: str, limit: int = 5) -> list[str]:
    """Ids of queued or active jobs whose `column` names `ident` (a model, a dataset)."""
    q = select(Job.id).where(column == ident, Job.status.in_(("queued", *ACTIVE))).limit(limit)
    return list(s.scalars(q))


def delete_unless_used(
    s: Session, table: type[Any], ident: str, what: str, column: Any, role: str, code: str
) -> None:
    """Delete row `ident` of `table` (a model, a dataset) unless queued or running jobs
    name it in `column`: then 409 `code`, "<what> <ident> <role> unfinished jobs [...]"."""
    row = get_or_404(s, table, what, ident, for_update=True)
    users = unfinished_users(s, column, ident)
    if users:
        raise Conflict(
            f"{what} {ident!r} {role} unfinished jobs {users}; "
            "cancel them or wait for them to finish",
            code=code,
        )
    s.delete(row)


def _set(s: Session, job_id: str, where: list[Any], **values: Any) -> bool:
    """One conditional UPDATE; True when it changed the row."""
    stmt = update(Job).where(Job.id == job_id, *where).values(updated_at=utcnow(), **values)
    return s.execute(stmt.execution_options(synchronize_session=False)).rowcount == 1  # type: ignore[attr-defined]


def claim(s: Session, job_id: str, owner: str, lease_s: float) -> Job | None:
    """queued -> running for this owner, or None when someone else has it (or it is done)."""
    now = utcnow()
    if not _set(
        s,
        job_id,
        [Job.status == "queued"],
        status="running",
        owner=owner,
        lease_until=now + timedelta(seconds=lease_s),
        attempt=Job.attempt + 1,
        started_at=func.coalesce(Job.started_at, now),
    ):
        return None
    job = get_job(s, job_id)
    s.refresh(job)
    add_event(
        s,
        job_id,
        "status",
        f"attempt {job.attempt} started by {owner}",
        status="running",
        attempt=job.attempt,
        owner=owner,
    )
    return job


def heartbeat(
    s: Session, job_id: str, owner: str, lease_s: float, progress: dict[str, Any] | None = None
) -> str | None:
    """Extend the lease; returns the job's status, or None when this owner lost the job."""
    values: dict[str, Any] = {"lease_until": utcnow() + timedelta(seconds=lease_s)}
    if progress is not None:
        values["progress"] = progress
    if not _set(s, job_id, [Job.owner == owner, Job.status.in_(ACTIVE)], **values):
        return None
    return s.scalar(select(Job.status).where(Job.id == job_id))


def record_epoch(s: Session, job_id: str, owner: str, metrics: dict[str, Any]) -> bool:
    if not _set(s, job_id, [Job.owner == owner, Job.status.in_(ACTIVE)], metrics=metrics):
        return False
    add_event(s, job_id, "metrics", f"epoch {metrics.get('epoch')}", **metrics)
    return True


def finish(
    s: Session,
    job_id: str,
    owner: str,
    *,
    result: dict[str, Any] | None = None,
    error: dict[str, Any] | None = None,
) -> str | None:
    """running -> succeeded/failed; cancelling -> cancelled. None if the owner lost the job."""
    mine = [Job.owner == owner]
    now = utcnow()
    if _set(
        s,
        job_id,
        [*mine, Job.status == "cancelling"],
        status="cancelled",
        finished_at=now,
        lease_until=None,
    ):
        add_event(s, job_id, "status", "job cancelled", status="cancelled")
        return "cancelled"
    status = "failed" if error else "succeeded"
    if not _set(
        s,
        job_id,
        [*mine, Job.status == "running"],
        status=status,
        finished_at=now,
        lease_until=None,
        result=result,
        error=error,
    ):
        return None
    add_event(s, job_id, "status", f"job {status}", status=status, error=error)
    return status


def cancel(s: Session, job_id: str) -> Job:
    """Queued: cancelled at once. Running: cancelling, the worker stops at its next step."""
    job = get_job(s, job_id)
    if _set(s, job_id, [Job.status == "queued"], status="cancelled", finished_at=utcnow()):
        add_event(s, job_id, "status", "job cancelled", status="cancelled")
    elif _set(s, job_id, [Job.status == "running"], status="cancelling"):
        add_event(s, job_id, "status", "cancel requested", status="cancelling")
    else:
        s.refresh(job)
        if job.status in ("succeeded", "failed"):
            raise Conflict(f"job {job_id!r} already {job.status}", code="job_finished")
    s.refresh(job)
    return job


def watchdog(s: Session, *, redispatch_after_s: float = 600.0) -> list[Job]:
    """Requeue (or fail) jobs whose lease expired; return the queued jobs to (re)send.

    Safe to run concurrently: each change is conditional on the state it read."""
    now = utcnow()
    expired = s.scalars(select(Job).where(Job.status.in_(ACTIVE), Job.lease_until < now))
    requeued = [job for job in list(expired) if _expire(s, job, now)]
    stale = now - timedelta(seconds=redispatch_after_s)
    queued = s.scalars(select(Job).where(Job.status == "queued", Job.updated_at < stale))
    resend = [
        j for j in list(queued) if _set(s, j.id, [Job.status == "queued", Job.updated_at < stale])
    ]
    return requeued + resend


def _expire(s: Session, job: Job, now: datetime) -> bool:
    """Returns True when the job went back to the queue."""
    guard = [Job.status == job.status, Job.owner == job.owner, Job.lease_until < now]
    if job.status == "cancelling":
        if _set(s, job.id, guard, status="cancelled", finished_at=now, lease_until=None):
            add_event(s, job.id, "status", "worker lost while cancelling", status="cancelled")
        return False
    if job.attempt < job.max_attempts:
        if _set(s, job.id, guard, status="queued", owner=None, lease_until=None):
            add_event(
                s,
                job.id,
                "status",
                f"lease expired after attempt {job.attempt}; requeued",
                status="queued",
                attempt=job.attempt,
            )
            return True
        return False
    error = {
        "code": "attempts_exhausted",
        "retryable": True,
        "message": f"worker lost {job.attempt} times (lease expired)",
    }
    if _set(s, job.id, guard, status="failed", finished_at=now, lease_until=None, error=error):
        add_event(s, job.id, "status", "job failed", status="failed", error=error)
    return False
