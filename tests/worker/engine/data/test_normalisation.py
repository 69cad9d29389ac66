"""Images normalised with the training split's statistics or ImageNet's."""

import torch

from tests.worker.engine.helpers import arrays
from worker.engine.data import DataSplit, Resident, carve_holdout, imagenet_stats, with_stats


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
    assert len(moved.parts()) == len(data.parts()) == 3
    for part, moved_part in zip(data.parts(), moved.parts(), strict=True):
        assert (moved_part.mean, moved_part.std) == (mean, std)
        before, after = arrays(part)[0], arrays(moved_part)[0]
        pixels = before * data.std[0] + data.mean[0]  # in [0, 1]
        torch.testing.assert_close(after, (pixels - mean[0]) / std[0], atol=1e-5, rtol=0)
        # nothing is copied: the same pixels, normalised per batch with the new statistics
        assert isinstance(part, Resident) and isinstance(moved_part, Resident)
        assert moved_part.pixels is part.pixels and torch.equal(moved_part.labels, part.labels)
