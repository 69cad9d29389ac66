"""The job state machine. Every transition is one conditional UPDATE, so a duplicate
message, a stale worker or two watchdogs at once can never run a job twice."""

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from service.db.sessions import get_or_404
from service.db.tables import ACTIVE, Job, JobEvent, new_id, utcnow
from service.db.tenancy import current_project
from service.errors import Conflict, JobError
from service.jobs import progress as job_progress
from service.jobs import webhooks
from service.spec.job import JobSpec


def get_job(s: Session, job_id: str) -> Job:
    return get_or_404(s, Job, "job", job_id)


def find_by_key(s: Session, idempotency_key: str) -> Job | None:
    return s.scalar(select(Job).where(Job.idempotency_key == idempotency_key))


def create_job(
    s: Session,
    spec: JobSpec,
    *,
    idempotency_key: str | None,
    request_hash: str | None,
    sweep_id: str | None = None,
) -> Job:
    """Insert a queued job for a spec admission resolved (service.jobs.admission)."""
    job = Job(
        id=new_id("job"),
        project_id=current_project(),
        name=spec.name or spec.method.name,
        status="queued",
        method=spec.method.name,
        spec=spec.model_dump(mode="json"),
        queue=spec.resources.queue,
        teacher_job_id=spec.teacher.job if spec.teacher else None,
        teacher_model_id=spec.teacher.model if spec.teacher else None,
        init_model_id=spec.student.init.model if spec.student.init else None,
        dataset_id=spec.data.upload,
        idempotency_key=idempotency_key,
        request_hash=request_hash,
        max_attempts=spec.resources.max_attempts,
        progress={},
        metrics={},
        sweep_id=sweep_id,
    )
    s.add(job)
    s.flush()
    add_event(s, job.id, "status", "job queued", status="queued")
    for warning in spec.warnings():  # in the feed before the job trains
        add_event(s, job.id, "warning", warning)
    return job


def add_event(s: Session, job_id: str, type_: str, message: str = "", **data: Any) -> None:
    """Record an event of the job's current attempt (read in the INSERT itself)."""
    attempt = select(Job.attempt).where(Job.id == job_id).scalar_subquery()
    s.add(JobEvent(job_id=job_id, type=type_, message=message, data=data, attempt=attempt))
    webhooks.on_job_event(s, job_id, type_, data)  # its deliveries, in this transaction


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


def claim_next(s: Session, queue: str, owner: str, lease_s: float) -> Job | None:
    """The queue's oldest queued job, now this owner's; None when nothing is queued there.

    Workers take jobs from the database in submission order, whichever job's message woke
    them: a message is a wake-up call, not the only record of a job. Two workers reaching
    for the same job both try its conditional UPDATE; the loser takes the next one."""
    while (job_id := oldest_queued(s, queue)) is not None:
        if (job := claim(s, job_id, owner, lease_s)) is not None:
            return job
    return None


def queue_of(s: Session, job_id: str) -> str | None:
    return s.scalar(select(Job.queue).where(Job.id == job_id))


def oldest_queued(s: Session, queue: str) -> str | None:
    return s.scalar(
        select(Job.id)
        .where(Job.status == "queued", Job.queue == queue)
        .order_by(Job.created_at, Job.id)
        .limit(1)
    )


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
    """An epoch's metrics, as the job's latest and as an event; False if the owner lost it."""
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
    error: JobError | None = None,
    progress: dict[str, Any] | None = None,
) -> str | None:
    """running -> succeeded/failed; cancelling -> cancelled. None if the owner lost the job.
    `progress`, where the job stopped, is saved final (service/jobs/progress.py) with the status."""
    mine, now = [Job.owner == owner], utcnow()
    if ended := _end_cancelling(s, job_id, owner, now, progress):
        return ended
    status = "failed" if error else "succeeded"
    stored = error.as_dict() if error else None
    extra = _final(progress, job_progress.stopped if error else job_progress.done)
    if not _set(
        s,
        job_id,
        [*mine, Job.status == "running"],
        status=status,
        finished_at=now,
        lease_until=None,
        result=result,
        error=stored,
        **extra,
    ):
        return None
    add_event(s, job_id, "status", f"job {status}", status=status, error=stored)
    return status


def release(
    s: Session, job_id: str, owner: str, progress: dict[str, Any] | None = None
) -> str | None:
    """The owner gives the job up (its worker is shutting down) after saving where it was:
    running -> queued, for the next claim to resume, its attempt given back (a preemption
    is no failure); cancelling -> cancelled (or pruned). None when the owner had lost it."""
    if ended := _end_cancelling(s, job_id, owner, utcnow(), progress):
        return ended
    extra = _final(progress, job_progress.stopped)
    if not _set(
        s,
        job_id,
        [Job.owner == owner, Job.status == "running"],
        status="queued",
        owner=None,
        lease_until=None,
        attempt=Job.attempt - 1,
        **extra,
    ):
        return None
    add_event(
        s, job_id, "status", "worker shutting down; requeued", status="queued", preempted=True
    )
    return "queued"


