"""The client against a real API and worker: typed results for every route, errors with
their fields, retries after Retry-After, pages, the live stream resumed after a dropped
connection, downloads checked against their sha256."""

import http.server
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from sqlalchemy import update

from distillery_client import (
    ChecksumMismatch,
    Client,
    Conflict,
    InvalidRequest,
    NotFound,
    RateLimited,
    models,
)
from distillery_client import client as client_module
from distillery_client.transfer import sha256_of
from tests.e2e.conftest import Service

# one backend, the production shape: the client only speaks HTTP, which e2e covers on both
pytestmark = pytest.mark.parametrize("backend", ["postgres"], indirect=True)

IDLE = {  # a job in the default queue: nobody works it, it stays queued
    "method": {"name": "supervised"},
    "student": {"arch": "resnet8"},
    "data": {"dataset": "digits"},
    "train": {"epochs": 1},
}


def test_jobs_events_and_artifacts_are_typed(api: Client, trained: str) -> None:
    job = api.get_job(trained)
    assert isinstance(job, models.Job) and job.status == "succeeded" and job.done
    assert job.progress["epoch"] == 1 and "val_acc" in job.metrics
    assert trained in [j.id for j in api.list_jobs(status="succeeded").data]
    events = api.list_events(trained, limit=1000)
    assert isinstance(events, models.EventList) and events.next_after == events.data[-1].id
    assert [e.data["epoch"] for e in events.data if e.type == "metrics"] == [1]
    names = {a.name: a for a in api.list_artifacts(trained).data}
    assert {"student.safetensors", "model.json"} <= set(names)
    assert all(isinstance(a, models.Artifact) and len(a.sha256) == 64 for a in names.values())
    assert isinstance(api.list_checkpoints(trained), models.ArtifactList)
    assert api.healthz() == {"status": "ok"}
    assert api.readyz().status == "ok" and "distillery_jobs" in api.metrics()


def test_models_and_datasets_are_typed(api: Client, trained: str, tmp_path: Path) -> None:
    model = api.register_model(trained, "from-client")
    assert isinstance(model, models.Model) and model.source_job_id == trained
    assert model.id in [m.id for m in api.iter_models(page_size=1)]
    assert api.get_model(model.id) == model
    api.delete_model(model.id)
    with pytest.raises(NotFound):
        api.get_model(model.id)

    rng = np.random.default_rng(0)
    path = tmp_path / "tiny.npz"
    np.savez(path, images=rng.integers(0, 255, (40, 8, 8), np.uint8), labels=np.arange(40) % 4)
    seen: list[tuple[int, int]] = []
    dataset = api.upload_dataset(path, name="tiny", progress=lambda d, t: seen.append((d, t)))
    assert isinstance(dataset, models.Dataset) and dataset.num_classes == 4
    assert seen[-1] == (path.stat().st_size, path.stat().st_size)
    assert isinstance(dataset.splits["train"], models.Split)
    assert [d.id for d in api.iter_datasets()] == [dataset.id]
    assert api.get_dataset(dataset.id) == dataset
    api.delete_dataset(dataset.id)
    assert api.list_datasets().data == []


def test_webhooks_are_typed(api: Client) -> None:
    hook = api.create_webhook("http://127.0.0.1:9/hook")
    assert isinstance(hook, models.WebhookCreated) and hook.secret
    assert api.get_webhook(hook.id).url == hook.url
    assert hook.id in [h.id for h in api.iter_webhooks()]
    assert isinstance(api.list_deliveries(hook.id), models.DeliveryList)
    assert (hook.state, hook.paused_at, hook.consecutive_failures) == ("active", None, 0)
    assert api.resume_webhook(hook.id) == api.get_webhook(hook.id)  # active: stays so
    assert api.list_webhook_events(hook.id) == models.WebhookEventList(data=[], next_cursor=None)
    api.delete_webhook(hook.id)
    with pytest.raises(NotFound):
        api.get_webhook(hook.id)


def test_a_refused_spec_raises_with_its_fields_and_stores_nothing(api: Client) -> None:
    before = [j.id for j in api.iter_jobs()]
    with pytest.raises(InvalidRequest) as refused:
        api.create_job({**IDLE, "train": {"epochs": 0, "batch_size": "big"}})
    exc = refused.value
    assert exc.status == 422 and exc.code.startswith("invalid_") and exc.title and exc.detail
    assert {e.field for e in exc.errors} == {"train.epochs", "train.batch_size"}
    assert [j.id for j in api.iter_jobs()] == before
    with pytest.raises(NotFound) as missing:
        api.get_job("job_missing")
    assert missing.value.code == "not_found"


def test_pages_iterate_every_job_and_event(api: Client, trained: str) -> None:
    for _ in range(3):
        api.cancel_job(api.create_job(IDLE).id)
    every = [j.id for j in api.list_jobs(limit=200).data]
    assert len(every) >= 4 and [j.id for j in api.iter_jobs(page_size=1)] == every
    cancelled = [j.id for j in api.iter_jobs(status="cancelled", page_size=2)]
    assert len(cancelled) >= 3 and all(api.get_job(j).status == "cancelled" for j in cancelled)
    events = api.list_events(trained, limit=1000).data
    assert list(api.iter_events(trained, page_size=2)) == events
    assert list(api.iter_events(trained, after=events[1].id)) == events[2:]


def test_cancel_twice_is_safe_and_a_finished_job_conflicts(api: Client, trained: str) -> None:
    job = api.create_job(IDLE)
    assert api.cancel_job(job.id).status == "cancelled"
    assert api.cancel_job(job.id).status == "cancelled"
    with pytest.raises(Conflict):
        api.cancel_job(trained)


