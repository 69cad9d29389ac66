"""Webhooks through HTTP, on both backends: registered over the API, sent by the sender's
own pass to a real receiver on 127.0.0.1, signatures checked by the `standardwebhooks`
package (an implementation independent of service/jobs/webhooks.py). Failing, slow and down
receivers are retried on the schedule and never hold up others or the job; a project gets
its own jobs' events only; two senders at once send a delivery once.
(tests/e2e/test_webhooks.py: a real job through a real worker, sent by uvicorn's lifespan.)"""

import asyncio
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import delete, func, select
from standardwebhooks import Webhook as Verifier
from standardwebhooks import WebhookVerificationError

from service import keys
from service.app import create_app
from service.config import Settings
from service.db import tables
from service.db.sessions import session_scope
from service.db.tables import Webhook, WebhookDelivery, WebhookEvent, utcnow
from service.jobs import lifecycle, webhook_sender, webhooks
from tests.e2e.conftest import free_port
from tests.service.helpers import fields, problem

RETRY_S = [30.0, 60.0]  # the test app's waits between attempts, on the tests' Clock
TERMINAL_EVENTS = ["job.succeeded", "job.failed", "job.cancelled"]


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes

    def verified(self, secret: str) -> dict[str, Any]:
        """The payload, once its signature checks out with `secret`."""
        return dict(Verifier(secret).verify(self.body, self.headers))


@dataclass
class Receiver:
    """An HTTP server on 127.0.0.1 that records what it is POSTed and answers each request
    with the next of `codes` (200 once they run out), after `delay_s`."""

    codes: list[int] = field(default_factory=list)
    delay_s: float = 0.0
    got: list[Received] = field(default_factory=list)

    def __post_init__(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers["content-length"]))
                receiver.got.append(Received({k.lower(): v for k, v in self.headers.items()}, body))
                time.sleep(receiver.delay_s)
                code = receiver.codes.pop(0) if receiver.codes else 200
                self.send_response(code)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        ThreadingHTTPServer.request_queue_size = 64  # senders connect many at once
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.handle_error = lambda *_: None  # type: ignore[method-assign] # hung up on
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks/distillery"

    def payloads(self, secret: str) -> list[dict[str, Any]]:
        return [r.verified(secret) for r in self.got]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receivers() -> Iterator[Callable[..., Receiver]]:
    made: list[Receiver] = []

    def make(**kwargs: Any) -> Receiver:
        made.append(Receiver(**kwargs))
        return made[-1]

    yield make
    for r in made:
        r.close()


def no_webhooks() -> None:
    """truncate() (tests/conftest.py) keeps webhooks: each test here starts and ends without."""
    with session_scope() as s:
        s.execute(delete(WebhookDelivery))
        s.execute(delete(WebhookEvent))
        s.execute(delete(Webhook))


@pytest.fixture
def settings(clean_db: Any) -> Iterator[Settings]:
    """The test app's: its own sender off (the tests run passes), short retries, no cap per
    webhook below the pass's (the tests of fairness set their own)."""
    no_webhooks()
    yield Settings(
        watchdog_s=0,
        webhook_s=0,
        webhook_endpoint_concurrency=8,
        webhook_retry_s=RETRY_S,
        webhook_max_attempts=3,
        webhook_timeout_s=1.0,
    )
    no_webhooks()


