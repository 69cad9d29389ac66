"""Per-project limits: unfinished jobs and stored bytes. Over one, a submit or an upload is
a 429 with Retry-After, and nothing is stored. A project's own limit (projects table) wins
over the settings' default."""

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service.config import get_settings
from service.db.tables import ACTIVE, Dataset, Job, Project, RegisteredModel
from service.db.tenancy import current_project
from service.errors import DistilleryError

JOBS_RETRY_S = 30  # about when a slot may have freed
BYTES_RETRY_S = 3600  # storage frees only when something is deleted


class QuotaExceeded(DistilleryError):
    def __init__(self, detail: str, retry_after_s: int) -> None:
        super().__init__(
            detail,
            status=429,
            code="quota_exceeded",
            title="Too many requests",
            headers={"Retry-After": str(retry_after_s)},
        )


def check_jobs(s: Session) -> None:
    """Room for one more unfinished (queued or running) job in the caller's project."""
    limit = _own(s).max_active_jobs or get_settings().max_active_jobs
    mine = Job.project_id == current_project()
    count = s.scalar(select(func.count(Job.id)).where(mine, Job.status.in_(("queued", *ACTIVE))))
    if (count or 0) >= limit:
        why = f"project has {count} unfinished jobs, its limit is {limit}"
        raise QuotaExceeded(why, JOBS_RETRY_S)


def check_bytes(s: Session) -> None:
    """Room left under the caller's project's stored bytes (its models and datasets)."""
    limit = _own(s).max_stored_bytes
    limit = get_settings().max_stored_bytes if limit is None else limit
    used = sum(
        s.scalar(
            select(func.coalesce(func.sum(t.size), 0)).where(t.project_id == current_project())
        )
        or 0
        for t in STORED
    )
    if used >= limit:
        raise QuotaExceeded(f"project stores {used} bytes, its limit is {limit}", BYTES_RETRY_S)


STORED = (RegisteredModel, Dataset)


def _own(s: Session) -> Project:
    return s.get(Project, current_project()) or Project()
