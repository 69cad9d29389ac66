"""The README's first command: `distillery up` on a fresh directory, nothing else running."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.e2e.conftest import free_port

SPEC = {
    "method": {"name": "supervised"},
    "student": {"arch": "cnn_small"},
    "data": {"dataset": "digits"},
    "train": {"epochs": 1, "batch_size": 64},
}


def wait_for(predicate, timeout: float) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.25)


def ready(client: httpx.Client) -> bool:
    try:
        return client.get("/readyz").status_code == 200
    except httpx.TransportError:
        return False


def test_up_serves_the_api_and_runs_a_job_with_embedded_defaults(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISTILLERY_")}
    port = free_port()
    log = (tmp_path / "up.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "up", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=log,
        stderr=log,
        start_new_session=True,
    )
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
    try:
        wait_for(lambda: ready(client), 60)
        assert client.get("/readyz").json()["checks"] == {"database": "ok", "broker": "ok"}
        job_id = client.post("/v1/jobs", json=SPEC).json()["id"]
        wait_for(lambda: client.get(f"/v1/jobs/{job_id}").json()["status"] == "succeeded", 120)
        data = tmp_path / ".distillery"
        assert (data / "distillery.db").is_file() and (data / "broker.db").is_file()
        assert (data / "artifacts" / "jobs" / job_id / "student.safetensors").is_file()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=60) is not None
        client.close()
        log.close()


def test_the_worker_queues_are_declared_once_and_again(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """`up` makes the worker's queue rows in the embedded broker before the worker and the
    API start (both would otherwise insert them on first use, and one would fail); doing it
    again on a restart changes nothing."""
    import sqlite3

    from service.cli import declare_queues
    from service.config import get_settings

    monkeypatch.setenv("DISTILLERY_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("DISTILLERY_BROKER_URL", raising=False)
    get_settings.cache_clear()
    try:
        declare_queues(["default", "gpu"])
        declare_queues(["default"])
    finally:
        get_settings.cache_clear()
    with sqlite3.connect(tmp_path / "broker.db") as db:
        names = sorted(name for (name,) in db.execute("SELECT name FROM kombu_queue"))
    assert names == ["default", "gpu"]
