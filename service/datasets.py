"""Uploaded datasets: streamed to a temp file, decoded and checked, stored as one canonical
file artifacts/datasets/<id>/data.npz and a row in `datasets`. A refused, truncated or
interrupted upload leaves neither."""

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from sqlalchemy.orm import Session

from service import archives, datafiles, imagefolder, paging, queries, store, uploads
from service.archives import Budget
from service.config import get_settings
from service.db import get_or_404, session_scope
from service.tables import Dataset, Job, new_id

DATA = "data.npz"
Format = Literal["npz", "idx", "imagefolder"]


@dataclass(frozen=True)
class UploadInfo:
    name: str | None = None
    format: Format | None = None  # None: recognised from the content
    num_classes: int | None = None


def dataset_dir(dataset_id: str) -> Path:
    return store.safe_child(get_settings().datasets_dir.resolve(), dataset_id)


def data_path(dataset_id: str) -> Path:
    return dataset_dir(dataset_id) / DATA


async def upload(chunks: AsyncIterator[bytes], info: UploadInfo) -> Dataset:
    """Stream, decode, check and store an uploaded dataset, then record it."""
    dataset_id = new_id("ds")
    directory = dataset_dir(dataset_id)
    sink = await asyncio.to_thread(uploads.Sink, directory / "upload")
    try:
        await uploads.write_all(sink, chunks)
        await asyncio.to_thread(sink.file.close)
        fmt, decoded = await asyncio.to_thread(_decode, sink.tmp, info)
        await asyncio.to_thread(datafiles.write_canonical, decoded, directory / DATA)
        await asyncio.to_thread(sink.discard)  # only the canonical file is kept
        digest = await asyncio.to_thread(store.sha256_file, directory / DATA)
        return await asyncio.to_thread(
            _insert, dataset_id, info, fmt, decoded, digest, sink.digest.hexdigest(), sink.size
        )
    except BaseException:  # the body was read whole: nothing is left to drain
        sink.discard()
        uploads.discard(directory)
        raise


def _decode(path: Path, info: UploadInfo) -> tuple[str, datafiles.Decoded]:
    settings = get_settings()
    budget = Budget(settings.max_archive_files, settings.max_decompressed_bytes)
    fmt = info.format or _sniff(path)
    if fmt == "npz":
        return fmt, datafiles.from_npz(path, budget, info.num_classes)
    if fmt == "idx":
        return fmt, datafiles.from_idx(path, budget, info.num_classes)
    return fmt, imagefolder.from_imagefolder(path, budget, info.num_classes)


def _sniff(path: Path) -> Format:
    budget = Budget(get_settings().max_archive_files, get_settings().max_decompressed_bytes)
    names = archives.names(path, budget)
    if names and all(n.endswith(".npy") and "/" not in n for n in names):
        return "npz"
    stems = {n.rsplit("/", 1)[-1].removesuffix(".gz") for n in names}
    if stems & set(datafiles.IDX_FILES):
        return "idx"
    return "imagefolder"


def _insert(
    dataset_id: str,
    info: UploadInfo,
    fmt: str,
    decoded: datafiles.Decoded,
    sha256: str,
    upload_sha256: str,
    upload_size: int,
) -> Dataset:
    num_classes, channels, size = decoded.shape
    dataset = Dataset(
        id=dataset_id,
        name=info.name or f"{fmt} upload",
        format=fmt,
        num_classes=num_classes,
        in_channels=channels,
        input_size=size,
        num_train=len(decoded.labels),
        num_val=len(decoded.val_labels) if decoded.val_labels is not None else None,
        class_names=decoded.class_names,
        class_counts=decoded.class_counts(),
        sha256=sha256,
        size=data_path(dataset_id).stat().st_size,
        upload_sha256=upload_sha256,
        upload_size=upload_size,
        path=f"datasets/{dataset_id}/{DATA}",
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
    """Refused (409) while a queued or running job trains on it; the row goes, and its file
    once that is committed."""
    queries.delete_unless_used(
        s, Dataset, dataset_id, "dataset", (Job.dataset_id,), "is used by", "dataset_in_use"
    )
    uploads.discard_after_commit(s, dataset_dir(dataset_id))
