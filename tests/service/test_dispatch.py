"""Job ids reach the real broker (kombu SQLite transport or Redis), only after a commit."""

import uuid
from datetime import timedelta
from queue import Empty

import pytest
from sqlalchemy import update

from service import dispatch
from service.app import run_watchdog
from service.config import Settings
from service.db import session_scope
from service.tables import Job, utcnow


@pytest.fixture
def queue(clean_db) -> str:
    """A queue of this test's own, so no worker elsewhere takes its messages."""
    return f"t-{uuid.uuid4().hex[:12]}"


def receive(queue: str, n: int) -> list[str]:
    """The job ids of the next n messages on the queue, which must then be empty."""
    ids = []
    with dispatch.producer().connection_for_read() as conn, conn.SimpleQueue(queue) as q:
        for _ in range(n):
            msg = q.get(timeout=5)
            msg.ack()
            assert msg.headers["task"] == dispatch.RUN_JOB_TASK
            ids.append(msg.payload[1]["job_id"])
        with pytest.raises(Empty):
            q.get_nowait()
    return ids


def test_post_sends_the_job_id(client, spec_body, queue):
    spec_body["resources"] = {"queue": queue}
    job_id = client.post("/v1/jobs", json=spec_body).json()["id"]
    assert receive(queue, 1) == [job_id]


def test_idempotent_replay_sends_nothing_more(client, spec_body, queue):
    spec_body["resources"] = {"queue": queue}
    headers = {"Idempotency-Key": queue}
    ids = [client.post("/v1/jobs", json=spec_body, headers=headers).json()["id"] for _ in range(2)]
    assert receive(queue, 1) == ids[:1]


def test_nothing_is_sent_when_the_transaction_rolls_back(queue):
    with pytest.raises(RuntimeError), session_scope() as s:
        dispatch.send_after_commit(s, "job_rolled_back", queue)
        raise RuntimeError("abort")
    with session_scope() as s:
        dispatch.send_after_commit(s, "job_committed", queue)
    assert receive(queue, 1) == ["job_committed"]


def test_watchdog_pass_resends_requeued_and_stale_jobs(job_in, queue):
    lost = job_in("running", resources={"queue": queue})
    stale = job_in("queued", resources={"queue": queue})
    with session_scope() as s:
        s.execute(
            update(Job).where(Job.id == lost).values(lease_until=utcnow() - timedelta(seconds=1))
        )
        s.execute(
            update(Job).where(Job.id == stale).values(updated_at=utcnow() - timedelta(hours=1))
        )
    assert run_watchdog(Settings(redispatch_s=600)) == 2
    assert sorted(receive(queue, 2)) == sorted([lost, stale])
