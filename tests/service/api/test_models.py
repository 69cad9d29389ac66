"""POST /v1/models over HTTP: safetensors uploads checked against their architecture,
refusals that store nothing, jobs' students registered as models, models as teachers."""

import asyncio
import hashlib
import io
import json
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient
from safetensors.torch import save, save_file

from service.app import create_app
from service.config import Settings, get_settings
from service.db import artifacts
from service.db.sessions import session_scope
from service.db.tables import RegisteredModel
from service.ingest import checks, uploads, weights
from tests.service.helpers import fields, nothing_stored_in, problem
from worker.engine.zoo import build_model

RESNET8 = {"arch": "resnet8", "num_classes": 10, "in_channels": 1}  # fits digits


def weights_of(arch: str = "resnet8", num_classes: int = 10, in_channels: int = 1) -> bytes:
    return save(dict(build_model(arch, num_classes, in_channels).state_dict()))


def upload(client: TestClient, data: bytes, headers: dict[str, str] | None = None, **params: Any):
    return client.post(
        "/v1/models",
        params=RESNET8 | params,
        content=data,
        headers={"Content-Type": "application/octet-stream"} | (headers or {}),
    )


@pytest.fixture
def nothing_stored(clean_db):
    """Asserts the test left no model row and no file behind."""
    with nothing_stored_in(RegisteredModel, get_settings().artifacts_dir / "models"):
        yield


def test_upload_stores_the_file_with_its_sha256(client):
    data = weights_of()
    r = upload(client, data, name="digits-teacher")
    assert r.status_code == 201, r.text
    model = r.json()
    assert model["id"].startswith("mdl_") and r.headers["location"] == f"/v1/models/{model['id']}"
    assert model["sha256"] == hashlib.sha256(data).hexdigest() and model["size"] == len(data)
    assert (model["name"], model["source"], model["source_job_id"]) == (
        "digits-teacher",
        "upload",
        None,
    )
    assert {k: model[k] for k in RESNET8} == RESNET8
    path = get_settings().artifacts_dir / "models" / model["id"] / "weights.safetensors"
    assert path.read_bytes() == data
    assert client.get(f"/v1/models/{model['id']}").json() == model


def test_list_is_newest_first_with_a_cursor(client):
    ids = [upload(client, weights_of(), name=f"m{i}").json()["id"] for i in range(3)]
    page = client.get("/v1/models", params={"limit": 2}).json()
    assert [m["id"] for m in page["data"]] == ids[::-1][:2]
    rest = client.get("/v1/models", params={"limit": 2, "cursor": page["next_cursor"]}).json()
    assert [m["id"] for m in rest["data"]] == ids[:1] and rest["next_cursor"] is None


def test_metadata_header_is_stored(client):
    meta = {"normalisation": {"mean": [0.5], "std": [0.25]}, "class_names": list("0123456789")}
    r = upload(client, weights_of(), {"X-Model-Metadata": json.dumps(meta)}, input_size=8)
    assert r.status_code == 201, r.text
    assert {k: r.json()[k] for k in (*meta, "input_size")} == meta | {"input_size": 8}


@pytest.mark.parametrize(
    ("meta", "field"),
    [
        ({"class_names": ["a", "b"]}, "class_names"),
        ({"normalisation": {"mean": [0.5, 0.5], "std": [1, 1]}}, "normalisation"),
        ({"normalisation": {"mean": [0.5], "std": [0]}}, "normalisation"),
        ("not json", "X-Model-Metadata"),
    ],
)
def test_bad_metadata_is_a_422(client, nothing_stored, meta, field):
    header = meta if isinstance(meta, str) else json.dumps(meta)
    body = problem(upload(client, weights_of(), {"X-Model-Metadata": header}), 422)
    assert fields(body) == [field], body


def test_unknown_architecture_is_a_422(client, nothing_stored):
    body = problem(upload(client, weights_of(), arch="resnet9"), 422)
    assert "arch" in fields(body)[0]


def test_pickle_bytes_are_not_a_safetensors_file(client, nothing_stored):
    buf = io.BytesIO()
    torch.save(build_model("resnet8", 10, 1).state_dict(), buf)
    body = problem(upload(client, buf.getvalue()), 422)
    assert body["errors"][0]["field"] == "weights"
    assert "not a safetensors file" in body["errors"][0]["message"]


@pytest.mark.parametrize("filename", ["teacher.pt", "model.PTH", "w.pkl", "pytorch_model.bin"])
def test_pickle_names_are_refused(client, nothing_stored, filename):
    body = problem(upload(client, weights_of(), filename=filename), 422)
    assert (body["code"], fields(body)) == ("pickle_refused", ["filename"])


def test_weights_of_another_architecture_name_their_keys(client, nothing_stored):
    body = problem(upload(client, weights_of("cnn_small")), 422)
    assert body["code"] == "weights_mismatch" and set(fields(body)) == {"weights"}
    messages = [e["message"] for e in body["errors"]]
    assert messages[0].startswith("missing keys: [conv1.weight, bn1.weight")
    assert messages[1].startswith(
        "unexpected keys: [stages.0.bn.bias, stages.0.bn.num_batches_tracked"
    )
    deeper = problem(upload(client, weights_of("resnet20")), 422)
    assert deeper["errors"][0]["message"].startswith("unexpected keys: [layer1.1.bn1.bias")


