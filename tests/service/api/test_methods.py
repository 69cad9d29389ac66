"""Method combinations the API refuses at the door: 422 naming the field, no row stored."""

from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.db import artifacts
from service.db.sessions import session_scope
from tests.service.helpers import fields, problem

DIGITS = {"dataset": "digits"}


def post(client: TestClient, count_jobs: Callable[[], int], body: dict[str, Any]) -> list[str]:
    """POST a spec that must be refused; returns the fields named; checks nothing stored."""
    before = count_jobs()
    body = problem(client.post("/v1/jobs", json=body), 422)
    assert count_jobs() == before
    return fields(body)


def with_route(job_id: str, epochs: list[int]) -> None:
    """Give a succeeded job route checkpoint artifacts, as a supervised run leaves them."""
    root = artifacts.job_dir(job_id)
    with session_scope() as s:
        for epoch in epochs:
            path = root / "checkpoints" / "route" / f"epoch_{epoch:04d}.safetensors"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"weights")
            artifacts.register(s, job_id, path, kind="route", epoch=epoch)


@pytest.mark.parametrize("method", [{"name": "kdcl", "peers": ["resnet8"]}, {"name": "ddgsd"}])
def test_online_and_self_methods_refuse_a_teacher(
    client: TestClient, count_jobs: Any, job_in: Any, method: dict[str, Any]
) -> None:
    teacher = job_in("succeeded")
    body = {
        "method": method,
        "student": {"arch": "cnn_small"},
        "data": DIGITS,
        "teacher": {"job": teacher},
    }
    assert post(client, count_jobs, body) == ["teacher"]


def test_kdcl_needs_a_second_peer(client: TestClient, count_jobs: Any) -> None:
    body = {"method": {"name": "kdcl", "peers": []}, "student": {"arch": "resnet8"}, "data": DIGITS}
    assert post(client, count_jobs, body) == ["method.peers"]


def test_rco_refuses_a_teacher_without_route_checkpoints(
    client: TestClient, count_jobs: Any, job_in: Any
) -> None:
    teacher = job_in("succeeded")
    body = {
        "method": {"name": "rco"},
        "student": {"arch": "cnn_small"},
        "data": DIGITS,
        "teacher": {"job": teacher},
    }
    assert post(client, count_jobs, body) == ["teacher.job"]


def test_rco_explicit_anchors_must_be_route_epochs(
    client: TestClient, count_jobs: Any, job_in: Any
) -> None:
    teacher = job_in("succeeded")
    with_route(teacher, [2, 4])
    body = {
        "method": {"name": "rco", "anchors": [2, 3]},
        "student": {"arch": "cnn_small"},
        "data": DIGITS,
        "teacher": {"job": teacher},
    }
    assert post(client, count_jobs, body) == ["method.anchors"]
    body["method"]["anchors"] = [2, 4]
    assert client.post("/v1/jobs", json=body).status_code == 201


def test_rco_stage_epochs_must_add_up(client: TestClient, count_jobs: Any, job_in: Any) -> None:
    teacher = job_in("succeeded")  # its learning rate drops after epochs 2 and 3
    with_route(teacher, [2, 4])  # lr_drops anchors: 2 and 4
    body = {
        "method": {"name": "rco", "stage_epochs": [3, 3]},
        "student": {"arch": "cnn_small"},
        "data": DIGITS,
        "teacher": {"job": teacher},
        "train": {"epochs": 5},
    }
    assert post(client, count_jobs, body) == ["method.stage_epochs"]


@pytest.mark.parametrize("name", ["reviewkd", "iekd"])
def test_feature_methods_refuse_a_student_without_stage_features(
    client: TestClient, count_jobs: Any, job_in: Any, name: str
) -> None:
    teacher = job_in("succeeded")
    body = {
        "method": {"name": name},
        "student": {"arch": "mlp"},
        "data": DIGITS,
        "teacher": {"job": teacher},
    }
    assert post(client, count_jobs, body) == ["student.arch"]


@pytest.mark.parametrize("name", ["reviewkd", "iekd"])
def test_feature_methods_refuse_a_teacher_without_stage_features(
    client: TestClient, count_jobs: Any, job_in: Any, name: str
) -> None:
    teacher = job_in("succeeded", student={"arch": "mlp"})
    body = {
        "method": {"name": name},
        "student": {"arch": "resnet8"},
        "data": DIGITS,
        "teacher": {"job": teacher},
    }
    assert post(client, count_jobs, body) == ["teacher.job"]


def test_rco_stage_epochs_needs_one_entry_per_anchor(
    client: TestClient, count_jobs: Any, job_in: Any
) -> None:
    teacher = job_in("succeeded")
    with_route(teacher, [2, 4, 6])
    body = {
        "method": {"name": "rco", "anchors": [2], "stage_epochs": [5]},
        "student": {"arch": "cnn_small"},
        "data": DIGITS,
        "teacher": {"job": teacher},
        "train": {"epochs": 5},
    }
    assert post(client, count_jobs, body) == ["method.stage_epochs"]  # anchors 2 and 6
    body["method"]["stage_epochs"] = [2, 3]
    assert client.post("/v1/jobs", json=body).status_code == 201