def test_a_project_over_its_quota_is_refused_with_retry_after(
    api: Client, svc: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real 429 (the project's active-jobs limit): a Retry-After beyond max_wait raises at
    once (the client's sleeps are recorded: none), and nothing is stored."""
    from service import keys
    from service.db.sessions import session_scope
    from service.db.tables import Project

    with session_scope() as s:
        row, key = keys.create_key(s, "client-quota", "test")
        s.execute(update(Project).where(Project.id == row.project_id).values(max_active_jobs=1))
    with Client(svc.url, key, max_wait=5) as quota:
        first = quota.create_job(IDLE)
        slept: list[float] = []
        monkeypatch.setattr(client_module, "time", SimpleNamespace(sleep=slept.append))
        with pytest.raises(RateLimited) as refused:
            quota.create_job(IDLE)
        monkeypatch.undo()
        assert slept == []
        assert refused.value.retry_after == 30 and refused.value.code == "quota_exceeded"
        assert [j.id for j in quota.iter_jobs()] == [first.id]
        quota.cancel_job(first.id)


class Flaky(http.server.BaseHTTPRequestHandler):
    """Answers 429 (Retry-After: 1), then 503 (no Retry-After), then the job."""

    answers: list[tuple[int, dict[str, str], bytes]] = []
    seen: list[float] = []

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        Flaky.seen.append(time.monotonic())
        status, headers, body = Flaky.answers.pop(0)
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: object) -> None:
        pass


def test_429_and_503_are_retried_after_retry_after(api: Client, trained: str) -> None:
    job = api.get_job(trained).model_dump_json().encode()
    problem = b'{"type":"t","title":"Busy","status":429,"detail":"d","instance":"/","code":"x"}'
    Flaky.answers = [
        (429, {"Retry-After": "1", "Content-Type": "application/problem+json"}, problem),
        (503, {}, b"down"),
        (200, {"Content-Type": "application/json"}, job),
    ]
    Flaky.seen = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Flaky)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with Client(f"http://127.0.0.1:{server.server_port}") as flaky:
            assert flaky.get_job(trained).id == trained
    finally:
        server.shutdown()
    waits = np.diff(Flaky.seen)
    assert len(Flaky.seen) == 3 and waits[0] >= 1.0 and waits[1] >= 0.5, waits


class DropOnce:
    """A TCP proxy to the API that cuts the first event stream right after its first event
    (mid-chunk: the rest of what the server sent is lost). Keeps every request's head."""

    def __init__(self, upstream: int) -> None:
        self.upstream, self.requests, self.cut = upstream, [], False
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            conn, _ = self.listener.accept()
            up = socket.create_connection(("127.0.0.1", self.upstream))
            threading.Thread(target=self._up, args=(conn, up), daemon=True).start()
            threading.Thread(target=self._down, args=(up, conn), daemon=True).start()

    def _up(self, src: socket.socket, dst: socket.socket) -> None:
        while data := _recv(src):
            self.requests.append(data.decode(errors="replace").lower())
            dst.sendall(data)

    def _down(self, src: socket.socket, dst: socket.socket) -> None:
        streaming = False
        while data := _recv(src):
            streaming = streaming or b"text/event-stream" in data
            first = data.find(b"\n\n", data.find(b"\nid: ")) if streaming else -1
            if self.cut or first < 0 or b"\nid: " not in data:
                dst.sendall(data)
                continue
            self.cut = True
            dst.sendall(data[: first + 2])  # the first event, then the connection is lost
            for sock in (src, dst):
                sock.shutdown(socket.SHUT_RDWR)
            return


def _recv(s: socket.socket) -> bytes:
    try:
        return s.recv(65536)
    except OSError:
        return b""


@pytest.fixture
def proxy(svc: Service) -> Iterator[DropOnce]:
    p = DropOnce(svc.port)
    yield p
    p.listener.close()


def test_wait_resumes_after_a_dropped_stream_with_last_event_id(
    api: Client, trained: str, proxy: DropOnce
) -> None:
    with Client(proxy.url) as through:
        watch = through.wait(trained)
        seen = list(watch)
    assert proxy.cut and watch.reconnects == 1
    assert watch.job is not None and watch.job.status == "succeeded"
    assert seen == api.list_events(trained, limit=1000).data  # no gap, no repeat
    resumed = [r for r in proxy.requests if "last-event-id:" in r][1]
    last = int(resumed.split("last-event-id: ")[1].split("\r\n")[0])
    assert last > 0 and last in [e.id for e in seen[:-1]]


def test_download_verifies_the_listed_sha256(
    api: Client, trained: str, svc: Service, tmp_path: Path
) -> None:
    seen: list[int] = []
    path = api.download(trained, "student.safetensors", tmp_path, lambda d, t: seen.append(d))
    listed = {a.name: a for a in api.list_artifacts(trained).data}["student.safetensors"]
    assert sha256_of(path) == listed.sha256 and seen[-1] == listed.size
    stored = next(svc_artifacts(svc, trained).rglob("model.json"))
    original = stored.read_bytes()
    stored.write_bytes(original.replace(b"{", b"{ ", 1))  # same size would do too
    try:
        with pytest.raises(ChecksumMismatch):
            api.download(trained, "model.json", tmp_path / "card.json")
    finally:
        stored.write_bytes(original)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["student.safetensors"]


def svc_artifacts(svc: Service, job_id: str) -> Path:
    return Path(svc.env["DISTILLERY_DATA_DIR"]) / "artifacts" / "jobs" / job_id
