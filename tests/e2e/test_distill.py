"""The user's walk: train a teacher over HTTP, distil a student from it, download the
student and get back the accuracy the job reported. Real API, real worker, real data."""

import json
from pathlib import Path
from typing import Any

import torch

from tests.e2e.conftest import Service
from worker.engine.checkpoint import load_weights
from worker.engine.data import load_dataset
from worker.engine.evaluate import evaluate
from worker.engine.models import build_model

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


def download(service: Service, job_id: str, name: str, dest: Path) -> Path:
    r = service.http.get(f"/v1/jobs/{job_id}/artifacts/{name}")
    assert r.status_code == 200, r.text
    path = dest / name
    path.write_bytes(r.content)
    return path


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

    card = json.loads(download(service, job["id"], "model.json", tmp_path).read_text())
    assert card["architecture"] == "cnn_small" and card["num_classes"] == 10
    assert card["input_shape"] == [1, 8, 8] and len(card["normalisation"]["mean"]) == 1
    assert card["teacher"]["job_id"] == teacher["id"] and card["teacher"]["val_acc"] >= 0.9
    assert card["spec"]["method"]["name"] == "kd" and "torch" in card["versions"]
    assert card["device"] == "cpu"

    weights = download(service, job["id"], "student.safetensors", tmp_path)
    model = build_model(card["architecture"], card["num_classes"], card["in_channels"])
    load_weights(model, weights)
    spec = card["spec"]
    data = load_dataset("digits", spec["data"]["val_fraction"], spec["data"]["split_seed"])
    measured = evaluate(model.eval(), data.val_x, data.val_y, 256, torch.device("cpu"), "fp32")
    assert abs(measured["val_acc"] - card["metrics"]["final"]["val_acc"]) < 1e-6
    assert abs(measured["val_acc"] - job["metrics"]["val_acc"]) < 1e-6
