"""The Celery task's side of a check by URI (worker/task/check_runner.py), with the real
check process (worker/job/uri_check.py) reading a real S3 server on loopback: a dataset is
given back untouched when its worker is shutting down, then read to ready with its counts and
last progress on the row; a bad set is invalid naming the object and leaves nothing in the
store; a model's bytes are copied with their sha256 (a timm one's then loaded through the
worker's cache from a bucket store); a URI the deployment no longer allows is refused by the
worker too."""

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from safetensors.torch import save

from service.config import get_settings
from service.db.sessions import session_scope
from service.db.tables import Dataset, RegisteredModel, utcnow
from service.ingest import by_uri
from service.spec.model_info import FromUri
from service.spec.uris import DatasetFromUri
from tests.s3 import S3Server
from tests.service.ingest.test_remote import photos, put
from worker.engine.zoo import build_model
from worker.task import check_runner
from worker.task.cache import Cache
from worker.task.runner import DRAINING

# starts the check's processes; the lease logic itself runs on both backends in
# tests/service/ingest/test_checks.py
pytestmark = [pytest.mark.slow, pytest.mark.parametrize("backend", ["postgres"], indirect=True)]


@pytest.fixture
def bucket(
    s3_server: S3Server, clean_db, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[str]:
    """A bucket every project may read from; the store in the backend's data dir."""
    name = s3_server.bucket()
    for key, value in s3_server.aws_env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("DISTILLERY_DATA_URIS", f"s3://{name}/")
    get_settings.cache_clear()
    yield name
    get_settings.cache_clear()


def dataset(dataset_id: str) -> Dataset:
    with session_scope() as s:
        row = s.get(Dataset, dataset_id)
        assert row is not None
        return row


def test_a_dataset_is_given_back_at_shutdown_then_read(s3_server, bucket) -> None:
    put(s3_server, bucket, {f"pets/{k}": v for k, v in photos().items()})
    ds = by_uri.register_dataset(
        DatasetFromUri(uri=f"s3://{bucket}/pets", format="imagefolder", name="pets")
    )
    DRAINING.set()  # the worker is shutting down as the check starts
    try:
        assert check_runner.run_dataset(ds.id) == "validating"
    finally:
        DRAINING.clear()
    given_back = dataset(ds.id)
    assert given_back.check_attempts == 1 and given_back.status == "validating"
    assert given_back.check_lease_until is not None and given_back.check_lease_until <= utcnow()

    assert check_runner.run_dataset(ds.id) == "ready"
    row = dataset(ds.id)
    assert (row.num_train, row.num_val, row.class_counts) == (18, 6, [8, 8, 8])
    assert row.progress == {"objects": 24, "done": 24, "bytes": row.upload_size}
    index = get_settings().artifacts_dir / row.path
    assert hashlib.sha256(index.read_bytes()).hexdigest() == row.sha256
    assert check_runner.run_dataset(ds.id) == "ready"  # a repeated message changes nothing


def test_a_bad_set_is_invalid_naming_the_object_and_leaves_nothing(s3_server, bucket) -> None:
    images = photos(classes=2) | {"train/class_0/empty.png": b""}
    put(s3_server, bucket, {f"bad/{k}": v for k, v in images.items()})
    ds = by_uri.register_dataset(DatasetFromUri(uri=f"s3://{bucket}/bad/", format="imagefolder"))
    assert check_runner.run_dataset(ds.id) == "invalid"
    problems = dataset(ds.id).problems or []
    assert len(problems) == 1
    assert problems[0].startswith(f"s3://{bucket}/bad/train/class_0/empty.png is not a readable")
    assert not (get_settings().artifacts_dir / "datasets" / ds.id).exists()


def test_a_model_is_copied_then_a_uri_no_longer_allowed_is_refused(
    s3_server, bucket, monkeypatch
) -> None:
    weights = save(dict(build_model("cnn_small", 10, 1).state_dict()))
    put(s3_server, bucket, {"m/teacher.safetensors": weights})
    uri = f"s3://{bucket}/m/teacher.safetensors"
    body = FromUri(uri=uri, arch="cnn_small", num_classes=10, in_channels=1)
    model = by_uri.register_model(body)
    assert check_runner.run(model.id) == "ready"
    with session_scope() as s:
        row = s.get(RegisteredModel, model.id)
        assert row is not None
        assert (row.sha256, row.size) == (hashlib.sha256(weights).hexdigest(), len(weights))
    assert (get_settings().artifacts_dir / row.path).read_bytes() == weights

    again = by_uri.register_model(body)
    monkeypatch.setenv("DISTILLERY_DATA_URIS", "s3://elsewhere/")
    get_settings.cache_clear()
    assert check_runner.run(again.id) == "invalid"
    with session_scope() as s:
        refused = s.get(RegisteredModel, again.id)
        assert refused is not None and refused.sha256 is None
        assert refused.problems == [
            "not under the 1 prefix this project may read (DISTILLERY_DATA_URIS)"
        ]


def test_a_timm_model_by_uri_is_loaded_from_the_bucket_store_once_copied(
    s3_server, bucket, monkeypatch
) -> None:
    """The store a bucket: the check's copy of the weights is made after they were fetched
    (their sha256 known only then), through the worker's cache."""
    monkeypatch.setenv("DISTILLERY_STORE_URL", f"s3://{bucket}/store")
    get_settings.cache_clear()
    arch = "timm/mobilenetv3_small_050"
    state = {k: v.contiguous() for k, v in build_model(arch, 5, 3).state_dict().items()}
    weights = save(state)
    put(s3_server, bucket, {"m/t.safetensors": weights})
    body = FromUri(uri=f"s3://{bucket}/m/t.safetensors", arch=arch, num_classes=5, in_channels=3)
    model = by_uri.register_model(body)
    assert check_runner.run(model.id) == "ready"
    with session_scope() as s:
        row = s.get(RegisteredModel, model.id)
        assert row is not None and row.output_shape == [5]
        assert (row.sha256, row.size) == (hashlib.sha256(weights).hexdigest(), len(weights))
    assert Cache.default().file(row.path).read_bytes() == weights
    assert not (get_settings().artifacts_dir / row.path).exists()  # in the bucket, not here
