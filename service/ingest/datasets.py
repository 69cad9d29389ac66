"""Uploaded datasets: streamed to a temp file, decoded and checked, written in their canonical
form into a local folder (service.store.scratch_dir), put to the store under datasets/<id>/,
and recorded as a row in `datasets`: arrays (npz, IDX) as one data.npz; an ImageFolder's
images as they came, in WebDataset shards with an index.json (service/ingest/shards.py). A
refused, truncated or interrupted upload, or one the store could not take, leaves neither
objects nor row."""

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from sqlalchemy.orm import Session

from service import files
from service.config import get_settings
from service.db import paging, usage
from service.db.sessions import get_or_404, session_scope
from service.db.tables import Dataset, Job, new_id
from service.db.tenancy import current_project
from service.ingest import archives, datafiles, imagefolder, shards, uploads
from service.ingest.archives import BadUpload, Budget
from service.store import dataset_key, dataset_prefix, scratch_dir

DATA = "data.npz"
Format = Literal["npz", "idx", "imagefolder"]


@dataclass(frozen=True)
class UploadInfo:
    name: str | None = None
    format: Format | None = None  # None: recognised from the content
    num_classes: int | None = None
    class_names: list[str] | None = None  # IDX: the labels' names


@dataclass(frozen=True)
class Stored:
    """What a stored dataset is, as its row records it."""

    canonical: str  # the file a worker opens, in the dataset's folder
    class_names: list[str]
    channels: int
    input_size: int | None  # when every image is one square size
    splits: dict[str, dict[str, Any]]  # per split: count, class_counts, width, height


@dataclass(frozen=True)
class Upload:
    """What was received, and what was stored of it."""

    sha256: str  # of the bytes uploaded
    size: int
    canonical_sha256: str  # of the file a worker opens
    stored_size: int  # every object of the dataset


def canonical_key(row: Dataset) -> str:
    """The object a worker reads the dataset from: data.npz or the shards' index.json."""
    return row.path


async def upload(chunks: AsyncIterator[bytes], info: UploadInfo) -> Dataset:
    """Stream, decode, check and store an uploaded dataset, then record it."""
    dataset_id = new_id("ds")
    prefix = dataset_prefix(dataset_id)
    directory = scratch_dir(prefix)
    sink = await asyncio.to_thread(uploads.Sink, directory / "upload")
    try:
        await uploads.write_all(sink, chunks)
        await asyncio.to_thread(sink.file.close)
        fmt, stored = await asyncio.to_thread(_store, sink.tmp, info, directory)
        await asyncio.to_thread(sink.discard)  # only the canonical form is kept
        sha256 = await asyncio.to_thread(files.sha256_file, directory / stored.canonical)
        size = await asyncio.to_thread(uploads.put_folder, prefix, directory)
        received = Upload(sink.digest.hexdigest(), sink.size, sha256, size)
        return await asyncio.to_thread(_insert, dataset_id, info, fmt, stored, received)
    except BaseException:  # the body was read whole: nothing is left to drain
        sink.discard()
        await asyncio.shield(asyncio.to_thread(uploads.unstage, prefix, directory))
        raise
    finally:
        await asyncio.shield(asyncio.to_thread(uploads.clear_scratch, directory))


def _store(path: Path, info: UploadInfo, directory: Path) -> tuple[str, Stored]:
    # the archive's names (no data read), listed once: to recognise it and to lay it out
    names = archives.names(path, _budget()) if info.format in (None, "imagefolder") else []
    fmt = info.format or _sniff(names)
    budget = _budget()
    if info.class_names is not None and fmt != "idx":
        raise BadUpload(f"class_names are for IDX uploads; a {fmt} upload names its own classes")
    if fmt == "imagefolder":
        index = imagefolder.store(path, names, budget, directory, info.num_classes)
        return fmt, _from_index(index)
    if fmt == "npz":
        decoded = datafiles.from_npz(path, budget, info.num_classes)
    else:
        decoded = datafiles.from_idx(path, budget, info.num_classes, info.class_names)
    datafiles.write_canonical(decoded, directory / DATA)
    _, channels, size = decoded.shape
    return fmt, Stored(DATA, decoded.class_names, channels, size, decoded.splits())


def _from_index(index: dict[str, Any]) -> Stored:
    splits = {
        name: {k: v for k, v in split.items() if k != "shards"}
        for name, split in index["splits"].items()
    }
    return Stored(shards.INDEX, index["class_names"], index["channels"], index["size"], splits)


def _budget() -> Budget:
    settings = get_settings()
    return Budget(settings.max_archive_files, settings.max_decompressed_bytes)


def _sniff(names: list[str]) -> Format:
    if names and all(n.endswith(".npy") and "/" not in n for n in names):
        return "npz"
    if any(datafiles.idx_role(n) for n in names):
        return "idx"
    return "imagefolder"


def _insert(dataset_id: str, info: UploadInfo, fmt: str, stored: Stored, upload: Upload) -> Dataset:
    val = stored.splits.get("val")
    dataset = Dataset(
        id=dataset_id,
        project_id=current_project(),
        name=info.name or f"{fmt} upload",
        format=fmt,
        num_classes=len(stored.class_names),
        in_channels=stored.channels,
        input_size=stored.input_size,
        num_train=stored.splits["train"]["count"],
        num_val=val["count"] if val else None,
        class_names=stored.class_names,
        class_counts=[
            sum(c) for c in zip(*(s["class_counts"] for s in stored.splits.values()), strict=True)
        ],
        splits=stored.splits,
        sha256=upload.canonical_sha256,
        size=upload.stored_size,
        upload_sha256=upload.sha256,
        upload_size=upload.size,
        path=dataset_key(dataset_id, stored.canonical),
    )
    with session_scope() as s:
        s.add(dataset)
    return dataset


def get_dataset(s: Session, dataset_id: str) -> Dataset:
    return get_or_404(s, Dataset, "dataset", dataset_id)


def list_datasets(
    s: Session, *, limit: int = 50, cursor: str | None = None
) -> tuple[list[Dataset], str | None]:
    """Newest first; the cursor names the last row of the previous page."""
    return paging.newest_first(s, Dataset, limit=limit, cursor=cursor)


def delete_dataset(s: Session, dataset_id: str) -> None:
    """Refused (409) while a queued or running job trains on it; the row goes, and its
    objects once that is committed."""
    usage.delete_unless_used(
        s, Dataset, dataset_id, "dataset", (Job.dataset_id,), "is used by", "dataset_in_use"
    )
    uploads.delete_after_commit(s, dataset_prefix(dataset_id))


def not_ready(dataset: Dataset) -> str | None:
    """Why a dataset cannot be trained on yet, if it cannot (one registered by URI is read by
    a worker first: service/ingest/by_uri.py)."""
    if dataset.status == "ready":
        return None
    if dataset.status == "validating":
        return f"dataset {dataset.id!r} is still being read by a worker; try when it is ready"
    return f"dataset {dataset.id!r} is invalid: {'; '.join(dataset.problems or [])}"
