"""What the API stores for dkd, dist and logit standardisation: every default resolved in
the job's spec, and a 422 that stores nothing for data dkd cannot distil."""

from collections.abc import Callable
from typing import Any

from fastapi.testclient import TestClient

from tests.service.helpers import fields, problem

TWO_CLASSES = {"dataset": "synthetic", "synthetic": {"num_classes": 2, "size": 8}}


def body(teacher: str, method: dict[str, Any], data: dict | None = None) -> dict[str, Any]:
    return {
        "method": method,
        "teacher": {"job": teacher},
        "student": {"arch": "resnet8"},
        "data": data or {"dataset": "digits"},
        "train": {"epochs": 24},
    }


def test_the_stored_spec_holds_the_defaults_the_flag_and_the_epochs_chose(
    client: TestClient, job_in: Any
) -> None:
    teacher = job_in("succeeded")
    ls = {"name": "dkd", "logit_standardisation": True}
    r = client.post("/v1/jobs", json=body(teacher, ls))
    assert r.status_code == 201, r.text
    method = r.json()["spec"]["method"]
    assert method | {"name": "dkd"} == {
        "name": "dkd",
        "logit_standardisation": True,
        "alpha": 9.0,
        "beta": 72.0,
        "temperature": 2.0,
        "warmup_epochs": 2,  # 20 of 240 epochs, on 24
        "ce_weight": 1.0,
    }
    kd = client.post("/v1/jobs", json=body(teacher, {"name": "kd", "logit_standardisation": True}))
    assert kd.json()["spec"]["method"]["kd_weight"] == 9.0
    dist = client.post("/v1/jobs", json=body(teacher, {"name": "dist"})).json()["spec"]["method"]
    assert (dist["temperature"], dist["kd_weight"]) == (4.0, 2.0)


def test_dkd_on_two_classes_is_refused_and_nothing_is_stored(
    client: TestClient, count_jobs: Callable[[], int], job_in: Any
) -> None:
    teacher = job_in("succeeded", data=TWO_CLASSES)
    before = count_jobs()
    refused = problem(
        client.post("/v1/jobs", json=body(teacher, {"name": "dkd"}, TWO_CLASSES)), 422
    )
    assert fields(refused) == ["method.name"]
    assert "at least 3 classes" in refused["errors"][0]["message"]
    assert count_jobs() == before
    kd = client.post("/v1/jobs", json=body(teacher, {"name": "kd"}, TWO_CLASSES))
    assert kd.status_code == 201, kd.text