@pytest.mark.parametrize(
    ("anchors", "stages"), [("lr_drops", 2), ("every_n", 3), ([4], 2), ("greedy", None)]
)
def test_rco_stage_count_follows_every_anchor_mode(
    client: TestClient, count_jobs: Any, job_in: Any, anchors: Any, stages: int | None
) -> None:
    """The same plan the worker follows (RCOParams.plan), checked at the door."""
    teacher = job_in("succeeded")  # its learning rate drops after epochs 2 and 3
    with_route(teacher, [2, 4, 6])  # lr_drops: 2 and the last, 6; every_n (1): all three
    body = {
        "method": {"name": "rco", "anchors": anchors, "stage_epochs": [1, 1, 1, 1, 1]},
        "student": {"arch": "cnn_small"},
        "data": DIGITS,
        "teacher": {"job": teacher},
        "train": {"epochs": 5},
    }
    if stages is None:  # greedy runs as many stages as it is given
        assert client.post("/v1/jobs", json=body).status_code == 201
        return
    assert post(client, count_jobs, body) == ["method.stage_epochs"]
    body["method"]["stage_epochs"] = [5 - (stages - 1)] + [1] * (stages - 1)
    assert client.post("/v1/jobs", json=body).status_code == 201


def reviewkd(teacher: str, student: str) -> dict[str, Any]:
    return {
        "method": {"name": "reviewkd"},
        "student": {"arch": student},
        "data": DIGITS,
        "teacher": {"job": teacher},
    }


def test_reviewkd_refuses_pairs_with_different_stage_counts(
    client: TestClient, count_jobs: Any, job_in: Any
) -> None:
    teacher = job_in("succeeded", student={"arch": "resnet8"})
    assert post(client, count_jobs, reviewkd(teacher, "vgg8")) == ["teacher.job"]


def test_reviewkd_pairs_timm_models_by_their_stage_counts(
    client: TestClient, count_jobs: Any, job_in: Any
) -> None:
    teacher = job_in("succeeded", student={"arch": "timm/resnet18"})  # 5 stages
    body = reviewkd(teacher, "timm/convnext_atto")  # 4 stages
    assert post(client, count_jobs, body) == ["teacher.job"]
    body["student"] = {"arch": "timm/mobilenetv3_small_050"}  # 5 stages
    r = client.post("/v1/jobs", json=body)
    assert r.status_code == 201, r.text
    assert r.json()["spec"]["method"]["weight"] == 1.0  # no published value for this pair


def test_reviewkd_takes_the_published_weight_of_its_pair_unless_given(
    client: TestClient, job_in: Any
) -> None:
    body = reviewkd(job_in("succeeded", student={"arch": "resnet32x4"}), "resnet8x4")
    assert client.post("/v1/jobs", json=body).json()["spec"]["method"]["weight"] == 5.0
    body["method"]["weight"] = 2.0
    assert client.post("/v1/jobs", json=body).json()["spec"]["method"]["weight"] == 2.0


def test_a_paper_epoch_default_is_resolved_shown_and_a_short_schedule_warned(
    client: TestClient, job_in: Any
) -> None:
    teacher = job_in("succeeded")
    body = {
        "method": {"name": "reviewkd"},
        "student": {"arch": "resnet8"},
        "data": DIGITS,
        "teacher": {"job": teacher},
        "train": {"epochs": 10},
    }
    job = client.post("/v1/jobs", json=body).json()
    assert job["spec"]["method"]["warmup_epochs"] == 1  # 20 before: the paper's absolute
    assert job["spec"]["derived"] == {
        "method.warmup_epochs": "1: 20 of the paper's 240 epochs (dvlab-research/ReviewKD "
        "CIFAR-100/train.py, --kd-warm-up 20), scaled to this job's 10"
    }
    events = client.get(f"/v1/jobs/{job['id']}/events").json()["data"]
    assert [e["type"] for e in events] == ["status", "warning"]
    assert events[1]["message"].startswith(
        "train.epochs 10 is 24x shorter than the 240 epochs reviewkd's published figures "
        "were trained with (dvlab-research/ReviewKD CIFAR-100/train.py, --epochs 240)"
    )
    body["method"]["warmup_epochs"] = 3
    body["train"]["epochs"] = 61  # under 4x shorter than the paper's: no warning
    job = client.post("/v1/jobs", json=body).json()
    assert job["spec"]["method"]["warmup_epochs"] == 3 and job["spec"]["derived"] == {}
    events = client.get(f"/v1/jobs/{job['id']}/events").json()["data"]
    assert [e["type"] for e in events] == ["status"]
