"""Reads of jobs that are not transitions: pages of jobs and of a job's events."""

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.db import paging
from service.db.tables import Job, JobEvent
from service.jobs.lifecycle import get_job


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
