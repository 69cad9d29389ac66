"""A sweep's pruner stopping a job (service/jobs/lifecycle.py prune): a running job goes
through cancelling and ends "pruned" however its worker ends it (finish, a shutdown's
release, a lost lease), a queued one is pruned at once, an ended one is left as it is; a
user's cancel still ends "cancelled"."""

from collections.abc import Callable
from datetime import timedelta

import pytest
from sqlalchemy import update

from service.db.sessions import session_scope
from service.db.tables import Job, utcnow
from service.errors import Conflict
from service.jobs import lifecycle, queries

WHY = "val_acc 0.1000 at epoch 1 is not among the best at this rung (asha)"


def status_events(job_id: str) -> list[tuple[str, str]]:
    with session_scope() as s:
        found = queries.list_events(s, job_id, limit=1000)
        return [(e.data["status"], e.message) for e in found if e.type == "status"]


def job(job_id: str) -> Job:
    with session_scope() as s:
        return lifecycle.get_job(s, job_id)


def test_a_running_job_stops_at_its_workers_next_write_and_ends_pruned(job_in: Callable) -> None:
    job_id = job_in("running")
    with session_scope() as s:
        assert lifecycle.prune(s, job_id, WHY)
    with session_scope() as s:  # the worker's next beat reads that it must stop
        assert lifecycle.heartbeat(s, job_id, "w1", lease_s=60) == "cancelling"
    with session_scope() as s:
        assert lifecycle.finish(s, job_id, "w1", result={"val_acc": 0.1}) == "pruned"
    ended = job(job_id)
    assert (ended.status, ended.result, ended.error) == ("pruned", None, None)
    assert ended.finished_at is not None and ended.lease_until is None
    assert status_events(job_id)[-2:] == [
        ("cancelling", f"pruned: {WHY}"),
        ("pruned", "job pruned"),
    ]


def test_a_queued_job_is_pruned_at_once_and_an_ended_one_is_left(job_in: Callable) -> None:
    queued, done = job_in("queued"), job_in("succeeded")
    with session_scope() as s:
        assert lifecycle.prune(s, queued, WHY)
        assert not lifecycle.prune(s, done, WHY)
    assert (job(queued).status, job(done).status) == ("pruned", "succeeded")
    assert status_events(queued)[-1] == ("pruned", f"job pruned: {WHY}")
    with session_scope() as s, pytest.raises(Conflict):
        lifecycle.cancel(s, queued)


def test_a_pruned_job_given_back_or_lost_still_ends_pruned(job_in: Callable) -> None:
    released, lost = job_in("running"), job_in("running")
    with session_scope() as s:
        assert lifecycle.prune(s, released, WHY) and lifecycle.prune(s, lost, WHY)
    with session_scope() as s:  # its worker shutting down gives it back
        assert lifecycle.release(s, released, "w1") == "pruned"
    with session_scope() as s:  # its worker lost: the lease runs out
        past = utcnow() - timedelta(seconds=1)
        s.execute(update(Job).where(Job.id == lost).values(lease_until=past))
    with session_scope() as s:
        assert lifecycle.watchdog(s) == []  # not requeued
    assert (job(released).status, job(lost).status) == ("pruned", "pruned")
    assert status_events(lost)[-1] == ("pruned", "worker lost while stopping")


def test_a_cancel_ends_cancelled_and_says_why(job_in: Callable) -> None:
    job_id = job_in("running")
    with session_scope() as s:
        lifecycle.cancel(s, job_id, reason="its sweep swp_x was cancelled")
    with session_scope() as s:
        assert lifecycle.finish(s, job_id, "w1") == "cancelled"
    assert status_events(job_id)[-2:] == [
        ("cancelling", "cancel requested (its sweep swp_x was cancelled)"),
        ("cancelled", "job cancelled"),
    ]
