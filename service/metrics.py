"""Prometheus metrics (GET /metrics): the operator's view of every project (the README's
Observability table lists them). The job metrics (JobsCollector) are read from the
database at each scrape, so every API process answers the same; the job-duration histogram
covers the last DURATION_WINDOW jobs that ran and ended (a window that slides: read it with
histogram_quantile, not rate). ObserveRequests times every request by its route's template
and status class; with several API processes prometheus-client's multiprocess mode adds
theirs up (prepare_multiprocess, called by the launcher before it starts them).
The fleet gauges (distillery_fleet_*, distillery_queue_live_workers) come from the
registered workers (service/jobs/fleet.py), what admission sizes jobs against."""

import atexit
import itertools
import logging
import os
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Histogram, generate_latest, multiprocess, values
from prometheus_client.core import GaugeHistogramMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service import logs
from service.db.sessions import session_scope
from service.db.tables import ACTIVE, STATUSES, TERMINAL, Job, utcnow
from service.jobs import fleet

DURATION_WINDOW = 1000  # finished jobs in the duration histogram
# a job runs for minutes to days
DURATION_BUCKETS = (10, 30, 60, 300, 900, 1800, 3600, 7200, 14400, 28800, 86400, 259200)
# a request takes a millisecond to an upload's minutes
HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 120)
UNMATCHED = "unmatched"  # the route of a request no route matched (never its raw path)
REQUEST_ID = b"x-request-id"
CALLER_ID = re.compile(rb"[A-Za-z0-9._:-]{1,64}")  # a caller's X-Request-ID kept; else a new one

# a new request id: this process's random prefix and a count (a uuid4 a request costs a
# system call)
PROCESS_ID, REQUESTS = uuid.uuid4().hex[:16], itertools.count(1)
REGISTRY = CollectorRegistry()  # this process's: one per process, whatever apps it makes
HTTP = Histogram(
    "distillery_http_request_duration_seconds",
    "HTTP requests by method, route template and status class.",
    ["method", "route", "status"],
    buckets=HTTP_BUCKETS,
    registry=REGISTRY,
)
access_log = logging.getLogger("service.access")


def worker_of(owner: str) -> str:
    """The worker ("host:pid") of a lease owner ("host:pid:attempt")."""
    return owner.rsplit(":", 1)[0]


class JobsCollector(Collector):
    """The jobs' metrics, read from the database at each scrape."""

    def collect(self) -> Iterator[Metric]:
        with session_scope() as s:
            yield from queue_metrics(s)
            yield duration_metric(s)
            yield from worker_metrics(s)
            yield from fleet_metrics(s)


def queue_metrics(s: Session) -> Iterable[Metric]:
    counts = s.execute(select(Job.status, Job.queue, func.count()).group_by(Job.status, Job.queue))
    by_state: dict[tuple[str, str], int] = {(st, q): n for st, q, n in counts}
    oldest = dict(
        s.execute(
            select(Job.queue, func.min(Job.updated_at))
            .where(Job.status == "queued")
            .group_by(Job.queue)
        ).all()
    )
    state = GaugeMetricFamily(
        "distillery_jobs", "Jobs by state and queue.", labels=["status", "queue"]
    )
    depth = GaugeMetricFamily("distillery_queue_depth", "Jobs queued.", labels=["queue"])
    age = GaugeMetricFamily(
        "distillery_queue_oldest_age_seconds",
        "Seconds the longest-waiting queued job has waited (since submitted or requeued).",
        labels=["queue"],
    )
    now = utcnow()
    for queue in sorted({q for _, q in by_state}):
        for status in STATUSES:
            state.add_metric([status, queue], by_state.get((status, queue), 0))
        depth.add_metric([queue], by_state.get(("queued", queue), 0))
        since = oldest.get(queue)
        age.add_metric([queue], (now - since).total_seconds() if since else 0.0)
    return state, depth, age


def duration_metric(s: Session) -> Metric:
    rows = s.execute(
        select(Job.queue, Job.status, Job.started_at, Job.finished_at)
        .where(Job.status.in_(TERMINAL), Job.started_at.is_not(None))
        .where(Job.finished_at.is_not(None))
        .order_by(Job.finished_at.desc())
        .limit(DURATION_WINDOW)
    )
    seconds: dict[tuple[str, str], list[float]] = {}
    for queue, status, started, finished in rows:
        if started and finished:  # both, as the query asks: for the type checker
            seconds.setdefault((queue, status), []).append((finished - started).total_seconds())
    family = GaugeHistogramMetricFamily(
        "distillery_job_duration_seconds",
        f"Run time of the last {DURATION_WINDOW} jobs that ran and ended (started to finished).",
        labels=["queue", "status"],
    )
    for (queue, status), values_ in sorted(seconds.items()):
        family.add_metric([queue, status], buckets(values_), sum(values_))
    return family


def buckets(samples: list[float]) -> list[tuple[str, float]]:
    """Cumulative (le, count) pairs over DURATION_BUCKETS and +Inf."""
    pairs = [(str(float(b)), float(sum(v <= b for v in samples))) for b in DURATION_BUCKETS]
    return [*pairs, ("+Inf", float(len(samples)))]


