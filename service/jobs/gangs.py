"""A job across nodes (resources.nodes > 1) is claimed by a gang: one worker per node, all or
none. Its row holds the seats (jobs.gang: node -> owner, lease, state) and a version every
change of them bumps: a worker takes, renews or leaves a seat by one UPDATE conditional on
that version (compare-and-set), so no two workers share a seat, and the UPDATE that takes the
last seat also starts the job (queued -> running, owned by node 0's worker). The seat of a
queued job whose lease ran out is free again; a requeue empties every seat.

Two half-gathered jobs never wait on each other: workers take the oldest job with room
(`oldest_open`), and a worker waiting in a gang leaves its seat as soon as an older job it
could take has room. Workers only ever move to older jobs, so the oldest job with free seats
fills first, whatever the timing; no gathering deadline to tune."""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.engine import Row
from sqlalchemy.orm import Session

from service.db.tables import ACTIVE, Job, utcnow

HELD, LEAVING, DONE = "held", "leaving", "done"  # a seat's states once its gang runs
TRIES = 50  # compare-and-set rounds before a seat change gives up (others kept changing it)
# what every requeue does to a job's gang: no seats, no rendezvous
RESET: dict[str, Any] = {"gang": {}, "gang_version": Job.gang_version + 1, "rendezvous": None}


@dataclass(frozen=True)
class Seat:
    """One worker's place in a job's gang: node 0 reports and hosts the rendezvous."""

    job_id: str
    node: int
    owner: str


class Open(NamedTuple):
    """A queued job with room for one more worker."""

    job_id: str
    nodes: int
    queue: str


@dataclass(frozen=True)
class Held:
    """What a seat's holder learns at each renewal."""

    status: str  # the job's
    attempt: int
    mine: bool  # the seat is still this owner's (a requeue empties every seat)
    rendezvous: str | None  # host:port, once node 0 has published it

    @property
    def started(self) -> bool:
        return self.mine and self.status in ACTIVE


def _live(seat: dict[str, Any] | None, now: datetime) -> bool:
    return seat is not None and datetime.fromisoformat(seat["until"]) > now


def free_nodes(nodes: int, gang: dict[str, Any], now: datetime) -> list[int]:
    """The nodes of a queued job nobody holds (never taken, left, or a lease run out)."""
    return [n for n in range(nodes) if not _live(gang.get(str(n)), now)]


def _seat(owner: str, now: datetime, lease_s: float, state: str = HELD) -> dict[str, Any]:
    return {"owner": owner, "until": (now + timedelta(seconds=lease_s)).isoformat(), "state": state}


def _row(s: Session, job_id: str) -> Row[Any] | None:
    columns = (Job.status, Job.nodes, Job.gang, Job.gang_version, Job.attempt, Job.rendezvous)
    return s.execute(select(*columns).where(Job.id == job_id)).one_or_none()


def _swap(s: Session, job_id: str, version: int, where: list[Any], **values: Any) -> bool:
    """The compare-and-set: the job's seats change only if nobody changed them since
    `version` was read."""
    stmt = (
        update(Job)
        .where(Job.id == job_id, Job.gang_version == version, *where)
        .values(gang_version=version + 1, **values)
    )
    return s.execute(stmt.execution_options(synchronize_session=False)).rowcount == 1  # type: ignore[attr-defined]


def oldest_open(
    s: Session, queues: Sequence[str], older_than: tuple[datetime, str] | None = None
) -> Open | None:
    """The oldest queued job of `queues` with room for one more worker (one on a single node
    always has), older than (created_at, id) `older_than` when given."""
    stmt = (
        select(Job.id, Job.nodes, Job.gang, Job.queue)
        .where(Job.status == "queued", Job.queue.in_(queues))
        .order_by(Job.created_at, Job.id)
    )
    if older_than is not None:
        at, ident = older_than
        stmt = stmt.where(or_(Job.created_at < at, and_(Job.created_at == at, Job.id < ident)))
    now = utcnow()
    for job_id, nodes, gang, queue in s.execute(stmt.execution_options(yield_per=64)):
        if nodes == 1 or free_nodes(nodes, gang, now):
            return Open(job_id, nodes, queue)
    return None


def older_open(s: Session, job_id: str, queues: Sequence[str]) -> Open | None:
    """A job of `queues` older than `job_id` with room: where a worker waiting in
    `job_id`'s gang goes instead."""
    created = s.scalar(select(Job.created_at).where(Job.id == job_id))
    return None if created is None else oldest_open(s, queues, (created, job_id))


