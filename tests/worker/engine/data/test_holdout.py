"""The held-out part of the training split a method chooses on (KDCL's output peer)."""

import torch

from tests.worker.engine.helpers import arrays
from worker.engine.data import DataSplit, carve_holdout


def rows(x: torch.Tensor) -> set[tuple[float, ...]]:
    return {tuple(r.tolist()) for r in x.flatten(1)}


def test_holdout_is_a_stratified_seeded_part_of_the_training_split(digits: DataSplit) -> None:
    carved = carve_holdout(digits, 0.2, seed=3)
    assert carved.holdout is not None and digits.holdout is None
    n = len(digits.train)
    assert len(carved.train) + len(carved.holdout) == n
    assert abs(len(carved.holdout) - 0.2 * n) <= 1
    assert carved.parts() == [carved.train, carved.holdout, carved.val]
    # the two parts are disjoint and together the original training split
    (train_x, _), (held_x, held_y) = arrays(carved.train), arrays(carved.holdout)
    train, held = rows(train_x), rows(held_x)
    assert not train & held and train | held == rows(arrays(digits.train)[0])
    # every class keeps its share (stratified), within one sample
    for c in range(digits.num_classes):
        share = float((digits.train.labels == c).sum()) * 0.2
        assert abs(int((held_y == c).sum()) - share) <= 1
    # validation split and statistics untouched; the same seed, the same part
    assert carved.val is digits.val and carved.mean == digits.mean
    assert carved.holdout.mean == digits.mean and carved.holdout.std == digits.std
    again = carve_holdout(digits, 0.2, seed=3)
    assert again.holdout is not None and torch.equal(again.holdout.labels, held_y)
    other = carve_holdout(digits, 0.2, seed=4).holdout
    assert other is not None and not torch.equal(arrays(other)[0], held_x)
