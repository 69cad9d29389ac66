"""GET /metrics (service/metrics.py), scraped through the app and read with prometheus-client's
own parser: the jobs' metrics against the database, request latency by route template, and
several API processes adding theirs up."""

import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select, update

from service.db import tables
from service.db.sessions import session_scope
from service.db.tables import Job, utcnow
from service.jobs import lifecycle
from tests.e2e.conftest import ROOT, free_port

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(client: Any) -> Samples:
    r = client.get("/metrics")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(r.text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def series(samples: Samples, name: str, *keys: str) -> dict[tuple[str, ...], float]:
    """{values of `keys`: value} of each sample named `name`."""
    return {
        tuple(dict(labels)[k] for k in keys): v for (n, labels), v in samples.items() if n == name
    }


def in_queue(queue: str) -> dict[str, Any]:
    return {"resources": {"queue": queue}}


def test_jobs_by_state_and_queue_match_the_database(client, job_in):
    for status in ("queued", "queued", "running", "succeeded", "failed", "cancelled"):
        job_in(status)
    for status in ("queued", "cancelling"):
        job_in(status, **in_queue("gpu"))
    samples = scrape(client)
    with session_scope() as s:
        rows = s.execute(
            select(Job.status, Job.queue, func.count()).group_by(Job.status, Job.queue)
        )
        expected = {(st, q): float(n) for st, q, n in rows}
    gauges = series(samples, "distillery_jobs", "status", "queue")
    assert len(gauges) == 2 * len(tables.STATUSES)  # every state of every queue, 0s too
    assert {k: v for k, v in gauges.items() if v} == expected
    assert expected[("queued", "default")] == 2 and expected[("cancelling", "gpu")] == 1
    assert value(samples, "distillery_queue_depth", queue="default") == 2
    assert value(samples, "distillery_queue_depth", queue="gpu") == 1


def test_oldest_queued_age_counts_from_submission_or_requeue(client, job_in):
    old, _ = job_in("queued"), job_in("queued")
    job_in("running", **in_queue("idle"))  # a queue with nothing waiting
    with session_scope() as s:
        s.execute(
            update(Job).where(Job.id == old).values(updated_at=utcnow() - timedelta(seconds=600))
        )
    samples = scrape(client)
    age = value(samples, "distillery_queue_oldest_age_seconds", queue="default")
    assert 600 <= age < 660
    assert value(samples, "distillery_queue_oldest_age_seconds", queue="idle") == 0
    assert value(samples, "distillery_queue_depth", queue="idle") == 0


def test_duration_histogram_of_finished_jobs(client, job_in):
    durations = {"succeeded": [5.0, 45.0], "failed": [4000.0]}
    for status, seconds in durations.items():
        for s_ in seconds:
            job_id = job_in(status)
            with session_scope() as s:
                job = lifecycle.get_job(s, job_id)
                assert job.finished_at is not None
                started = job.finished_at - timedelta(seconds=s_)
                s.execute(update(Job).where(Job.id == job_id).values(started_at=started))
    job_in("cancelled")  # cancelled while queued: it never ran, so it has no duration
    samples = scrape(client)
    name = "distillery_job_duration_seconds_bucket"

    def bucket(status: str, le: str) -> float:
        return value(samples, name, queue="default", status=status, le=le)

    assert (bucket("succeeded", "10.0"), bucket("succeeded", "60.0")) == (1, 2)
    assert (bucket("failed", "3600.0"), bucket("failed", "7200.0"), bucket("failed", "+Inf")) == (
        0,
        1,
        1,
    )
    assert (
        value(samples, "distillery_job_duration_seconds_gsum", queue="default", status="succeeded")
        == 50
    )
    assert "cancelled" not in {status for _, status in series(samples, name, "queue", "status")}


def test_images_per_second_and_gpu_peak_per_worker(client, new_job):
    progress = {
        "a": {"images_per_s": 100.0, "gpu_mem_peak_bytes": 3 << 30},
        "b": {"images_per_s": 20.5},
    }
    owners = {"a": "gpu-1:41:0a1b2c3d", "b": "gpu-1:41:9f8e7d6c"}  # one worker, two jobs
    for key, owner in owners.items():
        job_id = new_job()
        with session_scope() as s:
            assert lifecycle.claim(s, job_id, owner, lease_s=60) is not None
            assert lifecycle.heartbeat(s, job_id, owner, 60, progress[key]) == "running"
    with session_scope() as s:  # a third, on another worker, with no rate yet
        other = new_job()
        lifecycle.claim(s, other, "cpu-2:7:00000000", lease_s=60)
    samples = scrape(client)
    assert series(samples, "distillery_worker_images_per_second", "worker") == {
        ("gpu-1:41",): 120.5,
        ("cpu-2:7",): 0.0,
    }
    assert series(samples, "distillery_worker_gpu_memory_peak_bytes", "worker") == {
        ("gpu-1:41",): float(3 << 30)  # a CPU worker: absent
    }


def http_counts(samples: Samples) -> dict[tuple[str, ...], float]:
    name = "distillery_http_request_duration_seconds_count"
    return series(samples, name, "method", "route", "status")


def test_requests_are_timed_by_route_template(client, new_job):
    job_id = new_job()
    before = http_counts(scrape(client))
    for path in ("/healthz", "/healthz", f"/v1/jobs/{job_id}", "/v1/jobs/job_x", "/nowhere/at/all"):
        client.get(path)
    client.post("/v1/jobs", json={"method": {"name": "nope"}})  # a 422
    after = http_counts(scrape(client))
    grown = {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)}
    assert grown == {
        ("GET", "/healthz", "2xx"): 2,
        ("GET", "/v1/jobs/{job_id}", "2xx"): 1,
        ("GET", "/v1/jobs/{job_id}", "4xx"): 1,  # job_x: no such job, labelled by template
        ("GET", "unmatched", "4xx"): 1,
        ("POST", "/v1/jobs", "4xx"): 1,
        ("GET", "/metrics", "2xx"): 1,  # the first scrape
    }
    assert not [k for k in after if "job_x" in k[1] or job_id in k[1]]


# API processes share their metrics in files, not in the database: one backend is enough
@pytest.mark.slow  # starts API processes
@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_several_api_processes_add_up_their_requests(backend, clean_db):
    """Two uvicorn workers, launched as service/cli.py's api() does with
    prepare_multiprocess: whichever answers the scrape counts every process's requests."""
    port = free_port()
    launch = (
        "from service.metrics import prepare_multiprocess; prepare_multiprocess(2); import uvicorn;"
        f"uvicorn.run('service.app:create_app', factory=True, workers=2, port={port})"
    )
    env = {**os.environ, **backend.env, "DISTILLERY_WATCHDOG_S": "0", "DISTILLERY_WEBHOOK_S": "0"}
    proc = subprocess.Popen(
        [sys.executable, "-c", launch], cwd=ROOT, env=env, start_new_session=True
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_up(url)
        wait_up(url)
        # 8 connections at once: both processes, which share the listening socket, take some
        with ThreadPoolExecutor(8) as pool:
            codes = list(pool.map(lambda _: httpx.get(f"{url}/nowhere").status_code, range(40)))
        assert codes == [404] * 40
        for _ in range(4):  # every scrape, whichever process serves it, sees all of them
            samples = scrape(httpx.Client(base_url=url))
            assert http_counts(samples)[("GET", "unmatched", "4xx")] == 40
    finally:
        proc.terminate()
        proc.wait(20)


def wait_up(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{url} did not come up")
