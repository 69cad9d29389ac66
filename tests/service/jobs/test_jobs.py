"""The job state machine in service/jobs/lifecycle.py, against a real database."""

import copy
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from service.db.sessions import _factory, session_scope
from service.db.tables import Job, JobEvent, utcnow
from service.errors import Conflict, InvalidCursor, JobError
from service.jobs import admission, lifecycle, queries
from service.spec.job import JobSpec
from tests.service.conftest import SUPERVISED


def load(job_id: str) -> Job:
    with session_scope() as s:
        return lifecycle.get_job(s, job_id)


def events(job_id: str) -> list[JobEvent]:
    with session_scope() as s:
        return queries.list_events(s, job_id, limit=1000)


def expire_lease(job_id: str) -> None:
    with session_scope() as s:
        s.execute(
            update(Job).where(Job.id == job_id).values(lease_until=utcnow() - timedelta(seconds=5))
        )


def watchdog() -> list[str]:
    with session_scope() as s:
        return [j.id for j in lifecycle.watchdog(s)]


# Transitions of one job: each test runs in one transaction, rolled back at its end.


@pytest.fixture
def db(backend: Any) -> Iterator[Session]:
    """One session for the whole test, never committed: nothing is left to clean up."""
    with _factory()() as s:
        try:
            yield s
        finally:
            s.rollback()


def queued(db: Session, **overrides: Any) -> str:
    spec = JobSpec.model_validate(copy.deepcopy(SUPERVISED) | overrides)
    job, _ = admission.submit(db, spec, idempotency_key=None, request_hash="")
    return job.id


def driven(db: Session, status: str, **overrides: Any) -> str:
    """A job driven through the state machine to `status` (owner "w1")."""
    job_id = queued(db, **overrides)
    if status == "cancelled":
        lifecycle.cancel(db, job_id)
    elif status != "queued":
        assert lifecycle.claim(db, job_id, "w1", lease_s=60) is not None
    if status == "cancelling":
        lifecycle.cancel(db, job_id)
    elif status in ("succeeded", "failed"):
        error = JobError("boom", "x") if status == "failed" else None
        lifecycle.finish(db, job_id, "w1", result={"val_acc": 0.9}, error=error)
    assert state(db, job_id).status == status
    return job_id


def state(db: Session, job_id: str) -> Job:
    """The row as the database has it now (conditional UPDATEs bypass the session)."""
    q = select(Job).where(Job.id == job_id).execution_options(populate_existing=True)
    return db.execute(q).scalar_one()


def events_of(db: Session, job_id: str) -> list[JobEvent]:
    return queries.list_events(db, job_id, limit=1000)


def test_create_is_queued_with_a_status_event(db):
    job_id = queued(db)
    job = state(db, job_id)
    assert (job.status, job.attempt, job.owner) == ("queued", 0, None)
    assert job.spec["student"] == {
        "arch": "resnet8",
        "num_classes": 10,
        "in_channels": 1,
        "init": None,
    }
    [event] = events_of(db, job_id)
    assert (event.type, event.data["status"]) == ("status", "queued")


def test_claim_starts_the_job(db):
    job_id = queued(db)
    assert lifecycle.claim(db, job_id, "w1", lease_s=60) is not None
    job = state(db, job_id)
    assert (job.status, job.owner, job.attempt) == ("running", "w1", 1)
    assert job.started_at is not None
    assert job.lease_until > utcnow() + timedelta(seconds=50)
    assert events_of(db, job_id)[-1].data == {"status": "running", "attempt": 1, "owner": "w1"}


def test_second_claim_gets_nothing(db):
    job_id = queued(db)
    assert lifecycle.claim(db, job_id, "w1", lease_s=60) is not None
    assert lifecycle.claim(db, job_id, "w2", lease_s=60) is None
    job = state(db, job_id)
    assert (job.owner, job.attempt) == ("w1", 1)


@pytest.mark.parametrize("status", ["running", "cancelling", "succeeded", "failed", "cancelled"])
def test_claim_of_a_job_not_queued_gets_nothing(db, status):
    job_id = driven(db, status)
    assert lifecycle.claim(db, job_id, "w2", lease_s=60) is None
    assert state(db, job_id).status == status