def _final(
    progress: dict[str, Any] | None, shape: Callable[[dict[str, Any]], dict[str, Any]]
) -> dict[str, Any]:
    """The progress column's final value, shaped (service/jobs/progress.py), when one was given."""
    return {} if progress is None else {"progress": shape(progress)}


def _end_cancelling(
    s: Session, job_id: str, owner: str, now: datetime, progress: dict[str, Any] | None
) -> str | None:
    """cancelling -> cancelled (or what it ends as: pruned), when this owner's job was asked
    to stop; the status it ended with, else None."""
    mine = [Job.owner == owner, Job.status == "cancelling"]
    extra = _final(progress, job_progress.stopped)
    ended = func.coalesce(Job.ends_as, "cancelled")
    if not _set(s, job_id, mine, status=ended, finished_at=now, lease_until=None, **extra):
        return None
    return _ended(s, job_id)


def _ended(s: Session, job_id: str) -> str:
    """Records the end of a cancel or a prune: its status, read from the row it just set."""
    status = s.scalar(select(Job.status).where(Job.id == job_id)) or "cancelled"
    add_event(s, job_id, "status", f"job {status}", status=status)
    return status


def cancel(s: Session, job_id: str, reason: str = "") -> Job:
    """Queued: cancelled at once. Running: cancelling, the worker stops at its next step.
    `reason` (e.g. its sweep was cancelled) goes into the events."""
    job = get_job(s, job_id)
    because = f" ({reason})" if reason else ""
    if _set(s, job_id, [Job.status == "queued"], status="cancelled", finished_at=utcnow()):
        add_event(s, job_id, "status", f"job cancelled{because}", status="cancelled")
    elif _set(s, job_id, [Job.status == "running"], status="cancelling"):
        add_event(s, job_id, "status", f"cancel requested{because}", status="cancelling")
    else:
        s.refresh(job)
        if job.status in ("succeeded", "failed", "pruned"):
            raise Conflict(f"job {job_id!r} already {job.status}", code="job_finished")
    s.refresh(job)
    return job


def prune(s: Session, job_id: str, reason: str) -> bool:
    """A sweep's pruner stops this trial (service/sweeps/trials.py): running -> cancelling,
    to end as "pruned" once its worker stops at its next step; queued -> pruned. False when
    it is past either."""
    data = {"reason": reason}
    if _set(s, job_id, [Job.status == "queued"], status="pruned", finished_at=utcnow()):
        add_event(s, job_id, "status", f"job pruned: {reason}", status="pruned", **data)
        return True
    if _set(s, job_id, [Job.status == "running"], status="cancelling", ends_as="pruned"):
        add_event(s, job_id, "status", f"pruned: {reason}", status="cancelling", **data)
        return True
    return False


def watchdog(s: Session) -> list[Job]:
    """Requeue (or fail) jobs whose lease expired; return those requeued, to send.

    Safe to run concurrently: each change is conditional on the state it read."""
    now = utcnow()
    expired = s.scalars(select(Job).where(Job.status.in_(ACTIVE), Job.lease_until < now))
    return [job for job in list(expired) if _expire(s, job, now)]


def waiting(s: Session, longer_than_s: float) -> dict[str, str]:
    """Queue -> its oldest job, for each queue with a job queued longer than `longer_than_s`
    (since it was submitted or requeued): the queues a worker may not know about."""
    since = utcnow() - timedelta(seconds=longer_than_s)
    rows = s.execute(
        select(Job.queue, Job.id)
        .where(Job.status == "queued", Job.updated_at < since)
        .order_by(Job.created_at.desc(), Job.id.desc())
    )
    return {queue: job_id for queue, job_id in rows}  # the last row per queue: its oldest


def _expire(s: Session, job: Job, now: datetime) -> bool:
    """Returns True when the job went back to the queue."""
    guard = [Job.status == job.status, Job.owner == job.owner, Job.lease_until < now]
    if job.status == "cancelling":
        ended = func.coalesce(Job.ends_as, "cancelled")
        if _set(s, job.id, guard, status=ended, finished_at=now, lease_until=None):
            status = s.scalar(select(Job.status).where(Job.id == job.id))
            add_event(s, job.id, "status", "worker lost while stopping", status=status)
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
    error = JobError(
        "attempts_exhausted", f"worker lost {job.attempt} times (lease expired)", retryable=True
    ).as_dict()
    if _set(s, job.id, guard, status="failed", finished_at=now, lease_until=None, error=error):
        add_event(s, job.id, "status", "job failed", status="failed", error=error)
    return False