def worker_metrics(s: Session) -> Iterable[Metric]:
    rate = GaugeMetricFamily(
        "distillery_worker_images_per_second",
        "Training images a second, summed over the worker's running jobs.",
        labels=["worker"],
    )
    peak = GaugeMetricFamily(
        "distillery_worker_gpu_memory_peak_bytes",
        "Peak CUDA memory of the worker's running jobs (absent on CPU).",
        labels=["worker"],
    )
    rates: dict[str, float] = {}
    peaks: dict[str, float] = {}
    running = s.execute(select(Job.owner, Job.progress).where(Job.status.in_(ACTIVE)))
    for owner, progress in running:
        worker = worker_of(owner or "")
        rates[worker] = rates.get(worker, 0.0) + float(progress.get("images_per_s") or 0.0)
        if (bytes_ := progress.get("gpu_mem_peak_bytes")) is not None:
            peaks[worker] = max(peaks.get(worker, 0.0), float(bytes_))
    for worker, value in sorted(rates.items()):
        rate.add_metric([worker], value)
    for worker, value in sorted(peaks.items()):
        peak.add_metric([worker], value)
    return rate, peak


def fleet_metrics(s: Session) -> Iterable[Metric]:
    def gauge(name: str, doc: str, *labels: str) -> GaugeMetricFamily:
        return GaugeMetricFamily(f"distillery_{name}", doc, labels=list(labels))

    live = gauge("fleet_worker_live", "1 while the worker heartbeats, else 0.", "worker")
    memory = gauge("fleet_worker_memory_bytes", "The worker host's memory.", "worker")
    gpus = gauge("fleet_worker_gpus", "The GPUs the worker sees.", "worker")
    gpu_memory = gauge("fleet_worker_gpu_memory_bytes", "Each GPU's memory.", "worker", "gpu")
    per_queue = gauge("queue_live_workers", "Live workers taking the queue's jobs.", "queue")
    counts: dict[str, int] = {}
    for w in fleet.workers(s):
        up = fleet.is_live(w)
        live.add_metric([w.name], float(up))
        memory.add_metric([w.name], w.memory_bytes)
        gpus.add_metric([w.name], w.gpu_count)
        for i, n in enumerate(w.gpu_memory_bytes):
            gpu_memory.add_metric([w.name, str(i)], n)
        for queue in w.queues:
            counts[queue] = counts.get(queue, 0) + up
    for queue, n in sorted(counts.items()):
        per_queue.add_metric([queue], n)
    return live, memory, gpus, gpu_memory, per_queue


REGISTRY.register(JobsCollector())


def render() -> bytes:
    """The exposition text: this process's metrics, or every API process's when several
    serve (multiprocess mode), and the jobs' from the database."""
    if values.ValueClass is values.MutexValue:  # one process
        return generate_latest(REGISTRY)
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    registry.register(JobsCollector())
    return generate_latest(registry)


def prepare_multiprocess(workers: int) -> Path | None:
    """Before the launcher starts `workers` API processes (more than one): an empty folder
    for their metrics, named in PROMETHEUS_MULTIPROC_DIR (the processes inherit it; the
    library reads it), removed when the launcher exits."""
    if workers <= 1:
        return None
    folder = Path(tempfile.mkdtemp(prefix="distillery-metrics-"))
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(folder)
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


class ObserveRequests:
    """ASGI middleware: each request's latency into HTTP by its route template, an
    X-Request-ID (the caller's, or a new one) on the response and in its logs, and with
    `access_log` one log line per request (the JSON logs' access log)."""

    def __init__(self, app: ASGIApp, access_log: bool = False) -> None:
        self.app, self.access_log = app, access_log
        self._children: dict[tuple[str, str, str], Any] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, status = time.perf_counter(), 500
        request_id = _request_id(scope)

        async def observed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", []).append((REQUEST_ID, request_id.encode()))
            await send(message)

        token = logs.REQUEST.set((scope, request_id))
        try:
            await self.app(scope, receive, observed)
        finally:
            self._observe(scope, status, time.perf_counter() - started, request_id)
            logs.REQUEST.reset(token)

    def _observe(self, scope: Scope, status: int, seconds: float, request_id: str) -> None:
        route = getattr(scope.get("route"), "path", None) or UNMATCHED
        key = (scope["method"], route, f"{status // 100}xx")
        if (child := self._children.get(key)) is None:
            child = self._children[key] = HTTP.labels(*key)
        child.observe(seconds)
        if self.access_log:
            access_log.info(
                "%s %s %d",
                scope["method"],
                scope["path"],
                status,
                extra={
                    "request_id": request_id,
                    "method": scope["method"],
                    "route": route,
                    "path": scope["path"],
                    "status": status,
                    "duration_ms": round(seconds * 1000, 3),
                },
            )


def _request_id(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == REQUEST_ID and CALLER_ID.fullmatch(value):
            return str(value.decode())
    return f"{PROCESS_ID}-{next(REQUESTS):x}"
