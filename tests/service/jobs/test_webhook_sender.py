"""The sender's fairness and health, on both backends: turns across webhooks under a global
and a per-webhook cap; a black-holed receiver of one project leaves another project's
deliveries on time (the API's own sender, latencies as recorded); a webhook that keeps
failing is paused with an event, probed on an injected clock, and resumed by a probe that is
answered or on request."""

import asyncio
import socket
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from service.app import create_app
from service.config import Settings
from service.db.sessions import session_scope
from service.db.tables import Webhook, WebhookDelivery, utcnow
from service.jobs import lifecycle, webhook_sender
from service.jobs.webhook_sender import share
from tests.service.helpers import problem
from tests.service.jobs.test_webhooks import (
    Receiver,
    deliveries,
    no_webhooks,
    project_key,
    register,
)

LATENCY_BOUND_S = 5.0  # generous: a live receiver's event is first tried within this
DEAD_DELIVERIES, LIVE_EVENTS = 1000, 10


@dataclass
class Clock:
    """The sender's time, moved by the test."""

    now: datetime

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def settings(clean_db: Any) -> Iterator[Settings]:
    no_webhooks()
    yield Settings(
        watchdog_s=0,
        webhook_s=0,
        webhook_retry_s=[1.0],
        webhook_max_attempts=20,
        webhook_timeout_s=1.0,
    )
    no_webhooks()


