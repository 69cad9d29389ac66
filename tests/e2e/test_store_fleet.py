"""Many hosts on one bucket: the API and two workers, each with a data dir of its own and its
own queue, no folder shared, every durable byte in a bucket of a real S3 server on loopback,
reached through a Link the test can cut (tests/s3.py). A dataset uploaded to the API trains a
teacher on worker A; worker B distils a student from that teacher; a job killed (kill -9)
on A resumes on B from its checkpoint in the bucket; the store cut mid-job fails the job
retryably with nothing corrupt kept; every download comes from the API."""

import hashlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from service.cli import worker_command
from tests.conftest import Backend
from tests.e2e.conftest import ROOT, Service, fresh_service
from tests.photos import photo_zip
from tests.s3 import Link, S3Server

pytestmark = pytest.mark.parametrize("backend", ["postgres"], indirect=True)

A, B = "store-a", "store-b"  # each worker's queue
DIGITS = {
    "method": {"name": "supervised"},
    "student": {"arch": "resnet8"},
    "data": {"dataset": "digits"},
    "train": {"batch_size": 32, "optimizer": {"lr": 0.05}},
}


@dataclass
class Fleet:
    service: Service
    server: S3Server
    bucket: str
    prefix: str
    link: Link
    dirs: dict[str, Path]  # "api", "a", "b": each process's own data dir
    workers: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start_worker(self, name: str, data_dir: str, queues: str) -> None:
        env = {**self.service.env, "DISTILLERY_DATA_DIR": str(self.dirs[data_dir])}
        log = (self.service.log_dir / f"worker-{name}.log").open("ab")
        self.workers[name] = subprocess.Popen(
            worker_command(queues, 1),
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )

    def kill(self, name: str) -> None:
        """SIGKILL a worker and its job's processes: a host lost mid-training."""
        proc = self.workers.pop(name)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    def submit(self, spec: dict[str, Any], queue: str) -> str:
        r = self.service.http.post("/v1/jobs", json=spec | {"resources": {"queue": queue}})
        assert r.status_code == 201, r.text
        return str(r.json()["id"])

    def objects(self, under: str) -> dict[str, str]:
        """{key under the store's prefix: sha256} of the bucket's objects under `under`."""
        s3 = self.server.client()
        listed = s3.list_objects_v2(Bucket=self.bucket, Prefix=f"{self.prefix}/{under}/")
        return {
            o["Key"].removeprefix(f"{self.prefix}/"): hashlib.sha256(
                s3.get_object(Bucket=self.bucket, Key=o["Key"])["Body"].read()
            ).hexdigest()
            for o in listed.get("Contents", [])
        }

    def checkpoints(self, job_id: str) -> list[dict[str, Any]]:
        return [e["data"] for e in self.service.events(job_id) if e["type"] == "checkpoint"]

    def wait_checkpoint(self, job_id: str, epoch: int, timeout: float = 300) -> None:
        """Until the job has recorded a resume checkpoint of `epoch` (a recorded fact)."""
        deadline = time.monotonic() + timeout
        while not any(c["epoch"] >= epoch for c in self.checkpoints(job_id)):
            job = self.service.job(job_id)
            assert job["status"] == "running" or job["status"] == "queued", job
            assert time.monotonic() < deadline, f"no checkpoint of epoch {epoch}: {job}"
            time.sleep(0.25)

    def close(self) -> None:
        for proc in self.workers.values():
            os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.workers.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def fleet(
    backend: Backend, s3_server: S3Server, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Fleet]:
    link = Link(s3_server).mend()
    env = link.env(s3_server.store_env())
    bucket, prefix = env["DISTILLERY_STORE_URL"].removeprefix("s3://").split("/", 1)
    dirs = {name: tmp_path_factory.mktemp(f"host-{name}") for name in ("api", "a", "b")}
    logs = tmp_path_factory.mktemp("logs-store")
    api_env = env | {"DISTILLERY_DATA_DIR": str(dirs["api"])}
    with fresh_service(backend, logs, api_env, worker=False) as svc:
        fleet = Fleet(svc, s3_server, bucket, prefix, link, dirs)
        fleet.start_worker("a", "a", A)
        fleet.start_worker("b", "b", B)
        try:
            yield fleet
        finally:
            fleet.close()
            link.cut()


