"""Images normalised with the training split's statistics or ImageNet's."""

import torch

from worker.engine.data import DataSplit, carve_holdout, imagenet_stats, with_stats


def test_imagenet_statistics_per_channel_count() -> None:
    assert imagenet_stats(3) == ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    mean, std = imagenet_stats(1)
    assert len(mean) == len(std) == 1
    assert abs(mean[0] - (0.485 + 0.456 + 0.406) / 3) < 1e-12


def test_renormalised_images_are_the_same_pixels(digits: DataSplit) -> None:
    data = carve_holdout(digits, 0.1, 0)
    mean, std = imagenet_stats(1)
    moved = with_stats(data, mean, std)
    assert (moved.mean, moved.std) == (mean, std)
    for name in ("train_x", "val_x", "holdout_x"):
        before, after = getattr(data, name), getattr(moved, name)
        pixels = before * data.std[0] + data.mean[0]  # in [0, 1]
        torch.testing.assert_close(after, (pixels - mean[0]) / std[0], atol=1e-5, rtol=0)
    assert torch.equal(moved.train_y, data.train_y)
