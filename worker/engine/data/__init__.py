"""Datasets held in memory as tensors, batched and augmented on the training device."""

from worker.engine.data import uploaded  # noqa: F401  (registers "upload")
from worker.engine.data.augment import AUGMENT_MODES, augment_batch, crop_at
from worker.engine.data.builtin import BUILTIN, load_dataset
from worker.engine.data.loader import PLACEMENTS, TrainFeed, batches, num_batches
from worker.engine.data.split import (
    NORMALISATIONS,
    DataSplit,
    carve_holdout,
    imagenet_stats,
    with_stats,
)

DATASETS: tuple[str, ...] = BUILTIN.names()

__all__ = [
    "AUGMENT_MODES",
    "DATASETS",
    "DataSplit",
    "NORMALISATIONS",
    "PLACEMENTS",
    "TrainFeed",
    "augment_batch",
    "batches",
    "carve_holdout",
    "crop_at",
    "imagenet_stats",
    "load_dataset",
    "num_batches",
    "with_stats",
]
