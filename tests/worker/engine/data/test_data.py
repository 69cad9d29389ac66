import numpy as np
import pytest
import torch

from tests.worker.engine.helpers import arrays, synthetic_options
from worker.engine.data import DATASETS, Augment, DataSplit, Resident, load_dataset


def pixels(data: DataSplit) -> tuple[torch.Tensor, torch.Tensor]:
    """The train and val splits' pixels as they are held (the built-in sets: float32)."""
    assert isinstance(data.train, Resident) and isinstance(data.val, Resident)
    return data.train.pixels, data.val.pixels


def test_dataset_names() -> None:
    assert DATASETS == ("digits", "synthetic", "upload")


def test_digits_shapes_and_normalisation(digits: DataSplit) -> None:
    assert len(digits.train) + len(digits.val) == 1797
    assert len(digits.val) == 180  # ceil(0.1 * 1797), sklearn's rounding
    train_px, _ = pixels(digits)
    assert train_px.shape[1:] == (1, 8, 8) and digits.input_shape == (1, 8, 8)
    assert train_px.dtype == torch.float32 and digits.train.labels.dtype == torch.int64
    assert (train_px.min(), train_px.max()) == (0.0, 1.0)  # 0..16 scaled to [0, 1]
    assert digits.num_classes == 10 and digits.class_names == [str(c) for c in range(10)]
    assert digits.augment == Augment("crop", 8) and digits.channels == 1
    assert digits.train.mean == digits.val.mean == digits.mean
    assert digits.train.std == digits.val.std == digits.std
    train_x, train_y = arrays(digits.train)
    assert torch.equal(train_y, digits.train.labels)
    assert abs(train_x.mean().item()) < 1e-4
    assert train_x.std().item() == pytest.approx(1.0, abs=1e-3)
    # The raw pixels were 0..16 scaled to [0, 1]: a raw 0 maps back to -mean/std.
    assert train_x.min().item() == pytest.approx(-digits.mean[0] / digits.std[0], abs=1e-5)


def test_same_seed_same_split_other_seed_other_split(digits: DataSplit) -> None:
    again = load_dataset("digits", val_fraction=0.1, seed=0)
    assert torch.equal(arrays(again.val)[0], arrays(digits.val)[0])
    assert torch.equal(again.train.labels, digits.train.labels)
    other = load_dataset("digits", val_fraction=0.1, seed=1)
    assert not torch.equal(arrays(other.val)[0], arrays(digits.val)[0])


def test_split_is_stratified(digits: DataSplit) -> None:
    total = np.bincount(np.concatenate([digits.train.labels.numpy(), digits.val.labels.numpy()]))
    val = np.bincount(digits.val.labels.numpy(), minlength=10)
    assert np.all(np.abs(val - total * 0.1) <= 1)


def test_synthetic_options_and_determinism() -> None:
    options = synthetic_options(num_samples=300, num_classes=5, channels=2, size=12)
    data = load_dataset("synthetic", val_fraction=0.2, seed=3, **options)
    train_px, val_px = pixels(data)
    assert train_px.shape == (240, 2, 12, 12) and val_px.shape == (60, 2, 12, 12)
    assert train_px.dtype == torch.float32
    assert data.num_classes == 5 and len(data.mean) == len(data.std) == 2
    assert data.augment == Augment("crop_flip", 12) and data.input_shape == (2, 12, 12)
    again = load_dataset("synthetic", val_fraction=0.2, seed=3, **options)
    assert torch.equal(arrays(again.train)[0], arrays(data.train)[0])


def test_synthetic_is_learnable() -> None:
    data = load_dataset("synthetic", val_fraction=0.2, seed=0, **synthetic_options())
    (train_x, train_y), (val_x, val_y) = arrays(data.train), arrays(data.val)
    assert train_x.shape[1:] == (3, 32, 32) and data.num_classes == 10
    # Nearest class mean, the simplest learner there is, already beats chance (0.1) by far.
    means = torch.stack([train_x[train_y == c].mean(0) for c in range(10)])
    dists = torch.cdist(val_x.flatten(1), means.flatten(1))
    acc = (dists.argmin(1) == val_y).float().mean().item()
    assert acc > 0.5


def test_rrc_flip_keeps_the_images_at_a_larger_base_and_evaluates_their_centre() -> None:
    options = synthetic_options(num_samples=60, num_classes=3, channels=2, size=12)
    plain = load_dataset("synthetic", 0.2, 0, **options)
    data = load_dataset("synthetic", 0.2, 0, augment="rrc_flip", image_size=7, **options)
    assert data.augment == Augment("rrc_flip", 7) and data.augment.base == 8
    assert data.input_shape == (2, 7, 7)
    train_px, val_px = pixels(data)
    assert train_px.shape == (48, 2, 8, 8) and val_px.shape == (12, 2, 8, 8)  # resized to base
    assert torch.equal(data.val.labels, plain.val.labels)  # the same split
    x, y = arrays(data.val)
    assert x.shape == (12, 2, 7, 7) and torch.equal(y, data.val.labels)
    mean, std = (torch.tensor(v)[:, None, None] for v in (data.mean, data.std))
    torch.testing.assert_close(x, ((val_px - mean) / std)[:, :, 0:7, 0:7])  # the centre crop
    with pytest.raises(ValueError, match="unknown augment 'mixup'"):
        load_dataset("synthetic", 0.2, 0, augment="mixup", **options)


def test_split_seed_does_not_change_synthetic_images() -> None:
    def raw_image_sums(seed: int) -> torch.Tensor:
        options = synthetic_options(num_samples=40, size=8)
        data = load_dataset("synthetic", 0.5, seed=seed, **options)
        mean = torch.tensor(data.mean)[:, None, None]
        std = torch.tensor(data.std)[:, None, None]
        normalised = torch.cat([arrays(data.train)[0], arrays(data.val)[0]])
        raw = normalised * std + mean
        assert torch.allclose(raw, torch.cat(pixels(data)), atol=1e-4)  # as they are held
        return raw.sum(dim=(1, 2, 3)).sort().values

    assert torch.allclose(raw_image_sums(0), raw_image_sums(1), atol=1e-3)


def test_unknown_dataset_and_bad_fraction() -> None:
    with pytest.raises(ValueError, match="unknown dataset 'mnist'; known: digits, synthetic"):
        load_dataset("mnist", 0.1, 0)
    with pytest.raises(ValueError, match="val_fraction"):
        load_dataset("digits", 0.0, 0)
