import numpy as np
import pytest
import torch

from worker.engine.data import DATASETS, DataSplit, load_dataset

from .helpers import synthetic_options


def test_dataset_names() -> None:
    assert DATASETS == ("digits", "synthetic", "upload")


def test_digits_shapes_and_normalisation(digits: DataSplit) -> None:
    assert len(digits.train_y) + len(digits.val_y) == 1797
    assert len(digits.val_y) == 180  # ceil(0.1 * 1797), sklearn's rounding
    assert digits.train_x.shape[1:] == (1, 8, 8) and digits.input_shape == (1, 8, 8)
    assert digits.train_x.dtype == torch.float32 and digits.train_y.dtype == torch.int64
    assert digits.num_classes == 10 and digits.class_names == [str(c) for c in range(10)]
    assert digits.default_augment == "crop"
    assert abs(digits.train_x.mean().item()) < 1e-4
    assert digits.train_x.std().item() == pytest.approx(1.0, abs=1e-3)
    # The raw pixels were 0..16 scaled to [0, 1]: a raw 0 maps back to -mean/std.
    assert digits.train_x.min().item() == pytest.approx(-digits.mean[0] / digits.std[0], abs=1e-5)


def test_same_seed_same_split_other_seed_other_split(digits: DataSplit) -> None:
    again = load_dataset("digits", val_fraction=0.1, seed=0)
    assert torch.equal(again.val_x, digits.val_x) and torch.equal(again.train_y, digits.train_y)
    other = load_dataset("digits", val_fraction=0.1, seed=1)
    assert not torch.equal(other.val_x, digits.val_x)


def test_split_is_stratified(digits: DataSplit) -> None:
    total = np.bincount(np.concatenate([digits.train_y.numpy(), digits.val_y.numpy()]))
    val = np.bincount(digits.val_y.numpy(), minlength=10)
    assert np.all(np.abs(val - total * 0.1) <= 1)


def test_synthetic_options_and_determinism() -> None:
    options = synthetic_options(num_samples=300, num_classes=5, channels=2, size=12)
    data = load_dataset("synthetic", val_fraction=0.2, seed=3, **options)
    assert data.train_x.shape == (240, 2, 12, 12) and data.val_x.shape == (60, 2, 12, 12)
    assert data.num_classes == 5 and len(data.mean) == len(data.std) == 2
    assert data.default_augment == "crop_flip"
    again = load_dataset("synthetic", val_fraction=0.2, seed=3, **options)
    assert torch.equal(again.train_x, data.train_x)


def test_synthetic_is_learnable() -> None:
    data = load_dataset("synthetic", val_fraction=0.2, seed=0, **synthetic_options())
    assert data.train_x.shape[1:] == (3, 32, 32) and data.num_classes == 10
    # Nearest class mean, the simplest learner there is, already beats chance (0.1) by far.
    means = torch.stack([data.train_x[data.train_y == c].mean(0) for c in range(10)])
    dists = torch.cdist(data.val_x.flatten(1), means.flatten(1))
    acc = (dists.argmin(1) == data.val_y).float().mean().item()
    assert acc > 0.5


def test_split_seed_does_not_change_synthetic_images() -> None:
    def raw_image_sums(seed: int) -> torch.Tensor:
        options = synthetic_options(num_samples=40, size=8)
        data = load_dataset("synthetic", 0.5, seed=seed, **options)
        mean = torch.tensor(data.mean)[:, None, None]
        std = torch.tensor(data.std)[:, None, None]
        raw = torch.cat([data.train_x, data.val_x]) * std + mean
        return raw.sum(dim=(1, 2, 3)).sort().values

    assert torch.allclose(raw_image_sums(0), raw_image_sums(1), atol=1e-3)


def test_unknown_dataset_and_bad_fraction() -> None:
    with pytest.raises(ValueError, match="unknown dataset 'mnist'; known: digits, synthetic"):
        load_dataset("mnist", 0.1, 0)
    with pytest.raises(ValueError, match="val_fraction"):
        load_dataset("digits", 0.0, 0)
