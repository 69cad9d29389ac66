"""Uploaded image classification data, decoded and checked with numpy alone (nothing is
unpickled), then written as one canonical .npz: `images` (N, H, W, C) uint8, `labels` (N,)
int64, `class_names`, and optionally `val_images` / `val_labels`, a predefined validation
split. The canonical file is itself a valid npz upload."""

import math
import re
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.lib import format as npy

from service.ingest import archives
from service.ingest.archives import BadUpload, Budget

REQUIRED = ("images", "labels")
OPTIONAL = ("val_images", "val_labels", "class_names")
MIN_SIZE, MAX_SIZE, MAX_CHANNELS = 4, 1024, 4
# IDX file names: the one table. A name's split ("t10k" and "test" are the test set, kept as
# the validation split) and kind, with the kind's dimension count, which the name states
# ("idx3") and the header's magic number ends in (0x0803 = 2051, 0x0801 = 2049).
IDX_SPLITS = {"train": "train", "t10k": "val", "test": "val"}
IDX_DIMS = {"images": 3, "labels": 1}
IDX_MAGIC = {kind: 0x0800 + dims for kind, dims in IDX_DIMS.items()}
IDX_ROLES = [(split, kind) for split in ("train", "val") for kind in IDX_DIMS]
# [prefix sep] split sep kind sep "idx" N sep "ubyte" [".gz"], sep one of - _ . : the classic
# train-images-idx3-ubyte, Kaggle's train-images.idx3-ubyte, emnist-balanced-train-images-...
IDX_NAME = re.compile(
    rf"(?:.*[-_.])?({'|'.join(IDX_SPLITS)})[-_.]({'|'.join(IDX_DIMS)})[-_.]idx(\d)[-_.]ubyte"
    r"(?:\.gz)?"
)


@dataclass
class Decoded:
    images: np.ndarray  # (N, H, W, C) uint8
    labels: np.ndarray  # (N,) int64
    class_names: list[str]
    val_images: np.ndarray | None = None
    val_labels: np.ndarray | None = None

    @property
    def shape(self) -> tuple[int, int, int]:
        """(num_classes, channels, size)."""
        return len(self.class_names), self.images.shape[3], self.images.shape[1]

    def splits(self) -> dict[str, dict[str, Any]]:
        """Per split: count, class counts and the (one) image size, as a dataset row keeps."""
        k, _, size = self.shape
        labels = {"train": self.labels}
        if self.val_labels is not None:
            labels["val"] = self.val_labels
        side = {"min": size, "median": size, "max": size}
        return {
            split: {
                "count": len(y),
                "class_counts": np.bincount(y, minlength=k).tolist(),
                "width": side,
                "height": side,
            }
            for split, y in labels.items()
        }


# --- npz ---------------------------------------------------------------------------------


def read_npz(path: Path, budget: Budget) -> dict[str, np.ndarray]:
    """The arrays of an .npz, each header checked before any array is allocated."""
    try:
        with zipfile.ZipFile(path) as zf:
            archives.check_zip(zf, path, budget)  # zipfile reads no more than it declares
            keys = [_npy_key(zf, info) for info in zf.infolist()]
        with np.load(path, allow_pickle=False) as npz:
            return {key: npz[key] for key in keys}
    except zipfile.BadZipFile as exc:
        raise BadUpload("not an .npz file (a zip archive of .npy arrays)") from exc
    except (ValueError, OSError, EOFError, KeyError, zlib.error) as exc:
        raise BadUpload(f"an array could not be read: {exc}") from exc


