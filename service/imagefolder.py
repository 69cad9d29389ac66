"""ImageFolder archives: one folder per class (`<class>/<image>`), or the same under `train/`
and `val/` for a predefined validation split; one shared top folder is allowed. Images are
decoded by Pillow in memory, one at a time, each one's pixels drawn from the budget."""

import io
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image

from service import archives
from service.archives import BadUpload, Budget
from service.datafiles import MAX_SIZE, Decoded, check

SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
SPLITS = ("train", "val")
GRAY = ("1", "L", "I", "I;16", "F")


def from_imagefolder(path: Path, budget: Budget, num_classes: int | None) -> Decoded:
    found = [
        (PurePosixPath(name).parts[:-1], decode(data, name, budget), name)
        for name, data in archives.files(path, budget)
        if _image(name)
    ]
    if not found:
        raise BadUpload(f"no images ({', '.join(SUFFIXES)}) in the archive")
    dirs = _strip_common([parts for parts, _, _ in found])
    if all(len(d) == 2 and d[0] in SPLITS for d in dirs):
        splits = [d[0] for d in dirs]
        classes = [d[1] for d in dirs]
    elif all(len(d) == 1 for d in dirs):
        splits, classes = ["train"] * len(dirs), [d[0] for d in dirs]
    else:
        raise BadUpload(
            "images must sit in <class>/ folders, or in train/<class>/ and val/<class>/"
        )
    names = sorted({c for s, c in zip(splits, classes, strict=True) if s == "train"})
    if extra := sorted(set(classes) - set(names)):
        raise BadUpload(f"val classes with no train folder: {extra}")
    images = _same_layout([arr for _, arr, _ in found], [name for _, _, name in found])
    labels = np.array([names.index(c) for c in classes], dtype=np.int64)
    train = np.array([s == "train" for s in splits])
    if train.all():  # no val/ folder: no masked copies
        return check(images, labels, names, num_classes, None, None)
    val = ~train
    return check(images[train], labels[train], names, num_classes, images[val], labels[val])


def _image(name: str) -> bool:
    parts = PurePosixPath(name).parts
    hidden = any(p.startswith(".") or p == "__MACOSX" for p in parts)
    return not hidden and name.lower().endswith(SUFFIXES)


def _strip_common(dirs: list[tuple[str, ...]]) -> list[tuple[str, ...]]:
    while all(len(d) >= 2 for d in dirs) and len({d[0] for d in dirs}) == 1:
        if dirs[0][0] in SPLITS:
            break
        dirs = [d[1:] for d in dirs]
    return dirs


def decode(data: bytes, name: str, budget: Budget) -> np.ndarray:
    """(H, W, C) uint8 with C = 1 for grayscale, else 3 (alpha dropped)."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            w, h = im.size
            if w * h > MAX_SIZE * MAX_SIZE:
                raise BadUpload(f"{name}: {w}x{h} is larger than {MAX_SIZE}x{MAX_SIZE}")
            channels = 1 if im.mode in GRAY else 3
            budget.spend(w * h * channels, name)
            arr = np.asarray(im.convert("L" if channels == 1 else "RGB"), dtype=np.uint8)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise BadUpload(f"{name} is not a readable image: {exc}") from exc
    return arr.reshape(h, w, channels)


def _same_layout(arrays: list[np.ndarray], names: list[str]) -> np.ndarray:
    """One (N, H, W, C) array: grayscale images join colour ones as RGB; sizes must agree."""
    channels = max(a.shape[2] for a in arrays)
    size = arrays[0].shape[:2]
    for arr, name in zip(arrays, names, strict=True):
        if arr.shape[:2] != size:
            raise BadUpload(
                f"{name} is {arr.shape[1]}x{arr.shape[0]}, {names[0]} is {size[1]}x{size[0]}: "
                "all images must have one size"
            )
    out = np.empty((len(arrays), *size, channels), dtype=np.uint8)  # one copy of the pixels
    for i, arr in enumerate(arrays):
        out[i] = arr  # a grayscale (H, W, 1) image broadcasts into RGB
    return out
