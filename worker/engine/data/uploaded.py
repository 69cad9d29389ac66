"""Uploaded datasets, read from their canonical .npz by path (the runner finds the path):
`images` (N, H, W, C) uint8, `labels`, `class_names`, optionally `val_images`/`val_labels`."""

from pathlib import Path

import numpy as np

from worker.engine.data.builtin import BUILTIN
from worker.engine.data.split import DataSplit, normalise_split, split_and_normalise


def to_nchw(images: np.ndarray) -> np.ndarray:
    """uint8 (N, H, W, C) -> float32 (N, C, H, W) in [0, 1]."""
    return (images.astype(np.float32) / 255.0).transpose(0, 3, 1, 2)


@BUILTIN.register("upload")
def uploaded(val_fraction: float, seed: int, *, path: str) -> DataSplit:
    """A predefined validation split when the file has one, else a seeded split."""
    with np.load(Path(path), allow_pickle=False) as npz:
        arrays = {key: npz[key] for key in npz.files}
    class_names = [str(n) for n in arrays["class_names"]]
    # crops are safe for any image; flips are not (a flipped digit is another glyph)
    augment = "crop"
    if "val_images" in arrays:
        return normalise_split(
            to_nchw(arrays["images"]),
            arrays["labels"],
            to_nchw(arrays["val_images"]),
            arrays["val_labels"],
            class_names=class_names,
            default_augment=augment,
        )
    return split_and_normalise(
        to_nchw(arrays["images"]),
        arrays["labels"],
        val_fraction=val_fraction,
        seed=seed,
        class_names=class_names,
        default_augment=augment,
    )
