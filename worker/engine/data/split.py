"""The data handed to the loop: train, validation and held-out splits, how they are split,
normalised and sized."""

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.model_selection import train_test_split
from torch import Tensor

from worker.engine.data.augment import AUGMENT_MODES, Augment
from worker.engine.data.images import Images, Resident

# ImageNet's per-channel statistics of images in [0, 1] (what pretrained models expect)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
NORMALISATIONS = ("dataset", "imagenet")  # the train split's own statistics, or ImageNet's


@dataclass
class DataSplit:
    train: Images
    val: Images
    num_classes: int
    channels: int
    class_names: list[str]
    augment: Augment  # resolved: the job's mode, or the dataset's own for "auto"
    holdout: Images | None = None  # a part of the training split a method chooses on
    own_val: bool = False  # the data came with its validation split: no fraction was split off

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of what the model sees."""
        return self.channels, self.augment.size, self.augment.size

    @property
    def mean(self) -> list[float]:
        return self.train.mean

    @property
    def std(self) -> list[float]:
        return self.train.std

    def parts(self) -> list[Images]:
        return [self.train, *([self.holdout] if self.holdout is not None else []), self.val]


def resolve_augment(mode: str, default: str, size: int) -> Augment:
    resolved = default if mode == "auto" else mode
    if resolved not in AUGMENT_MODES:
        raise ValueError(f"unknown augment {resolved!r}; known: {', '.join(AUGMENT_MODES)}")
    return Augment(resolved, size)


def imagenet_stats(channels: int) -> tuple[list[float], list[float]]:
    """ImageNet's statistics for `channels`: as they are for RGB, else their channel mean."""
    if channels == 3:
        return list(IMAGENET_MEAN), list(IMAGENET_STD)
    mean, std = sum(IMAGENET_MEAN) / 3, sum(IMAGENET_STD) / 3
    return [mean] * channels, [std] * channels


def with_stats(data: DataSplit, mean: list[float], std: list[float]) -> DataSplit:
    """`data` normalised with other per-channel statistics: nothing is copied, batches are
    normalised on the device."""
    held = data.holdout
    return dataclasses.replace(
        data,
        train=data.train.with_stats(mean, std),
        val=data.val.with_stats(mean, std),
        holdout=None if held is None else held.with_stats(mean, std),
    )


def carve_holdout(data: DataSplit, fraction: float, seed: int) -> DataSplit:
    """`data` with `fraction` of its training split moved to a held-out part: stratified
    by class when every class can give one, and the same for the same seed."""
    train, held = split_indices(data.train.labels.numpy(), fraction, seed)
    return dataclasses.replace(
        data, train=data.train.subset(np.sort(train)), holdout=data.train.subset(np.sort(held))
    )


def split_indices(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(kept, split off) sample indices: stratified by class when every class can give one
    (tiny sets: a plain seeded split), the same for the same seed."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {fraction}")
    idx = np.arange(len(labels))
    try:
        kept, off = train_test_split(idx, test_size=fraction, random_state=seed, stratify=labels)
    except ValueError:
        kept, off = train_test_split(idx, test_size=fraction, random_state=seed)
    return kept, off


def resident_split(
    pixels: Tensor,
    labels: np.ndarray,
    *,
    val: tuple[Tensor, np.ndarray] | None,
    val_fraction: float,
    seed: int,
    class_names: list[str],
    augment: Augment,
) -> DataSplit:
    """Pixels (N, C, H, W) held in memory: split (unless `val` is given), sized to the
    augment's base and measured on the train split."""
    given = val is not None
    if val is None:
        kept, off = split_indices(labels, val_fraction, seed)
        val = pixels[torch.from_numpy(off)], labels[off]
        pixels, labels = pixels[torch.from_numpy(kept)], labels[kept]
    train_px, val_px = resize(pixels, augment.base), resize(val[0], augment.base)
    mean, std = channel_stats(train_px)
    device = torch.device("cpu")

    def images(px: Tensor, y: np.ndarray) -> Resident:
        y_t = torch.from_numpy(y.astype(np.int64))
        return Resident(y_t, mean, std, augment.size, device, pixels=px)

    return DataSplit(
        train=images(train_px, labels),
        val=images(val_px, val[1]),
        num_classes=len(class_names),
        channels=pixels.shape[1],
        class_names=class_names,
        augment=augment,
        own_val=given,
    )


def resize(pixels: Tensor, base: int) -> Tensor:
    """(N, C, base, base): resized (bilinear, antialiased) when not already that size."""
    if pixels.shape[-1] == base and pixels.shape[-2] == base:
        return pixels
    out = F.interpolate(pixels.float(), size=(base, base), mode="bilinear", antialias=True)
    if pixels.dtype == torch.uint8:
        return out.round_().clamp_(0, 255).to(torch.uint8)
    return out


class Moments:
    """Running per-channel sums of pixels, in float64 (in [0, 1] for uint8)."""

    def __init__(self) -> None:
        self.total = self.squares = torch.zeros(0, dtype=torch.float64)
        self.count = 0

    def add(self, pixels: Tensor) -> None:
        x = pixels.double() * (1 / 255 if pixels.dtype == torch.uint8 else 1.0)
        if self.count == 0:
            self.total = torch.zeros(x.shape[1], dtype=torch.float64)
            self.squares = torch.zeros_like(self.total)
        self.total += x.sum(dim=(0, 2, 3))
        self.squares += (x * x).sum(dim=(0, 2, 3))
        self.count += x.shape[0] * x.shape[2] * x.shape[3]

    def stats(self) -> tuple[list[float], list[float]]:
        """Mean and std; a constant channel's std is 1e-6 (not 0, which would divide by 0)."""
        mean = self.total / self.count
        std = (self.squares / self.count - mean * mean).clamp(min=0).sqrt().clamp(min=1e-6)
        return mean.tolist(), std.tolist()


def channel_stats(pixels: Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of (N, C, H, W) pixels, summed in chunks of about 16M
    values, so no float copy of the whole set is made."""
    sums = Moments()
    for part in pixels.split(max(1, (1 << 24) // max(1, pixels[0].numel()))):
        sums.add(part)
    return sums.stats()
