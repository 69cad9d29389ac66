import math

import pytest
import torch

from worker.engine.optim import build_optimizer, lr_at, route_epochs


def lrs(schedule: dict, epochs: int, steps: int = 1, base_lr: float = 1.0) -> list[float]:
    return [
        lr_at(e, s, steps, base_lr=base_lr, epochs=epochs, schedule=schedule)
        for e in range(epochs)
        for s in range(steps)
    ]


def test_constant() -> None:
    assert lrs({"name": "constant"}, 3, base_lr=0.05) == [0.05] * 3


def test_multistep_milestones_are_the_last_epochs_at_the_higher_rate() -> None:
    # milestones [2, 4]: epochs 1-2 at 1.0, 3-4 at 0.1, 5 at 0.01 (1-based epochs).
    got = lrs({"name": "multistep", "milestones": [2, 4], "gamma": 0.1}, 5)
    assert got == pytest.approx([1.0, 1.0, 0.1, 0.1, 0.01])


def test_cosine_is_per_step_from_base_towards_zero() -> None:
    got = lrs({"name": "cosine"}, epochs=2, steps=2)
    # t / total = 0, 1/4, 1/2, 3/4 -> 0.5 * (1 + cos(pi * p))
    assert got == pytest.approx([0.5 * (1 + math.cos(math.pi * t / 4)) for t in range(4)])
    assert got[0] == 1.0 and got[2] == pytest.approx(0.5)


def test_warmup_ramps_linearly_then_hands_over() -> None:
    got = lrs({"name": "cosine", "warmup_epochs": 1}, epochs=3, steps=4)
    assert got[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    # cosine over the remaining 8 steps starts at its top once warmup ends
    assert got[4] == pytest.approx(0.5 * (1 + math.cos(math.pi * 0 / 8)))
    assert got[5] == pytest.approx(0.5 * (1 + math.cos(math.pi * 1 / 8)))
    multistep = lrs({"name": "multistep", "milestones": [2], "warmup_epochs": 1}, 3, steps=2)
    assert multistep == pytest.approx([0.5, 1.0, 1.0, 1.0, 0.1, 0.1])


def test_unknown_schedule_and_optimizer_raise() -> None:
    with pytest.raises(ValueError, match="unknown schedule 'step'"):
        lrs({"name": "step"}, 1)
    with pytest.raises(ValueError, match="unknown optimizer 'lion'"):
        build_optimizer([torch.nn.Parameter(torch.zeros(1))], {"name": "lion"})


def test_build_optimizer_reads_config_with_defaults() -> None:
    params = [torch.nn.Parameter(torch.zeros(1))]
    sgd = build_optimizer(params, {"lr": 0.2, "nesterov": True})
    assert isinstance(sgd, torch.optim.SGD)
    group = sgd.param_groups[0]
    assert (group["lr"], group["momentum"], group["weight_decay"], group["nesterov"]) == (
        0.2,
        0.9,
        5e-4,
        True,
    )
    adamw = build_optimizer(params, {"name": "adamw"})
    assert isinstance(adamw, torch.optim.AdamW) and adamw.param_groups[0]["lr"] == 1e-3


def test_route_epochs() -> None:
    multistep = {"name": "multistep", "milestones": [3, 6]}
    assert route_epochs(8, 0, multistep, save_route=False) == set()
    assert route_epochs(8, 0, multistep, save_route=True) == {3, 6, 8}
    assert route_epochs(8, 3, multistep, save_route=False) == {3, 6, 8}
    assert route_epochs(7, 2, {"name": "cosine"}, save_route=False) == {2, 4, 6, 7}
    assert route_epochs(4, 0, {"name": "multistep", "milestones": [4]}, True) == {4}
