"""A real worker registers itself when it starts: GET /v1/workers lists it live with this
host's memory, and a job beyond it is refused naming it."""

import time

import psutil
import pytest

from tests.e2e.conftest import QUEUE, Service

pytestmark = [pytest.mark.slow, pytest.mark.parametrize("backend", ["postgres"], indirect=True)]


def registered(service: Service, timeout: float = 120) -> dict:
    """The service's worker, once it has registered (at start, after counting its GPUs)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = service.http.get("/v1/workers").json()["data"]
        if mine := [w for w in rows if w["live"] and QUEUE in w["queues"]]:
            return dict(mine[0])
        time.sleep(0.25)
    raise AssertionError(f"no worker registered; logs in {service.log_dir}")


def test_the_worker_registers_and_bounds_admission(service):
    worker = registered(service)
    assert worker["memory_bytes"] == psutil.virtual_memory().total
    assert worker["name"].startswith("distillery-")
    # 3 x 256 x 256 float32 images: 768 KiB each; a set of them larger than the host
    count = worker["memory_bytes"] // (3 * 256 * 256 * 4) + 1
    spec = {
        "method": {"name": "supervised"},
        "student": {"arch": "resnet8"},
        "data": {"dataset": "synthetic", "synthetic": {"num_samples": count, "size": 256}},
        "resources": {"queue": QUEUE},
    }
    r = service.http.post("/v1/jobs", json=spec)
    assert r.status_code == 422, r.text
    [error] = r.json()["errors"]
    assert error["field"] == "data.synthetic"
    assert "host memory: needs" in error["message"]
    assert f"worker {worker['name']} has" in error["message"]