@pytest.fixture
def api(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as c:
        yield c


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    made = Receiver()
    yield made
    made.close()


@pytest.fixture
def black_hole() -> Iterator[str]:
    """A URL whose host takes a connection into its backlog and never accepts or answers it;
    the next connections wait for a handshake that never comes."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(0)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}/hooks"
    sock.close()


def send(settings: Settings, clock: Callable[[], datetime] = utcnow) -> int:
    return asyncio.run(webhook_sender.send_once(settings, clock))


def hooks_of(received: list[Any]) -> list[str]:
    """The webhook of each delivery received, in the order received."""
    ids = [g.headers["webhook-id"] for g in received]
    with session_scope() as s:
        rows = dict(s.execute(select(WebhookDelivery.id, WebhookDelivery.webhook_id)).all())
    return [rows[i] for i in ids]


def test_share_gives_turns_round_after_round_and_failing_webhooks_their_share() -> None:
    a, b = Webhook(id="a", consecutive_failures=0), Webhook(id="b", consecutive_failures=0)
    c = Webhook(id="c", consecutive_failures=3)
    room = {"a": 5, "b": 1, "c": 5}
    assert share([a, b, c], room, free=6, failing_free=1) == {"a": 4, "b": 1, "c": 1}
    assert share([a, b, c], room, free=2, failing_free=1) == {"a": 1, "b": 1}
    assert share([c, a], room, free=3, failing_free=0) == {"a": 3}
    assert share([a], {"a": 0}, free=3, failing_free=3) == {}


def test_each_webhook_gets_a_turn_within_the_caps(api, settings, receiver, job_in):
    made = [register(api, receiver.url)["id"] for _ in range(5)]
    for status in ("succeeded", "failed", "cancelled"):
        job_in(status)  # 3 deliveries per webhook, 15 in all
    narrow = settings.model_copy(
        update={"webhook_concurrency": 4, "webhook_endpoint_concurrency": 2}
    )
    assert send(narrow) == 4
    first = hooks_of(receiver.got)
    assert len(set(first)) == 4  # one each, not four of the oldest webhook's
    assert send(narrow) == 4
    (left_out,) = set(made) - set(first)
    assert left_out in hooks_of(receiver.got[4:])  # served first on the next pass
    one_hook = settings.model_copy(update={"webhook_endpoint_concurrency": 2})
    assert send(one_hook) == 7  # 7 due: the caps of 2, not the 8 of the pass, hold them
    assert send(one_hook) == 0


def running_job(new_job: Callable[..., str], project_id: str) -> str:
    job_id = new_job()
    with session_scope() as s:
        lifecycle.get_job(s, job_id).project_id = project_id
    with session_scope() as s:
        lifecycle.claim(s, job_id, "w1", lease_s=600)
    return job_id


def record_epochs(job_id: str, epochs: range) -> None:
    with session_scope() as s:
        for epoch in epochs:
            assert lifecycle.record_epoch(s, job_id, "w1", {"epoch": epoch})


def wait_until(done: Callable[[], bool], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not done() and time.monotonic() < deadline:
        time.sleep(0.02)


def latencies(listed: list[dict[str, Any]]) -> list[float]:
    """Seconds from each delivery's event to its first attempt, as recorded."""
    times = [
        datetime.fromisoformat(d["first_attempt_at"]) - datetime.fromisoformat(d["created_at"])
        for d in listed
    ]
    return [t.total_seconds() for t in times]


def test_a_black_holed_webhook_does_not_hold_back_another_projects(settings, black_hole, new_job):
    """1,000 deliveries of one project to a receiver that never answers, made before any of
    another project's: FIFO over all deliveries would try every one of them (1 s each, 8 at a
    time) before the first live one. The live receiver's events are each tried at once."""
    keyed = settings.model_copy(
        update={
            "require_keys": True,
            "webhook_s": 0.05,  # the app's own sender, as in production
            "webhook_connect_timeout_s": 0.5,
            "webhook_pause_failures": 10**6,  # never paused here: fairness alone
        }
    )
    (dead_project, dead_auth), (live_project, live_auth) = project_key("dead"), project_key("live")
    receiver = Receiver()
    try:
        with TestClient(create_app(keyed)) as api:
            dead = register(api, black_hole, headers=dead_auth, events=["job.epoch"])
            live = register(api, receiver.url, headers=live_auth, events=["job.epoch"])
            dead_job, live_job = (
                running_job(new_job, dead_project),
                running_job(new_job, live_project),
            )
            record_epochs(dead_job, range(1, DEAD_DELIVERIES + 1))
            for epoch in range(1, LIVE_EVENTS + 1):
                record_epochs(live_job, range(epoch, epoch + 1))
                wait_until(lambda: len(receiver.got) >= epoch, timeout_s=60)  # noqa: B023

            def recorded() -> bool:  # the sender writes each answer after the receiver got it
                done = deliveries(api, live, **live_auth)
                return all(d["status"] != "pending" for d in done)

            wait_until(recorded, timeout_s=60)
            listed = deliveries(api, live, **live_auth)
    finally:
        receiver.close()
    assert len(listed) == LIVE_EVENTS
    assert {(d["status"], d["attempts"]) for d in listed} == {("succeeded", 1)}
    took = latencies(listed)
    print(
        f"live latency over {LIVE_EVENTS} events: min {min(took):.3f} s, "
        f"median {statistics.median(took):.3f} s, max {max(took):.3f} s"
    )
    assert max(took) < LATENCY_BOUND_S, took
    # the black hole was being tried all along, and most of its backlog is still waiting
    with session_scope() as s:
        dead_rows = s.scalars(
            select(WebhookDelivery).where(WebhookDelivery.webhook_id == dead["id"])
        ).all()
        tried = {d.last_error.split(" within")[0] for d in dead_rows if d.attempts}
        waiting = sum(d.status == "pending" for d in dead_rows)
    assert tried and tried <= {"no answer", "no connection"}, tried
    assert waiting > DEAD_DELIVERIES // 2


def events(api: TestClient, hook: dict[str, Any], **headers: str) -> list[dict[str, Any]]:
    r = api.get(f"/v1/webhooks/{hook['id']}/events", headers=headers)
    assert r.status_code == 200, r.text
    return list(r.json()["data"])


def shown(api: TestClient, hook: dict[str, Any]) -> dict[str, Any]:
    return dict(api.get(f"/v1/webhooks/{hook['id']}").json())


def test_a_webhook_that_keeps_failing_is_paused_probed_and_resumed(api, settings, job_in):
    """Paused after 3 failures in a row over at least 60 s (of the injected clock); then one
    probe every 30 s, the first unanswered, the second answered: resumed."""
    health = settings.model_copy(
        update={"webhook_pause_failures": 3, "webhook_pause_s": 60, "webhook_probe_s": 30}
    )
    receiver = Receiver(codes=[500] * 5)
    try:
        hook = register(api, receiver.url)
        job_in("succeeded")
        clock = Clock(utcnow())
        for _ in range(3):  # 3 in a row, but within 4 s: not paused yet
            assert send(health, clock) == 1
            clock.advance(2)
        assert (shown(api, hook)["state"], shown(api, hook)["consecutive_failures"]) == (
            "active",
            3,
        )
        clock.advance(60)
        assert send(health, clock) == 1
        paused = shown(api, hook)
        assert (paused["state"], paused["paused_at"]) == ("paused", clock.now.isoformat() + "Z")
        [event] = events(api, hook)
        assert event["type"] == "webhook.paused"
        assert event["message"].startswith("4 attempts in a row failed since")
        assert event["message"].endswith("the last: HTTP 500")
        listed = api.get("/v1/webhooks").json()["data"]
        assert [(h["id"], h["state"]) for h in listed] == [(hook["id"], "paused")]

        job_in("failed")  # a second delivery, due now: waits for the probe
        assert send(health, clock) == 0
        clock.advance(29)
        assert send(health, clock) == 0
        clock.advance(2)
        assert send(health, clock) == 1  # one probe, not both due deliveries
        assert shown(api, hook)["state"] == "paused" and len(events(api, hook)) == 1
        clock.advance(31)
        assert send(health, clock) == 1  # answered
        resumed = shown(api, hook)
        assert (resumed["state"], resumed["paused_at"], resumed["consecutive_failures"]) == (
            "active",
            None,
            0,
        )
        assert [(e["type"], e["message"]) for e in events(api, hook)] == [
            ("webhook.resumed", "a probe was answered"),
            ("webhook.paused", event["message"]),
        ]
        clock.advance(2)
        assert send(health, clock) == 1  # the other one, now the webhook is active again
        assert {d["status"] for d in deliveries(api, hook)} == {"succeeded"}
        assert len(receiver.got) == 7
    finally:
        receiver.close()


def test_a_paused_webhook_is_resumed_on_request(api, settings, job_in):
    health = settings.model_copy(update={"webhook_pause_failures": 1, "webhook_pause_s": 0})
    receiver = Receiver(codes=[500])
    try:
        hook = register(api, receiver.url)
        job_in("succeeded")
        clock = Clock(utcnow())
        assert send(health, clock) == 1
        assert shown(api, hook)["state"] == "paused"
        job_in("failed")
        clock.advance(2)
        assert send(health, clock) == 0  # paused: the probe is 60 s away
        resume = f"/v1/webhooks/{hook['id']}/resume"
        r = api.post(resume)
        assert r.status_code == 200, r.text
        assert (r.json()["state"], r.json()["consecutive_failures"]) == ("active", 0)
        assert [e["message"] for e in events(api, hook)][0] == "resumed on request"
        assert send(health, clock) == 2
        assert api.post(resume).status_code == 200  # already active: nothing changes
        assert len(events(api, hook)) == 2
        problem(api.post("/v1/webhooks/wh_missing/resume"), 404)
        problem(api.post(f"/v1/webhooks/{'x' * 65}/resume"), 422)
        _, other = project_key("other")
        problem(api.post(resume, headers=other), 404)
        problem(api.get(f"/v1/webhooks/{hook['id']}/events", headers=other), 404)
    finally:
        receiver.close()