@pytest.fixture
def api(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as c:
        yield c


class Clock:
    """The sender's clock: real time plus the waits a test lets pass, so a retry falls due
    when the test says, never when a slow or fast machine happens to look."""

    def __init__(self) -> None:
        self.passed = timedelta()

    def __call__(self) -> datetime:
        return utcnow() + self.passed

    def wait(self, seconds: float) -> None:
        self.passed += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> Clock:
    return Clock()


def send(settings: Settings, clock: Callable[[], datetime] = utcnow) -> int:
    """One pass of the sender; returns how many deliveries it sent."""
    return asyncio.run(webhook_sender.send_once(settings, clock))


def register(
    api: TestClient, url: str, headers: dict[str, str] | None = None, **body: Any
) -> dict[str, Any]:
    r = api.post("/v1/webhooks", json={"url": url, **body}, headers=headers)
    assert r.status_code == 201, r.text
    return dict(r.json())


def deliveries(api: TestClient, hook: dict[str, Any], **headers: str) -> list[dict[str, Any]]:
    r = api.get(f"/v1/webhooks/{hook['id']}/deliveries", headers=headers)
    assert r.status_code == 200, r.text
    return list(r.json()["data"])


def count(table: type) -> int:
    with session_scope() as s:
        return s.scalar(select(func.count()).select_from(table)) or 0


def test_the_event_names_are_the_terminal_states_and_epochs() -> None:
    assert set(webhooks.EVENTS) == {f"job.{s}" for s in tables.TERMINAL} | {"job.epoch"}


def test_terminal_jobs_are_posted_signed_as_standard_webhooks(api, settings, receivers, job_in):
    receiver = receivers()
    hook = register(api, receiver.url)
    secret = hook.pop("secret")
    assert secret.startswith("whsec_") and len(secret) > 40
    assert hook["events"] == TERMINAL_EVENTS
    shown = api.get(f"/v1/webhooks/{hook['id']}").json()
    assert shown == hook and "secret" not in json.dumps(api.get("/v1/webhooks").json())
    made = {status: job_in(status) for status in ("succeeded", "failed", "cancelled")}
    job_in("running")  # not terminal: nothing to send
    assert send(settings) == 3 and send(settings) == 0

    by_type = {p["type"]: p for p in receiver.payloads(secret)}
    assert set(by_type) == set(TERMINAL_EVENTS) and len(receiver.got) == 3
    for status, job_id in made.items():
        data = by_type[f"job.{status}"]["data"]
        assert (data["id"], data["status"], data["object"]) == (job_id, status, "job")
        assert data == {**data, "name": "digits-teacher", "method": "supervised"}
    assert by_type["job.succeeded"]["data"]["result"] == {"val_acc": 0.9}
    assert by_type["job.failed"]["data"]["error"]["code"] == "boom"
    for got in receiver.got:
        assert got.headers["content-type"] == "application/json"
        assert got.headers["webhook-id"].startswith("msg_")
        with pytest.raises(WebhookVerificationError):  # another secret's signature differs
            got.verified(webhooks.new_secret())
        tampered = Received(got.headers, got.body.replace(b"digits", b"digitz"))
        with pytest.raises(WebhookVerificationError):
            tampered.verified(secret)

    listed = deliveries(api, hook)
    assert {d["id"] for d in listed} == {g.headers["webhook-id"] for g in receiver.got}
    for d in listed:
        assert (d["status"], d["attempts"], d["last_status_code"]) == ("succeeded", 1, 200)
        assert d["delivered_at"] and d["last_error"] is None and d["webhook_id"] == hook["id"]
        assert d["payload"] == by_type[d["event"]]


def test_epochs_are_sent_only_to_webhooks_that_subscribed(api, settings, receivers, job_in):
    epochs, ends = receivers(), receivers()
    epoch_hook = register(api, epochs.url, events=["job.epoch"])
    ends_hook = register(api, ends.url)
    job_id = job_in("running")
    with session_scope() as s:
        for epoch in (1, 2):
            assert lifecycle.record_epoch(s, job_id, "w1", {"epoch": epoch, "val_acc": epoch / 4})
        lifecycle.finish(s, job_id, "w1", result={"val_acc": 0.5})
    assert send(settings) == 3
    sent = epochs.payloads(epoch_hook["secret"])
    assert [p["type"] for p in sent] == ["job.epoch"] * 2
    assert sorted(p["data"]["epoch"]["epoch"] for p in sent) == [1, 2]
    assert {p["data"]["epoch"]["val_acc"] for p in sent} == {0.25, 0.5}
    [end] = ends.payloads(ends_hook["secret"])
    assert (end["type"], end["data"]["id"], end["data"]["status"]) == (
        "job.succeeded",
        job_id,
        "succeeded",
    )


def test_a_pruned_trial_is_sent_only_to_webhooks_that_asked(api, settings, receivers, job_in):
    pruned, ends = receivers(), receivers()
    pruned_hook = register(api, pruned.url, events=["job.pruned"])
    register(api, ends.url)  # the default events: a sweep's pruned trials are not among them
    job_id = job_in("running")
    with session_scope() as s:
        assert lifecycle.prune(s, job_id, "a test")
    with session_scope() as s:
        assert lifecycle.finish(s, job_id, "w1") == "pruned"
    assert send(settings) == 1
    [got] = pruned.payloads(pruned_hook["secret"])
    assert (got["type"], got["data"]["id"], got["data"]["status"]) == (
        "job.pruned",
        job_id,
        "pruned",
    )
    assert ends.got == []


def test_a_failing_receiver_is_retried_on_the_schedule(api, settings, receivers, job_in, clock):
    receiver = receivers(codes=[500, 503])
    hook = register(api, receiver.url)
    job_in("succeeded")
    assert send(settings, clock) == 1
    [d] = deliveries(api, hook)
    assert (d["status"], d["attempts"], d["last_status_code"]) == ("pending", 1, 500)
    assert d["last_error"] == "HTTP 500"
    clock.wait(min(RETRY_S) / 2)
    assert send(settings, clock) == 0  # not due before its wait is over
    for wait, code in zip(RETRY_S, (503, 200), strict=True):
        clock.wait(wait)
        assert send(settings, clock) == 1
        [d] = deliveries(api, hook)
        assert (d["attempts"], d["last_status_code"]) == (len(receiver.got), code)
    assert (d["status"], d["last_error"], d["next_attempt_at"]) == ("succeeded", None, None)
    # one message: the same webhook-id on every attempt, each signed afresh
    assert {g.headers["webhook-id"] for g in receiver.got} == {d["id"]}
    assert len(receiver.payloads(hook["secret"])) == 3


def test_down_and_slow_receivers_fail_alone_and_leave_the_job_be(
    api, settings, receivers, job_in, clock
):
    down = f"http://127.0.0.1:{free_port()}/nobody-listens"
    slow, fine = receivers(delay_s=3.0), receivers()
    hooks = [register(api, url) for url in (down, slow.url, fine.url)]
    job_id = job_in("succeeded")
    assert send(settings, clock) == 3  # the slow one is cut at the timeout (its error says)
    [fine_d] = deliveries(api, hooks[2])
    assert (fine_d["status"], fine_d["attempts"]) == ("succeeded", 1)
    for _ in range(settings.webhook_max_attempts - 1):
        clock.wait(max(RETRY_S))
        assert send(settings, clock) == 2
    for hook, error in zip(hooks[:2], ("ConnectError", "no answer within 1 s"), strict=True):
        [d] = deliveries(api, hook)
        assert (d["status"], d["attempts"]) == ("failed", settings.webhook_max_attempts)
        assert d["last_status_code"] is None and d["last_error"].startswith(error), d
        assert d["next_attempt_at"] is None
    clock.wait(max(RETRY_S))
    assert send(settings, clock) == 0  # failed: no more attempts
    assert len(fine.got) == 1
    assert api.get(f"/v1/jobs/{job_id}").json()["status"] == "succeeded"


def project_key(label: str) -> tuple[str, dict[str, str]]:
    """A new project's id and the headers of its key."""
    with session_scope() as s:
        row, key = keys.create_key(s, f"{label}-{uuid.uuid4().hex[:8]}", f"{label}-key")
        return row.project_id, {"Authorization": f"Bearer {key}"}


def test_a_failed_delivery_is_sent_again_on_request(api, settings, receivers, job_in, clock):
    receiver = receivers(codes=[500] * settings.webhook_max_attempts)
    hook, other = register(api, receiver.url), register(api, receiver.url, events=["job.epoch"])
    job_in("failed")
    [d] = deliveries(api, hook)
    retry = f"/v1/webhooks/{hook['id']}/deliveries/{d['id']}/retry"
    assert problem(api.post(retry), 409)["code"] == "delivery_pending"
    for wait in [0, *RETRY_S]:
        clock.wait(wait)
        assert send(settings, clock) == 1
    [d] = deliveries(api, hook)
    assert (d["status"], d["attempts"], d["last_status_code"]) == ("failed", 3, 500)
    problem(api.post(f"/v1/webhooks/{other['id']}/deliveries/{d['id']}/retry"), 404)
    r = api.post(retry)
    assert r.status_code == 202, r.text
    assert (r.json()["status"], r.json()["attempts"]) == ("pending", 3)
    assert send(settings, clock) == 1  # due at once; the receiver is well again
    [d] = deliveries(api, hook)
    assert (d["status"], d["attempts"], d["last_status_code"]) == ("succeeded", 4, 200)
    assert {g.headers["webhook-id"] for g in receiver.got} == {d["id"]}
    assert len(receiver.payloads(hook["secret"])) == 4


def test_a_project_gets_its_own_jobs_events_only(settings, receivers, new_job):
    projects = {name: project_key(name) for name in ("a", "b")}
    got = {name: receivers() for name in projects}
    with TestClient(create_app(settings.model_copy(update={"require_keys": True}))) as c:
        hooks = {n: register(c, got[n].url, headers=auth) for n, (_, auth) in projects.items()}
        made = {}
        for name, (project_id, _) in projects.items():
            made[name] = job_id = new_job()
            with session_scope() as s:
                lifecycle.get_job(s, job_id).project_id = project_id
            with session_scope() as s:  # as a worker runs it: outside any request
                lifecycle.claim(s, job_id, "w1", lease_s=60)
                lifecycle.finish(s, job_id, "w1", result={})
        assert send(settings) == 2
        for name, (_, auth) in projects.items():
            sent = got[name].payloads(hooks[name]["secret"])
            assert [p["data"]["id"] for p in sent] == [made[name]], name
            listed = deliveries(c, hooks[name], **auth)
            assert [d["job_id"] for d in listed] == [made[name]]
        b = projects["b"][1]
        problem(c.get(f"/v1/webhooks/{hooks['a']['id']}/deliveries", headers=b), 404)
        listed = c.get("/v1/webhooks", headers=b).json()["data"]
        assert [h["id"] for h in listed] == [hooks["b"]["id"]]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"url": "ftp://127.0.0.1/x"}, "url"),
        ({"url": "not a url"}, "url"),
        ({"url": "file:///etc/passwd"}, "url"),
        ({}, "url"),
        ({"url": "http://127.0.0.1/x", "events": []}, "events"),
        ({"url": "http://127.0.0.1/x", "events": ["job.queued"]}, "events.0"),
        ({"url": "http://127.0.0.1/x", "secret": "whsec_mine"}, "secret"),
    ],
)
def test_a_bad_registration_is_a_422_that_stores_nothing(api, body, field):
    before = count(Webhook)
    found = problem(api.post("/v1/webhooks", json=body), 422)
    assert fields(found) == [field], found
    assert count(Webhook) == before


