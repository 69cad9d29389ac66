"""The store on both of its backends: a folder, and a bucket of a real S3 server on loopback."""

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from service import store
from service.store import Corrupt, Store, StoreError
from tests.s3 import S3Server


@pytest.fixture(params=["folder", "s3"])
def bucket(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "folder":
        yield Store((tmp_path / "store").as_uri(), root=tmp_path / "store")
        return
    server: S3Server = request.getfixturevalue("s3_server")
    mp = request.getfixturevalue("monkeypatch")
    env = server.store_env("pre")
    for key, value in env.items():
        mp.setenv(key, value)
    yield Store(env["DISTILLERY_STORE_URL"])


def _file(tmp_path: Path, size: int) -> tuple[Path, bytes]:
    data = os.urandom(size)
    path = tmp_path / "upload.bin"
    path.write_bytes(data)
    return path, data


def test_an_object_reads_back_whole_and_by_range(bucket: Store, tmp_path: Path) -> None:
    path, data = _file(tmp_path, 300_000)
    meta = bucket.put_file(store.job_key("job_1", "student.safetensors"), path)
    key = "jobs/job_1/student.safetensors"
    assert meta.size == len(data) and meta.etag
    assert bucket.get_bytes(key) == data
    assert b"".join(bucket.chunks(key, 1000, 1010)) == data[1000:1010]
    assert b"".join(bucket.chunks(key, len(data) - 5)) == data[-5:]
    assert bucket.head(key) == meta


def test_a_large_object_goes_in_parts(
    bucket: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store, "MULTIPART_BYTES", 6 << 20)
    monkeypatch.setattr(store, "PART_BYTES", 5 << 20)  # S3's smallest part
    path, data = _file(tmp_path, 11 << 20)
    bucket.put_file("datasets/ds_1/shard-000000.tar", path)
    assert hashlib.sha256(bucket.get_bytes("datasets/ds_1/shard-000000.tar")).digest() == (
        hashlib.sha256(data).digest()
    )


def test_a_download_is_verified_and_never_left_half(bucket: Store, tmp_path: Path) -> None:
    path, data = _file(tmp_path, 50_000)
    bucket.put_file("models/m_1/model.safetensors", path)
    good = hashlib.sha256(data).hexdigest()
    out = bucket.download("models/m_1/model.safetensors", tmp_path / "cache" / "a", good)
    assert out.read_bytes() == data
    with pytest.raises(Corrupt):
        bucket.download("models/m_1/model.safetensors", tmp_path / "cache" / "b", "0" * 64)
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["a"]


def test_keys_and_deleting_a_prefix(bucket: Store, tmp_path: Path) -> None:
    path, _ = _file(tmp_path, 10)
    for key in ("jobs/j1/a", "jobs/j1/sub/b", "jobs/j10/c"):
        bucket.put_file(key, path)
    assert bucket.keys("jobs/j1") == ["jobs/j1/a", "jobs/j1/sub/b"]
    bucket.delete_prefix("jobs/j1")
    assert bucket.keys("jobs/j1") == [] and bucket.keys("jobs/j10") == ["jobs/j10/c"]


def test_a_missing_object(bucket: Store) -> None:
    assert bucket.head("jobs/none/x") is None
    with pytest.raises(FileNotFoundError):
        bucket.get_bytes("jobs/none/x")


def test_a_folder_store_reads_in_place_and_refuses_escapes(tmp_path: Path) -> None:
    folder = Store(tmp_path.as_uri(), root=tmp_path)
    assert folder.local_path("jobs/j/a") == tmp_path / "jobs" / "j" / "a"
    with pytest.raises(ValueError):
        folder.local_path("../outside")


def test_an_unreachable_server_is_a_store_error(monkeypatch: pytest.MonkeyPatch) -> None:
    down = S3Server()  # never started: nothing listens on its port
    for key, value in down.aws_env().items():
        monkeypatch.setenv(key, value)
    with pytest.raises(StoreError):
        Store("s3://nothing/here", retries=0).head("x")


def test_an_empty_object_reads_back_empty(bucket: Store, tmp_path: Path) -> None:
    path, _ = _file(tmp_path, 0)
    bucket.put_file("jobs/j/empty", path)
    assert bucket.get_bytes("jobs/j/empty") == b""
    assert bucket.download("jobs/j/empty", tmp_path / "out").read_bytes() == b""
