"""Job ids reach the real broker (kombu SQLite transport or Redis), only after a commit."""

import logging
import uuid
from datetime import timedelta
from queue import Empty

import pytest
from celery import Celery
from sqlalchemy import update

from service import dispatch
from service.config import Settings
from service.db.sessions import session_scope
from service.db.tables import Job, utcnow
from service.ingest import checks
from service.jobs.watchdog import run_watchdog
from tests.service.helpers import validating, waited_model


@pytest.fixture
def queue(clean_db) -> str:
    """A queue of this test's own, so no worker elsewhere takes its messages."""
    return f"t-{uuid.uuid4().hex[:12]}"


def receive(queue: str, n: int, task: str = dispatch.RUN_JOB_TASK) -> list[str]:
    """The ids of the next n messages on the queue, which must then be empty."""
    key = "job_id" if task == dispatch.RUN_JOB_TASK else "model_id"
    ids = []
    with dispatch.producer().connection_for_read() as conn, conn.SimpleQueue(queue) as q:
        for _ in range(n):
            msg = q.get(timeout=5)
            msg.ack()
            assert msg.headers["task"] == task
            ids.append(msg.payload[1][key])
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


def test_watchdog_pass_sends_requeued_jobs(job_in, queue):
    lost = job_in("running", resources={"queue": queue})
    with session_scope() as s:
        s.execute(
            update(Job).where(Job.id == lost).values(lease_until=utcnow() - timedelta(seconds=1))
        )
    assert run_watchdog(Settings()) == 1
    assert receive(queue, 1) == [lost]


def waited(job_id: str, seconds: float) -> None:
    with session_scope() as s:
        at = utcnow() - timedelta(seconds=seconds)
        s.execute(update(Job).where(Job.id == job_id).values(created_at=at, updated_at=at))


def test_a_queue_whose_message_was_lost_is_woken_once(job_in, queue):
    # queued without a message: as if a broker restart or a killed worker lost it
    job_ids = [job_in("queued", resources={"queue": queue}) for _ in range(2)]
    waited(job_ids[0], 60)
    waited(job_ids[1], 30)
    settings = Settings(wake_after_s=10)
    assert run_watchdog(settings) == 1
    assert run_watchdog(settings) == 0  # its message still waits in the broker
    assert receive(queue, 1) == [job_ids[0]]  # the oldest; a worker claims the oldest anyway
    assert run_watchdog(settings) == 1  # taken, yet the job still waits: woken again


def test_a_job_with_its_message_waiting_is_not_woken(client, spec_body, queue):
    spec_body["resources"] = {"queue": queue}
    waited(client.post("/v1/jobs", json=spec_body).json()["id"], 60)
    assert dispatch.waiting_messages(queue) == 1
    assert run_watchdog(Settings(wake_after_s=10)) == 0
    assert dispatch.waiting_messages(queue) == 1


def test_an_unreachable_broker_wakes_nothing_and_raises_nothing(job_in, queue, monkeypatch):
    waited(job_in("queued", resources={"queue": queue}), 60)
    monkeypatch.setattr(dispatch, "waiting_messages", broker_down)
    assert run_watchdog(Settings(wake_after_s=10)) == 0


def broker_down(queue: str) -> int:
    raise ConnectionError("broker away")


def test_a_model_check_whose_message_was_lost_is_sent_again(queue):
    # validating with no message: the broker was away at upload, or lost it
    settings = Settings(wake_after_s=10, check_queue=queue)
    fresh, lost = validating(0), validating(60)
    assert run_watchdog(settings) == 1
    assert run_watchdog(settings) == 0  # its message still waits in the broker
    assert receive(queue, 1, dispatch.CHECK_MODEL_TASK) == [lost]
    with session_scope() as s:  # a worker took it: held, it is not sent again
        assert checks.MODELS.claim(s, lost, lease_s=60) is not None
    assert run_watchdog(settings) == 0
    waited_model(fresh, 60)
    assert run_watchdog(settings) == 1
    assert receive(queue, 1, dispatch.CHECK_MODEL_TASK) == [fresh]


def test_a_broker_outage_is_logged_once_when_it_goes_and_once_when_it_is_back(
    job_in, queue, monkeypatch, caplog
):
    job_id = job_in("queued", resources={"queue": queue})
    waited(job_id, 60)
    monkeypatch.setattr(dispatch, "broker", dispatch.BrokerState())
    real, dead = dispatch.producer(), Celery("dead", broker="redis://127.0.0.1:1/0")
    monkeypatch.setattr(dispatch, "producer", lambda: dead)
    settings = Settings(wake_after_s=10)
    with caplog.at_level(logging.INFO, logger="service.dispatch"):
        for _ in range(3):
            assert run_watchdog(settings) == 0
        dispatch.send("job_lost", queue)  # a submit while it is away: the same outage
        monkeypatch.setattr(dispatch, "producer", lambda: real)
        assert run_watchdog(settings) == 1
        assert run_watchdog(settings) == 0
    lines = [(r.getMessage(), r.exc_info) for r in caplog.records]
    assert [m.split(" (")[0] for m, _ in lines] == [
        "broker unreachable",
        "broker reachable again",
    ]
    assert all(exc is None for _, exc in lines)  # a line, no traceback
    assert receive(queue, 1) == [job_id]  # woken once it was back
