"""The stored form of an image dataset: WebDataset tar shards plus an index. `index.json`
holds class names, channels, `samples.npz`'s sha256 and, per split, counts, a size summary
and its shards (sha256, counts); `samples.npz` per sample its shard, offset, size, label,
width and height;
`shards/<split>-000000.tar` two members a sample, `<key>.<ext>` (the uploaded bytes as they
came) and `<key>.cls` (the label as text), so any tar reader reads them. The offsets let a
training process read any sample with one read and shuffle an epoch globally. Files are
written into the dataset's new folder, then put to the store, before its row exists: visible
only once whole."""

import hashlib
import io
import json
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from service.files import sha256_file

INDEX = "index.json"
SAMPLES = "samples.npz"
SHARDS = "shards"
FORMAT = "webdataset"
SHARD_BYTES = 512 << 20  # a shard is closed once it holds this much
COLUMNS = ("shard", "offset", "size", "label", "width", "height")


@dataclass
class SplitWriter:
    """One split's shards, written in order, with what the index says of them. `closed`,
    when given, is told of each shard once it is whole (its path and its entry), to move it
    elsewhere (service/ingest/remote.py puts it in the store)."""

    folder: Path
    split: str
    shard_bytes: int = SHARD_BYTES
    columns: dict[str, list[int]] = field(default_factory=lambda: {c: [] for c in COLUMNS})
    shards: list[dict[str, Any]] = field(default_factory=list)
    closed: Callable[[Path, dict[str, Any]], None] | None = None
    _tar: tarfile.TarFile | None = None
    _file: "HashingFile | None" = None

    def add(self, data: bytes, ext: str, label: int, width: int, height: int) -> None:
        tar = self._open()
        key = f"{len(self.columns['label']):09d}"
        offset = _add_member(tar, f"{key}.{ext}", data)
        _add_member(tar, f"{key}.cls", str(label).encode())
        self.row(len(self.shards) - 1, offset, len(data), label, width, height)
        if tar.fileobj is not None and tar.fileobj.tell() >= self.shard_bytes:
            self._close()

    def row(self, shard: int, offset: int, size: int, label: int, width: int, height: int) -> None:
        """One sample of shard `shard` (an index into `shards`): its image's bytes at
        `offset`, `size` long."""
        for column, value in zip(COLUMNS, (shard, offset, size, label, width, height), strict=True):
            self.columns[column].append(value)
        self.shards[shard]["count"] += 1

    def finish(self) -> None:
        self._close()

    def _open(self) -> tarfile.TarFile:
        if self._tar is None:
            name = f"{self.split}-{len(self.shards):06d}.tar"
            self._file = HashingFile((self.folder / name).open("xb"))
            self._tar = tarfile.TarFile(fileobj=self._file, mode="w", format=tarfile.USTAR_FORMAT)
            self.shards.append({"name": f"{SHARDS}/{name}", "count": 0})
        return self._tar

    def _close(self) -> None:
        if self._tar is not None and self._file is not None:
            self._tar.close()
            self._file.close()
            self.shards[-1]["sha256"] = self._file.digest.hexdigest()
            self.shards[-1]["size"] = self._file.size
            if self.closed is not None:
                self.closed(self.folder / Path(self.shards[-1]["name"]).name, self.shards[-1])
        self._tar = self._file = None


class HashingFile(io.RawIOBase):
    """A write-only file that hashes and counts what passes through it."""

    def __init__(self, file: BinaryIO) -> None:
        self.file, self.digest, self.size = file, hashlib.sha256(), 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self.file.write(data)
        self.digest.update(data)
        self.size += len(data)
        return len(data)

    def tell(self) -> int:
        return self.size

    def close(self) -> None:
        self.file.close()
        super().close()


def _add_member(tar: tarfile.TarFile, name: str, data: bytes) -> int:
    """Adds one file; returns the byte offset of its data in the shard."""
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o444, 0
    offset = tar.offset + len(info.tobuf(tar.format, tar.encoding, tar.errors))
    tar.addfile(info, io.BytesIO(data))
    return offset


def size_summary(values: list[int]) -> dict[str, int]:
    arr = np.asarray(values)
    return {"min": int(arr.min()), "median": int(np.median(arr)), "max": int(arr.max())}


def split_summary(writer: SplitWriter, num_classes: int) -> dict[str, Any]:
    cols = writer.columns
    return {
        "count": len(cols["label"]),
        "class_counts": np.bincount(cols["label"], minlength=num_classes).tolist(),
        "width": size_summary(cols["width"]),
        "height": size_summary(cols["height"]),
        "shards": writer.shards,
    }


def write_index(
    folder: Path, writers: list[SplitWriter], class_names: list[str], channels: int
) -> dict[str, Any]:
    """index.json and samples.npz for finished writers; returns the index."""
    splits = {w.split: split_summary(w, len(class_names)) for w in writers}
    sides = {v for s in splits.values() for side in ("width", "height") for v in s[side].values()}
    index = {
        "format": FORMAT,
        "class_names": class_names,
        "channels": channels,
        "size": sides.pop() if len(sides) == 1 else None,  # when every image is one square size
        "splits": splits,
    }
    arrays = {
        f"{w.split}_{column}": np.asarray(values, dtype=np.int64)
        for w in writers
        for column, values in w.columns.items()
    }
    with (folder / SAMPLES).open("xb") as f:
        np.savez(f, **arrays)  # type: ignore[arg-type]
    # the index names every file of the dataset with its sha256: a worker checks its copies
    index["samples_sha256"] = sha256_file(folder / SAMPLES)
    (folder / INDEX).write_text(json.dumps(index, indent=1))
    return index


def read_index(folder: Path) -> dict[str, Any]:
    return dict(json.loads((folder / INDEX).read_text()))


def read_samples(folder: Path, split: str) -> dict[str, np.ndarray]:
    """The per-sample columns of one split."""
    with np.load(folder / SAMPLES, allow_pickle=False) as npz:
        return {column: npz[f"{split}_{column}"] for column in COLUMNS}


def read(index_path: Path) -> dict[str, Any]:
    """A stored dataset as plain values, what a training process needs to read it: the
    index, and per split its shards' paths and its samples' columns; "sha256" is the index
    file's (which names every shard's). A shard read where it lies (a dataset registered by
    URI) names its `uri`: worker/job/stored_shards.py reads it there."""
    folder = index_path.parent
    raw = index_path.read_bytes()
    index = dict(json.loads(raw))
    for name, split in index["splits"].items():
        split["paths"] = [str(folder / shard["name"]) for shard in split["shards"]]
        split["columns"] = read_samples(folder, name)
    return index | {"sha256": hashlib.sha256(raw).hexdigest()}
