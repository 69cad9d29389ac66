"""A real service for end-to-end tests: the API under uvicorn and a Celery worker, each its
own process, on the SQLite/kombu-sqla backend and on PostgreSQL + Redis."""

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.cli import worker_command
from tests.conftest import Backend, truncate

ROOT = Path(__file__).resolve().parents[2]
QUEUE = "e2e"  # specs name it; the service tests' jobs sit in "default" where nobody listens
FAST = {  # short leases so a killed worker is noticed in seconds
    "DISTILLERY_LEASE_S": "4",
    "DISTILLERY_HEARTBEAT_S": "0.5",
    "DISTILLERY_WATCHDOG_S": "0.5",
    "DISTILLERY_LOG_LEVEL": "INFO",
    "DISTILLERY_CHECK_QUEUE": QUEUE,  # uploaded timm models are checked by the e2e worker
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Service:
    def __init__(
        self,
        backend: Backend,
        log_dir: Path,
        extra_env: dict[str, str] | None = None,
        worker: bool = True,
    ) -> None:
        """The API and, with `worker`, a worker (else the test starts one: start_worker)."""
        self.env = {
            **os.environ,
            **backend.env,
            **FAST,
            "PYTHONUNBUFFERED": "1",
            **(extra_env or {}),
        }
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_dir = log_dir
        self.http = httpx.Client(base_url=self.url, timeout=30)
        self.api = self._spawn("api", self._api_command())
        self.worker: subprocess.Popen[bytes] | None = None
        self.workers = 0
        if worker:
            self.start_worker()
        self._wait_ready()

    def _spawn(self, name: str, cmd: list[str]) -> subprocess.Popen[bytes]:
        log = (self.log_dir / f"{name}.log").open("ab")
        return subprocess.Popen(
            cmd, cwd=ROOT, env=self.env, stdout=log, stderr=log, start_new_session=True
        )

    def start_worker(self) -> None:
        """The same command `distillery worker` runs."""
        self.workers += 1
        self.worker = self._spawn(f"worker{self.workers}", worker_command(QUEUE, 1))

    def kill_api(self) -> None:
        """SIGKILL the API (its watchdog and sweep driver too): a host lost."""
        os.killpg(self.api.pid, signal.SIGKILL)
        self.api.wait()

    def start_api(self) -> None:
        """A new API process on the same port, as a restart brings one up."""
        self.api = self._spawn("api", self._api_command())
        self._wait_ready()

    def _api_command(self) -> list[str]:
        return [sys.executable, "-m", "service.cli", "api", "--port", str(self.port)]

    def kill_worker(self) -> None:
        """SIGKILL the worker and its pool child: a machine lost mid-training."""
        assert self.worker is not None
        os.killpg(self.worker.pid, signal.SIGKILL)
        self.worker.wait()
        self.worker = None

    def terminate_worker(self) -> float:
        """SIGTERM the worker's main process, as `docker stop` or a deploy does (its whole
        process group: tests/e2e/test_up.py). Returns the seconds it took to exit."""
        assert self.worker is not None
        started = time.monotonic()
        self.worker.send_signal(signal.SIGTERM)
        self.worker.wait(timeout=60)
        self.worker = None
        return time.monotonic() - started

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if self.http.get("/readyz").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"API not ready; see {self.log_dir}/api.log")

    def submit(self, spec: dict[str, Any], **headers: str) -> dict[str, Any]:
        spec = {**spec, "resources": {**spec.get("resources", {}), "queue": QUEUE}}
        r = self.http.post("/v1/jobs", json=spec, headers=headers)
        assert r.status_code in (200, 201), r.text
        return dict(r.json())

    def job(self, job_id: str) -> dict[str, Any]:
        r = self.http.get(f"/v1/jobs/{job_id}")
        assert r.status_code == 200, r.text
        return dict(r.json())

    def events(self, job_id: str) -> list[dict[str, Any]]:
        return list(
            self.http.get(f"/v1/jobs/{job_id}/events", params={"limit": 1000}).json()["data"]
        )

    def wait(
        self, job_id: str, until: Callable[[dict[str, Any]], bool], timeout: float = 600
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.job(job_id)
            if until(job):
                return job
            if job["status"] in ("failed", "cancelled") and not until(job):
                raise AssertionError(f"job ended {job['status']}: {job['error']}")
            time.sleep(0.25)
        raise AssertionError(
            f"timed out waiting on {job_id}: {self.job(job_id)}; logs in {self.log_dir}"
        )

    def wait_status(self, job_id: str, status: str, timeout: float = 600) -> dict[str, Any]:
        return self.wait(job_id, lambda j: j["status"] == status, timeout)

    def close(self) -> None:
        for proc in (self.worker, self.api):
            if proc is not None and proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
        self.http.close()


def load_student(service: Service, job: dict[str, Any], dest: Path) -> dict[str, Any]:
    """Download a finished job's student and model card, load the weights into the zoo
    architecture and check it scores the accuracy the job reported. Returns the card."""
    import torch

    from service.db.sessions import session_scope
    from service.db.tables import Dataset
    from service.ingest import datasets
    from service.spec.job import JobSpec
    from worker.engine.checkpoint import load_weights
    from worker.engine.zoo import build_model
    from worker.job.build import load_data
    from worker.task.cache import Cache
    from worker.task.context import dataset_file
    from worker.task.inputs import JobInputs

    paths = {name: download(service, job["id"], name, dest) for name in STUDENT_FILES}
    card = dict(json.loads(paths["model.json"].read_text()))
    model = build_model(card["architecture"], card["num_classes"], card["in_channels"])
    load_weights(model, paths["student.safetensors"])
    spec = JobSpec.model_validate(card["spec"])
    inputs = JobInputs(job_dir=dest)
    if spec.data.upload:  # the file the worker read: data.npz or the shards' index.json
        with session_scope() as s:
            row = s.get(Dataset, spec.data.upload)
            assert row is not None
            key, sha256 = datasets.canonical_key(row), row.sha256
        cache = Cache.default()  # this process's store, as a worker reads it
        path = dataset_file(cache, key, sha256)
        inputs = JobInputs(dest, path, None if cache.store.is_folder else key)
    data = load_data(spec, inputs)
    assert (data.mean, data.std) == (card["normalisation"]["mean"], card["normalisation"]["std"])
    val_x, val_y = validation(data)  # as the job normalised and sized it
    with torch.no_grad():  # scored here, not with the engine's evaluate() that reported it
        accuracy = float((model.eval()(val_x).argmax(1) == val_y).float().mean())
    assert abs(accuracy - card["metrics"]["final"]["val_acc"]) < 1e-6
    assert abs(accuracy - job["metrics"]["val_acc"]) < 1e-6
    return card


STUDENT_FILES = ("model.json", "student.safetensors")


def validation(data: Any) -> tuple[Any, Any]:
    """A DataSplit's validation images (N, C, H, W), normalised and centre-cropped as the
    model sees them, and their labels: all of them, in order, on the CPU."""
    import torch

    batches = list(data.val.ordered(256))
    x = torch.cat([xb.cpu() for xb, _ in batches])
    y = torch.cat([yb.cpu() for _, yb in batches])
    return x, y


def download(service: Service, job_id: str, name: str, dest: Path) -> Path:
    """One artifact of a job, saved under `dest` as <job id>-<name>."""
    r = service.http.get(f"/v1/jobs/{job_id}/artifacts/{name}")
    assert r.status_code == 200, r.text
    path = dest / f"{job_id}-{name}"
    path.write_bytes(r.content)
    return path


@contextlib.contextmanager
def fresh_service(
    backend: Backend, log_dir: Path, extra_env: dict[str, str] | None = None, worker: bool = True
) -> Iterator[Service]:
    """A service started on emptied tables, closed on exit."""
    truncate()
    svc = Service(backend, log_dir, extra_env, worker)
    try:
        yield svc
    finally:
        svc.close()


@pytest.fixture(scope="module")
def service(backend: Backend, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    with fresh_service(backend, tmp_path_factory.mktemp(f"logs-{backend.name}")) as svc:
        yield svc
