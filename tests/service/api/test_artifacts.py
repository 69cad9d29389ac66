"""Artifact routes: listing, download with ETag, digests and byte ranges."""

import base64
import hashlib

import pytest

from service.db import artifacts
from service.db.sessions import session_scope

DATA = bytes(range(256)) * 4 + b"tail!"  # 1029 bytes
SHA = hashlib.sha256(DATA).hexdigest()


def put(job_id: str, name: str, data: bytes, kind: str, epoch: int | None = None) -> None:
    path = artifacts.job_dir(job_id) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    with session_scope() as s:
        artifacts.register(s, job_id, path, kind=kind, epoch=epoch)


@pytest.fixture
def job_id(new_job) -> str:
    job_id = new_job()
    put(job_id, "student.safetensors", DATA, "model")
    put(job_id, "checkpoints/epoch_1.safetensors", b"ckpt-1", "checkpoint", epoch=1)
    put(job_id, "checkpoints/epoch_2.safetensors", b"ckpt-22", "checkpoint", epoch=2)
    return job_id


def url(job_id: str, name: str = "student.safetensors") -> str:
    return f"/v1/jobs/{job_id}/artifacts/{name}"


def test_list_artifacts(client, job_id):
    r = client.get(f"/v1/jobs/{job_id}/artifacts")
    assert r.status_code == 200
    listed = {a["name"]: (a["size"], a["sha256"], a["kind"]) for a in r.json()["data"]}
    assert listed["student.safetensors"] == (len(DATA), SHA, "model")
    assert listed["checkpoints/epoch_2.safetensors"][0] == 7
    assert len(listed) == 3


def test_checkpoints_lists_only_checkpoints(client, job_id):
    data = client.get(f"/v1/jobs/{job_id}/checkpoints").json()["data"]
    assert [(a["name"], a["epoch"]) for a in data] == [
        ("checkpoints/epoch_1.safetensors", 1),
        ("checkpoints/epoch_2.safetensors", 2),
    ]


def test_list_artifacts_of_unknown_job(client):
    assert client.get("/v1/jobs/job_nope/artifacts").status_code == 404


def test_download_exact_bytes_and_digests(client, job_id):
    r = client.get(url(job_id))
    assert r.status_code == 200
    assert r.content == DATA
    assert r.headers["etag"] == f'"{SHA}"'
    assert r.headers["x-checksum-sha256"] == SHA
    digest = base64.b64encode(hashlib.sha256(DATA).digest()).decode()
    assert r.headers["repr-digest"] == f"sha-256=:{digest}:"
    assert r.headers["content-length"] == str(len(DATA))
    assert r.headers["accept-ranges"] == "bytes"


def test_download_nested_name(client, job_id):
    assert client.get(url(job_id, "checkpoints/epoch_1.safetensors")).content == b"ckpt-1"


@pytest.mark.parametrize("tag", ['"{sha}"', '"other", "{sha}"'])
def test_if_none_match_is_not_modified(client, job_id, tag):
    r = client.get(url(job_id), headers={"If-None-Match": tag.format(sha=SHA)})
    assert r.status_code == 304
    assert r.content == b""
    assert r.headers["etag"] == f'"{SHA}"'


def test_if_none_match_with_another_tag_downloads(client, job_id):
    r = client.get(url(job_id), headers={"If-None-Match": '"stale"'})
    assert (r.status_code, r.content) == (200, DATA)


@pytest.mark.parametrize(
    ("header", "start", "end"),
    [
        ("bytes=0-9", 0, 9),
        ("bytes=-5", len(DATA) - 5, len(DATA) - 1),
        ("bytes=10-", 10, len(DATA) - 1),
        ("bytes=1000-5000", 1000, len(DATA) - 1),
        ("bytes=-5000", 0, len(DATA) - 1),
    ],
)
def test_range(client, job_id, header, start, end):
    r = client.get(url(job_id), headers={"Range": header})
    assert r.status_code == 206
    assert r.content == DATA[start : end + 1]
    assert r.headers["content-range"] == f"bytes {start}-{end}/{len(DATA)}"
    assert r.headers["content-length"] == str(end - start + 1)


@pytest.mark.parametrize(
    "header", ["bytes=5000-", "bytes=9-3", "bytes=-0", "bytes=-", "items=0-1", "bytes=abc"]
)
def test_unsatisfiable_range(client, job_id, header):
    r = client.get(url(job_id), headers={"Range": header})
    assert r.status_code == 416
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["code"] == "range_not_satisfiable"


@pytest.mark.parametrize("name", ["nope.bin", "%2E%2E/%2E%2E/student.safetensors"])
def test_unknown_artifact(client, job_id, name):
    r = client.get(url(job_id, name))
    assert r.status_code == 404
    assert r.headers["content-type"] == "application/problem+json"


def test_artifact_of_another_job(client, job_id, new_job):
    assert client.get(url(new_job())).status_code == 404


def test_artifact_whose_file_is_gone(client, job_id):
    (artifacts.job_dir(job_id) / "student.safetensors").unlink()
    assert client.get(url(job_id)).status_code == 404
