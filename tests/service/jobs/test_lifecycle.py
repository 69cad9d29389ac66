"""A property-based test of the job state machine in service/jobs/lifecycle.py, on both backends.

Hypothesis drives random sequences of submits, claims (by id, as a redelivered or duplicate
message does, and by claim_next), heartbeats, epochs, cancels, finishes and lost workers (an
expired lease, then watchdog passes) against the real database, and keeps a model of every
job: its owner, its attempts, its events. After every step the database must agree with the
model and hold the invariants; at the end every job is driven to a terminal state."""

import copy
import sys
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, Phase, note, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import select, update

from service.db import tables
from service.db.sessions import session_scope
from service.db.tables import Job, JobEvent, utcnow
from service.errors import Conflict, JobError
from service.jobs import admission, lifecycle, queries
from service.spec.job import JobSpec
from tests.conftest import truncate
from tests.service.conftest import SUPERVISED

QUEUES = ("q1", "q2")
LEASE_S = 600  # no lease runs out by itself while a test runs: only `expire_lease` ends one
MAX_JOBS = 8
ACTIVE, TERMINAL = tables.ACTIVE, tables.TERMINAL
# the status changes the state machine allows, as the status events must show them
NEXT = {
    "queued": {"running", "cancelled"},
    "running": {"cancelling", "succeeded", "failed", "queued"},
    "cancelling": {"cancelled"},
}
MODELLED = (
    *("status", "owner", "attempt", "max_attempts", "queue"),
    *("result", "error", "progress", "metrics"),
)
RESULT = {"val_acc": 0.9}
ERROR = JobError("nan_loss", "loss is NaN")

index = st.integers(min_value=0, max_value=15)


@dataclass
class Model:
    """What the database should say about one job."""

    id: str
    name: str  # job0, job1, ...: stable across runs, for the notes hypothesis prints
    queue: str
    max_attempts: int
    created_at: datetime
    status: str = "queued"
    owner: str | None = None
    past_owners: list[str] = field(default_factory=list)  # owners it was taken from, in order
    attempt: int = 0
    expired: bool = False  # its lease is in the past (only while running or cancelling)
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    progress: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    events: list[tuple[str, Any]] = field(default_factory=lambda: [("status", "queued")])
    final: dict[str, Any] | None = None  # the row as it was when the job became terminal

    def move(self, status: str) -> None:
        self.status = status
        self.events.append(("status", status))


Rows = dict[str, dict[str, Any]]
Events = dict[str, list[tuple[int, str, dict[str, Any]]]]


def snapshot() -> tuple[Rows, Events]:
    """Every job row (all columns) and every event, as the database has them now."""
    keys = [c.key for c in Job.__mapper__.column_attrs]
    with session_scope() as s:
        rows = {j.id: {k: getattr(j, k) for k in keys} for j in s.scalars(select(Job))}
        events: Events = defaultdict(list)
        for e in s.scalars(select(JobEvent).order_by(JobEvent.id)):
            events[e.job_id].append((e.id, e.type, e.data))
    return rows, events


class JobMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        truncate()  # each example starts from empty tables
        self.models: list[Model] = []
        self.owners: list[str] = []  # every worker name used so far
        self.n = 0

    # helpers: each makes one call, checks what it returned and updates the model

    def fresh_owner(self) -> str:
        self.n += 1
        return f"w{self.n}"

    def pick(self, models: list[Model], i: int) -> Model:
        return models[i % len(models)]

    def active(self) -> list[Model]:
        return [m for m in self.models if m.status in ACTIVE]

    def stale_owner(self, m: Model, j: int) -> str:
        """A worker that does not own `m` now: the last one that did first, then the others
        that did, those of other jobs, and one that never owned anything."""
        mine = [*m.past_owners, *([m.owner] if m.owner and m.status not in ACTIVE else [])]
        pool = list(dict.fromkeys([*reversed(mine), *self.owners, "ghost"]))
        if m.status in ACTIVE and m.owner is not None:
            pool.remove(m.owner)
        return pool[j % len(pool)]

    def past_owner(self, m: Model, j: int) -> str:
        """A worker that owned a job before and does not own `m` now (else a new one)."""
        pool = [o for o in self.owners if o != m.owner]
        return pool[j % len(pool)] if pool else self.fresh_owner()

    @contextmanager
    def unchanged(self) -> Iterator[None]:
        """The block changes nothing in the database: no row, no event."""
        before = snapshot()
        yield
        assert snapshot() == before, "a refused call changed the database"

    def _claimed(self, m: Model, owner: str, job: Job | None) -> None:
        assert job is not None and job.id == m.id
        assert (job.status, job.owner, job.attempt) == ("running", owner, m.attempt + 1)
        m.owner, m.attempt, m.expired = owner, m.attempt + 1, False
        m.move("running")
        if owner not in self.owners:
            self.owners.append(owner)

    def _submit(self, queue: str, max_attempts: int) -> Model:
        body = copy.deepcopy(SUPERVISED) | {
            "resources": {"queue": queue, "max_attempts": max_attempts}
        }
        with session_scope() as s:
            job, new = admission.submit(
                s, JobSpec.model_validate(body), idempotency_key=None, request_hash=""
            )
            assert new and job.max_attempts == max_attempts
            m = Model(job.id, f"job{len(self.models)}", queue, max_attempts, job.created_at)
        self.models.append(m)
        note(f"{m.name} submitted to {queue}, max_attempts={max_attempts}")
        return m

    def _claim(self, m: Model, owner: str) -> None:
        note(f"{owner} claims {m.name} by id ({m.status}, owner {m.owner})")
        if m.status != "queued":
            with self.unchanged(), session_scope() as s:
                assert lifecycle.claim(s, m.id, owner, lease_s=LEASE_S) is None
            return
        with session_scope() as s:
            job = lifecycle.claim(s, m.id, owner, lease_s=LEASE_S)
            self._claimed(m, owner, job)

    def _claim_next(self, queue: str, owner: str) -> None:
        queued = [m for m in self.models if m.status == "queued" and m.queue == queue]
        if not queued:
            with self.unchanged(), session_scope() as s:
                assert lifecycle.claim_next(s, queue, owner, lease_s=LEASE_S) is None
            return
        oldest = min(queued, key=lambda m: (m.created_at, m.id))
        note(f"{owner} claims the next job of {queue}: expects {oldest.name}")
        with session_scope() as s:
            job = lifecycle.claim_next(s, queue, owner, lease_s=LEASE_S)
            got = next((m.name for m in self.models if job and m.id == job.id), job)
            assert job is not None and job.id == oldest.id, (
                f"claim_next({queue!r}) took {got}, not the oldest queued job {oldest.name}"
            )
            self._claimed(oldest, owner, job)

    def _heartbeat(self, m: Model, owner: str) -> None:
        self.n += 1
        progress = {"step": self.n}
        note(f"{owner} heartbeats {m.name} ({m.status}, owner {m.owner})")
        if not (m.status in ACTIVE and owner == m.owner):
            with self.unchanged(), session_scope() as s:
                assert lifecycle.heartbeat(s, m.id, owner, LEASE_S, progress=progress) is None
            return
        with session_scope() as s:
            assert lifecycle.heartbeat(s, m.id, owner, LEASE_S, progress=progress) == m.status
        m.progress, m.expired = progress, False

    def _record_epoch(self, m: Model, owner: str) -> None:
        self.n += 1
        metrics = {"epoch": self.n, "val_acc": 0.5}
        note(f"{owner} records an epoch of {m.name} ({m.status}, owner {m.owner})")
        if not (m.status in ACTIVE and owner == m.owner):
            with self.unchanged(), session_scope() as s:
                assert lifecycle.record_epoch(s, m.id, owner, metrics) is False
            return
        with session_scope() as s:
            assert lifecycle.record_epoch(s, m.id, owner, metrics) is True
        m.metrics = metrics
        m.events.append(("metrics", self.n))

    def _finish(self, m: Model, owner: str, ok: bool) -> None:
        outcome = {"result": RESULT} if ok else {"error": ERROR}
        note(f"{owner} finishes {m.name} ok={ok} ({m.status}, owner {m.owner})")
        if not (m.status in ACTIVE and owner == m.owner):
            with self.unchanged(), session_scope() as s:
                assert lifecycle.finish(s, m.id, owner, **outcome) is None
            return
        want = "cancelled" if m.status == "cancelling" else "succeeded" if ok else "failed"
        with session_scope() as s:
            assert lifecycle.finish(s, m.id, owner, **outcome) == want
        if want == "succeeded":
            m.result = RESULT
        elif want == "failed":
            m.error = ERROR.as_dict()
        m.expired = False
        m.move(want)

    def _cancel(self, m: Model) -> None:
        note(f"cancel {m.name} ({m.status})")
        if m.status in ("succeeded", "failed"):
            with self.unchanged():
                try:
                    with session_scope() as s:
                        lifecycle.cancel(s, m.id)
                except Conflict as e:
                    assert (e.status, e.code) == (409, "job_finished")
                else:
                    raise AssertionError(f"cancel of a {m.status} job did not conflict")
            return
        if m.status in ("cancelling", "cancelled"):
            with self.unchanged(), session_scope() as s:
                assert lifecycle.cancel(s, m.id).status == m.status
            return
        want = "cancelled" if m.status == "queued" else "cancelling"
        with session_scope() as s:
            assert lifecycle.cancel(s, m.id).status == want
        m.move(want)

    def _expire(self, m: Model) -> None:
        note(f"the lease of {m.name} expires ({m.status}, owner {m.owner})")
        with session_scope() as s:
            past = utcnow() - timedelta(seconds=5)
            s.execute(update(Job).where(Job.id == m.id).values(lease_until=past))
        m.expired = True

    def _watchdog(self) -> list[Model]:
        """One watchdog pass; returns the jobs it requeued."""
        lost = [m for m in self.models if m.status in ACTIVE and m.expired]
        note(f"watchdog pass: expects {[m.name for m in lost]} lost")
        with session_scope() as s:
            requeued = sorted(j.id for j in lifecycle.watchdog(s))
        want = sorted(m.id for m in lost if m.status == "running" and m.attempt < m.max_attempts)
        assert requeued == want
        for m in lost:
            m.expired = False
            if m.status == "cancelling":
                m.move("cancelled")
            elif m.attempt < m.max_attempts:
                assert m.owner is not None
                m.past_owners.append(m.owner)
                m.owner = None
                m.move("queued")
            else:
                m.error = JobError(
                    "attempts_exhausted",
                    f"worker lost {m.attempt} times (lease expired)",
                    retryable=True,
                ).as_dict()
                m.move("failed")
        return [m for m in lost if m.id in requeued]

    # rules

    @initialize(
        submits=st.lists(
            st.tuples(st.sampled_from(QUEUES), st.integers(min_value=1, max_value=3)),
            min_size=1,
            max_size=4,
        )
    )
    def some_jobs(self, submits: list[tuple[str, int]]) -> None:
        for queue, max_attempts in submits:
            self._submit(queue, max_attempts)

    @precondition(lambda self: len(self.models) < MAX_JOBS)
    @rule(queue=st.sampled_from(QUEUES), max_attempts=st.integers(min_value=1, max_value=3))
    def submit(self, queue: str, max_attempts: int) -> None:
        self._submit(queue, max_attempts)

    @precondition(lambda self: self.models)
    @rule(i=index, who=st.sampled_from(["fresh", "owner", "stale"]), j=index)
    def claim_by_id(self, i: int, who: str, j: int) -> None:
        """A worker gets a job's message: the first, a redelivery or a duplicate, in any state
        of the job, by a new worker, the job's owner or a worker that owned it before."""
        m = self.pick(self.models, i)
        owner = {
            "fresh": self.fresh_owner,
            "owner": lambda: m.owner or self.fresh_owner(),
            "stale": lambda: self.past_owner(m, j),
        }[who]()
        self._claim(m, owner)

    @rule(queue=st.sampled_from(QUEUES))
    def claim_next(self, queue: str) -> None:
        self._claim_next(queue, self.fresh_owner())

    @precondition(lambda self: self.active())
    @rule(i=index)
    def heartbeat_by_owner(self, i: int) -> None:
        m = self.pick(self.active(), i)
        assert m.owner is not None
        self._heartbeat(m, m.owner)

    @precondition(lambda self: self.models)
    @rule(i=index, j=index)
    def heartbeat_by_stale_owner(self, i: int, j: int) -> None:
        m = self.pick(self.models, i)
        self._heartbeat(m, self.stale_owner(m, j))

    @precondition(lambda self: self.active())
    @rule(i=index)
    def record_epoch_by_owner(self, i: int) -> None:
        m = self.pick(self.active(), i)
        assert m.owner is not None
        self._record_epoch(m, m.owner)

    @precondition(lambda self: self.models)
    @rule(i=index, j=index)
    def record_epoch_by_stale_owner(self, i: int, j: int) -> None:
        m = self.pick(self.models, i)
        self._record_epoch(m, self.stale_owner(m, j))

    @precondition(lambda self: self.models)
    @rule(i=index)
    def cancel(self, i: int) -> None:
        self._cancel(self.pick(self.models, i))

    @precondition(lambda self: self.active())
    @rule(i=index, ok=st.booleans())
    def finish_by_owner(self, i: int, ok: bool) -> None:
        m = self.pick(self.active(), i)
        assert m.owner is not None
        self._finish(m, m.owner, ok)

    @precondition(lambda self: self.models)
    @rule(i=index, j=index, ok=st.booleans())
    def finish_by_stale_owner(self, i: int, j: int, ok: bool) -> None:
        m = self.pick(self.models, i)
        self._finish(m, self.stale_owner(m, j), ok)

    @precondition(lambda self: self.active())
    @rule(i=index, then=st.sampled_from(["nothing", "watchdog", "watchdog_and_send"]))
    def expire_lease(self, i: int, then: str) -> None:
        """The worker is lost: its lease runs out (a heartbeat before the watchdog's next
        pass still saves it). The watchdog sends each job it requeues to its queue, where
        the message wakes a worker that claims the queue's oldest job."""
        self._expire(self.pick(self.active(), i))
        if then != "nothing":
            for m in self._watchdog():
                if then == "watchdog_and_send":
                    self._claim_next(m.queue, self.fresh_owner())

    @rule()
    def watchdog(self) -> None:
        self._watchdog()

    @rule()
    def waiting(self) -> None:
        oldest: dict[str, Model] = {}
        for m in self.models:
            if m.status == "queued" and (
                m.queue not in oldest
                or (m.created_at, m.id) < (oldest[m.queue].created_at, oldest[m.queue].id)
            ):
                oldest[m.queue] = m
        with session_scope() as s:
            assert lifecycle.waiting(s, longer_than_s=0) == {q: m.id for q, m in oldest.items()}
            assert lifecycle.waiting(s, longer_than_s=3600) == {}

    # invariants

    @invariant()
    def database_agrees(self) -> None:
        rows, events = snapshot()
        assert set(rows) == {m.id for m in self.models}
        now = utcnow()
        for m in self.models:
            row, name = rows[m.id], m.name
            assert {k: row[k] for k in MODELLED} == {k: getattr(m, k) for k in MODELLED}, name
            # attempts are bounded
            assert 0 <= row["attempt"] <= row["max_attempts"], name
            # one owner at a time: an active job has exactly one, with a live or lost lease
            if row["status"] in ACTIVE:
                assert row["owner"] is not None and row["lease_until"] is not None, name
                assert (row["lease_until"] < now) == m.expired, name
            elif row["status"] == "queued":
                assert row["owner"] is None and row["lease_until"] is None, name
            else:  # terminal states are final: nothing changes the row once there
                assert row["lease_until"] is None and row["finished_at"] is not None, name
                if m.final is None:
                    m.final = row
                assert row == m.final, f"{name} changed after it ended {m.final['status']}"
            if row["error"] and row["error"]["code"] == "attempts_exhausted":
                assert row["attempt"] == row["max_attempts"], name
            self.check_events(m, row, events[m.id])

    def check_events(self, m: Model, row: dict[str, Any], events: list[Any]) -> None:
        """Every status change has its status event, in order."""
        got = [(t, d.get("status") if t == "status" else d.get("epoch")) for _, t, d in events]
        assert got == m.events, m.name
        statuses = [d["status"] for _, t, d in events if t == "status"]
        assert statuses[0] == "queued" and statuses[-1] == row["status"], m.name
        for a, b in zip(statuses, statuses[1:], strict=False):
            assert b in NEXT.get(a, ()), f"{m.name}: {a} -> {b}"
        starts = [d for _, t, d in events if t == "status" and d["status"] == "running"]
        assert [d["attempt"] for d in starts] == list(range(1, row["attempt"] + 1)), m.name
        if row["status"] in ACTIVE:
            assert starts[-1]["owner"] == row["owner"], m.name

    def teardown(self) -> None:
        if sys.exc_info()[1] is not None:
            return  # a step failed: that is the error to report, not one from here
        note("teardown: every job to a terminal state")
        for k, m in enumerate(self.models):
            if m.status in TERMINAL:
                continue
            way = k % 3
            if way == 0:  # a worker runs it to the end
                if m.status == "queued":
                    self._claim(m, self.fresh_owner())
                    self.database_agrees()
                assert m.owner is not None
                self._finish(m, m.owner, ok=True)
            elif way == 1:  # every worker that takes it is lost
                for _ in range(2 * m.max_attempts + 1):
                    if m.status in TERMINAL:
                        break
                    if m.status == "queued":
                        self._claim(m, self.fresh_owner())
                    else:
                        self._expire(m)
                        self._watchdog()
                    self.database_agrees()
                if m.status == "failed":
                    assert m.attempt == m.max_attempts
                    assert m.error is not None and m.error["code"] == "attempts_exhausted"
            else:  # someone cancels it
                self._cancel(m)
                if m.status == "cancelling":
                    self.database_agrees()
                    assert m.owner is not None
                    self._finish(m, m.owner, ok=False)
                assert m.status == "cancelled"
            self.database_agrees()
            assert m.status in TERMINAL, f"{m.name} still {m.status}"
        with session_scope() as s:
            for m in self.models:
                assert lifecycle.get_job(s, m.id).status in TERMINAL, m.name
                status_events = [
                    e.data["status"] for e in queries.list_events(s, m.id) if e.type == "status"
                ]
                assert status_events[-1] == m.status, m.name


SETTINGS = settings(
    max_examples=50,
    stateful_step_count=30,
    deadline=None,
    derandomize=True,
    database=None,  # nothing written under .hypothesis/
    phases=[Phase.explicit, Phase.generate, Phase.shrink],  # no slow "explain" phase
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


def test_job_state_machine(backend: Any) -> None:
    """Runs inside a test taking the session-scoped `backend`: hypothesis runs many examples
    per test, so each empties the tables itself (JobMachine.__init__), not a fixture."""
    try:
        run_state_machine_as_test(JobMachine, settings=SETTINGS)
    finally:
        truncate()