def test_a_deleted_webhook_gets_nothing_more(api, settings, receivers, job_in):
    receiver = receivers()
    hook = register(api, receiver.url)
    job_in("succeeded")  # a delivery still to be sent
    assert api.delete(f"/v1/webhooks/{hook['id']}").status_code == 204
    problem(api.get(f"/v1/webhooks/{hook['id']}"), 404)
    problem(api.delete(f"/v1/webhooks/{hook['id']}"), 404)
    assert api.get("/v1/webhooks").json()["data"] == []
    job_in("failed")
    assert send(settings) == 0 and receiver.got == []
    with session_scope() as s:
        [d] = s.scalars(select(WebhookDelivery)).all()
        assert (d.status, d.last_error) == ("failed", "webhook deleted")


def test_webhooks_and_deliveries_are_listed_in_pages(api, settings, receivers, job_in):
    receiver = receivers()
    made = [register(api, receiver.url)["id"] for _ in range(3)]
    seen, cursor = [], None
    while True:
        page = api.get("/v1/webhooks", params={"limit": 2, "cursor": cursor}).json()
        seen += [h["id"] for h in page["data"]]
        if not (cursor := page["next_cursor"]):
            break
    assert seen == made[::-1]
    for _ in range(3):
        job_in("succeeded")
    first = api.get(f"/v1/webhooks/{made[0]}/deliveries", params={"limit": 2}).json()
    rest = api.get(
        f"/v1/webhooks/{made[0]}/deliveries", params={"cursor": first["next_cursor"]}
    ).json()
    assert len(first["data"]) == 2 and len(rest["data"]) == 1 and rest["next_cursor"] is None
    problem(api.get("/v1/webhooks", params={"cursor": "nonsense"}), 422)


def test_two_senders_at_once_send_each_delivery_once(api, settings, receivers, job_in):
    receiver = receivers()
    hook = register(api, receiver.url)
    for _ in range(6):
        register(api, receiver.url)  # 7 webhooks x 3 jobs: 21 deliveries
    for status in ("succeeded", "failed", "cancelled"):
        job_in(status)
    wide = settings.model_copy(
        update={"webhook_concurrency": 50, "webhook_endpoint_concurrency": 50}
    )
    start = threading.Barrier(2)
    sent: list[int] = []

    def sender() -> None:
        start.wait()
        sent.append(send(wide))

    threads = [threading.Thread(target=sender) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ids = [g.headers["webhook-id"] for g in receiver.got]
    assert sum(sent) == len(ids) == len(set(ids)) == 21, sent
    assert send(settings) == 0
    for d in deliveries(api, hook):
        assert (d["status"], d["attempts"]) == ("succeeded", 1)
