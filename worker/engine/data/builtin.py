"""Built-in datasets that need no download: sklearn's digits and a seeded synthetic set."""

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from sklearn.datasets import load_digits

from worker.engine.data.split import DataSplit, resident_split, resolve_augment
from worker.engine.registry import Registry

Loader = Callable[..., DataSplit]  # (val_fraction, seed, augment, image_size, **options)

BUILTIN: Registry[Loader] = Registry("dataset")


def load_dataset(
    name: str,
    val_fraction: float,
    seed: int,
    augment: str = "auto",
    image_size: int | None = None,
    **options: Any,
) -> DataSplit:
    """`seed` chooses the train/val split only; the same seed always gives the same split.
    `augment` ("auto": the dataset's own) and `image_size` (None: the dataset's own) set the
    size the images are kept at. `options` are the dataset's own (a synthetic set's shape,
    an upload's path)."""
    return BUILTIN.get(name)(val_fraction, seed, augment, image_size, **options)


@BUILTIN.register("digits")
def digits(val_fraction: float, seed: int, augment: str, image_size: int | None) -> DataSplit:
    bunch = load_digits()
    images = (bunch.images / 16.0).astype(np.float32)[:, None]  # (1797, 1, 8, 8) in [0, 1]
    return resident_split(
        torch.from_numpy(images),
        bunch.target,
        val=None,
        val_fraction=val_fraction,
        seed=seed,
        class_names=[str(c) for c in range(10)],
        # a flipped digit is another glyph (or none)
        augment=resolve_augment(augment, "crop", image_size or 8),
    )


@BUILTIN.register("synthetic")
def synthetic(
    val_fraction: float,
    seed: int,
    augment: str,
    image_size: int | None,
    *,
    num_samples: int,
    num_classes: int,
    channels: int,
    size: int,
    data_seed: int,
) -> DataSplit:
    # The images depend on their own seed, not the split seed: a teacher and its student
    # trained with different seeds must still see the same data.
    images, labels = prototype_images(
        num_samples=num_samples,
        num_classes=num_classes,
        channels=channels,
        size=size,
        data_seed=data_seed,
    )
    return resident_split(
        torch.from_numpy(images),
        labels,
        val=None,
        val_fraction=val_fraction,
        seed=seed,
        class_names=[f"class_{c}" for c in range(num_classes)],
        augment=resolve_augment(augment, "crop_flip", image_size or size),
    )


def prototype_images(
    *, num_samples: int, num_classes: int, channels: int, size: int, data_seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Each class is a blocky random prototype; samples are the prototype plus noise.

    Prototypes are drawn coarse and upsampled so that small crops and flips keep the class
    recognisable, and the noise is large enough that the task is not trivial.
    """
    rng = np.random.default_rng(data_seed)
    coarse = max(2, size // 4)
    protos = rng.normal(size=(num_classes, channels, coarse, coarse))
    reps = -(-size // coarse)  # ceil division
    protos = protos.repeat(reps, axis=2).repeat(reps, axis=3)[:, :, :size, :size]
    labels = np.arange(num_samples) % num_classes
    rng.shuffle(labels)
    noise = rng.normal(scale=1.5, size=(num_samples, channels, size, size))
    return (protos[labels] + noise).astype(np.float32), labels
