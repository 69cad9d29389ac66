"""Optimizer construction and the learning-rate schedule as a pure function of position.

Both take the job's values as they are (the spec's fields, one for one); nothing here has a
default of its own.
"""

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class Optimizer:
    name: str  # a key of OPTIMIZERS
    lr: float
    momentum: float  # sgd only
    weight_decay: float
    nesterov: bool  # sgd only


@dataclass(frozen=True)
class Schedule:
    name: str  # a key of SCHEDULES
    milestones: list[int]  # multistep: 1-based epochs after which the rate drops
    gamma: float
    warmup_epochs: int

    def drops(self) -> list[int]:
        """The epochs after which the rate drops (RCO anchors at a teacher's drops)."""
        return list(self.milestones) if self.name == "multistep" else []


def _sgd(params: Iterable[nn.Parameter], o: Optimizer, fused: bool | None) -> torch.optim.Optimizer:
    return torch.optim.SGD(
        params,
        lr=o.lr,
        momentum=o.momentum,
        weight_decay=o.weight_decay,
        nesterov=o.nesterov,
        fused=fused,
    )


def _adamw(
    params: Iterable[nn.Parameter], o: Optimizer, fused: bool | None
) -> torch.optim.Optimizer:
    return torch.optim.AdamW(params, lr=o.lr, weight_decay=o.weight_decay, fused=fused)


OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {"sgd": _sgd, "adamw": _adamw}


def build_optimizer(
    params: Iterable[nn.Parameter], config: Optimizer, device: torch.device
) -> torch.optim.Optimizer:
    """On CUDA the step is one fused kernel over all parameters; elsewhere torch's default."""
    return OPTIMIZERS[config.name](params, config, True if device.type == "cuda" else None)


def _constant(schedule: Schedule, epoch: int, progress: float) -> float:
    return 1.0


def _multistep(schedule: Schedule, epoch: int, progress: float) -> float:
    return schedule.gamma ** sum(1 for m in schedule.milestones if epoch >= m)


def _cosine(schedule: Schedule, epoch: int, progress: float) -> float:
    return 0.5 * (1.0 + math.cos(math.pi * progress))


# name -> the rate's factor at a 0-based epoch and a fraction of training past the warmup
SCHEDULES: dict[str, Callable[[Schedule, int, float], float]] = {
    "constant": _constant,
    "multistep": _multistep,
    "cosine": _cosine,
}


def lr_at(
    epoch: int,
    step: int,
    steps_per_epoch: int,
    *,
    base_lr: float,
    epochs: int,
    schedule: Schedule,
) -> float:
    """Learning rate for 0-based (epoch, step).

    Multistep milestones are 1-based epoch numbers: with milestone m, epochs 1..m run at the
    higher rate and epoch m + 1 onwards at the lower one (RepDistiller's convention).
    Warmup is linear per step over `warmup_epochs` and multiplies the schedule; cosine
    anneals over the steps after the warmup.
    """
    t = epoch * steps_per_epoch + step
    warmup = schedule.warmup_epochs * steps_per_epoch
    factor = min(1.0, (t + 1) / warmup) if warmup > 0 else 1.0
    progress = max(0, t - warmup) / max(1, epochs * steps_per_epoch - warmup)
    return base_lr * factor * SCHEDULES[schedule.name](schedule, epoch, progress)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
