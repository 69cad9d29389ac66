"""The store: where every durable byte lives (uploads, job outputs, checkpoints), as objects
under one key layout (the *_key functions). By default a folder in the data dir; with
DISTILLERY_STORE_URL=s3://bucket/prefix any S3-compatible store, its endpoint and credentials
read from the standard AWS_* variables (AWS_ALLOW_HTTP=true for a plain-http endpoint).
obstore (Rust's object_store) speaks to both: multipart writes, ranged reads, no signing here.
An object is written whole or not at all; the caller records it in the database after."""

import hashlib
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from pathlib import Path

import obstore
from obstore.exceptions import BaseError, NotFoundError
from obstore.store import LocalStore, ObjectStore, from_url

from service.config import get_settings
from service.files import CHUNK, safe_child
from service.spec import uris

MULTIPART_BYTES = 64 << 20  # larger objects are written in parts (S3's 5 GiB single-put cap)
PART_BYTES = 16 << 20


def job_key(job_id: str, name: str) -> str:
    return f"jobs/{job_id}/{name}"


def dataset_key(dataset_id: str, name: str) -> str:
    return f"datasets/{dataset_id}/{name}"


def model_key(model_id: str, name: str) -> str:
    return f"models/{model_id}/{name}"


class StoreError(Exception):
    """The store could not be reached or refused a request: retry later."""


class Corrupt(StoreError):
    """An object's bytes do not hash to what its row recorded."""


@dataclass(frozen=True)
class Meta:
    size: int
    etag: str
    modified: datetime


class Store:
    """One bucket (or folder) of objects under a prefix."""

    def __init__(self, url: str, root: Path | None = None) -> None:
        self.url = url
        self.root = root  # set for a folder: its objects are readable in place
        self._store: ObjectStore = (
            LocalStore(root, mkdir=True) if root is not None else from_url(url)
        )

    def local_path(self, key: str) -> Path | None:
        """The object's own file for a folder store (read in place); None for a bucket."""
        return safe_child(self.root, key) if self.root is not None else None

    def put_file(self, key: str, path: Path) -> Meta:
        """Write a local file as the object `key`, whole or not at all."""
        size = path.stat().st_size
        with _errors(key), path.open("rb") as f:
            obstore.put(
                self._store,
                key,
                f,
                use_multipart=size > MULTIPART_BYTES,
                chunk_size=PART_BYTES,
                max_concurrency=4,
            )
        meta = self.head(key)
        if meta is None:
            raise StoreError(f"{key}: written but not found")
        return meta

    def put_bytes(self, key: str, data: bytes) -> None:
        with _errors(key):
            obstore.put(self._store, key, data)

    def head(self, key: str) -> Meta | None:
        try:
            with _errors(key):
                raw = obstore.head(self._store, key)
        except FileNotFoundError:
            return None
        return Meta(raw["size"], (raw["e_tag"] or "").strip('"'), raw["last_modified"])

    def chunks(self, key: str, start: int = 0, stop: int | None = None) -> Iterator[bytes]:
        """The object's bytes start..stop (exclusive; None: to the end), streamed."""
        options = {"range": (start, stop)} if stop is not None else {"range": {"offset": start}}
        if start == 0 and stop is None:  # the whole object: no range (an empty one has none)
            options = {}
        with _errors(key):
            result = obstore.get(self._store, key, options=options)  # type: ignore[arg-type]
            for chunk in result.stream(min_chunk_size=CHUNK):
                yield bytes(chunk)

    def get_bytes(self, key: str) -> bytes:
        return b"".join(self.chunks(key))

    def download(self, key: str, dest: Path, sha256: str | None = None) -> Path:
        """The object copied to `dest` (whole or not at all), checked against `sha256`."""
        dest.parent.mkdir(parents=True, exist_ok=True)
        partial = dest.with_name(f".{dest.name}.{os.getpid()}.partial")
        digest = hashlib.sha256()
        try:
            with partial.open("wb") as f:
                for chunk in self.chunks(key):
                    digest.update(chunk)
                    f.write(chunk)
            if sha256 is not None and digest.hexdigest() != sha256:
                raise Corrupt(f"{key}: sha256 {digest.hexdigest()}, recorded {sha256}")
            partial.replace(dest)
        finally:
            partial.unlink(missing_ok=True)
        return dest

    def keys(self, prefix: str) -> list[str]:
        return sorted(self.sizes(prefix))

    def sizes(self, prefix: str) -> dict[str, int]:
        """{key: size} of every object under `prefix/` ("": the whole bucket)."""
        folder = prefix.rstrip("/") + "/" if prefix.strip("/") else None
        with _errors(prefix):
            pages = obstore.list(self._store, prefix=folder)
            return {meta["path"]: meta["size"] for page in pages for meta in page}

    def delete(self, key: str) -> None:
        with _errors(key):
            obstore.delete(self._store, key)

    def delete_prefix(self, prefix: str) -> None:
        """Every object under `prefix/` (a dataset's, a model's or a job's)."""
        keys = self.keys(prefix)
        if keys:
            with _errors(prefix):
                obstore.delete(self._store, keys)

    def copy(self, src: str, dst: str) -> None:
        with _errors(src):
            obstore.copy(self._store, src, dst)


class _errors:
    """obstore's errors as ours: a missing object as FileNotFoundError, the rest StoreError."""

    def __init__(self, key: str) -> None:
        self.key = key

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type | None, exc: BaseException | None, tb: object) -> None:
        if isinstance(exc, NotFoundError):
            raise FileNotFoundError(self.key) from exc
        if isinstance(exc, BaseError | OSError) and not isinstance(exc, FileNotFoundError):
            raise StoreError(f"{self.key}: {exc}") from exc


def for_uri(uri: str) -> tuple[Store, str]:
    """The bucket of an s3:// URI (read with the deployment's endpoint and credentials, the
    AWS_* variables) and the key the URI names in it. The URI is checked first
    (service/spec/uris.py); which URIs a project may read is the caller's to decide."""
    bucket, key = uris.parse(uri)
    return _bucket(f"{uris.SCHEME}{bucket}", os.getpid()), key


def cached(uri: str, sha256: str) -> Path:
    """A local copy of the object at `uri` whose bytes hash to `sha256` (a dataset's shard
    read where it is), fetched into the worker's cache once and verified."""
    if not re.fullmatch("[0-9a-f]{64}", sha256):
        raise ValueError(f"{sha256!r} is not a sha256")
    path = get_settings().data_dir.resolve() / "cache" / "sha256" / sha256
    if not path.is_file():
        source, key = for_uri(uri)
        source.download(key, path, sha256)
    return path


def get_store() -> Store:
    """This process's store (a fresh client after a fork: obstore's runtime is per process)."""
    settings = get_settings()
    return _store_for(settings.store_url, settings.artifacts_dir.resolve(), os.getpid())


@lru_cache(maxsize=4)
def _store_for(url: str, artifacts_dir: Path, pid: int) -> Store:
    return Store(url) if url else Store(artifacts_dir.as_uri(), root=artifacts_dir)


@lru_cache(maxsize=16)
def _bucket(url: str, pid: int) -> Store:
    return Store(url)
