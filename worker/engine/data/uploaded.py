"""Uploaded datasets, as the worker's build hands them over:
- data.npz (npz and IDX uploads): `images` (N, H, W, C) uint8, `labels`, `class_names`,
  optionally `val_images`/`val_labels`; held in memory as uint8.
- WebDataset shards of the images as uploaded (ImageFolder uploads; service/ingest/shards.py reads
  their index for the worker): decoded once and held in memory when that fits the budget,
  else streamed from the shards every epoch."""

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from worker.engine.data.augment import Augment
from worker.engine.data.builtin import BUILTIN
from worker.engine.data.decode import ShardSamples
from worker.engine.data.images import Images, Streamed
from worker.engine.data.split import (
    DataSplit,
    Moments,
    channel_stats,
    resident_split,
    resolve_augment,
    split_indices,
)

STATS_SAMPLES = 1024  # train images a streamed set's statistics are measured on
SMALL = 64  # images of one size up to this train with the pad-and-crop recipe by default


def nchw(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W, C) -> uint8 (N, C, H, W)."""
    return torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))


@BUILTIN.register("upload")
def uploaded(
    val_fraction: float,
    seed: int,
    augment: str,
    image_size: int | None,
    *,
    path: str | None = None,
    shards: dict[str, Any] | None = None,
    resident_bytes: int = 0,
    workers: int = 0,
    loader_start: str | None = None,
) -> DataSplit:
    """A predefined validation split when the upload has one, else a seeded split. `path`:
    a data.npz; `shards`: a stored ImageFolder dataset as `service.ingest.shards.read` gives it
    (each split may carry a `reader` of its samples' bytes: decode.ShardSamples), held in
    memory when it takes at most `resident_bytes`, else streamed, decoded by `workers`
    DataLoader processes started as `loader_start` says (images.Streamed)."""
    if shards is not None:
        reading = Reading(val_fraction, seed, resident_bytes, workers, loader_start)
        return from_shards(shards, augment, image_size, reading)
    assert path is not None
    with np.load(Path(path), allow_pickle=False) as npz:
        arrays = {key: npz[key] for key in npz.files}
    val = None
    if "val_images" in arrays:
        val = nchw(arrays["val_images"]), arrays["val_labels"]
    return resident_split(
        nchw(arrays["images"]),
        arrays["labels"],
        val=val,
        val_fraction=val_fraction,
        seed=seed,
        class_names=[str(n) for n in arrays["class_names"]],
        # crops are safe for any image; flips are not (a flipped digit is another glyph)
        augment=resolve_augment(augment, "crop", image_size or arrays["images"].shape[1]),
    )


@dataclass(frozen=True)
class Reading:
    val_fraction: float
    seed: int
    resident_bytes: int
    workers: int
    loader_start: str | None


def from_shards(
    index: dict[str, Any], augment: str, image_size: int | None, reading: Reading
) -> DataSplit:
    aug = shards_augment(index, augment, image_size)
    channels, splits = index["channels"], index["splits"]

    def part(split: str) -> Streamed:
        samples = ShardSamples(splits[split], index["sha256"], channels, aug.base)
        unit = [0.0] * channels, [1.0] * channels  # measured below, on the train split
        cpu = torch.device("cpu")
        return Streamed(
            samples.labels,
            *unit,
            aug.size,
            cpu,
            samples=samples,
            workers=reading.workers,
            start=reading.loader_start,
        )

    if "val" in splits:
        tr, va = part("train"), part("val")
    else:
        whole = part("train")
        kept, off = split_indices(whole.labels.numpy(), reading.val_fraction, reading.seed)
        tr, va = whole.subset(np.sort(kept)), whole.subset(np.sort(off))
    parts: list[Images] = [tr, va]
    if (len(tr) + len(va)) * channels * aug.base**2 <= reading.resident_bytes:
        held = tr.resident()
        parts = [held, va.resident()]
        mean, std = channel_stats(held.pixels)  # all of the train split, as for npz
    else:
        mean, std = streamed_stats(tr)
    parts = [part.with_stats(mean, std) for part in parts]
    names = index["class_names"]
    return DataSplit(parts[0], parts[1], len(names), channels, names, aug, own_val="val" in splits)


def shards_augment(index: dict[str, Any], augment: str, image_size: int | None) -> Augment:
    """Images of one size up to SMALL train at that size with pad-and-crop by default; others
    with RandomResizedCrop, at `image_size`, which they must be given."""
    own = index["size"]  # the one size of every image, else None
    size = image_size or own
    if size is None:
        raise ValueError("images of several sizes need an image_size to train at")
    return resolve_augment(
        augment, "crop" if own is not None and own <= SMALL else "rrc_flip", size
    )


def streamed_stats(images: Streamed) -> tuple[list[float], list[float]]:
    """Per-channel statistics of up to STATS_SAMPLES train images, evenly spaced, read in
    batches: nothing but the sums is kept."""
    picks = np.linspace(0, len(images) - 1, min(len(images), STATS_SAMPLES)).astype(int)
    sums = Moments()
    for x, _ in images.subset(np.unique(picks)).in_order(64):
        sums.add(x)
    return sums.stats()
