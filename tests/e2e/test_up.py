"""The README's first command: `distillery up` on a fresh directory, nothing else running."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

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


def processes_with(text: str) -> list[int]:
    """Pids of the processes whose command line contains `text`."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and text in (entry / "cmdline").read_text():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_stopping_up_mid_job_requeues_the_job_and_leaves_no_process(
    tmp_path: Path, sig: signal.Signals
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISTILLERY_")}
    port, log = free_port(), (tmp_path / "up.log").open("wb")
    cmd = [sys.executable, "-m", "service.cli", "up", "--port", str(port)]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=log, stderr=log)
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
    try:
        wait_for(lambda: ready(client), 60)
        long = {**SPEC, "train": {"epochs": 50, "batch_size": 32}}
        job_id = client.post("/v1/jobs", json=long).json()["id"]
        wait_for(lambda: client.get(f"/v1/jobs/{job_id}").json()["progress"].get("step"), 60)
        started = time.monotonic()
        proc.send_signal(sig)  # as a deploy or Ctrl-C in the README's terminal would
        proc.wait(timeout=60)  # on its own: the test fails if it takes longer
        took = time.monotonic() - started
        assert processes_with(f"distillery-{proc.pid}@") == []  # its worker went with it
        assert processes_with(str(tmp_path / ".distillery")) == []  # and the job's processes
        print(f"up stopped by {sig.name} mid-job in {took:.1f} s")
    finally:
        if proc.poll() is None:
            proc.kill()
        client.close()
        log.close()
    log = (tmp_path / "up-again.log").open("wb")
    restarted = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=log, stderr=log)
    try:  # the job went back to its queue, saved: it is there to resume
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
        wait_for(lambda: ready(client), 60)
        events = client.get(f"/v1/jobs/{job_id}/events", params={"limit": 1000}).json()["data"]
        assert any(e["data"].get("preempted") for e in events)
        assert any(e["type"] == "checkpoint" for e in events)
    finally:
        restarted.send_signal(signal.SIGTERM)
        restarted.wait(timeout=60)
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
