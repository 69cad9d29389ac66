"""Reading a stored dataset's images (service/ingest/shards.py writes them) for training: one
read per sample from its shard (a `pread` of a local file, or the job's own reader's), decoded,
EXIF-oriented, converted to the dataset's channels, its centre square resized to base x base
(torch's antialiased bilinear on uint8, channels-last, as the batch is gathered). A JPEG at
least twice the base is decoded by Pillow at a reduced scale (draft mode) that leaves the
shorter side at least `base`; any other JPEG in the dataset's mode by TorchCodec
(by_torchcodec: the same pixels as Pillow's); the rest by Pillow. Augmentation happens later,
on the training device (augment.py). Measured speeds: README, Data throughput."""

import copy
import io
import os
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps
from torch import Tensor
from torchcodec.decoders import ImageReadMode, decode_jpeg

ORIENTATION = 0x0112  # the EXIF tag; 1 is upright
READ_MODES = {"L": ImageReadMode.GRAY, "RGB": ImageReadMode.RGB}  # Pillow's, TorchCodec's


ReadAt = Callable[[int, int, int], bytes]  # (shard, offset, size) -> a sample's bytes


class ShardFiles:
    """A split's samples read from local shard files: one `pread` each, a file descriptor
    per shard kept open in each process. Picklable: DataLoader workers open their own."""

    def __init__(self, paths: list[str]) -> None:
        self.paths = paths
        self._files: dict[int, int] = {}

    def __call__(self, shard: int, offset: int, size: int) -> bytes:
        return os.pread(self._fd(shard), size, offset)

    def _fd(self, shard: int) -> int:
        if shard not in self._files:
            self._files[shard] = os.open(self.paths[shard], os.O_RDONLY)
        return self._files[shard]

    def __getstate__(self) -> dict[str, object]:
        return self.__dict__ | {"_files": {}}  # descriptors stay in the process that opened them

    def __del__(self) -> None:
        for fd in self._files.values():
            os.close(fd)


class ShardSamples(torch.utils.data.Dataset):
    """Some samples of one split of a stored dataset (service/ingest/shards.py: `split` is one of
    its index's splits as `shards.read` gives it), each as a (C, base, base) uint8 tensor
    and its label. A split's `reader` (a picklable ReadAt) reads a sample's bytes; without
    one, its shards' `paths` are read (ShardFiles)."""

    def __init__(self, split: dict[str, Any], identity: str, channels: int, base: int) -> None:
        columns = split["columns"]
        self.read: ReadAt = split.get("reader") or ShardFiles(split["paths"])
        self.identity, self.channels, self.base = identity, channels, base
        self.indices = np.arange(len(columns["label"]))
        self.rows = np.stack([columns[c] for c in ("shard", "offset", "size")], axis=1)
        self.labels = torch.from_numpy(columns["label"])

    def subset(self, idx: np.ndarray) -> "ShardSamples":
        part = copy.copy(self)
        part.indices, part.rows, part.labels = self.indices[idx], self.rows[idx], self.labels[idx]
        return part

    def fingerprint(self) -> list[Any]:
        """Which dataset (its index's sha256), which of its samples, at what size."""
        return [self.identity.encode(), self.indices, self.base]

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        shard, offset, size = (int(v) for v in self.rows[i])
        return decode(self.read(shard, offset, size), self.channels, self.base), self.labels[i]


def decode(data: bytes, channels: int, base: int) -> Tensor:
    """(channels, base, base) uint8, channels-last in memory: the image's centre square,
    resized to base."""
    mode = "L" if channels == 1 else "RGB"
    with Image.open(io.BytesIO(data)) as file:
        if by_torchcodec(file, mode, base):
            decoded = decode_jpeg(data, mode=READ_MODES[mode])  # EXIF-oriented
            assert isinstance(decoded, Tensor)  # one source, one image
            pixels = decoded.permute(1, 2, 0)
        else:
            pixels = pillow_pixels(file, mode, base)
    h, w, _ = pixels.shape
    side = min(w, h)
    top, left = (h - side) // 2, (w - side) // 2
    square = pixels[top : top + side, left : left + side].permute(2, 0, 1)
    if side == base:
        return square
    square = square[None].contiguous(memory_format=torch.channels_last)
    out = F.interpolate(square, size=(base, base), mode="bilinear", antialias=True)
    return out[0]


def by_torchcodec(file: Image.Image, mode: str, base: int) -> bool:
    """Whether TorchCodec decodes this image: a JPEG already in `mode` that Pillow's draft
    could not reduce (it scales by halves, so a shorter side under 2 * base)."""
    return file.format == "JPEG" and file.mode == mode and min(file.size) < 2 * base


def pillow_pixels(file: Image.Image, mode: str, base: int) -> Tensor:
    """(H, W, C) uint8: decoded at the scale `draft_size` allows, oriented, in `mode`."""
    file.draft(mode, draft_size(file.size, base))
    im = ImageOps.exif_transpose(file) if file.getexif().get(ORIENTATION, 1) != 1 else file
    im = im.convert(mode) if im.mode != mode else im
    return torch.from_numpy(np.array(im, dtype=np.uint8).reshape(im.height, im.width, -1))


def draft_size(size: tuple[int, int], base: int) -> tuple[int, int]:
    """The size Pillow's draft may reduce a JPEG to: its shorter side stays >= base."""
    w, h = size
    scale = max(1.0, min(w, h) / base)
    return max(1, int(w / scale)), max(1, int(h / scale))


def collate(items: list[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
    """A batch (N, C, H, W), channels-last in memory as its samples are. In a DataLoader
    worker it is made in shared memory, as torch's default collate does: handing it to the
    training process then copies nothing."""
    images, labels = zip(*items, strict=True)
    c, h, w = images[0].shape
    out = torch.empty((len(images), h, w, c), dtype=images[0].dtype)
    if torch.utils.data.get_worker_info() is not None:
        out.share_memory_()
    torch.stack([x.permute(1, 2, 0) for x in images], out=out)
    return out.permute(0, 3, 1, 2), torch.stack(labels)
