"""The store: where every durable byte lives (uploads, job outputs, checkpoints), as objects
under one key layout (the *_key functions). By default a folder in the data dir; with
DISTILLERY_STORE_URL=s3://bucket/prefix any S3-compatible store, its endpoint and credentials
read from the standard AWS_* variables (AWS_ALLOW_HTTP=true for a plain-http endpoint).
obstore (Rust's object_store) speaks to both: multipart writes, ranged reads, no signing here.
An object is written whole or not at all; the caller records it in the database after."""

import hashlib
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import obstore
from obstore.exceptions import BaseError, NotFoundError
from obstore.store import LocalStore, ObjectStore, from_url

if TYPE_CHECKING:
    from obstore.store import RetryConfig

from service.config import get_settings
from service.files import CHUNK, safe_child
from service.spec import uris

MULTIPART_BYTES = 64 << 20  # larger objects are written in parts (S3's 5 GiB single-put cap)
PART_BYTES = 16 << 20


def job_prefix(job_id: str) -> str:
    return f"jobs/{job_id}"


def dataset_prefix(dataset_id: str) -> str:
    return f"datasets/{dataset_id}"


def model_prefix(model_id: str) -> str:
    return f"models/{model_id}"


def job_key(job_id: str, name: str) -> str:
    return f"{job_prefix(job_id)}/{name}"


def dataset_key(dataset_id: str, name: str) -> str:
    return f"{dataset_prefix(dataset_id)}/{name}"


def model_key(model_id: str, name: str) -> str:
    return f"{model_prefix(model_id)}/{name}"


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

    def __init__(self, url: str, root: Path | None = None, *, retries: int | None = None) -> None:
        """`retries`: how many times a failed request is tried again (None: obstore's 10)."""
        self.url = url
        self.root = root  # set for a folder: its objects are readable in place
        retry: RetryConfig | None = None if retries is None else {"max_retries": retries}
        self._store: ObjectStore = (
            LocalStore(root, mkdir=True) if root is not None else from_url(url, retry_config=retry)
        )

    def local_path(self, key: str) -> Path | None:
        """The object's own file for a folder store (read in place); None for a bucket."""
        return safe_child(self.root, key) if self.root is not None else None

    @property
    def is_folder(self) -> bool:
        return self.root is not None

    def put_file(self, key: str, path: Path) -> Meta:
        """Write a local file as the object `key`, whole or not at all. A folder store's own
        file for `key` (written in place: scratch_dir) is stored already: nothing is copied."""
        if self.local_path(key) == path.resolve():
            return self._head_of_written(key)
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
        return self._head_of_written(key)

    def put_folder(self, prefix: str, folder: Path) -> int:
        """Every file under `folder` as the object prefix/<its relative path>; their bytes."""
        total = 0
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            total += self.put_file(f"{prefix}/{path.relative_to(folder).as_posix()}", path).size
        return total

    def _head_of_written(self, key: str) -> Meta:
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
        yield from self.open_range(key, start, stop)

    def open_range(self, key: str, start: int = 0, stop: int | None = None) -> Iterator[bytes]:
        """As `chunks`, but asked for now: a missing object (FileNotFoundError) or a store
        that cannot be reached (StoreError) raises here, before a response has begun."""
        options = {"range": (start, stop)} if stop is not None else {"range": {"offset": start}}
        if start == 0 and stop is None:  # the whole object: no range (an empty one has none)
            options = {}
        with _errors(key):
            result = obstore.get(self._store, key, options=options)  # type: ignore[arg-type]
        return _streamed(key, result.stream(min_chunk_size=CHUNK))

    def read_at(self, key: str, offset: int, size: int) -> bytes:
        """`size` bytes of the object from `offset`: one ranged request."""
        with _errors(key):
            return bytes(obstore.get_range(self._store, key, start=offset, length=size))

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
        """Every object under `prefix/` (a dataset's, a model's or a job's); for a folder
        store, the prefix's folder with whatever else was left in it."""
        keys = self.keys(prefix)
        if keys:
            with _errors(prefix):
                obstore.delete(self._store, keys)
        if self.root is not None:
            shutil.rmtree(safe_child(self.root, prefix), ignore_errors=True)

    def copy(self, src: str, dst: str) -> None:
        with _errors(src):
            obstore.copy(self._store, src, dst)


def _streamed(key: str, stream: Iterator[Any]) -> Iterator[bytes]:
    with _errors(key):
        for chunk in stream:
            yield bytes(chunk)


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
    AWS_* variables, and the store's retries) and the key the URI names in it. The URI is
    checked first (service/spec/uris.py); which URIs a project may read is the caller's to
    decide."""
    bucket, key = uris.parse(uri)
    retries = get_settings().store_retries
    return _bucket(f"{uris.SCHEME}{bucket}", retries, os.getpid()), key


def scratch_dir(prefix: str) -> Path:
    """A local folder for the files of the objects under `prefix` before they are put: for a
    folder store the prefix's own folder (they are stored where they are written, and
    putting them copies nothing: the embedded default works as it always has), for a bucket a
    folder under DATA_DIR/scratch."""
    store = get_store()
    if store.root is not None:
        return safe_child(store.root, prefix)
    return safe_child(get_settings().scratch_dir.resolve(), prefix)


def get_store() -> Store:
    """This process's store (a fresh client after a fork: obstore's runtime is per process)."""
    settings = get_settings()
    dirs = settings.artifacts_dir.resolve()
    return _store_for(settings.store_url, dirs, settings.store_retries, os.getpid())


@lru_cache(maxsize=4)
def _store_for(url: str, artifacts_dir: Path, retries: int, pid: int) -> Store:
    if url:
        return Store(url, retries=retries)
    return Store(artifacts_dir.as_uri(), root=artifacts_dir)


@lru_cache(maxsize=16)
def _bucket(url: str, retries: int, pid: int) -> Store:
    return Store(url, retries=retries)
