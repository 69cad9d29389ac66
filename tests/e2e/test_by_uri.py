"""Data and models by URI, end to end: the API and a real worker, with data in buckets of a
real S3 server on loopback that the deployment allows (DISTILLERY_DATA_URIS). An ImageFolder
registered from the CLI is packed by the worker and ready with its counts; a bad one is
invalid naming the object; a URI outside the allow-list is refused; WebDataset shards written
by the `webdataset` package are indexed where they lie and a job trains on them; a model's
weights are copied with their sha256."""

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from safetensors.torch import save
from typer.testing import CliRunner, Result

from distillery_client import Client
from distillery_client.cli import app
from tests.conftest import Backend
from tests.e2e.conftest import Service, fresh_service
from tests.s3 import S3Server
from tests.service.ingest.test_remote import photos, put, wds_shards
from worker.engine.zoo import build_model

# training through a real worker is the same on either backend: the production shape only
pytestmark = pytest.mark.parametrize("backend", ["postgres"], indirect=True)

TIMEOUT_S = 240  # for a worker's check, on a loaded machine


@pytest.fixture(scope="module")
def bucket(s3_server: S3Server) -> str:
    return s3_server.bucket()


@pytest.fixture(scope="module")
def svc(
    backend: Backend, s3_server: S3Server, bucket: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    env = s3_server.aws_env() | {"DISTILLERY_DATA_URIS": f"s3://{bucket}/"}
    with fresh_service(backend, tmp_path_factory.mktemp("logs-uri"), env) as service:
        yield service


@pytest.fixture(scope="module")
def api(svc: Service) -> Iterator[Client]:
    with Client(svc.url) as c:
        yield c


def cli(svc: Service, *args: str) -> Result:
    return CliRunner().invoke(app, ["--url", svc.url, *args])


def test_an_imagefolder_registered_from_the_cli_is_packed_by_the_worker(
    svc: Service, api: Client, s3_server: S3Server, bucket: str
) -> None:
    put(s3_server, bucket, {f"pets/{k}": v for k, v in photos().items()})
    result = cli(
        svc,
        "datasets",
        "register",
        "--uri",
        f"s3://{bucket}/pets/",
        "--format",
        "imagefolder",
        "--wait",
    )
    assert result.exit_code == 0, result.output
    ds = api.get_dataset(result.stdout.split()[0])
    assert (ds.status, ds.num_classes, ds.num_train, ds.num_val) == ("ready", 3, 18, 6)
    assert ds.class_counts == [8, 8, 8] and ds.progress == {
        "objects": 24,
        "done": 24,
        "bytes": ds.upload_size,
    }

    bad = photos(classes=2) | {"val/class_1/broken.jpg": b"\xff\xd8\xff\xe0 not a jpeg"}
    put(s3_server, bucket, {f"broken/{k}": v for k, v in bad.items()})
    refused = cli(
        svc,
        "datasets",
        "register",
        "--uri",
        f"s3://{bucket}/broken/",
        "--format",
        "imagefolder",
        "--wait",
    )
    assert refused.exit_code == 1, refused.output
    assert f"s3://{bucket}/broken/val/class_1/broken.jpg is not a readable image" in refused.stderr

    outside = cli(
        svc, "datasets", "register", "--uri", "s3://not-allowed/pets/", "--format", "imagefolder"
    )
    assert outside.exit_code == 2, outside.output
    assert "not under the 1 prefix this project may read" in outside.stderr


def test_a_job_trains_on_webdataset_shards_read_where_they_lie(
    svc: Service, api: Client, s3_server: S3Server, bucket: str, tmp_path: Path
) -> None:
    wds_shards(tmp_path, 24, 3, "train-%06d.tar", 10)
    wds_shards(tmp_path, 6, 3, "val-%06d.tar", 10)
    put(s3_server, bucket, {f"wds/{p.name}": p.read_bytes() for p in tmp_path.glob("*.tar")})
    ds = api.register_dataset(
        f"s3://{bucket}/wds", format="webdataset", class_names=["a", "b", "c"]
    )
    assert ds.status == "validating"
    ds = api.wait_dataset(ds.id, poll_s=0.25, timeout=TIMEOUT_S)
    assert (ds.status, ds.num_train, ds.num_val, ds.class_names) == (
        "ready",
        24,
        6,
        ["a", "b", "c"],
    ), ds.problems

    spec: dict[str, Any] = {
        "name": "wds-by-uri",
        "method": {"name": "supervised"},
        "student": {"arch": "cnn_small"},
        "data": {"dataset": "upload", "upload": ds.id, "image_size": 16},
        "train": {"epochs": 1, "batch_size": 8},
    }
    job = svc.wait_status(svc.submit(spec)["id"], "succeeded")
    card = svc.http.get(f"/v1/jobs/{job['id']}/artifacts/model.json").json()
    assert card["dataset"]["upload"] == ds.id and card["class_names"] == ["a", "b", "c"]
    assert card["dataset"]["val_size"] == 6


def test_a_model_by_uri_is_copied_with_its_sha256(
    api: Client, s3_server: S3Server, bucket: str
) -> None:
    weights = save(dict(build_model("cnn_small", 3, 3).state_dict()))
    put(s3_server, bucket, {"teachers/t.safetensors": weights})
    model = api.register_model_uri(
        f"s3://{bucket}/teachers/t.safetensors", arch="cnn_small", num_classes=3, in_channels=3
    )
    assert (model.status, model.sha256) == ("validating", None)
    model = api.wait_model(model.id, poll_s=0.25, timeout=TIMEOUT_S)
    assert (model.status, model.sha256, model.size) == (
        "ready",
        hashlib.sha256(weights).hexdigest(),
        len(weights),
    )
