"""The fleet: what each Celery worker can hold, registered as it starts and kept fresh by its
heartbeat (worker/task/presence.py). A worker is live while its last heartbeat is younger
than a lease (DISTILLERY_LEASE_S): one that stops beating is gone, as its jobs would be.
Admission sizes a job against the live workers of its queue (service/jobs/admission.py)."""

from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from service.config import get_settings
from service.db.tables import Worker, utcnow


@dataclass(frozen=True)
class Capacity:
    """What one worker's host has: memory and cores, and the memory of each GPU it sees."""

    memory_bytes: int
    cores: int
    gpu_memory_bytes: list[int] = field(default_factory=list)


def register(s: Session, name: str, queues: list[str], capacity: Capacity) -> Worker:
    """The worker's row, new or (a restart under the same name) started again."""
    row = s.get(Worker, name) or Worker(name=name)
    now = utcnow()
    row.queues, row.memory_bytes, row.cores = sorted(queues), capacity.memory_bytes, capacity.cores
    row.gpu_count, row.gpu_memory_bytes = len(capacity.gpu_memory_bytes), capacity.gpu_memory_bytes
    row.started_at = row.heartbeat_at = now
    s.add(row)
    s.flush()
    return row


def beat(s: Session, name: str) -> bool:
    """The worker is still there; False when it has no row (it registers again)."""
    done = s.execute(update(Worker).where(Worker.name == name).values(heartbeat_at=utcnow()))
    return bool(done.rowcount)  # type: ignore[attr-defined]


def is_live(row: Worker) -> bool:
    return row.heartbeat_at > utcnow() - timedelta(seconds=get_settings().lease_s)


def workers(s: Session) -> list[Worker]:
    """Every registered worker, by name, live or not."""
    return list(s.scalars(select(Worker).order_by(Worker.name)))


def live(s: Session, queue: str) -> list[Worker]:
    """The live workers that take jobs from `queue`."""
    since = utcnow() - timedelta(seconds=get_settings().lease_s)
    rows = s.scalars(select(Worker).where(Worker.heartbeat_at > since).order_by(Worker.name))
    return [row for row in rows if queue in row.queues]
