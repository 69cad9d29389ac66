"""Bring your own teacher, end to end: a teacher's weights downloaded, uploaded as a model
(and registered from its job), then a real worker distils from the model; a timm teacher's
upload is checked by the worker before it may teach, and its check survives a lost message or
a killed worker."""

import hashlib
import io
import time
from pathlib import Path
from typing import Any

import pytest
import redis
import torch
from safetensors.torch import save

from service.db.sessions import session_scope
from service.db.tables import RegisteredModel
from service.ingest import checks
from tests.e2e.conftest import FAST, QUEUE, Service, load_student
from tests.e2e.test_distill import KD_SPEC, teacher_job
from worker.engine.zoo import build_model

# training through a real worker is the same on either backend: the production shape only
# (the API's and the job lifecycle's backend differences are tested on both elsewhere)
pytestmark = pytest.mark.parametrize("backend", ["postgres"], indirect=True)

OCTET = {"Content-Type": "application/octet-stream"}


def test_an_uploaded_teacher_teaches_a_kd_job(service: Service, tmp_path: Path) -> None:
    teacher = teacher_job(service)
    weights = service.http.get(f"/v1/jobs/{teacher['id']}/artifacts/student.safetensors")
    assert weights.status_code == 200
    r = service.http.post(
        "/v1/models",
        params={"arch": "resnet8", "num_classes": 10, "in_channels": 1, "input_size": 8},
        content=weights.content,
        headers=OCTET,
    )
    assert r.status_code == 201, r.text
    model = r.json()
    assert model["sha256"] == hashlib.sha256(weights.content).hexdigest()
    registered = service.http.post("/v1/models", json={"job": teacher["id"]}).json()
    assert (registered["source"], registered["sha256"]) == ("job", model["sha256"])

    job = service.submit({**KD_SPEC, "teacher": {"model": model["id"]}})
    job = service.wait_status(job["id"], "succeeded")
    card = load_student(service, job, tmp_path)
    lineage = card["teacher"]
    assert (lineage["model_id"], lineage["weights_sha256"]) == (model["id"], model["sha256"])
    assert lineage["architecture"] == "resnet8" and lineage["val_acc"] >= 0.9
    assert service.http.delete(f"/v1/models/{model['id']}").status_code == 204


def test_refusals_reach_the_client_over_real_http(service: Service) -> None:
    """Refused early (from the header), the rest of a large body is drained, not stored,
    so the client still reads its 422."""
    big = build_model("resnet32x4", 10, 1).state_dict()  # ~30 MB, not a resnet8
    buf = io.BytesIO()
    torch.save(big, buf)
    before = service.http.get("/v1/models", params={"limit": 200}).json()["data"]

    for body in (save(dict(big)), buf.getvalue()):
        r = service.http.post(
            "/v1/models",
            params={"arch": "resnet8", "num_classes": 10, "in_channels": 1},
            content=body,
            headers=OCTET,
        )
        assert r.status_code == 422, r.text
    assert service.http.get("/v1/models", params={"limit": 200}).json()["data"] == before


def checked(service: Service, model_id: str, timeout: float = 120) -> dict[str, Any]:
    """The model once the worker's check has decided it."""
    deadline = time.monotonic() + timeout
    while (model := service.http.get(f"/v1/models/{model_id}").json())["status"] == "validating":
        assert time.monotonic() < deadline, f"model {model_id} still validating"
        time.sleep(0.25)
    return dict(model)


def test_a_timm_teacher_upload_is_checked_by_the_worker_then_teaches(
    service: Service, tmp_path: Path
) -> None:
    torch.manual_seed(0)
    arch, params = "timm/mobilenetv3_small_050", {"num_classes": 10, "in_channels": 1}
    good = save(dict(build_model(arch, 10, 1).state_dict()))
    other = save(dict(build_model("timm/resnet18", 10, 1).state_dict()))
    uploads = [
        service.http.post(
            "/v1/models", params={"arch": arch, **params}, content=body, headers=OCTET
        )
        for body in (good, other)
    ]
    assert [r.status_code for r in uploads] == [201, 201]
    assert all(r.json()["status"] == "validating" for r in uploads)

    ready, invalid = (checked(service, r.json()["id"]) for r in uploads)
    assert (ready["status"], ready["output_shape"]) == ("ready", [10])
    assert ready["parameters"] == sum(p.numel() for p in build_model(arch, 10, 1).parameters())
    assert invalid["status"] == "invalid"
    assert any(p.startswith("missing keys: blocks.") for p in invalid["problems"])

    job = service.submit({**KD_SPEC, "teacher": {"model": ready["id"]}})
    job = service.wait_status(job["id"], "succeeded")
    assert load_student(service, job, tmp_path)["teacher"]["architecture"] == arch
    refused = service.http.post("/v1/jobs", json={**KD_SPEC, "teacher": {"model": invalid["id"]}})
    assert refused.status_code == 422 and "is invalid" in refused.text


def test_a_check_lost_with_its_message_or_its_worker_is_sent_again(service: Service) -> None:
    """The last of this module: it kills the module's worker. A lost message: deleted from
    the broker. A lost worker: this test, which takes the check and never ends it."""
    arch, params = "timm/mobilenetv3_small_050", {"arch": "timm/mobilenetv3_small_050"}
    body = save(dict(build_model(arch, 10, 1).state_dict()))
    params |= {"num_classes": 10, "in_channels": 1}
    service.kill_worker()
    lost = service.http.post("/v1/models", params=params, content=body, headers=OCTET).json()
    assert redis.Redis.from_url(service.env["DISTILLERY_BROKER_URL"]).delete(QUEUE) == 1
    orphaned = service.http.post("/v1/models", params=params, content=body, headers=OCTET).json()
    with session_scope() as s:  # its lease runs out: a worker takes the check again
        assert checks.MODELS.claim(s, orphaned["id"], float(FAST["DISTILLERY_LEASE_S"]))
    service.start_worker()
    assert checked(service, lost["id"], timeout=240)["status"] == "ready"
    assert checked(service, orphaned["id"], timeout=240)["status"] == "ready"
    with session_scope() as s:
        row = s.get(RegisteredModel, orphaned["id"])
        assert row is not None and row.check_attempts == 2  # the lost worker's, the real one