def test_heartbeat_by_the_owner_extends_the_lease(db):
    job_id = driven(db, "running")
    before = state(db, job_id).lease_until
    assert lifecycle.heartbeat(db, job_id, "w1", lease_s=600, progress={"step": 7}) == "running"
    job = state(db, job_id)
    assert job.lease_until > before + timedelta(seconds=500)
    assert job.progress == {"step": 7}


def test_heartbeat_reports_a_cancel_request(db):
    job_id = driven(db, "cancelling")
    assert lifecycle.heartbeat(db, job_id, "w1", lease_s=60) == "cancelling"


def test_heartbeat_by_another_owner_changes_nothing(db):
    job_id = driven(db, "running")
    before = state(db, job_id).lease_until
    assert lifecycle.heartbeat(db, job_id, "w2", lease_s=600) is None
    assert state(db, job_id).lease_until == before


def test_heartbeat_after_finish_is_refused(db):
    job_id = driven(db, "succeeded")
    assert lifecycle.heartbeat(db, job_id, "w1", lease_s=60) is None


def test_record_epoch_stores_metrics_and_an_event(db):
    job_id = driven(db, "running")
    metrics = {"epoch": 1, "val_acc": 0.5}
    assert lifecycle.record_epoch(db, job_id, "w1", metrics)
    assert state(db, job_id).metrics == metrics
    event = events_of(db, job_id)[-1]
    assert (event.type, event.data) == ("metrics", metrics)


def test_record_epoch_by_another_owner_is_refused(db):
    job_id = driven(db, "running")
    n = len(events_of(db, job_id))
    assert not lifecycle.record_epoch(db, job_id, "w2", {"epoch": 1})
    assert state(db, job_id).metrics == {}
    assert len(events_of(db, job_id)) == n


def test_finish_succeeds_with_a_result(db):
    job_id = driven(db, "running")
    assert lifecycle.finish(db, job_id, "w1", result={"val_acc": 0.97}) == "succeeded"
    job = state(db, job_id)
    assert (job.status, job.result, job.error) == ("succeeded", {"val_acc": 0.97}, None)
    assert job.finished_at is not None and job.lease_until is None
    assert events_of(db, job_id)[-1].data["status"] == "succeeded"


def test_finish_with_an_error_fails(db):
    job_id = driven(db, "running")
    error = JobError("nan_loss", "loss is NaN")
    assert lifecycle.finish(db, job_id, "w1", error=error) == "failed"
    job = state(db, job_id)
    assert (job.status, job.error) == (
        "failed",
        {"code": "nan_loss", "message": "loss is NaN", "retryable": False},
    )


def test_finish_while_cancelling_cancels(db):
    job_id = driven(db, "cancelling")
    assert lifecycle.finish(db, job_id, "w1", result={"val_acc": 0.9}) == "cancelled"
    job = state(db, job_id)
    assert (job.status, job.result) == ("cancelled", None)


def test_finish_by_another_owner_changes_nothing(db):
    job_id = driven(db, "running")
    n = len(events_of(db, job_id))
    assert lifecycle.finish(db, job_id, "w2", result={}) is None
    assert state(db, job_id).status == "running"
    assert len(events_of(db, job_id)) == n


def test_finish_twice_is_refused(db):
    job_id = driven(db, "succeeded")
    assert lifecycle.finish(db, job_id, "w1", error=JobError("late", "too late")) is None
    assert state(db, job_id).error is None


def test_cancel_queued_is_immediate(db):
    job_id = driven(db, "queued")
    assert lifecycle.cancel(db, job_id).status == "cancelled"
    assert state(db, job_id).finished_at is not None


def test_cancel_running_asks_the_worker(db):
    job_id = driven(db, "running")
    assert lifecycle.cancel(db, job_id).status == "cancelling"
    assert lifecycle.cancel(db, job_id).status == "cancelling"
    requests = [e for e in events_of(db, job_id) if e.data.get("status") == "cancelling"]
    assert len(requests) == 1


def test_cancel_cancelled_is_fine(db):
    job_id = driven(db, "cancelled")
    assert lifecycle.cancel(db, job_id).status == "cancelled"


@pytest.mark.parametrize("status", ["succeeded", "failed"])
def test_cancel_finished_conflicts(db, status):
    job_id = driven(db, status)
    with pytest.raises(Conflict) as info:
        lifecycle.cancel(db, job_id)
    assert (info.value.status, info.value.code) == (409, "job_finished")
    assert state(db, job_id).status == status


