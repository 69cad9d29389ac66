"""Optimizer construction and the learning-rate schedule as a pure function of position."""

import math
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn

DEFAULT_LR = {"sgd": 0.05, "adamw": 1e-3}


def build_optimizer(
    params: Iterable[nn.Parameter],
    config: Mapping[str, Any],
    device: torch.device | None = None,
) -> torch.optim.Optimizer:
    """On CUDA the step is one fused kernel over all parameters; elsewhere torch's default."""
    name = config.get("name", "sgd")
    lr = base_lr(config)
    fused = True if device is not None and device.type == "cuda" else None
    if name == "sgd":
        return torch.optim.SGD(
            params,
            lr=lr,
            momentum=float(config.get("momentum", 0.9)),
            weight_decay=float(config.get("weight_decay", 5e-4)),
            nesterov=bool(config.get("nesterov", False)),
            fused=fused,
        )
    if name == "adamw":
        return torch.optim.AdamW(
            params, lr=lr, weight_decay=float(config.get("weight_decay", 0.01)), fused=fused
        )
    raise ValueError(f"unknown optimizer {name!r}; known: adamw, sgd")


def lr_at(
    epoch: int,
    step: int,
    steps_per_epoch: int,
    *,
    base_lr: float,
    epochs: int,
    schedule: Mapping[str, Any],
) -> float:
    """Learning rate for 0-based (epoch, step).

    Multistep milestones are 1-based epoch numbers: with milestone m, epochs 1..m run at the
    higher rate and epoch m + 1 onwards at the lower one (RepDistiller's convention).
    Warmup is linear per step over `warmup_epochs` and multiplies the schedule.
    """
    name = schedule.get("name", "constant")
    t = epoch * steps_per_epoch + step
    warmup = int(schedule.get("warmup_epochs", 0)) * steps_per_epoch
    factor = min(1.0, (t + 1) / warmup) if warmup > 0 else 1.0
    if name == "constant":
        return base_lr * factor
    if name == "multistep":
        drops = sum(1 for m in schedule.get("milestones", []) if epoch >= m)
        return base_lr * factor * float(schedule.get("gamma", 0.1)) ** drops
    if name == "cosine":
        total = max(1, epochs * steps_per_epoch - warmup)
        progress = max(0, t - warmup) / total
        return base_lr * factor * 0.5 * (1.0 + math.cos(math.pi * progress))
    raise ValueError(f"unknown schedule {name!r}; known: constant, cosine, multistep")


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def route_epochs(
    epochs: int, route_every: int, schedule: Mapping[str, Any], save_route: bool
) -> set[int]:
    """1-based epochs that get a weights-only route checkpoint (RCO's teacher trajectory).

    Route saving is on when `route_every > 0` or `save_route`; then every `route_every`-th
    epoch, the last epoch before each multistep drop, and the final epoch are saved.
    """
    if route_every <= 0 and not save_route:
        return set()
    chosen = {epochs}
    if route_every > 0:
        chosen |= set(range(route_every, epochs + 1, route_every))
    if schedule.get("name") == "multistep":
        chosen |= {int(m) for m in schedule.get("milestones", []) if 1 <= int(m) < epochs}
    return chosen


def base_lr(config: Mapping[str, Any]) -> float:
    return float(config.get("lr", DEFAULT_LR.get(config.get("name", "sgd"), 0.05)))
