"""The held-out part of the training split a method chooses on (KDCL's output peer)."""

import torch

from worker.engine.data import DataSplit, carve_holdout


def rows(x: torch.Tensor) -> set[tuple[float, ...]]:
    return {tuple(r.tolist()) for r in x.flatten(1)}


def test_holdout_is_a_stratified_seeded_part_of_the_training_split(digits: DataSplit) -> None:
    carved = carve_holdout(digits, 0.2, seed=3)
    assert carved.holdout_x is not None and carved.holdout_y is not None
    n = len(digits.train_y)
    assert len(carved.train_y) + len(carved.holdout_y) == n
    assert abs(len(carved.holdout_y) - 0.2 * n) <= 1
    # the two parts are disjoint and together the original training split
    train, held = rows(carved.train_x), rows(carved.holdout_x)
    assert not train & held and train | held == rows(digits.train_x)
    # every class keeps its share (stratified), within one sample
    for c in range(digits.num_classes):
        share = float((digits.train_y == c).sum()) * 0.2
        assert abs(int((carved.holdout_y == c).sum()) - share) <= 1
    # validation split and statistics untouched; the same seed, the same part
    assert torch.equal(carved.val_x, digits.val_x) and carved.mean == digits.mean
    again = carve_holdout(digits, 0.2, seed=3)
    assert torch.equal(again.holdout_y, carved.holdout_y)
    assert not torch.equal(carve_holdout(digits, 0.2, seed=4).holdout_x, carved.holdout_x)
