"""`Client`: every /v1 route (and the health routes) as a typed call.

Calls retry a 429 or a 503 after the Retry-After the API sends (when it is at most
`max_wait`), and a dropped connection when the call is safe to repeat (reads, cancel, a
submit: it carries an Idempotency-Key); then they raise `errors.ApiError` (the API's
problem+json) or `ConnectionFailed`.
"""

import json
import os
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import httpx
from httpx_sse import EventSource, SSEError
from pydantic import BaseModel

from distillery_client.errors import DistilleryClientError, NotFound, from_response, retry_after
from distillery_client.models import (
    Artifact,
    ArtifactList,
    Dataset,
    DatasetList,
    Delivery,
    DeliveryList,
    Event,
    EventList,
    Job,
    JobList,
    Model,
    ModelList,
    Readiness,
    Recipe,
    RecipeList,
    Sweep,
    SweepList,
    SweepSummary,
    Webhook,
    WebhookCreated,
    WebhookEvent,
    WebhookEventList,
    WebhookList,
    WorkerList,
)
from distillery_client.transfer import Progress, read_chunks, save_verified

DEFAULT_URL = "http://127.0.0.1:8000"  # the API's default host and port (a test ties them)
URL_ENV, KEY_ENV = "DISTILLERY_URL", "DISTILLERY_API_KEY"
MAX_PAGE = 200  # the largest page (`limit`) the API lists (a test ties them)
RETRY_STATUSES = (429, 503)
BACKOFF_S = 0.5  # first wait after a dropped connection or a 503 without Retry-After; doubles
B = TypeVar("B", bound=BaseModel)


class ConnectionFailed(DistilleryClientError):
    """The API could not be reached (or the connection dropped) after the retries."""


