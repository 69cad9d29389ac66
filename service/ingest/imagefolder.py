"""ImageFolder archives: one folder per class (`<class>/<image>`), or the same under `train/`
and `val/` for a predefined validation split; one shared top folder is allowed. Images may
have any sizes and modes (JPEG, PNG, WebP, BMP; RGB, grayscale, palette, CMYK, with EXIF
orientation).

The archive is listed (names only), then streamed once: each image's bytes are read, its
header checked and its data decoded to find a truncated or broken file (a JPEG at 1/8 scale,
which still reads every byte), and the bytes are stored as they came in WebDataset shards
(service/ingest/shards.py). One image is held at a time, whatever the archive's size."""

import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from PIL import Image

from service.ingest import archives, shards
from service.ingest.archives import BadUpload, Budget, printable_names

FORMATS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "BMP": "bmp"}  # Pillow's name -> ext
SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
SPLITS = ("train", "val")
GRAY = ("1", "L", "LA", "I", "I;16", "F")
MIN_SIDE, MAX_PIXELS = 4, 64_000_000  # a side of at least 4 pixels; at most 8000x8000
EXIF_ORIENTATION = 0x0112
TRANSPOSED = (5, 6, 7, 8)  # orientations that swap width and height


@dataclass(frozen=True)
class Checked:
    ext: str
    width: int  # as displayed, after the EXIF orientation
    height: int
    gray: bool


def store(
    path: Path, names: list[str], budget: Budget, dest: Path, num_classes: int | None
) -> dict[str, Any]:
    """Checks every image of the archive at `path` (its member `names` listed before) and
    writes the dataset into `dest`; returns its index (service/ingest/shards.py)."""
    roles = layout([n for n in names if is_image(n)])
    class_names = classes(roles, num_classes)
    labels = {c: i for i, c in enumerate(class_names)}
    (dest / shards.SHARDS).mkdir(parents=True)
    writers = {
        s: shards.SplitWriter(dest / shards.SHARDS, s)
        for s in sorted({s for s, _ in roles.values()})
    }
    gray = True
    for name, data in _images(path, budget, roles):
        split, label = roles[name][0], labels[roles[name][1]]
        info = check_image(data, name)
        gray &= info.gray
        writers[split].add(data, info.ext, label, info.width, info.height)
    for writer in writers.values():
        writer.finish()
        if len(writer.columns["label"]) < 2:
            raise BadUpload(f"{writer.split}: at least 2 images are needed")
    return shards.write_index(dest, list(writers.values()), class_names, 1 if gray else 3)


def classes(roles: dict[str, tuple[str, str]], num_classes: int | None) -> list[str]:
    """The class names (the train split's folders, sorted: a label is its index)."""
    class_names = sorted({c for s, c in roles.values() if s == "train"})
    printable_names(class_names, "class folder names")
    if num_classes not in (None, len(class_names)):
        raise BadUpload(f"{len(class_names)} class folders, but num_classes={num_classes}")
    if len(class_names) < 2:
        raise BadUpload("at least 2 classes (folders) are needed")
    return class_names


def _images(
    path: Path, budget: Budget, roles: dict[str, tuple[str, str]]
) -> Iterator[tuple[str, bytes]]:
    return ((n, data) for n, data in archives.files(path, budget) if n in roles)


def layout(names: list[str], where: str = "the archive") -> dict[str, tuple[str, str]]:
    """{image name: (split, class folder)}; BadUpload when the folders are not ImageFolder's."""
    if not names:
        raise BadUpload(f"no images ({', '.join(SUFFIXES)}) in {where}")
    dirs = _strip_common([PurePosixPath(n).parts[:-1] for n in names])
    if all(len(d) == 2 and d[0] in SPLITS for d in dirs):
        roles = {n: (d[0], d[1]) for n, d in zip(names, dirs, strict=True)}
    elif all(len(d) == 1 for d in dirs):
        roles = {n: ("train", d[0]) for n, d in zip(names, dirs, strict=True)}
    else:
        raise BadUpload(
            "images must sit in <class>/ folders, or in train/<class>/ and val/<class>/"
        )
    train = {c for s, c in roles.values() if s == "train"}
    if extra := sorted({c for s, c in roles.values() if s == "val"} - train):
        raise BadUpload(f"val classes with no train folder: {extra}")
    return roles


def is_image(name: str) -> bool:
    parts = PurePosixPath(name).parts
    hidden = any(p.startswith(".") or p == "__MACOSX" for p in parts)
    return not hidden and name.lower().endswith(SUFFIXES)


def _strip_common(dirs: list[tuple[str, ...]]) -> list[tuple[str, ...]]:
    while all(len(d) >= 2 for d in dirs) and len({d[0] for d in dirs}) == 1:
        if dirs[0][0] in SPLITS:
            break
        dirs = [d[1:] for d in dirs]
    return dirs


def check_image(data: bytes, name: str) -> Checked:
    """What the image is, once its header is checked and its data decoded (a JPEG at 1/8
    scale); BadUpload naming the file when it is not a readable image of an accepted kind."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.format not in FORMATS:
                accepted = ", ".join(FORMATS)
                raise BadUpload(f"{name} is a {im.format} image; accepted: {accepted}")
            w, h = im.size
            if min(w, h) < MIN_SIDE or w * h > MAX_PIXELS:
                raise BadUpload(
                    f"{name} is {w}x{h}: sides of at least {MIN_SIDE} pixels and at most "
                    f"{MAX_PIXELS} pixels are accepted"
                )
            gray = im.mode in GRAY
            orientation = im.getexif().get(EXIF_ORIENTATION, 1)
            im.draft("L" if gray else "RGB", (max(1, w // 8), max(1, h // 8)))
            im.load()
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise BadUpload(f"{name} is not a readable image: {exc}") from exc
    if orientation in TRANSPOSED:
        w, h = h, w
    return Checked(FORMATS[im.format], w, h, gray)
