"""Hostile input over HTTP, on both backends: integers past 64 bits, deeply nested JSON,
control characters, numbers as strings, methods a path does not answer and forged cursors
are each a 4xx problem+json that stores nothing (each was a 500 or a wrong answer once)."""

import base64
import io
import json
import struct
import zipfile
from collections.abc import Iterator

import numpy as np
import pytest
from PIL import Image

from service.config import get_settings
from service.db.tables import Dataset, Job, RegisteredModel
from tests.service.api.test_datasets import digits_npz
from tests.service.helpers import fields, nothing_stored_in, problem

BIG = 2**63  # one past the largest BIGINT
DEEP = "[" * 10_000 + "]" * 10_000
UPLOAD = {"arch": "resnet8", "num_classes": 10, "in_channels": 1}
OCTETS = {"Content-Type": "application/octet-stream"}


@pytest.fixture
def nothing_stored(clean_db) -> Iterator[None]:
    """Asserts the test left no job, model or dataset behind, nor any file of one."""
    settings = get_settings()
    with (
        nothing_stored_in(Job, settings.artifacts_dir / "jobs"),
        nothing_stored_in(RegisteredModel, settings.artifacts_dir / "models"),
        nothing_stored_in(Dataset, settings.artifacts_dir / "datasets"),
    ):
        yield


def safetensors_with_header(header: bytes) -> bytes:
    return struct.pack("<Q", len(header)) + header


# 1. integers a BIGINT cannot hold


@pytest.mark.parametrize("after", [BIG, 10**30, -1])
def test_events_after_out_of_range(client, new_job, after):
    job_id = new_job()
    body = problem(client.get(f"/v1/jobs/{job_id}/events", params={"after": after}), 422)
    assert fields(body) == ["query.after"]


def test_events_after_the_largest_bigint_is_an_empty_page(client, new_job):
    job_id = new_job()
    r = client.get(f"/v1/jobs/{job_id}/events", params={"after": BIG - 1})
    assert r.status_code == 200 and r.json()["data"] == []


@pytest.mark.parametrize("path", ["/v1/jobs", "/v1/models", "/v1/datasets"])
def test_list_limit_past_64_bits(client, path):
    assert fields(problem(client.get(path, params={"limit": BIG}), 422)) == ["query.limit"]


@pytest.mark.parametrize(
    ("method", "field"),
    [
        ({"name": "supervised", "route_every": BIG}, "method.route_every"),
        ({"name": "rco", "anchors": [BIG]}, "method.anchors.0"),
        ({"name": "rco", "anchors": [0]}, "method.anchors.0"),
        ({"name": "rco", "every_n": 10**9}, "method.every_n"),
        ({"name": "rco", "stage_epochs": [-2, 6]}, "method.stage_epochs.0"),
        ({"name": "reviewkd", "warmup_epochs": 10**12}, "method.warmup_epochs"),
    ],
)
def test_method_counts_past_their_bounds(client, spec_body, nothing_stored, method, field):
    """Each count of epochs is within train.epochs' own limit (floats need only be finite)."""
    spec_body["method"] = method
    assert field in fields(problem(client.post("/v1/jobs", json=spec_body), 422))


def test_milestones_past_the_epoch_limit(client, spec_body, nothing_stored):
    spec_body["train"]["schedule"]["milestones"] = [2, BIG]
    r = client.post("/v1/jobs", json=spec_body)
    assert fields(problem(r, 422)) == ["train.schedule.milestones.1"]


def test_upload_shape_past_64_bits(client, nothing_stored):
    r = client.post("/v1/models", params=UPLOAD | {"num_classes": BIG}, headers=OCTETS)
    assert fields(problem(r, 422)) == ["query.num_classes"]


# 2. Last-Event-ID checked before the stream starts


@pytest.mark.parametrize("last", [str(BIG), str(10**40), "-1", "seven", "1.5"])
def test_bad_last_event_id_is_a_422_not_a_dead_stream(client, job_in, last):
    job_id = job_in("succeeded")
    headers = {"Accept": "text/event-stream", "Last-Event-ID": last}
    body = problem(client.get(f"/v1/jobs/{job_id}/events", headers=headers), 422)
    assert fields(body) == ["header.last-event-id"]


# 3. JSON nested deeper than 32 levels, wherever it is parsed


def test_deep_job_spec(client, spec_body, nothing_stored):
    raw = json.dumps(spec_body).replace('"digits-teacher"', DEEP)
    r = client.post("/v1/jobs", content=raw, headers={"Content-Type": "application/json"})
    body = problem(r, 400)
    assert (body["code"], body["title"]) == ("json_too_deep", "JSON nested too deeply")


def test_deep_model_body(client, nothing_stored):
    r = client.post("/v1/models", content=DEEP, headers={"Content-Type": "application/json"})
    assert problem(r, 400)["code"] == "json_too_deep"