class Client:
    """A Distillery API client. `url` defaults to $DISTILLERY_URL, else the API's default
    address; `api_key` to $DISTILLERY_API_KEY (sent as a Bearer token when set).
    `retries`: how many times a call is repeated; `max_wait`: the longest Retry-After it
    waits out (a longer one raises at once: an upload over the storage quota says 3600 s)."""

    def __init__(
        self,
        url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 30.0,
        retries: int = 4,
        max_wait: float = 60.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = (url or os.environ.get(URL_ENV) or DEFAULT_URL).rstrip("/")
        self.api_key = api_key if api_key is not None else os.environ.get(KEY_ENV)
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        self.http = httpx.Client(
            base_url=self.url, headers=headers, timeout=timeout, transport=transport
        )
        self.retries, self.max_wait = retries, max_wait

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # -- the one place requests are sent and retried

    def send(
        self,
        method: str,
        path: str,
        *,
        idempotent: bool = True,
        stream: bool = False,
        body: Callable[[], Iterable[bytes]] | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        """One call, retried as the module says; an error status raises its ApiError.
        `body` makes a fresh request body for each attempt (an upload's file, read again).
        With `stream`, the caller reads and closes the response."""
        for attempt in range(self.retries + 1):
            last = attempt == self.retries
            content = body() if body is not None else kwargs.pop("content", None)
            request = self.http.build_request(method, path, content=content, **kwargs)
            try:
                response = self.http.send(request, stream=stream)
            except httpx.TransportError as exc:
                # nothing reached the server on a failed connect: always safe to repeat
                if last or not (idempotent or isinstance(exc, httpx.ConnectError)):
                    raise ConnectionFailed(f"{self.url}: {exc!r}") from exc
                time.sleep(BACKOFF_S * 2**attempt)
                continue
            if response.is_success or response.status_code == 304:
                return response
            delay = self._retry_delay(response, attempt)
            if last or delay is None:
                raise self._error(response)
            response.close()
            time.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    def _retry_delay(self, response: httpx.Response, attempt: int) -> float | None:
        """How long to wait before repeating a refused call; None: do not repeat it."""
        if response.status_code not in RETRY_STATUSES:
            return None
        delay = retry_after(response)
        delay = BACKOFF_S * 2**attempt if delay is None else delay
        return delay if delay <= self.max_wait else None

    @staticmethod
    def _error(response: httpx.Response) -> Exception:
        try:
            return from_response(response)
        finally:
            response.close()

    def _get(self, model: type[B], path: str, **params: Any) -> B:
        clean = {k: v for k, v in params.items() if v is not None}
        return model.model_validate(self.send("GET", path, params=clean).json())

    # -- jobs

    def create_job(self, spec: Mapping[str, Any], idempotency_key: str | None = None) -> Job:
        """Submit a job spec. A retried submit cannot make two jobs: it always carries an
        Idempotency-Key (a fresh one unless given)."""
        key = idempotency_key or f"client-{uuid.uuid4()}"
        r = self.send("POST", "/v1/jobs", json=dict(spec), headers={"Idempotency-Key": key})
        return Job.model_validate(r.json())

    def list_jobs(
        self,
        status: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
        sweep: str | None = None,
    ) -> JobList:
        """One page, newest first (a sweep's trials only, with `sweep`); pass its
        `next_cursor` as `cursor` for the next."""
        params = {"status": status, "limit": limit, "cursor": cursor, "sweep": sweep}
        return self._get(JobList, "/v1/jobs", **params)

    def iter_jobs(
        self, status: str | None = None, page_size: int = 50, sweep: str | None = None
    ) -> Iterator[Job]:
        """Every job (with `status`, of `sweep`), newest first, a page at a time."""
        return _pages(lambda c: self.list_jobs(status, page_size, c, sweep))

    def get_job(self, job_id: str) -> Job:
        return self._get(Job, f"/v1/jobs/{job_id}")

    def cancel_job(self, job_id: str) -> Job:
        """Cancel (a queued job at once; a running one goes through `cancelling`). Repeating
        it is safe; a finished job is a Conflict."""
        return Job.model_validate(self.send("POST", f"/v1/jobs/{job_id}/cancel").json())

    def list_events(self, job_id: str, after: int = 0, limit: int | None = None) -> EventList:
        """One page of a job's events after the event id `after`; its `next_after` is the
        next page's `after`."""
        return self._get(EventList, f"/v1/jobs/{job_id}/events", after=after, limit=limit)

    def iter_events(self, job_id: str, after: int = 0, page_size: int = 100) -> Iterator[Event]:
        """The events recorded so far, oldest first, a page at a time (it does not wait for
        more: `wait` does)."""
        while True:
            page = self.list_events(job_id, after, page_size)
            yield from page.data
            if len(page.data) < page_size:
                return
            after = page.next_after

    def stream(self, job_id: str, after: int = 0) -> Iterator[Event]:
        """One connection to the job's live event stream (SSE), from after the event id
        `after` (sent as Last-Event-ID). Ends when the server ends it, at a terminal state;
        a dropped connection raises httpx.TransportError (`wait` reconnects)."""
        headers = {"Accept": "text/event-stream", "Last-Event-ID": str(after)}
        path = f"/v1/jobs/{job_id}/events"
        response = self.send("GET", path, stream=True, params={"after": after}, headers=headers)
        try:
            for sse in EventSource(response).iter_sse():
                # httpx-sse dispatches a keep-alive comment's blank line as an empty event
                if sse.data:
                    yield Event.model_validate_json(sse.data)
        finally:
            response.close()

    def wait(self, job_id: str, after: int = 0) -> "Watch":
        """Follow a job to its end: iterate the returned Watch for its events (live,
        reconnecting after a dropped connection from the last event seen); `.job` is the
        final job once they end, and `.result()` runs it to the end and returns that."""
        return Watch(self, job_id, after)

    # -- artifacts

    def list_artifacts(self, job_id: str) -> ArtifactList:
        """A job's files, each with its size and sha256."""
        return self._get(ArtifactList, f"/v1/jobs/{job_id}/artifacts")

    def list_checkpoints(self, job_id: str) -> ArtifactList:
        return self._get(ArtifactList, f"/v1/jobs/{job_id}/checkpoints")

    def download(
        self,
        job_id: str,
        name: str,
        dest: str | Path | None = None,
        progress: Progress | None = None,
    ) -> Path:
        """Save one of a job's files at `dest` (default: its base name, here), streamed;
        raises ChecksumMismatch (and keeps nothing) unless its sha256 is the one the API
        lists for it. `progress(done, total)` is called as bytes arrive."""
        artifact = self.artifact(job_id, name)
        path = Path(dest) if dest is not None else Path(Path(name).name)
        if path.is_dir():
            path = path / Path(name).name
        response = self.send("GET", f"/v1/jobs/{job_id}/artifacts/{name}", stream=True)
        try:
            save_verified(response.iter_bytes(), path, artifact.sha256, artifact.size, progress)
        finally:
            response.close()
        return path

    def artifact(self, job_id: str, name: str) -> Artifact:
        """The listing of one file of a job (its checkpoints included)."""
        for listing in (self.list_artifacts(job_id), self.list_checkpoints(job_id)):
            for artifact in listing.data:
                if artifact.name == name:
                    return artifact
        raise NotFound(404, "not_found", "Not found", f"job {job_id!r} has no artifact {name!r}")

    # -- models

    def upload_model(
        self,
        file: str | Path,
        *,
        arch: str,
        num_classes: int,
        in_channels: int,
        input_size: int | None = None,
        name: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        progress: Progress | None = None,
    ) -> Model:
        """Upload a teacher's safetensors file (streamed). `metadata` goes in
        X-Model-Metadata: normalisation, class_names."""
        params = {
            "arch": arch,
            "num_classes": num_classes,
            "in_channels": in_channels,
            "input_size": input_size,
            "name": name,
            "filename": Path(file).name,
        }
        headers = {"X-Model-Metadata": json.dumps(dict(metadata))} if metadata else {}
        r = self._upload("/v1/models", Path(file), params, headers, progress)
        return Model.model_validate(r.json())

    def register_model(self, job_id: str, name: str = "") -> Model:
        """Register a succeeded job's student as a model, without a download."""
        r = self.send("POST", "/v1/models", idempotent=False, json={"job": job_id, "name": name})
        return Model.model_validate(r.json())

    def register_model_uri(
        self,
        uri: str,
        *,
        arch: str,
        num_classes: int,
        in_channels: int,
        input_size: int | None = None,
        name: str = "",
        metadata: Mapping[str, Any] | None = None,
    ) -> Model:
        """Register a safetensors file already in an object store (`s3://bucket/key`, under a
        prefix the deployment allows): `validating` until a worker has read and checked it
        (`wait_model`). `metadata`: normalisation, class_names."""
        body = {**(metadata or {}), "uri": uri, "arch": arch, "num_classes": num_classes}
        body |= {"in_channels": in_channels, "name": name}
        if input_size is not None:
            body["input_size"] = input_size
        r = self.send("POST", "/v1/models", idempotent=False, json=body)
        return Model.model_validate(r.json())

    def wait_model(self, model_id: str, poll_s: float = 1.0, timeout: float | None = None) -> Model:
        """The model once no longer `validating` (ready or invalid); TimeoutError after
        `timeout` seconds."""
        return _checked(lambda: self.get_model(model_id), poll_s, timeout)

    def list_models(self, limit: int | None = None, cursor: str | None = None) -> ModelList:
        return self._get(ModelList, "/v1/models", limit=limit, cursor=cursor)

    def iter_models(self, page_size: int = 50) -> Iterator[Model]:
        return _pages(lambda c: self.list_models(page_size, c))

    def get_model(self, model_id: str) -> Model:
        return self._get(Model, f"/v1/models/{model_id}")

    def delete_model(self, model_id: str) -> None:
        self.send("DELETE", f"/v1/models/{model_id}")

    # -- datasets

    def upload_dataset(
        self,
        file: str | Path,
        *,
        name: str | None = None,
        format: str | None = None,
        num_classes: int | None = None,
        class_names: list[str] | None = None,
        progress: Progress | None = None,
    ) -> Dataset:
        """Upload labelled images (.npz, IDX archive, ImageFolder zip/tar), streamed."""
        params = {
            "name": name,
            "format": format,
            "num_classes": num_classes,
            "class_names": class_names,
        }
        r = self._upload("/v1/datasets", Path(file), params, {}, progress)
        return Dataset.model_validate(r.json())

    def register_dataset(
        self,
        uri: str,
        *,
        format: str,
        name: str = "",
        class_names: list[str] | None = None,
    ) -> Dataset:
        """Register images already in an object store (`s3://bucket/prefix/`, under a prefix
        the deployment allows), `imagefolder` or `webdataset`: `validating` until a worker has
        read it (`wait_dataset`); its bytes never pass through the API."""
        body: dict[str, Any] = {"uri": uri, "format": format, "name": name}
        if class_names is not None:
            body["class_names"] = class_names
        r = self.send("POST", "/v1/datasets", idempotent=False, json=body)
        return Dataset.model_validate(r.json())

    def wait_dataset(
        self, dataset_id: str, poll_s: float = 1.0, timeout: float | None = None
    ) -> Dataset:
        """The dataset once no longer `validating` (ready or invalid); TimeoutError after
        `timeout` seconds."""
        return _checked(lambda: self.get_dataset(dataset_id), poll_s, timeout)

    def list_datasets(self, limit: int | None = None, cursor: str | None = None) -> DatasetList:
        return self._get(DatasetList, "/v1/datasets", limit=limit, cursor=cursor)

    def iter_datasets(self, page_size: int = 50) -> Iterator[Dataset]:
        return _pages(lambda c: self.list_datasets(page_size, c))

    def get_dataset(self, dataset_id: str) -> Dataset:
        return self._get(Dataset, f"/v1/datasets/{dataset_id}")

    def delete_dataset(self, dataset_id: str) -> None:
        self.send("DELETE", f"/v1/datasets/{dataset_id}")

    def _upload(
        self,
        path: str,
        file: Path,
        params: dict[str, Any],
        headers: dict[str, str],
        progress: Progress | None,
    ) -> httpx.Response:
        size = file.stat().st_size
        headers = headers | {
            "Content-Type": "application/octet-stream",
            "Content-Length": str(size),
        }
        return self.send(
            "POST",
            path,
            idempotent=False,
            body=lambda: read_chunks(file, size, progress),
            params={k: v for k, v in params.items() if v is not None},
            headers=headers,
        )

    # -- webhooks

    def create_webhook(self, url: str, events: list[str] | None = None) -> WebhookCreated:
        """POST the project's job events to `url` (default events: the terminal states).
        The answer's `secret` verifies the signatures; it is not shown again."""
        body: dict[str, Any] = {"url": url} | ({"events": events} if events else {})
        r = self.send("POST", "/v1/webhooks", idempotent=False, json=body)
        return WebhookCreated.model_validate(r.json())

    def list_webhooks(self, limit: int | None = None, cursor: str | None = None) -> WebhookList:
        return self._get(WebhookList, "/v1/webhooks", limit=limit, cursor=cursor)

    def iter_webhooks(self, page_size: int = 50) -> Iterator[Webhook]:
        return _pages(lambda c: self.list_webhooks(page_size, c))

    def get_webhook(self, webhook_id: str) -> Webhook:
        return self._get(Webhook, f"/v1/webhooks/{webhook_id}")

    def delete_webhook(self, webhook_id: str) -> None:
        self.send("DELETE", f"/v1/webhooks/{webhook_id}")

    def resume_webhook(self, webhook_id: str) -> Webhook:
        """Send to a paused webhook again now (an active one stays as it is)."""
        r = self.send("POST", f"/v1/webhooks/{webhook_id}/resume")
        return Webhook.model_validate(r.json())

    def list_webhook_events(
        self, webhook_id: str, limit: int | None = None, cursor: str | None = None
    ) -> WebhookEventList:
        """When the webhook was paused (and why) and resumed, newest first."""
        path = f"/v1/webhooks/{webhook_id}/events"
        return self._get(WebhookEventList, path, limit=limit, cursor=cursor)

    def iter_webhook_events(self, webhook_id: str, page_size: int = 50) -> Iterator[WebhookEvent]:
        return _pages(lambda c: self.list_webhook_events(webhook_id, page_size, c))

    def list_deliveries(
        self, webhook_id: str, limit: int | None = None, cursor: str | None = None
    ) -> DeliveryList:
        """A webhook's deliveries, newest first, each with its attempts and last answer."""
        path = f"/v1/webhooks/{webhook_id}/deliveries"
        return self._get(DeliveryList, path, limit=limit, cursor=cursor)

    def iter_deliveries(self, webhook_id: str, page_size: int = 50) -> Iterator[Delivery]:
        return _pages(lambda c: self.list_deliveries(webhook_id, page_size, c))

    def retry_delivery(self, webhook_id: str, delivery_id: str) -> Delivery:
        """Send a delivery that ended (delivered or given up) again, at once."""
        path = f"/v1/webhooks/{webhook_id}/deliveries/{delivery_id}/retry"
        return Delivery.model_validate(self.send("POST", path, idempotent=False).json())

    # -- sweeps

    def create_sweep(self, sweep: Mapping[str, Any]) -> Sweep:
        """Submit a sweep (a base spec, a space, a budget); its trials are jobs the API makes.
        Not repeated after a dropped connection: it carries no Idempotency-Key."""
        r = self.send("POST", "/v1/sweeps", idempotent=False, json=dict(sweep))
        return Sweep.model_validate(r.json())

    def list_sweeps(
        self, status: str | None = None, limit: int | None = None, cursor: str | None = None
    ) -> SweepList:
        return self._get(SweepList, "/v1/sweeps", status=status, limit=limit, cursor=cursor)

    def iter_sweeps(self, status: str | None = None, page_size: int = 50) -> Iterator[SweepSummary]:
        return _pages(lambda c: self.list_sweeps(status, page_size, c))

    def get_sweep(self, sweep_id: str) -> Sweep:
        """Its status, trial counts, leaderboard (best first), baseline and every run."""
        return self._get(Sweep, f"/v1/sweeps/{sweep_id}")

    def cancel_sweep(self, sweep_id: str) -> Sweep:
        """Cancel it and its unfinished jobs; repeating it is safe; a Conflict once ended."""
        return Sweep.model_validate(self.send("POST", f"/v1/sweeps/{sweep_id}/cancel").json())

    # -- the fleet

    def list_workers(self) -> WorkerList:
        """Every registered worker: its queues, memory, cores, GPUs and whether it is live."""
        return self._get(WorkerList, "/v1/workers")

    # -- published recipes

    def list_recipes(
        self, method: str | None = None, teacher: str | None = None, student: str | None = None
    ) -> RecipeList:
        """Every published recipe, or those of a method or a teacher/student architecture."""
        return self._get(RecipeList, "/v1/recipes", method=method, teacher=teacher, student=student)

    def get_recipe(self, name: str) -> Recipe:
        """A recipe: every spec field it fills, its sources, the top-1 its authors report."""
        return self._get(Recipe, f"/v1/recipes/{name}")

    # -- health

    def healthz(self) -> dict[str, str]:
        return dict(self.send("GET", "/healthz").json())

    def readyz(self) -> Readiness:
        """Readiness, down or not (a 503's body says which dependency failed)."""
        r = self.http.get("/readyz")
        if r.status_code not in (200, 503):
            raise self._error(r)
        return Readiness.model_validate(r.json())

    def metrics(self) -> str:
        """The Prometheus exposition text."""
        return self.send("GET", "/metrics").text


class Watch:
    """A job followed to its end (Client.wait). Iterating yields its events as they come;
    after a dropped connection it reconnects with Last-Event-ID (up to the client's
    `retries` times in a row). Once the events end `job` is the final job."""

    def __init__(self, client: Client, job_id: str, after: int = 0) -> None:
        self.client, self.job_id, self.last_id = client, job_id, after
        self.reconnects = 0
        self.job: Job | None = None

    def __iter__(self) -> Iterator[Event]:
        failures = 0
        while self.job is None:
            try:
                for event in self.client.stream(self.job_id, self.last_id):
                    self.last_id, failures = event.id, 0
                    yield event
            except (httpx.TransportError, SSEError) as exc:
                failures += 1
                if failures > self.client.retries:
                    raise ConnectionFailed(f"event stream of {self.job_id}: {exc!r}") from exc
                self.reconnects += 1
                time.sleep(BACKOFF_S * 2 ** (failures - 1))
                continue
            job = self.client.get_job(self.job_id)
            self.job = job if job.done else None  # a proxy may end a stream early: resume

    def result(self) -> Job:
        """Follow to the end (the events unread) and return the final job."""
        for _ in self:
            pass
        assert self.job is not None
        return self.job


def _pages(fetch: Callable[[str | None], Any]) -> Iterator[Any]:
    cursor = None
    while True:
        page = fetch(cursor)
        yield from page.data
        if not page.next_cursor:
            return
        cursor = page.next_cursor


C = TypeVar("C", Model, Dataset)


def _checked(get: Callable[[], C], poll_s: float, timeout: float | None) -> C:
    """What `get` answers once it is no longer `validating` (a worker has decided it)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while (found := get()).status == "validating":
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(f"{found.id} still validating after {timeout} s")
        time.sleep(poll_s)
    return found
