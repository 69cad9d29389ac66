"""Bring your own teacher, end to end: a teacher's weights downloaded, uploaded as a model
(and registered from its job), then a real worker distils from the model."""

import hashlib
import io
from pathlib import Path

import torch
from safetensors.torch import save

from tests.e2e.conftest import Service, load_student
from tests.e2e.test_distill import KD_SPEC, teacher_job
from worker.engine.zoo import build_model

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