def test_wrong_num_classes_names_the_classifier_shape(client, nothing_stored):
    body = problem(upload(client, weights_of(), num_classes=100), 422)
    assert [e["message"] for e in body["errors"]] == [
        "shape of fc.weight is [10, 64], architecture expects [K=100, 64]",
        "shape of fc.bias is [10], architecture expects [K=100]",
    ]


def test_truncated_file_is_refused(client, nothing_stored):
    body = problem(upload(client, weights_of()[:-100]), 422)
    assert "truncated" in body["errors"][0]["message"]


def test_half_precision_is_accepted_and_float64_is_not(client):
    half = build_model("resnet8", 10, 1).half().state_dict()
    assert upload(client, save(dict(half))).status_code == 201
    double = build_model("resnet8", 10, 1).double().state_dict()
    body = problem(upload(client, save(dict(double))), 422)
    assert "dtype of conv1.weight is F64, expected one of F32, F16, BF16" in body["detail"]


def test_over_max_upload_bytes_is_a_413(clean_db, nothing_stored):
    app = create_app(Settings(watchdog_s=0, max_upload_bytes=50_000))
    with TestClient(app) as small:
        body = problem(upload(small, weights_of()), 413)
    assert body["code"] == "body_too_large"


def test_json_bodies_keep_the_small_limit(clean_db):
    app = create_app(Settings(watchdog_s=0, max_body_bytes=1_000))
    with TestClient(app) as small:
        r = small.post("/v1/models", json={"job": "x" * 2_000})
        problem(r, 413)


def test_other_content_types_are_a_415(client, nothing_stored):
    r = client.post("/v1/models", params=RESNET8, files={"file": ("w.safetensors", b"x")})
    assert problem(r, 415)["code"] == "unsupported_media_type"


def succeeded_with_student(job_in, card: dict[str, Any] | None = None) -> tuple[str, str]:
    """A succeeded resnet8/digits job with a student.safetensors (and model.json); returns
    (job id, the student's sha256)."""
    job_id = job_in("succeeded")
    out = artifacts.job_dir(job_id)
    save_file(dict(build_model("resnet8", 10, 1).state_dict()), out / "student.safetensors")
    with session_scope() as s:
        art = artifacts.register(s, job_id, out / "student.safetensors", kind="student")
        if card is not None:
            (out / "model.json").write_text(json.dumps(card))
            artifacts.register(s, job_id, out / "model.json", kind="model_card")
        return job_id, art.sha256


def test_register_a_succeeded_jobs_student(client, job_in):
    card = {
        "architecture": "resnet8",
        "num_classes": 10,
        "in_channels": 1,
        "input_shape": [1, 8, 8],
        "normalisation": {"mean": [4.9], "std": [6.0]},
        "class_names": list("0123456789"),
    }
    job_id, sha = succeeded_with_student(job_in, card)
    r = client.post("/v1/models", json={"job": job_id, "name": "from-job"})
    assert r.status_code == 201, r.text
    model = r.json()
    assert (model["source"], model["source_job_id"], model["sha256"]) == ("job", job_id, sha)
    assert (model["arch"], model["input_size"], model["name"]) == ("resnet8", 8, "from-job")
    assert model["class_names"] == card["class_names"]
    assert model["normalisation"] == card["normalisation"]
    path = get_settings().artifacts_dir / "models" / model["id"] / "weights.safetensors"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == sha


def test_register_without_a_model_card_uses_the_spec(client, job_in):
    job_id, _ = succeeded_with_student(job_in)
    model = client.post("/v1/models", json={"job": job_id}).json()
    assert {k: model[k] for k in RESNET8} == RESNET8 and model["class_names"] is None


def test_register_refuses_an_unfinished_or_unknown_job(client, job_in, nothing_stored):
    for job in (job_in("running"), "job_nope"):
        body = problem(client.post("/v1/models", json={"job": job}), 422)
        assert fields(body) == ["job"]


def kd_spec(spec_body: dict[str, Any], teacher: dict[str, str], **method: Any) -> dict[str, Any]:
    return spec_body | {
        "method": {"name": "kd"} | method,
        "teacher": teacher,
        "student": {"arch": "cnn_small"},
    }


def test_a_model_teaches_a_kd_job(client, spec_body):
    model_id = upload(client, weights_of()).json()["id"]
    r = client.post("/v1/jobs", json=kd_spec(spec_body, {"model": model_id}))
    assert r.status_code == 201, r.text
    job = r.json()
    assert (job["teacher_model_id"], job["teacher_job_id"]) == (model_id, None)
    assert job["spec"]["teacher"] == {"job": None, "model": model_id}


@pytest.mark.parametrize("teacher", [{"job": "job_x", "model": "mdl_x"}, {}])
def test_a_teacher_names_exactly_one_source(client, spec_body, teacher):
    body = problem(client.post("/v1/jobs", json=kd_spec(spec_body, teacher)), 422)
    assert fields(body) == ["teacher"]


