"""Every requested method as a user runs it: submitted over HTTP, trained by a real worker on
digits, per-term losses in the events, the student downloaded and loaded."""

from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import Service, load_student

# training through a real worker is the same on either backend: the production shape only
# (the API's and the job lifecycle's backend differences are tested on both elsewhere)
pytestmark = pytest.mark.parametrize("backend", ["postgres"], indirect=True)

DATA = {"dataset": "digits", "val_fraction": 0.2}
TEACHER = {
    "method": {"name": "supervised", "route_every": 2},
    "student": {"arch": "resnet8"},
    "data": DATA,
    "train": {
        "epochs": 6,
        "batch_size": 64,
        "optimizer": {"lr": 0.1},
        "schedule": {"name": "multistep", "milestones": [4]},
    },
}
TRAIN = {"epochs": 4, "batch_size": 64, "optimizer": {"lr": 0.1}}
CASES: dict[str, tuple[dict[str, Any], str, set[str]]] = {
    # method params, student arch, loss terms the events must carry
    "kdcl": (
        {"name": "kdcl", "peers": ["resnet8"], "ensemble": "general"},
        "cnn_small",
        {"ce_0", "kd_0", "ce_1", "kd_1"},
    ),
    "ddgsd": ({"name": "ddgsd"}, "cnn_small", {"ce", "kl", "mmd"}),
    "rco": ({"name": "rco", "anchors": "lr_drops"}, "cnn_small", {"ce", "kd"}),
    "iekd": ({"name": "iekd", "ae_epochs": 2}, "resnet8", {"ce", "inh", "exp"}),
    "reviewkd": ({"name": "reviewkd", "warmup_epochs": 2}, "resnet8", {"ce", "hcl"}),
    "dkd": (
        {"name": "dkd", "logit_standardisation": True},
        "cnn_small",
        {"ce", "tckd", "nckd"},
    ),
    "dist": ({"name": "dist"}, "cnn_small", {"ce", "inter", "intra"}),
}


@pytest.fixture(scope="module")
def teacher(service: Service) -> dict[str, Any]:
    job = service.submit(TEACHER)
    return service.wait_status(job["id"], "succeeded")


@pytest.mark.parametrize("name", sorted(CASES))
def test_method_job_succeeds_and_its_student_loads(
    service: Service, teacher: dict[str, Any], name: str, tmp_path: Path
) -> None:
    method, arch, terms = CASES[name]
    spec = {"method": method, "student": {"arch": arch}, "data": DATA, "train": TRAIN}
    if name not in ("kdcl", "ddgsd"):
        spec["teacher"] = {"job": teacher["id"]}
    job = service.wait_status(service.submit(spec)["id"], "succeeded")

    events = service.events(job["id"])
    metrics = [e["data"] for e in events if e["type"] == "metrics"]
    assert [m["epoch"] for m in metrics] == [1, 2, 3, 4]
    assert all({f"train_{t}" for t in terms} <= set(m) for m in metrics)
    card = load_student(service, job, tmp_path)
    assert card["spec"]["method"]["name"] == name
    if name == "rco":
        stages = [e["data"]["anchor_epoch"] for e in events if e["type"] == "stage"]
        assert stages == [4, 6]  # the LR drop, then the converged teacher
    if name == "iekd":
        phases = {e["data"].get("phase") for e in events if e["type"] == "phase"}
        assert phases == {"autoencoder", "student"}
    if name == "kdcl":
        assert set(card["extra_models"].values()) | {card["architecture"]} == {
            "cnn_small",
            "resnet8",
        }