def take(s: Session, job_id: str, owner: str, lease_s: float) -> tuple[Seat, bool] | None:
    """The lowest free seat of a queued job across nodes, and whether taking it completed
    the gang and started the job; None when it has no room."""
    for _ in range(TRIES):
        row = _row(s, job_id)
        now = utcnow()
        if (
            row is None
            or row.status != "queued"
            or not (free := free_nodes(row.nodes, row.gang, now))
        ):
            return None
        gang = {**row.gang, str(free[0]): _seat(owner, now, lease_s)}
        start = _start(gang, now, lease_s) if len(free) == 1 else {}
        if _swap(s, job_id, row.gang_version, [Job.status == "queued"], gang=gang, **start):
            return Seat(job_id, free[0], owner), bool(start)
    return None


def _start(gang: dict[str, Any], now: datetime, lease_s: float) -> dict[str, Any]:
    """queued -> running: a new attempt, its lease node 0's worker's to keep."""
    return {
        "status": "running",
        "owner": gang["0"]["owner"],
        "lease_until": now + timedelta(seconds=lease_s),
        "attempt": Job.attempt + 1,
        "started_at": func.coalesce(Job.started_at, now),
        "updated_at": now,
        "rendezvous": None,
    }


def look(s: Session, seat: Seat) -> Held:
    """What the seat's holder would learn at a renewal, without renewing."""
    row = _row(s, seat.job_id)
    return Held("gone", 0, False, None) if row is None else _held(row, seat)


def _held(row: Row[Any], seat: Seat) -> Held:
    held = row.gang.get(str(seat.node))
    mine = held is not None and held["owner"] == seat.owner
    return Held(row.status, row.attempt, mine and row.status in ("queued", *ACTIVE), row.rendezvous)


def renew(s: Session, seat: Seat, lease_s: float, state: str | None = None) -> Held:
    """Extend the seat's lease (and set its state), if it is still this owner's."""
    for _ in range(TRIES):
        row = _row(s, seat.job_id)
        if row is None:
            return Held("gone", 0, False, None)
        if not (held := _held(row, seat)).mine:
            return held
        now, before = utcnow(), row.gang[str(seat.node)]
        mine = _seat(seat.owner, now, lease_s, state or before["state"])
        if _swap(s, seat.job_id, row.gang_version, [], gang={**row.gang, str(seat.node): mine}):
            return held
    raise RuntimeError(f"seat {seat} could not be renewed in {TRIES} tries")


def leave(s: Session, seat: Seat) -> bool:
    """Give up a seat of a job still gathering; False when it was not this owner's (or the
    gang has started: a node of a running job leaves by marking its seat LEAVING)."""
    for _ in range(TRIES):
        row = _row(s, seat.job_id)
        held = None if row is None else row.gang.get(str(seat.node))
        if row is None or row.status != "queued" or held is None or held["owner"] != seat.owner:
            return False
        gang = {k: v for k, v in row.gang.items() if k != str(seat.node)}
        if _swap(s, seat.job_id, row.gang_version, [Job.status == "queued"], gang=gang):
            return True
    return False


def publish(s: Session, job_id: str, owner: str, address: str) -> bool:
    """Node 0's worker names the rendezvous of its attempt (host:port of the c10d store)."""
    stmt = (
        update(Job)
        .where(Job.id == job_id, Job.owner == owner, Job.status.in_(ACTIVE))
        .values(rendezvous=address)
    )
    return s.execute(stmt.execution_options(synchronize_session=False)).rowcount == 1  # type: ignore[attr-defined]


def trouble(s: Session, job_id: str) -> tuple[list[int], list[int]]:
    """The nodes past node 0 of a running gang that are lost (their worker stopped renewing
    its seat) and those leaving (their worker is shutting down)."""
    row = _row(s, job_id)
    if row is None:
        return [], []
    now, lost, leaving = utcnow(), [], []
    for node in range(1, row.nodes):
        held = row.gang.get(str(node))
        if held is None or (held["state"] == HELD and not _live(held, now)):
            lost.append(node)
        elif held["state"] == LEAVING:
            leaving.append(node)
    return lost, leaving


def owners(s: Session, job_id: str) -> list[str]:
    """The owner of each seat, by node."""
    gang = s.scalar(select(Job.gang).where(Job.id == job_id)) or {}
    return [gang[k]["owner"] for k in sorted(gang, key=int)]