# Watchdog, lists and concurrency: separate units of work, committed, on emptied tables.


def test_watchdog_requeues_an_expired_lease(job_in):
    job_id = job_in("running")
    expire_lease(job_id)
    assert watchdog() == [job_id]
    job = load(job_id)
    assert (job.status, job.owner, job.lease_until, job.attempt) == ("queued", None, None, 1)
    assert events(job_id)[-1].data == {"status": "queued", "attempt": 1}
    with session_scope() as s:
        assert lifecycle.claim(s, job_id, "w2", lease_s=60).attempt == 2


def test_watchdog_leaves_live_leases_alone(job_in):
    job_id = job_in("running")
    assert watchdog() == []
    assert load(job_id).status == "running"


def test_watchdog_fails_a_job_out_of_attempts(job_in):
    job_id = job_in("running", resources={"max_attempts": 1})
    expire_lease(job_id)
    assert watchdog() == []
    job = load(job_id)
    assert job.status == "failed"
    assert job.error["code"] == "attempts_exhausted"
    assert job.finished_at is not None


def test_watchdog_ends_a_lost_cancelling_job(job_in):
    job_id = job_in("cancelling")
    expire_lease(job_id)
    assert watchdog() == []
    assert load(job_id).status == "cancelled"


def test_watchdog_twice_changes_nothing_more(job_in):
    last_try = {"max_attempts": 1}
    ids = [job_in("running"), job_in("cancelling"), job_in("running", resources=last_try)]
    for job_id in ids:
        expire_lease(job_id)
    assert watchdog() == [ids[0]]
    before = [(load(i).status, len(events(i))) for i in ids]
    assert watchdog() == []
    assert [(load(i).status, len(events(i))) for i in ids] == before


def age(job_id: str, seconds: float) -> None:
    """The job entered its queue (submitted or requeued) this long ago."""
    with session_scope() as s:
        at = utcnow() - timedelta(seconds=seconds)
        s.execute(update(Job).where(Job.id == job_id).values(created_at=at, updated_at=at))


def test_claims_take_a_queues_jobs_oldest_first(new_job):
    ids = [new_job(resources={"queue": "q1"}) for _ in range(4)]
    elsewhere = new_job(resources={"queue": "q2"})
    for n, job_id in enumerate(ids):  # submitted in this order, a minute apart
        age(job_id, 60 * (len(ids) - n))
    with session_scope() as s:
        lifecycle.cancel(s, ids[1])
    claimed = []
    for owner in ("w1", "w2", "w3", "w4"):
        with session_scope() as s:
            job = lifecycle.claim_next(s, "q1", owner, lease_s=60)
            claimed.append(job and job.id)
    assert claimed == [ids[0], ids[2], ids[3], None]
    assert load(elsewhere).status == "queued"


def test_a_requeued_job_goes_before_later_ones(job_in, new_job):
    first = job_in("running", resources={"queue": "q1"})
    age(first, 60)
    later = new_job(resources={"queue": "q1"})
    expire_lease(first)
    assert watchdog() == [first]
    with session_scope() as s:
        assert lifecycle.claim_next(s, "q1", "w2", lease_s=60).id == first
    with session_scope() as s:
        assert lifecycle.claim_next(s, "q1", "w3", lease_s=60).id == later


def test_a_released_job_goes_back_to_its_queue_with_its_attempt(job_in):
    job_id = job_in("running")
    with session_scope() as s:
        assert lifecycle.release(s, job_id, "someone else") is None
        assert lifecycle.release(s, job_id, "w1") == "queued"
    job = load(job_id)
    assert (job.status, job.owner, job.lease_until, job.attempt) == ("queued", None, None, 0)
    assert events(job_id)[-1].data == {"status": "queued", "preempted": True}
    with session_scope() as s:
        assert lifecycle.release(s, job_id, "w1") is None  # once
        assert lifecycle.claim(s, job_id, "w2", lease_s=60).attempt == 1


def test_a_released_cancelling_job_ends_cancelled(job_in):
    job_id = job_in("cancelling")
    with session_scope() as s:
        assert lifecycle.release(s, job_id, "w1") == "cancelled"
    assert load(job_id).status == "cancelled"


