"""The routes that read and write the store, with the store in a bucket of a real S3 server on
loopback (tests/s3.py): uploads land in the bucket and nowhere on the API's disk, downloads
keep Range, ETag/304 and the checksums, deletes delete the objects, and a store that cannot
be reached is a 503 that changes nothing."""

import hashlib
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from safetensors.torch import save

from service.config import get_settings
from service.db import artifacts
from service.db.sessions import session_scope
from service.db.tables import Dataset, RegisteredModel
from service.ingest import uploads
from service.store import get_store
from tests.s3 import S3Server
from tests.service.helpers import problem
from worker.engine.zoo import build_model

OCTET = {"Content-Type": "application/octet-stream"}
RESNET8 = {"arch": "resnet8", "num_classes": 10, "in_channels": 1}
DATA = bytes(range(256)) * 40 + b"tail"


@pytest.fixture
def bucket(s3_server: S3Server, s3_store: dict[str, str]) -> tuple[S3Server, str, str]:
    """(server, bucket, prefix) this test's store writes to."""
    bucket, prefix = s3_store["DISTILLERY_STORE_URL"].removeprefix("s3://").split("/", 1)
    return s3_server, bucket, prefix


def objects(where: tuple[S3Server, str, str]) -> dict[str, bytes]:
    """Every object in the test's bucket, by key under the store's prefix."""
    server, bucket, prefix = where
    s3 = server.client()
    listed = s3.list_objects_v2(Bucket=bucket).get("Contents", [])
    return {
        o["Key"].removeprefix(f"{prefix}/"): s3.get_object(Bucket=bucket, Key=o["Key"])[
            "Body"
        ].read()
        for o in listed
    }


def local_files() -> set[Path]:
    """The files in the API's data dir's store folder and scratch folder."""
    data = get_settings().data_dir
    return {p for d in ("artifacts", "scratch") for p in (data / d).rglob("*") if p.is_file()}


def npz_upload() -> bytes:
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    images = rng.integers(0, 255, (40, 8, 8), dtype=np.uint8)
    np.savez(buf, images=images, labels=np.arange(40) % 4)
    return buf.getvalue()


def test_uploads_are_objects_in_the_bucket_and_deletes_remove_them(client: TestClient, bucket):
    before = local_files()
    r = client.post("/v1/datasets", content=npz_upload(), headers=OCTET)
    assert r.status_code == 201, r.text
    dataset = r.json()
    weights = save(dict(build_model("resnet8", 10, 1).state_dict()))
    r = client.post("/v1/models", params=RESNET8, content=weights, headers=OCTET)
    assert r.status_code == 201, r.text
    model = r.json()
    stored = objects(bucket)
    assert sorted(stored) == [
        f"datasets/{dataset['id']}/data.npz",
        f"models/{model['id']}/weights.safetensors",
    ]
    assert stored[f"models/{model['id']}/weights.safetensors"] == weights
    npz = stored[f"datasets/{dataset['id']}/data.npz"]
    assert (hashlib.sha256(npz).hexdigest(), len(npz)) == (dataset["sha256"], dataset["size"])
    assert local_files() == before  # made in scratch, put, then dropped: the API keeps none

    assert client.delete(f"/v1/models/{model['id']}").status_code == 204
    assert client.delete(f"/v1/datasets/{dataset['id']}").status_code == 204
    assert objects(bucket) == {}


def test_a_jobs_artifact_downloads_from_the_bucket(client: TestClient, new_job: Any, bucket):
    job_id = new_job()
    path = artifacts.job_dir(job_id) / "student.safetensors"
    path.write_bytes(DATA)
    with session_scope() as s:
        artifacts.register(s, job_id, path, kind="student")
    path.unlink()  # made by a worker elsewhere: only the bucket has it
    assert objects(bucket) == {f"jobs/{job_id}/student.safetensors": DATA}
    url = f"/v1/jobs/{job_id}/artifacts/student.safetensors"

    whole = client.get(url)
    sha = hashlib.sha256(DATA).hexdigest()
    assert (whole.status_code, whole.content) == (200, DATA)
    assert (whole.headers["etag"], whole.headers["x-checksum-sha256"]) == (f'"{sha}"', sha)
    part = client.get(url, headers={"Range": "bytes=100-199"})
    assert (part.status_code, part.content) == (206, DATA[100:200])
    assert part.headers["content-range"] == f"bytes 100-199/{len(DATA)}"
    assert client.get(url, headers={"Range": "bytes=-4"}).content == b"tail"
    assert client.get(url, headers={"If-None-Match": f'"{sha}"'}).status_code == 304


def test_a_job_student_registered_as_a_model_is_copied_in_the_bucket(
    client: TestClient, job_in: Any, bucket
) -> None:
    job_id = job_in("succeeded")
    path = artifacts.job_dir(job_id) / "student.safetensors"
    weights = save(dict(build_model("resnet8", 10, 1).state_dict()))
    path.write_bytes(weights)
    with session_scope() as s:
        artifacts.register(s, job_id, path, kind="student")
    r = client.post("/v1/models", json={"job": job_id})
    assert r.status_code == 201, r.text
    assert objects(bucket)[f"models/{r.json()['id']}/weights.safetensors"] == weights


def test_a_failed_upload_deletes_what_it_had_put(clean_db: Any, bucket) -> None:
    folder = get_settings().scratch_dir / "datasets" / "ds_gone"
    (folder / "shards").mkdir(parents=True)
    for name in ("shards/train-000000.tar", "index.json"):
        (folder / name).write_bytes(b"x")
    uploads.put_folder("datasets/ds_gone", folder)
    assert sorted(objects(bucket)) == [
        "datasets/ds_gone/index.json",
        "datasets/ds_gone/shards/train-000000.tar",
    ]
    uploads.unstage("datasets/ds_gone", folder)
    assert objects(bucket) == {} and not folder.exists()


@pytest.fixture
def store_down(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The store in a bucket whose server does not answer (never started)."""
    for key, value in S3Server().aws_env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("DISTILLERY_STORE_URL", "s3://down/distillery")
    monkeypatch.setenv("DISTILLERY_STORE_RETRIES", "0")  # refused at once, not after 10 tries
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_the_store_unreachable_is_a_503_and_nothing_is_kept(
    client: TestClient, new_job: Any, store_down: None
) -> None:
    before = local_files()
    r = client.post("/v1/datasets", content=npz_upload(), headers=OCTET)
    body = problem(r, 503)
    assert body["code"] == "store_unavailable" and r.headers["retry-after"] == "30"
    assert "127.0.0.1" not in r.text  # the endpoint is the server's business
    with session_scope() as s:
        assert s.query(Dataset).count() == 0 and s.query(RegisteredModel).count() == 0
    assert local_files() == before

    job_id = new_job()
    with session_scope() as s:  # a row whose object the store cannot give now
        artifacts.record(
            s, job_id, artifacts.Put("student.safetensors", 4, "0" * 64), kind="student"
        )
    r = client.get(f"/v1/jobs/{job_id}/artifacts/student.safetensors")
    assert problem(r, 503)["code"] == "store_unavailable"
    assert get_store().url == "s3://down/distillery"
