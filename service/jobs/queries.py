"""Reads of jobs that are not transitions: pages of jobs and of a job's events, and the
supervised runs a distilled student is compared with."""

from typing import Any

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from service.db import paging
from service.db.tables import Job, JobEvent
from service.jobs.lifecycle import get_job
from service.spec.job import JobSpec


def list_events(s: Session, job_id: str, *, after: int = 0, limit: int = 100) -> list[JobEvent]:
    get_job(s, job_id)
    q = (
        select(JobEvent)
        .where(JobEvent.job_id == job_id, JobEvent.id > after)
        .order_by(JobEvent.id)
        .limit(limit)
    )
    return list(s.scalars(q))


def best_epochs(s: Session, job_ids: list[str]) -> dict[str, dict[str, Any]]:
    """Job id -> {"val_acc", "epoch"} of its best epoch so far, for those with one."""
    q = (
        select(JobEvent.job_id, JobEvent.data)
        .where(JobEvent.job_id.in_(job_ids), JobEvent.type == "metrics")
        .order_by(JobEvent.attempt, JobEvent.id)
    )
    epochs: dict[str, dict[Any, dict[str, Any]]] = {}
    for job_id, data in s.execute(q):
        epochs.setdefault(job_id, {})[data.get("epoch")] = data  # the latest attempt's wins
    best = {job_id: best_of(list(found.values())) for job_id, found in epochs.items()}
    return {job_id: b for job_id, b in best.items() if b is not None}


def best_of(epochs: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The first epoch with the highest val_acc (as the training loop picks it), or None."""
    scored = [m for m in epochs if m.get("val_acc") is not None and m.get("epoch") is not None]
    if not scored:
        return None
    top = max(scored, key=lambda m: (m["val_acc"], -m["epoch"]))
    return {"val_acc": top["val_acc"], "epoch": top["epoch"]}


def list_jobs(
    s: Session,
    *,
    status: str | None = None,
    sweep: str | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> tuple[list[Job], str | None]:
    """Newest first (a sweep's trials only, with `sweep`); the cursor names the last job of
    the previous page."""
    where = [Job.status == status] if status else []
    where += [Job.sweep_id == sweep] if sweep else []
    return paging.newest_first(s, Job, *where, limit=limit, cursor=cursor)


def scratch_runs(s: Session, job_id: str) -> dict[str, float]:
    """{job id: final val_acc} of the succeeded supervised jobs of the job's project that
    trained the same student (architecture and start) on the same data and split for as
    many epochs: what its student should beat. Empty for a supervised job."""
    job = get_job(s, job_id)
    spec = JobSpec.model_validate(job.spec)
    if spec.method.name == "supervised":
        return {}
    q = select(Job.id, Job.spec, Job.metrics).where(
        Job.project_id == job.project_id, Job.method == "supervised", Job.status == "succeeded"
    )
    if job.dataset_id:  # an indexed narrowing; the data specs are compared below
        q = q.where(Job.dataset_id == job.dataset_id)
    baseline = baseline_key(spec)
    return {
        other_id: float(metrics["val_acc"])
        for other_id, other, metrics in s.execute(q)
        if "val_acc" in metrics and baseline_key_of(other) == baseline
    }


def baseline_key(spec: JobSpec) -> tuple[Any, ...]:
    """What a supervised run shares with a job to be its baseline."""
    student = spec.student.model_dump(mode="json", exclude={"num_classes", "in_channels"})
    return student, spec.data.model_dump(mode="json"), spec.train.epochs


def baseline_key_of(stored: dict[str, Any]) -> tuple[Any, ...] | None:
    try:
        return baseline_key(JobSpec.model_validate(stored))
    except ValidationError:  # a spec of an older version that no longer validates
        return None