def test_deep_model_metadata_header(client, nothing_stored):
    headers = OCTETS | {"X-Model-Metadata": '{"class_names": ' + DEEP + "}"}
    r = client.post("/v1/models", params=UPLOAD, content=b"", headers=headers)
    body = problem(r, 422)
    assert fields(body) == ["X-Model-Metadata"] and "32 levels" in body["detail"]


def test_deep_safetensors_header(client, nothing_stored):
    data = safetensors_with_header(('{"a": ' + DEEP + "}").encode())
    body = problem(client.post("/v1/models", params=UPLOAD, content=data, headers=OCTETS), 422)
    assert body["code"] == "invalid_weights"
    assert "nested deeper than 32 levels" in body["errors"][0]["message"]


def test_deep_cursor(client):
    cursor = base64.urlsafe_b64encode(b"[" * 60 + b"]" * 60).decode()
    assert problem(client.get("/v1/jobs", params={"cursor": cursor}), 422)["code"] == (
        "invalid_cursor"
    )


def test_brackets_in_strings_do_not_count(client, spec_body, count_jobs):
    spec_body["name"] = "[" * 100
    spec_body["metadata"] = {"note": '{"[\\"' * 50}
    assert client.post("/v1/jobs", json=spec_body).status_code == 201
    assert count_jobs() == 1


# 4. NUL and other control characters


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        (("name",), "a\x00b", "name"),
        (("name",), "line\nbreak", "name"),
        (("metadata",), {"k": "v\x00"}, "metadata"),
        (("metadata",), {"k\x00": "v"}, "metadata.k\x00.[key]"),
        (("data",), {"dataset": "upload", "upload": "ds_\x00"}, "data.upload"),
        (("student", "init"), {"job": "job_\x01"}, "student.init.job"),
    ],
)
def test_control_characters_in_a_spec(client, spec_body, nothing_stored, path, value, field):
    *parents, last = path
    target = spec_body
    for key in parents:
        target = target[key]
    target[last] = value
    assert fields(problem(client.post("/v1/jobs", json=spec_body), 422)) == [field]


def test_nul_in_a_teacher_id(client, spec_body, nothing_stored):
    spec_body |= {"method": {"name": "kd"}, "teacher": {"job": "job_\x00"}}
    assert fields(problem(client.post("/v1/jobs", json=spec_body), 422)) == ["teacher.job"]


@pytest.mark.parametrize(
    ("method", "path", "field"),
    [
        ("GET", "/v1/jobs/job_%00", "path.job_id"),
        ("POST", "/v1/jobs/job_%00/cancel", "path.job_id"),
        ("GET", "/v1/jobs/job_%01/events", "path.job_id"),
        ("GET", "/v1/jobs/job_%00/artifacts", "path.job_id"),
        ("GET", "/v1/jobs/job_%00/checkpoints", "path.job_id"),
        ("GET", "/v1/jobs/job_x/artifacts/a%00b", "path.name"),
        ("GET", "/v1/models/mdl_%00", "path.model_id"),
        ("DELETE", "/v1/models/mdl_%00", "path.model_id"),
        ("GET", "/v1/datasets/ds_%00", "path.dataset_id"),
        ("DELETE", "/v1/datasets/ds_%1f", "path.dataset_id"),
        ("GET", "/v1/models?cursor=%00", "query.cursor"),
    ],
)
def test_control_characters_in_ids(client, nothing_stored, method, path, field):
    assert fields(problem(client.request(method, path), 422)) == [field]


def test_control_characters_in_an_idempotency_key(client, spec_body, nothing_stored):
    r = client.post("/v1/jobs", json=spec_body, headers={"Idempotency-Key": "k\x01"})
    assert fields(problem(r, 422)) == ["header.idempotency-key"]


@pytest.mark.parametrize(
    ("params", "headers", "field"),
    [
        ({"name": "a\x00"}, {}, "query.name"),
        ({}, {"X-Model-Metadata": '{"name": "a\\u0000"}'}, "name"),
        (
            {},
            {"X-Model-Metadata": json.dumps({"class_names": [*"012345678", "\x00"]})},
            "class_names",
        ),
    ],
)
def test_nul_in_model_metadata(client, nothing_stored, params, headers, field):
    r = client.post("/v1/models", params=UPLOAD | params, content=b"", headers=OCTETS | headers)
    assert fields(problem(r, 422)) == [field]


def test_nul_in_a_registered_job(client, nothing_stored):
    assert fields(problem(client.post("/v1/models", json={"job": "job_\x00"}), 422)) == ["job"]


@pytest.mark.parametrize(
    ("params", "field"),
    [({"name": "a\x00"}, "query.name"), ({"class_names": ["a", "b\x00"]}, "query.class_names.1")],
)
def test_nul_in_dataset_names(client, nothing_stored, params, field):
    r = client.post("/v1/datasets", params=params, content=b"x", headers=OCTETS)
    assert fields(problem(r, 422)) == [field]