def test_two_workers_claiming_at_once_take_two_jobs(new_job):
    ids = {new_job(resources={"queue": "q1"}) for _ in range(2)}

    def claim():
        with session_scope() as s:
            job = lifecycle.claim_next(s, "q1", threading.current_thread().name, lease_s=60)
            return job and job.id

    assert set(in_two_threads(claim)) == ids


def test_waiting_names_each_queues_oldest_job_once_it_has_waited(new_job):
    old, older = new_job(resources={"queue": "q1"}), new_job(resources={"queue": "q1"})
    age(old, 30)
    age(older, 60)
    fresh = new_job(resources={"queue": "q2"})
    with session_scope() as s:
        assert lifecycle.waiting(s, longer_than_s=10) == {"q1": older}
    age(fresh, 11)
    with session_scope() as s:
        assert lifecycle.waiting(s, longer_than_s=10) == {"q1": older, "q2": fresh}


def walk(status: str | None = None, limit: int = 2) -> list[str]:
    seen: list[str] = []
    cursor = None
    while True:
        with session_scope() as s:
            page, cursor = queries.list_jobs(s, status=status, limit=limit, cursor=cursor)
            seen += [j.id for j in page]
        if cursor is None:
            return seen


def spread_created_at(ids: list[str]) -> None:
    """One second apart, in order, so "newest first" does not hang on clock resolution."""
    start = utcnow() - timedelta(hours=1)
    with session_scope() as s:
        for i, job_id in enumerate(ids):
            s.execute(
                update(Job).where(Job.id == job_id).values(created_at=start + timedelta(seconds=i))
            )


def test_list_jobs_walks_every_job_once_newest_first(new_job):
    ids = [new_job() for _ in range(5)]
    spread_created_at(ids)
    assert walk() == ids[::-1]


def test_list_jobs_cursor_breaks_ties_on_created_at(new_job):
    ids = [new_job() for _ in range(5)]
    with session_scope() as s:
        s.execute(update(Job).values(created_at=utcnow()))
    assert walk(limit=2) == sorted(ids, reverse=True)


def test_list_jobs_filters_by_status(job_in):
    queued = [job_in("queued") for _ in range(3)]
    others = [job_in("cancelled"), job_in("running")]
    spread_created_at(queued + others)
    assert walk(status="queued") == queued[::-1]
    assert walk(status="succeeded") == []


@pytest.mark.parametrize("cursor", ["garbage", "bm90IGpzb24", "WzEsMl0", "WyJ4Il0", "é"])
def test_list_jobs_rejects_a_malformed_cursor(clean_db, cursor):
    with pytest.raises(InvalidCursor) as info, session_scope() as s:
        queries.list_jobs(s, cursor=cursor)
    assert info.value.status == 422
    assert [e.field for e in info.value.errors] == ["cursor"]


def in_two_threads(fn):
    """Run fn in two threads released together; returns both results."""
    barrier = threading.Barrier(2, timeout=10)

    def run():
        barrier.wait()
        return fn()

    with ThreadPoolExecutor(2) as pool:
        return [f.result() for f in [pool.submit(run), pool.submit(run)]]


def test_two_claims_at_once_give_the_job_to_one(new_job):
    job_id = new_job()

    def claim():
        with session_scope() as s:
            job = lifecycle.claim(s, job_id, threading.current_thread().name, lease_s=60)
            return job and job.owner

    owners = [o for o in in_two_threads(claim) if o]
    assert len(owners) == 1
    assert (load(job_id).owner, load(job_id).attempt) == (owners[0], 1)


def test_two_watchdogs_at_once_requeue_once(job_in, monkeypatch):
    job_id = job_in("running")
    expire_lease(job_id)
    both_read = threading.Barrier(2, timeout=10)
    expire = lifecycle._expire

    def expire_after_both_read(*args):
        both_read.wait()  # both passes have seen the expired lease before either acts
        return expire(*args)

    monkeypatch.setattr(lifecycle, "_expire", expire_after_both_read)
    results = in_two_threads(watchdog)
    assert sorted(results) == [[], [job_id]]
    requeued = [e for e in events(job_id) if e.data.get("status") == "queued"]
    assert len(requeued) == 2  # one at creation, one from the watchdog
