"""The user's walk: train a teacher over HTTP, distil a student from it, download the
student and get back the accuracy the job reported. Real API, real worker, real data."""

from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import Service, load_student

# training through a real worker is the same on either backend: the production shape only
# (the API's and the job lifecycle's backend differences are tested on both elsewhere)
pytestmark = pytest.mark.parametrize("backend", ["postgres"], indirect=True)

TEACHER_SPEC = {
    "name": "digits-teacher",
    "method": {"name": "supervised", "route_every": 4},
    "student": {"arch": "resnet8"},
    "data": {"dataset": "digits", "val_fraction": 0.2},
    "train": {
        "epochs": 8,
        "batch_size": 64,
        "seed": 1,
        "optimizer": {"name": "sgd", "lr": 0.1},
        "schedule": {"name": "multistep", "milestones": [6]},
    },
}
KD_SPEC = {
    "name": "digits-kd",
    "method": {"name": "kd", "temperature": 4.0, "ce_weight": 0.1, "kd_weight": 0.9},
    "student": {"arch": "cnn_small"},
    "data": {"dataset": "digits", "val_fraction": 0.2},
    "train": {"epochs": 8, "batch_size": 64, "seed": 2, "optimizer": {"name": "sgd", "lr": 0.1}},
}


def teacher_job(service: Service) -> dict[str, Any]:
    job = service.submit(TEACHER_SPEC)
    return service.wait_status(job["id"], "succeeded")


def test_teacher_trains_to_090_with_progress_and_events(service: Service) -> None:
    job = teacher_job(service)
    assert job["metrics"]["val_acc"] >= 0.90
    assert job["progress"]["epoch"] == 8 and job["progress"]["steps_per_epoch"] > 0
    epochs = [e["data"] for e in service.events(job["id"]) if e["type"] == "metrics"]
    assert [e["epoch"] for e in epochs] == list(range(1, 9))
    assert all("train_loss" in e and "val_acc" in e and "train_ce" in e for e in epochs)
    route = [
        a["name"]
        for a in service.http.get(f"/v1/jobs/{job['id']}/checkpoints").json()["data"]
        if a["name"].startswith("checkpoints/route/")
    ]
    # every 4 epochs, the epoch before the LR drop at 6, and the last
    assert route == [f"checkpoints/route/epoch_{e:04d}.safetensors" for e in (4, 6, 8)]


def test_kd_student_downloads_and_reproduces_reported_accuracy(
    service: Service, tmp_path: Path
) -> None:
    teacher = teacher_job(service)
    job = service.submit({**KD_SPEC, "teacher": {"job": teacher["id"]}})
    job = service.wait_status(job["id"], "succeeded")
    assert {"train_ce", "train_kd"} <= set(job["metrics"])

    card = load_student(service, job, tmp_path)
    assert card["architecture"] == "cnn_small" and card["num_classes"] == 10
    assert card["input_shape"] == [1, 8, 8] and len(card["normalisation"]["mean"]) == 1
    assert card["teacher"]["job_id"] == teacher["id"] and card["teacher"]["val_acc"] >= 0.9
    assert card["spec"]["method"]["name"] == "kd" and "torch" in card["versions"]
    assert card["device"] == "cpu"
