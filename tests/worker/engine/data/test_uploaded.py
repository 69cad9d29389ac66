"""The "upload" loader: a canonical .npz read by path, NHWC uint8 -> normalised NCHW."""

from pathlib import Path

import numpy as np
import pytest
import torch

from tests.worker.engine.helpers import arrays
from worker.engine.data import Augment, Resident, load_dataset


def write(path: Path, n: int = 60, val: int = 0) -> Path:
    rng = np.random.default_rng(0)
    arrays = {
        "images": rng.integers(0, 256, (n, 6, 6, 3), dtype=np.uint8),
        "labels": np.arange(n, dtype=np.int64) % 3,
        "class_names": np.array(["a", "b", "c"]),
    }
    if val:
        arrays |= {
            "val_images": rng.integers(0, 256, (val, 6, 6, 3), dtype=np.uint8),
            "val_labels": np.arange(val, dtype=np.int64) % 3,
        }
    np.savez(path, **arrays)
    return path


def test_seeded_split_is_deterministic_and_normalised_on_train(tmp_path: Path) -> None:
    path = str(write(tmp_path / "d.npz"))
    a = load_dataset("upload", 0.2, 7, path=path)
    b = load_dataset("upload", 0.2, 7, path=path)
    c = load_dataset("upload", 0.2, 8, path=path)
    assert torch.equal(arrays(a.train)[0], arrays(b.train)[0])
    assert torch.equal(a.val.labels, b.val.labels)
    assert not torch.equal(arrays(a.train)[0], arrays(c.train)[0])
    assert (len(a.train), len(a.val), a.input_shape) == (48, 12, (3, 6, 6))
    assert (a.num_classes, a.class_names) == (3, ["a", "b", "c"])
    assert a.augment == Augment("crop", 6)  # an upload's own: crops, no flips
    mean = arrays(a.train)[0].mean(dim=(0, 2, 3))
    assert torch.allclose(mean, torch.zeros(3), atol=1e-5)


def test_nhwc_becomes_nchw_scaled_by_the_train_statistics(tmp_path: Path) -> None:
    path = write(tmp_path / "d.npz", n=30, val=9)
    data = load_dataset("upload", 0.1, 0, path=str(path))
    with np.load(path) as npz:
        raw = npz["val_images"].astype(np.float32) / 255.0
        train = npz["images"].astype(np.float32) / 255.0
    assert np.allclose(data.mean, train.mean(axis=(0, 1, 2)), atol=1e-6)
    assert (len(data.train), len(data.val)) == (30, 9)  # the file's own split
    # held as uploaded, uint8 (N, C, H, W); normalised per batch
    assert isinstance(data.val, Resident) and data.val.pixels.dtype == torch.uint8
    assert data.val.pixels.shape == (9, 3, 6, 6)
    mean, std = np.array(data.mean), np.array(data.std)
    expected = (raw.transpose(0, 3, 1, 2) - mean[:, None, None]) / std[:, None, None]
    assert np.allclose(arrays(data.val)[0].numpy(), expected, atol=1e-5)


def test_a_missing_file_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_dataset("upload", 0.1, 0, path=str(tmp_path / "gone.npz"))
