"""One job on two processes (`resources.gpus: 2`): on this CPU machine, two gloo ranks
started by the worker's task. Rank 0 alone reports, checkpoints and writes the student.
(A worker with fewer GPUs than the job asks for: tests/worker/job/test_rank.py.)"""

import time
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import Service, load_student

# training through a real worker is the same on either backend: the production shape only
# (the API's and the job lifecycle's backend differences are tested on both elsewhere)
pytestmark = pytest.mark.parametrize("backend", ["postgres"], indirect=True)

DDP_SPEC = {
    "name": "digits-ddp",
    "method": {"name": "supervised"},
    "student": {"arch": "cnn_small"},
    "data": {"dataset": "digits", "val_fraction": 0.2},
    "train": {"epochs": 2, "batch_size": 64, "seed": 3, "device": "cpu"},
    "resources": {"gpus": 2},
}
# 1797 digits, a fifth for validation: 1438 to train on, 22 whole global batches of 64
STEPS_PER_EPOCH = 22


def events_of(service: Service, job_id: str, type_: str) -> list[dict[str, Any]]:
    return [e["data"] for e in service.events(job_id) if e["type"] == type_]


def attempt_dir(service: Service, job_id: str, event: dict[str, Any]) -> Path:
    return Path(service.env["DISTILLERY_DATA_DIR"]) / "artifacts" / "jobs" / job_id / event["logs"]


def test_two_processes_train_one_job_and_rank_0_alone_reports(
    service: Service, tmp_path: Path
) -> None:
    job = service.wait_status(service.submit(DDP_SPEC)["id"], "succeeded")

    [ddp] = events_of(service, job["id"], "distributed")
    assert (ddp["world"], ddp["backend"], ddp["devices"]) == (2, "gloo", ["cpu", "cpu"])
    epochs = [e["epoch"] for e in events_of(service, job["id"], "metrics")]
    assert epochs == [1, 2]  # once each: rank 1 reports nothing
    assert job["progress"]["steps_per_epoch"] == STEPS_PER_EPOCH
    checkpoints = [(e["kind"], e["epoch"]) for e in events_of(service, job["id"], "checkpoint")]
    assert checkpoints == [("resume", 1), ("resume", 2), ("route", 2)]
    names = [
        a["name"] for a in service.http.get(f"/v1/jobs/{job['id']}/checkpoints").json()["data"]
    ]
    assert sorted(names) == [  # the newest resume checkpoint and the one before it
        "checkpoints/resume.prev.safetensors",
        "checkpoints/resume.safetensors",
        "checkpoints/route/epoch_0002.safetensors",
    ]

    card = load_student(service, job, tmp_path)
    assert card["spec"]["resources"]["gpus"] == 2 and card["device"] == "cpu"

    logs = attempt_dir(service, job["id"], ddp)
    assert (logs / "rank1.ready").exists() and (logs / "rank0.log").exists()
    assert "rank 1 of 2 done" in (logs / "rank1.log").read_text()


def test_cancel_stops_every_process(service: Service) -> None:
    spec = {**DDP_SPEC, "train": {**DDP_SPEC["train"], "epochs": 200}}
    job = service.submit(spec)
    service.wait(job["id"], lambda j: j["status"] == "running" and j["progress"].get("step"))
    service.http.post(f"/v1/jobs/{job['id']}/cancel")
    service.wait_status(job["id"], "cancelled", timeout=30)

    [ddp] = events_of(service, job["id"], "distributed")
    log = service.log_dir / f"worker{service.workers}.log"
    deadline = time.monotonic() + 20
    while f"rank 1 of {attempt_dir(service, job['id'], ddp)} exited" not in log.read_text():
        assert time.monotonic() < deadline, "rank 1 was never reaped"
        time.sleep(0.25)
    assert (
        "rank 1 of 2 done" not in (attempt_dir(service, job["id"], ddp) / "rank1.log").read_text()
    )