def files(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def test_a_teacher_on_one_host_teaches_a_student_on_another(fleet: Fleet) -> None:
    http = fleet.service.http
    r = http.post(
        "/v1/datasets", content=photo_zip(), headers={"Content-Type": "application/octet-stream"}
    )
    assert r.status_code == 201, r.text
    dataset = r.json()["id"]
    stored = fleet.objects(f"datasets/{dataset}")
    assert {f"datasets/{dataset}/index.json", f"datasets/{dataset}/samples.npz"} < set(stored)
    data = {"dataset": "upload", "upload": dataset, "image_size": 16}
    train = {"epochs": 2, "batch_size": 32, "data_placement": "stream"}  # shards every epoch
    teacher = fleet.submit(
        {"method": {"name": "supervised"}, "student": {"arch": "resnet8"}}
        | {"data": data}
        | {"train": train},
        A,
    )
    fleet.service.wait_status(teacher, "succeeded")
    kd = {"name": "kd", "temperature": 4.0, "ce_weight": 0.1, "kd_weight": 0.9}
    student = fleet.submit(
        {"method": kd, "teacher": {"job": teacher}, "student": {"arch": "cnn_small"}}
        | {"data": data, "train": train},
        B,
    )
    done = fleet.service.wait_status(student, "succeeded")
    assert done["result"]["teacher"]["job_id"] == teacher

    # each host read what it needed from the bucket into its own cache, and kept no output
    a, b = (fleet.dirs[h] for h in "ab")
    shards = {key for key in stored if "/shards/" in key}
    assert shards and shards <= files(a / "cache") and shards <= files(b / "cache")
    assert f"jobs/{teacher}/student.safetensors" in files(b / "cache")
    assert {f.split("/")[0] for f in files(a / "scratch" / "jobs" / teacher)} == {"ranks"}
    assert not (b / "scratch" / "jobs" / teacher).exists()  # the teacher never ran on B
    assert files(fleet.dirs["api"] / "scratch") == set()
    for host in ("api", "a", "b"):
        assert not (fleet.dirs[host] / "artifacts").exists()

    # the outputs are objects, downloaded from the API as their rows list them
    listed = http.get(f"/v1/jobs/{student}/artifacts").json()["data"]
    in_bucket = fleet.objects(f"jobs/{student}")
    assert {f"jobs/{student}/{a['name']}": a["sha256"] for a in listed} == in_bucket
    weights = http.get(f"/v1/jobs/{student}/artifacts/student.safetensors")
    sha = weights.headers["x-checksum-sha256"]
    assert hashlib.sha256(weights.content).hexdigest() == sha
    part = http.get(
        f"/v1/jobs/{student}/artifacts/student.safetensors", headers={"Range": "bytes=0-7"}
    )
    assert (part.status_code, part.content) == (206, weights.content[:8])


def test_a_job_killed_on_one_host_resumes_on_another_from_the_bucket(fleet: Fleet) -> None:
    job = fleet.submit(DIGITS | {"train": {**DIGITS["train"], "epochs": 8}}, A)
    fleet.wait_checkpoint(job, 2)
    fleet.kill("a")
    fleet.service.wait(job, lambda j: j["status"] == "queued", timeout=60)
    fleet.start_worker("b-for-a", "b", A)  # B's host now takes A's queue too
    done = fleet.service.wait_status(job, "succeeded")
    resumed = done["result"]["resumed_from_epoch"]
    assert done["attempt"] == 2 and resumed >= 2
    epochs = [e["data"]["epoch"] for e in fleet.service.events(job) if e["type"] == "metrics"]
    assert epochs[epochs.index(resumed) + 1] == resumed + 1  # on B, from A's checkpoint
    assert sorted(set(epochs)) == list(range(1, 9))
    assert (fleet.dirs["b"] / "scratch" / "jobs" / job / "ranks").is_dir()  # it ran on B


def test_the_store_cut_mid_job_fails_it_retryably_with_nothing_corrupt_kept(
    fleet: Fleet,
) -> None:
    job = fleet.submit(DIGITS | {"train": {**DIGITS["train"], "epochs": 60}}, B)
    fleet.wait_checkpoint(job, 1)
    fleet.link.cut()
    try:
        failed = fleet.service.wait(job, lambda j: j["status"] == "failed", timeout=300)
        r = fleet.service.http.get(f"/v1/jobs/{job}/artifacts/checkpoints/resume.safetensors")
        assert (r.status_code, r.json()["code"]) == (503, "store_unavailable")
    finally:
        fleet.link.mend()
    error = failed["error"]
    assert (error["code"], error["retryable"]) == ("store_unavailable", True), error
    # every row names an object that is whole: what it recorded, byte for byte
    listed = fleet.service.http.get(f"/v1/jobs/{job}/artifacts").json()["data"]
    assert listed and {f"jobs/{job}/{a['name']}": a["sha256"] for a in listed} == (
        fleet.objects(f"jobs/{job}")
    )
    for art in listed:
        body = fleet.service.http.get(f"/v1/jobs/{job}/artifacts/{art['name']}").content
        assert hashlib.sha256(body).hexdigest() == art["sha256"]
