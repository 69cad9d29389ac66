"""`kill -9` of `distillery up`: its Celery worker notices and exits (Linux: PR_SET_PDEATHSIG)."""

import os
import select
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import free_port
from tests.e2e.test_up import processes_with, ready, wait_for

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only")
ROOT = Path(__file__).resolve().parents[2]  # this checkout's code, not an installed copy


def exited_within(pid: int, timeout: float) -> bool:
    """Waits (no polling) for a process that is not this one's child to exit."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        return bool(select.select([fd], [], [], timeout)[0])
    finally:
        os.close(fd)


def test_killing_up_stops_its_worker(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISTILLERY_")}
    env["PYTHONPATH"] = str(ROOT)
    port, log = free_port(), (tmp_path / "up.log").open("wb")
    cmd = [sys.executable, "-m", "service.cli", "up", "--port", str(port)]
    up = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=log, stderr=log)
    workers: list[int] = []
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            wait_for(lambda: ready(client), 60)
        workers = processes_with(f"distillery-{up.pid}@")
        assert len(workers) == 1
        up.kill()
        up.wait()
        assert exited_within(workers[0], 60), "the worker outlived `up`"
    finally:
        for pid in workers:  # the worker is its own process group's leader (start_new_session)
            if not exited_within(pid, 0):
                os.killpg(pid, signal.SIGKILL)
        if up.poll() is None:
            up.kill()
        log.close()