@pytest.mark.parametrize("name", ["b\x00c", "tab\there"])  # numpy drops a trailing NUL
def test_control_characters_in_uploaded_class_names(client, nothing_stored, name):
    npz = digits_npz(class_names=np.array(["a", name, *map(str, range(2, 10))]))
    r = client.post("/v1/datasets", content=npz, headers=OCTETS)
    assert "control characters" in problem(r, 422)["detail"]


def test_control_characters_in_class_folder_names(client, nothing_stored):
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        for folder in ("cat", "do\x01g"):
            for n in range(2):
                out = io.BytesIO()
                Image.new("RGB", (8, 8), (n * 90, 0, 0)).save(out, "PNG")
                zf.writestr(f"{folder}/{n}.png", out.getvalue())
    r = client.post("/v1/datasets", content=archive.getvalue(), headers=OCTETS)
    assert "control characters" in problem(r, 422)["detail"]


# 5. numbers, booleans and floats are what they say


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        (("train", "epochs"), "3", "train.epochs"),
        (("train", "epochs"), 3.0, "train.epochs"),
        (("train", "compile"), "true", "train.compile"),
        (("train", "compile"), 1, "train.compile"),
        (("train", "optimizer"), {"lr": "0.1"}, "train.optimizer.lr"),
        (("resources", "gpus"), "1", "resources.gpus"),
    ],
)
def test_no_coercion_in_a_spec(client, spec_body, nothing_stored, path, value, field):
    section, key = path
    spec_body.setdefault(section, {})[key] = value
    assert fields(problem(client.post("/v1/jobs", json=spec_body), 422)) == [field]


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity"])
def test_no_nan_in_a_spec(client, spec_body, nothing_stored, number):
    spec_body["method"] = {"name": "ddgsd", "mmd_sigma": 0}
    raw = json.dumps(spec_body).replace('"mmd_sigma": 0', f'"mmd_sigma": {number}')
    r = client.post("/v1/jobs", content=raw, headers={"Content-Type": "application/json"})
    assert fields(problem(r, 422)) == ["method.mmd_sigma"]


def test_no_coercion_in_model_metadata(client, nothing_stored):
    meta = {"normalisation": {"mean": ["0.5"], "std": [0.25]}}
    headers = OCTETS | {"X-Model-Metadata": json.dumps(meta)}
    r = client.post("/v1/models", params=UPLOAD, content=b"", headers=headers)
    assert fields(problem(r, 422)) == ["normalisation.mean.0"]


# 6. 405 names what the path answers


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("DELETE", "/healthz", "GET"),
        ("PUT", "/v1/jobs", "GET, POST"),
        ("PATCH", "/v1/models/mdl_x", "GET, DELETE"),
        ("POST", "/v1/datasets/ds_x", "GET, DELETE"),
        ("GET", "/v1/jobs/job_x/cancel", "POST"),
    ],
)
def test_405_has_an_allow_header(client, nothing_stored, method, path, allow):
    r = client.request(method, path)
    assert problem(r, 405)["code"] == "method_not_allowed"
    assert r.headers["allow"] == allow


# 7. a forged cursor is an invalid cursor, on every list


FORGED = base64.urlsafe_b64encode(b'["2020-01-01T00:00:00", "job_\\u0000"]').decode()


@pytest.mark.parametrize("path", ["/v1/jobs", "/v1/models", "/v1/datasets"])
@pytest.mark.parametrize("cursor", ["garbage", FORGED, "bm90IGpzb24"])
def test_bad_cursor(client, path, cursor):
    body = problem(client.get(path, params={"cursor": cursor}), 422)
    assert (body["code"], body["title"], fields(body)) == (
        "invalid_cursor",
        "Invalid cursor",
        ["cursor"],
    )


@pytest.mark.parametrize("path", ["/v1/jobs", "/v1/models", "/v1/datasets"])
def test_overlong_cursor(client, path):
    assert fields(problem(client.get(path, params={"cursor": "x" * 201}), 422)) == ["query.cursor"]


@pytest.mark.parametrize("path", ["/v1/jobs", "/v1/webhooks"])
@pytest.mark.parametrize("headers", [{}, {"Content-Type": "text/plain"}], ids=["none", "text"])
def test_a_json_body_sent_as_another_type_is_a_415(
    client, spec_body, nothing_stored, path, headers
):
    body = spec_body if path == "/v1/jobs" else {"url": "https://example.com/hook"}
    r = client.post(path, content=json.dumps(body), headers=headers)
    refused = problem(r, 415)
    assert refused["code"] == "unsupported_media_type" and "application/json" in refused["detail"]
    assert client.get(path).json()["data"] == []


def test_json_with_a_charset_is_json(client, spec_body):
    headers = {"Content-Type": "application/json; charset=utf-8"}
    assert (
        client.post("/v1/jobs", content=json.dumps(spec_body), headers=headers).status_code == 201
    )
