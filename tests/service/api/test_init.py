"""student.init at the door: timm's pretrained weights, a registered model or a succeeded
job's student, each of the student's architecture and the data's channels; a model a queued
job starts from cannot be deleted."""

from typing import Any

import pytest
from fastapi.testclient import TestClient
from safetensors.torch import save

from service.spec.names import timm_archs
from tests.service.helpers import fields, problem
from worker.engine.zoo import build_model

DIGITS = {"dataset": "digits"}


def job_body(arch: str, init: dict[str, Any]) -> dict[str, Any]:
    return {
        "method": {"name": "supervised"},
        "student": {"arch": arch, "init": init},
        "data": DIGITS,
        "train": {"epochs": 2},
    }


def refused(client: TestClient, count_jobs: Any, body: dict[str, Any]) -> tuple[list, str]:
    before = count_jobs()
    found = problem(client.post("/v1/jobs", json=body), 422)
    assert count_jobs() == before
    return fields(found), found["errors"][0]["message"]


def uploaded(client: TestClient, arch: str, in_channels: int = 1) -> str:
    r = client.post(
        "/v1/models",
        params={"arch": arch, "num_classes": 5, "in_channels": in_channels},
        content=save(dict(build_model(arch, 5, in_channels).state_dict())),
        headers={"Content-Type": "application/octet-stream"},
    )
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


NO_WEIGHTS = next(n for n in timm_archs()["stages"] if n not in timm_archs()["pretrained"])


@pytest.mark.parametrize(
    ("arch", "init", "field", "says"),
    [
        ("resnet8", {"pretrained": True}, "student.init.pretrained", "come from timm"),
        (f"timm/{NO_WEIGHTS}", {"pretrained": True}, "student.init.pretrained", "no pretrained"),
        ("resnet8", {"pretrained": True, "job": "job_x"}, "student.init", "exactly one"),
        ("resnet8", {}, "student.init", "exactly one"),
        ("resnet8", {"model": "mdl_nope"}, "student.init.model", "no model"),
        ("resnet8", {"job": "job_nope"}, "student.init.job", "no job"),
    ],
)
def test_a_start_that_cannot_be_is_refused(client, count_jobs, arch, init, field, says):
    got, message = refused(client, count_jobs, job_body(arch, init))
    assert got == [field] and says in message


def test_pretrained_timm_weights_are_accepted(client):
    r = client.post("/v1/jobs", json=job_body("timm/resnet18", {"pretrained": True}))
    assert r.status_code == 201, r.text
    assert r.json()["spec"]["student"]["init"] == {"pretrained": True, "model": None, "job": None}


def test_a_model_start_must_be_the_students_architecture_and_channels(client, count_jobs):
    other = uploaded(client, "cnn_small")
    got, message = refused(client, count_jobs, job_body("resnet8", {"model": other}))
    assert got == ["student.init.model"] and "a cnn_small, the student a resnet8" in message
    colour = uploaded(client, "resnet8", in_channels=3)
    got, message = refused(client, count_jobs, job_body("resnet8", {"model": colour}))
    assert "take 3 channels, this data has 1" in message
    fits = uploaded(client, "resnet8")  # 5 classes: the head is replaced for digits' 10
    job = client.post("/v1/jobs", json=job_body("resnet8", {"model": fits})).json()
    assert job["init_model_id"] == fits
    r = client.delete(f"/v1/models/{fits}")
    assert problem(r, 409)["code"] == "model_in_use" and job["id"] in r.json()["detail"]


def test_a_job_start_must_have_succeeded_with_the_students_architecture(client, count_jobs, job_in):
    running = job_in("running")
    got, message = refused(client, count_jobs, job_body("resnet8", {"job": running}))
    assert got == ["student.init.job"] and "is running" in message
    done = job_in("succeeded")  # a resnet8 student
    got, _ = refused(client, count_jobs, job_body("cnn_small", {"job": done}))
    assert got == ["student.init.job"]
    assert client.post("/v1/jobs", json=job_body("resnet8", {"job": done})).status_code == 201