def _npy_key(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> str:
    key = info.filename.removesuffix(".npy")
    if key not in REQUIRED + OPTIONAL:
        raise BadUpload(
            f"unexpected array {key!r}: an .npz holds images and labels, and optionally "
            "val_images, val_labels and class_names"
        )
    with zf.open(info) as f:
        version = npy.read_magic(f)
        read = npy.read_array_header_1_0 if version == (1, 0) else npy.read_array_header_2_0
        shape, _, dtype = read(f)
    if dtype.hasobject:
        raise BadUpload(f"{key} holds Python objects; only numeric and string arrays are read")
    if math.prod(shape) * dtype.itemsize > info.file_size:
        raise BadUpload(f"{key}'s header promises more data than the file holds")
    return key


def from_npz(path: Path, budget: Budget, num_classes: int | None) -> Decoded:
    arrays = read_npz(path, budget)
    if missing := [k for k in REQUIRED if k not in arrays]:
        raise BadUpload(f"missing arrays: {missing}")
    if ("val_images" in arrays) != ("val_labels" in arrays):
        raise BadUpload("give both val_images and val_labels, or neither")
    names = arrays.get("class_names")
    if names is not None and (names.ndim != 1 or names.dtype.kind != "U"):
        raise BadUpload("class_names must be a 1-D array of strings")
    return check(
        arrays["images"],
        arrays["labels"],
        [str(n) for n in names] if names is not None else None,
        num_classes,
        arrays.get("val_images"),
        arrays.get("val_labels"),
    )


# --- checks shared by every format ---------------------------------------------------------


def check(
    images: np.ndarray,
    labels: np.ndarray,
    class_names: list[str] | None,
    num_classes: int | None,
    val_images: np.ndarray | None = None,
    val_labels: np.ndarray | None = None,
) -> Decoded:
    """Shapes, dtypes and label ranges; raises BadUpload naming the first problem."""
    images = _images(images, "images")
    labels = _labels(labels, len(images), "labels")
    if val_images is not None and val_labels is not None:
        val_images = _images(val_images, "val_images")
        val_labels = _labels(val_labels, len(val_images), "val_labels")
        if val_images.shape[1:] != images.shape[1:]:
            raise BadUpload(
                f"val_images are {val_images.shape[1:]}, images {images.shape[1:]} (H, W, C)"
            )
    if class_names is not None and num_classes not in (None, len(class_names)):
        raise BadUpload(f"{len(class_names)} class names, but num_classes={num_classes}")
    top = max(int(labels.max()), int(val_labels.max()) if val_labels is not None else 0)
    k = len(class_names) if class_names is not None else num_classes or top + 1
    for name, arr in (("labels", labels), ("val_labels", val_labels)):
        if arr is not None and (int(arr.min()) < 0 or int(arr.max()) >= k):
            raise BadUpload(
                f"{name} out of range: found [{int(arr.min())}, {int(arr.max())}], "
                f"classes are 0..{k - 1}",
                code="labels_out_of_range",
            )
    if k < 2:
        raise BadUpload("at least 2 classes are needed")
    names = class_names or [str(c) for c in range(k)]
    archives.printable_names(names, "class names")
    if len(set(names)) != len(names):
        raise BadUpload("class names must be distinct")
    return Decoded(images, labels, names, val_images, val_labels)


def _images(images: np.ndarray, name: str) -> np.ndarray:
    if images.dtype != np.uint8:
        raise BadUpload(f"{name} must be uint8 (0-255), not {images.dtype}")
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4:
        raise BadUpload(f"{name} must be (N, H, W) or (N, H, W, C), not {images.shape}")
    n, h, w, c = images.shape
    if n < 2:
        raise BadUpload(f"{name}: at least 2 images are needed, got {n}")
    if h != w or not MIN_SIZE <= h <= MAX_SIZE:
        raise BadUpload(f"{name} must be square, {MIN_SIZE} to {MAX_SIZE} pixels: got {h}x{w}")
    if not 1 <= c <= MAX_CHANNELS:
        raise BadUpload(f"{name} must have 1 to {MAX_CHANNELS} channels, got {c}")
    return images


def _labels(labels: np.ndarray, count: int, name: str) -> np.ndarray:
    if labels.dtype.kind not in "iu" or labels.ndim != 1:
        raise BadUpload(f"{name} must be a 1-D integer array, not {labels.dtype} {labels.shape}")
    if len(labels) != count:
        raise BadUpload(f"{count} images but {len(labels)} {name}", code="count_mismatch")
    return labels.astype(np.int64)


# --- IDX (the MNIST family) ------------------------------------------------------------------


def idx_role(name: str) -> tuple[str, str] | None:
    """The (split, kind) an archive member's name says it holds: split "train" or "val" (the
    t10k/test files), kind "images" (idx3) or "labels" (idx1); None for any other name, a
    hidden file (a part starting with ".", or under __MACOSX/) and a kind with the wrong
    dimension count. Case does not matter; a .gz suffix is allowed."""
    parts = name.replace("\\", "/").lower().split("/")
    if any(p.startswith(".") or p == "__macosx" for p in parts):
        return None
    match = IDX_NAME.fullmatch(parts[-1])
    if match is None:
        return None
    split, kind, dims = match.groups()
    if int(dims) != IDX_DIMS[kind]:
        return None
    return IDX_SPLITS[split], kind


def from_idx(
    path: Path, budget: Budget, num_classes: int | None, class_names: list[str] | None = None
) -> Decoded:
    """The four MNIST-style files (gzipped or not) from one zip or tar archive, named as
    idx_role reads them; the test files become the validation split."""
    found: dict[tuple[str, str], tuple[str, np.ndarray]] = {}
    members: list[str] = []
    for name, data in archives.files(path, budget):
        members.append(name)
        role = idx_role(name)
        if role is None:
            continue
        if role in found:
            raise BadUpload(
                f"two IDX files for {' '.join(role)}: {found[role][0]!r} and {name!r}; "
                "keep one of them"
            )
        raw = archives.gunzip(data, budget, name) if name.lower().endswith(".gz") else data
        found[role] = name, parse_idx(raw, IDX_MAGIC[role[1]], name)
    if missing := [role for role in IDX_ROLES if role not in found]:
        wanted = ", ".join(f"{split} {kind}" for split, kind in missing)
        raise BadUpload(
            f"missing IDX files for {wanted} (named like train-images-idx3-ubyte or "
            f"t10k-labels-idx1-ubyte.gz); the archive holds {_listing(members)}"
        )
    return check(
        found[("train", "images")][1],
        found[("train", "labels")][1],
        class_names,
        num_classes,
        found[("val", "images")][1],
        found[("val", "labels")][1],
    )


def _listing(names: list[str], most: int = 20) -> str:
    if not names:
        return "no files"
    shown = ", ".join(repr(n) for n in names[:most])
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")


def parse_idx(raw: bytes, magic: int, name: str) -> np.ndarray:
    """An IDX file of unsigned bytes: a big-endian magic (2051 images, 2049 labels), one
    uint32 per dimension, then the data."""
    if len(raw) < 4 or int.from_bytes(raw[:4], "big") != magic:
        got = int.from_bytes(raw[:4], "big") if len(raw) >= 4 else None
        raise BadUpload(f"{name}: wrong magic number {got}, expected {magic}", code="bad_magic")
    ndim = raw[3]
    header = 4 + 4 * ndim
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    if len(raw) != header + math.prod(dims):
        raise BadUpload(
            f"{name}: {len(raw) - header} data bytes, dimensions {dims} need {math.prod(dims)}"
        )
    return np.frombuffer(raw, np.uint8, offset=header).reshape(dims)


# --- canonical file --------------------------------------------------------------------------


def write_canonical(decoded: Decoded, dest: Path) -> None:
    """Written whole to a temp name, then renamed: a reader sees all of it or none."""
    tmp = dest.with_name(f".{dest.name}.tmp")
    arrays = {
        "images": decoded.images,
        "labels": decoded.labels,
        "class_names": np.array(decoded.class_names, dtype=str),
    }
    if decoded.val_images is not None and decoded.val_labels is not None:
        arrays |= {"val_images": decoded.val_images, "val_labels": decoded.val_labels}
    with tmp.open("xb") as f:
        np.savez(f, **arrays)  # type: ignore[arg-type]
    tmp.replace(dest)
