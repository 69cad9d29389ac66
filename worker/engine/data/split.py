"""The in-memory dataset handed to the loop, and how it is split and normalised."""

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.model_selection import train_test_split
from torch import Tensor


@dataclass
class DataSplit:
    train_x: Tensor  # (N, C, H, W) float32, normalised with mean/std below
    train_y: Tensor  # (N,) int64
    val_x: Tensor
    val_y: Tensor
    num_classes: int
    input_shape: tuple[int, int, int]  # (C, H, W)
    mean: list[float]  # per channel, measured on the train split
    std: list[float]
    class_names: list[str]
    default_augment: str
    # a part of the training split kept aside for a method to choose on (carve_holdout)
    holdout_x: Tensor | None = None
    holdout_y: Tensor | None = None


# ImageNet's per-channel statistics of images in [0, 1] (what pretrained models expect)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
NORMALISATIONS = ("dataset", "imagenet")  # the train split's own statistics, or ImageNet's


def imagenet_stats(channels: int) -> tuple[list[float], list[float]]:
    """ImageNet's statistics for `channels`: as they are for RGB, else their channel mean."""
    if channels == 3:
        return list(IMAGENET_MEAN), list(IMAGENET_STD)
    mean, std = sum(IMAGENET_MEAN) / 3, sum(IMAGENET_STD) / 3
    return [mean] * channels, [std] * channels


def with_stats(data: DataSplit, mean: list[float], std: list[float]) -> DataSplit:
    """`data` normalised with other per-channel statistics (images in [0, 1])."""
    old_m, old_s = (torch.tensor(v).view(1, -1, 1, 1) for v in (data.mean, data.std))
    new_m, new_s = (torch.tensor(v).view(1, -1, 1, 1) for v in (mean, std))

    def renormalise(x: Tensor) -> Tensor:
        return ((x * old_s + old_m - new_m) / new_s).float()

    held = data.holdout_x
    return dataclasses.replace(
        data,
        train_x=renormalise(data.train_x),
        val_x=renormalise(data.val_x),
        holdout_x=None if held is None else renormalise(held),
        mean=list(mean),
        std=list(std),
    )


def carve_holdout(data: DataSplit, fraction: float, seed: int) -> DataSplit:
    """`data` with `fraction` of its training split moved to a held-out part: stratified
    by class when every class can give one, and the same for the same seed."""
    labels = data.train_y.numpy()
    train, held, _, _ = seeded_split(np.arange(len(labels)), labels, fraction, seed)
    train_idx, held_idx = torch.from_numpy(np.sort(train)), torch.from_numpy(np.sort(held))
    return dataclasses.replace(
        data,
        train_x=data.train_x[train_idx],
        train_y=data.train_y[train_idx],
        holdout_x=data.train_x[held_idx],
        holdout_y=data.train_y[held_idx],
    )


def split_and_normalise(
    images: np.ndarray,
    labels: np.ndarray,
    *,
    val_fraction: float,
    seed: int,
    class_names: list[str],
    default_augment: str,
) -> DataSplit:
    """Stratified seeded split, then normalise both halves with the train statistics."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    train_x, val_x, train_y, val_y = seeded_split(images, labels, val_fraction, seed)
    return normalise_split(
        train_x,
        train_y,
        val_x,
        val_y,
        class_names=class_names,
        default_augment=default_augment,
    )


def normalise_split(
    train_x: np.ndarray,
    train_y: np.ndarray,
    val_x: np.ndarray,
    val_y: np.ndarray,
    *,
    class_names: list[str],
    default_augment: str,
) -> DataSplit:
    """Normalise both halves of a split (N, C, H, W) with the train statistics."""
    mean = train_x.mean(axis=(0, 2, 3))
    # A constant channel would divide by zero; leave it unscaled instead.
    std = np.maximum(train_x.std(axis=(0, 2, 3)), 1e-6)
    return DataSplit(
        train_x=normalise(train_x, mean, std),
        train_y=torch.from_numpy(train_y.astype(np.int64)),
        val_x=normalise(val_x, mean, std),
        val_y=torch.from_numpy(val_y.astype(np.int64)),
        num_classes=len(class_names),
        input_shape=(train_x.shape[1], train_x.shape[2], train_x.shape[3]),
        mean=[float(m) for m in mean],
        std=[float(s) for s in std],
        class_names=class_names,
        default_augment=default_augment,
    )


def seeded_split(
    images: np.ndarray, labels: np.ndarray, val_fraction: float, seed: int
) -> list[np.ndarray]:
    try:
        return train_test_split(
            images, labels, test_size=val_fraction, random_state=seed, stratify=labels
        )
    except ValueError:
        # Too few samples per class to stratify (tiny synthetic sets): a plain seeded split.
        return train_test_split(images, labels, test_size=val_fraction, random_state=seed)


def normalise(images: np.ndarray, mean: np.ndarray, std: np.ndarray) -> Tensor:
    scaled = (images - mean[:, None, None]) / std[:, None, None]
    return torch.from_numpy(scaled.astype(np.float32))
