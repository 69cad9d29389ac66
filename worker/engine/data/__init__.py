"""A job's data: splits held in memory or streamed from shards, batched, normalised and
augmented on the training device."""

from worker.engine.data import uploaded  # noqa: F401  (registers "upload")
from worker.engine.data.augment import AUGMENT_MODES, Augment, augment_batch, crop_at
from worker.engine.data.builtin import BUILTIN, load_dataset
from worker.engine.data.images import Images, Resident, Streamed
from worker.engine.data.loader import PLACEMENTS, choose_placement, num_batches
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
    "Augment",
    "DATASETS",
    "DataSplit",
    "Images",
    "NORMALISATIONS",
    "PLACEMENTS",
    "Resident",
    "Streamed",
    "augment_batch",
    "carve_holdout",
    "choose_placement",
    "crop_at",
    "imagenet_stats",
    "load_dataset",
    "num_batches",
    "with_stats",
]
