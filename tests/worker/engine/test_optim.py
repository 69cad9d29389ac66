import math

import pytest
import torch

from worker.engine.optim import Schedule, build_optimizer, lr_at

from .helpers import make_method, spec_optimizer, spec_schedule


def lrs(schedule: Schedule, epochs: int, steps: int = 1, base_lr: float = 1.0) -> list[float]:
    return [
        lr_at(e, s, steps, base_lr=base_lr, epochs=epochs, schedule=schedule)
        for e in range(epochs)
        for s in range(steps)
    ]


def test_constant() -> None:
    assert lrs(spec_schedule(name="constant"), 3, base_lr=0.05) == [0.05] * 3


def test_multistep_milestones_are_the_last_epochs_at_the_higher_rate() -> None:
    # milestones [2, 4]: epochs 1-2 at 1.0, 3-4 at 0.1, 5 at 0.01 (1-based epochs).
    got = lrs(spec_schedule(name="multistep", milestones=[2, 4], gamma=0.1), 5)
    assert got == pytest.approx([1.0, 1.0, 0.1, 0.1, 0.01])


def test_cosine_is_per_step_from_base_towards_zero() -> None:
    got = lrs(spec_schedule(name="cosine"), epochs=2, steps=2)
    # t / total = 0, 1/4, 1/2, 3/4 -> 0.5 * (1 + cos(pi * p))
    assert got == pytest.approx([0.5 * (1 + math.cos(math.pi * t / 4)) for t in range(4)])
    assert got[0] == 1.0 and got[2] == pytest.approx(0.5)


def test_warmup_ramps_linearly_then_hands_over() -> None:
    got = lrs(spec_schedule(name="cosine", warmup_epochs=1), epochs=3, steps=4)
    assert got[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    # cosine over the remaining 8 steps starts at its top once warmup ends
    assert got[4] == pytest.approx(0.5 * (1 + math.cos(math.pi * 0 / 8)))
    assert got[5] == pytest.approx(0.5 * (1 + math.cos(math.pi * 1 / 8)))
    multistep = spec_schedule(name="multistep", milestones=[2], gamma=0.1, warmup_epochs=1)
    assert lrs(multistep, 3, steps=2) == pytest.approx([0.5, 1.0, 1.0, 1.0, 0.1, 0.1])


def test_build_optimizer_takes_the_spec_values() -> None:
    params, cpu = [torch.nn.Parameter(torch.zeros(1))], torch.device("cpu")
    sgd = build_optimizer(params, spec_optimizer(lr=0.2, nesterov=True), cpu)
    assert isinstance(sgd, torch.optim.SGD)
    group = sgd.param_groups[0]
    assert (group["lr"], group["momentum"], group["weight_decay"], group["nesterov"]) == (
        0.2,
        0.9,
        5e-4,
        True,
    )
    adamw = build_optimizer(params, spec_optimizer(name="adamw"), cpu)
    assert isinstance(adamw, torch.optim.AdamW)
    assert (adamw.param_groups[0]["lr"], adamw.param_groups[0]["weight_decay"]) == (1e-3, 0.01)


def test_route_epochs() -> None:
    """A supervised run saves route weights every `route_every`-th epoch, after each LR drop
    before the last epoch, and at the last epoch; any other method saves none."""

    def routes(epochs: int, route_every: int, schedule: Schedule) -> set[int]:
        student = torch.nn.Linear(2, 2)
        method = make_method("supervised", student, route_every=route_every)
        return method.route_epochs(epochs, schedule.drops())

    multistep = spec_schedule(name="multistep", milestones=[3, 6])
    kd = make_method("kd", torch.nn.Linear(2, 2), torch.nn.Linear(2, 2))
    assert kd.route_epochs(8, multistep.drops()) == set()
    assert routes(8, 0, multistep) == {3, 6, 8}
    assert routes(8, 3, multistep) == {3, 6, 8}
    assert routes(7, 2, spec_schedule(name="cosine")) == {2, 4, 6, 7}
    assert routes(4, 0, spec_schedule(name="multistep", milestones=[4])) == {4}
    # only a multistep schedule drops the rate
    assert spec_schedule(name="cosine", milestones=[3]).drops() == []