def test_model_teachers_are_checked_against_the_job(client, spec_body):
    five = upload(client, weights_of(num_classes=5), num_classes=5).json()["id"]
    sized = upload(client, weights_of(), input_size=32).json()["id"]
    mlp = upload(client, weights_of("mlp"), arch="mlp").json()["id"]
    cases = {
        "trained for 5 classes / 1 channels": kd_spec(spec_body, {"model": five}),
        "takes 32x32 inputs, this data is 8x8": kd_spec(spec_body, {"model": sized}),
        "no model 'mdl_nope'": kd_spec(spec_body, {"model": "mdl_nope"}),
        "stage features": kd_spec(spec_body, {"model": mlp}) | {"method": {"name": "iekd"}},
        "route checkpoints": kd_spec(spec_body, {"model": sized}) | {"method": {"name": "rco"}},
    }
    for message, spec in cases.items():
        body = problem(client.post("/v1/jobs", json=spec), 422)
        assert fields(body) == ["teacher.model"] and message in body["errors"][0]["message"]


def test_delete_is_refused_while_a_job_uses_the_model(client, spec_body):
    model_id = upload(client, weights_of()).json()["id"]
    job = client.post("/v1/jobs", json=kd_spec(spec_body, {"model": model_id})).json()
    body = problem(client.delete(f"/v1/models/{model_id}"), 409)
    assert body["code"] == "model_in_use" and job["id"] in body["detail"]
    client.post(f"/v1/jobs/{job['id']}/cancel")
    assert client.delete(f"/v1/models/{model_id}").status_code == 204
    assert not (get_settings().artifacts_dir / "models" / model_id).exists()
    problem(client.get(f"/v1/models/{model_id}"), 404)
    problem(client.delete(f"/v1/models/{model_id}"), 404)
    assert client.get(f"/v1/jobs/{job['id']}").json()["teacher_model_id"] == model_id


def test_upload_streams_in_constant_memory(tmp_path: Path):
    """64 MB through the upload path with well under 8 MB allocated at its peak."""
    size, chunk = 64 << 20, bytes(64 << 10)
    header = json.dumps({"w": {"dtype": "U8", "shape": [size], "data_offsets": [0, size]}})
    prefix = len(header).to_bytes(8, "little") + header.encode()

    async def body() -> AsyncIterator[bytes]:
        yield prefix
        for _ in range(size // len(chunk)):
            yield chunk

    async def receive() -> uploads.Received:
        return await uploads.receive_safetensors(body(), tmp_path / "w.safetensors", lambda h: None)

    tracemalloc.start()
    try:
        received = asyncio.run(receive())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert received.size == len(prefix) + size == (tmp_path / "w.safetensors").stat().st_size
    assert peak < 8 << 20, f"peak {peak} bytes"
    assert received.header.tensors["w"] == weights.TensorInfo("U8", (size,), 0, size)


TIMM_SMALL = {"arch": "timm/mobilenetv3_small_050", "num_classes": 10, "in_channels": 1}


def timm_upload(client: TestClient) -> dict[str, Any]:
    data = save(dict(build_model(TIMM_SMALL["arch"], 10, 1).state_dict()))
    r = upload(client, data, **TIMM_SMALL)
    assert r.status_code == 201, r.text
    return dict(r.json())


def kd_with(client: TestClient, model_id: str) -> Any:
    body = {
        "method": {"name": "kd"},
        "teacher": {"model": model_id},
        "student": {"arch": "cnn_small"},
        "data": {"dataset": "digits"},
    }
    return client.post("/v1/jobs", json=body)


def test_a_timm_upload_teaches_once_a_worker_has_checked_it(client):
    model = timm_upload(client)
    assert (model["status"], model["parameters"], model["output_shape"]) == (
        "validating",
        None,
        None,
    )
    body = problem(kd_with(client, model["id"]), 422)
    assert fields(body) == ["teacher.model"] and "being checked" in body["errors"][0]["message"]
    ready = {"status": "ready", "parameters": 123, "output_shape": [10]}
    with session_scope() as s:
        assert checks.MODELS.record(s, model["id"], ready)
    with session_scope() as s:  # a repeated check of a decided model changes nothing
        assert not checks.MODELS.record(s, model["id"], {"status": "invalid"})
    shown = client.get(f"/v1/models/{model['id']}").json()
    assert (shown["status"], shown["parameters"], shown["output_shape"]) == ("ready", 123, [10])
    assert kd_with(client, model["id"]).status_code == 201


def test_an_invalid_timm_upload_says_why_and_cannot_teach(client):
    model = timm_upload(client)
    with session_scope() as s:
        checks.MODELS.record(
            s, model["id"], {"status": "invalid", "problems": ["missing keys: blocks.0"]}
        )
    assert client.get(f"/v1/models/{model['id']}").json()["problems"] == ["missing keys: blocks.0"]
    body = problem(kd_with(client, model["id"]), 422)
    assert "is invalid: missing keys: blocks.0" in body["errors"][0]["message"]
