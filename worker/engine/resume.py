"""The resume checkpoint: everything needed to continue a run exactly where it stopped."""

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from worker.engine.checkpoint import (
    flatten_optimizer,
    load_checkpoint,
    load_state_strict,
    prefixed,
    save_checkpoint,
    strip_prefix,
    unflatten_optimizer,
)

log = logging.getLogger(__name__)
FORMAT = 1


@dataclass
class Progress:
    """Position and results so far; 1-based epoch numbers, 0 means nothing done yet."""

    epoch: int = 0
    best_val_acc: float = 0.0  # meaningful once best_epoch > 0; stays JSON-safe (no -inf)
    best_epoch: int = 0
    history: list[dict[str, float]] = field(default_factory=list)

    def record(self, epoch: int, metrics: dict[str, float]) -> None:
        self.epoch = epoch
        self.history.append({"epoch": epoch, **metrics})
        if self.best_epoch == 0 or metrics["val_acc"] > self.best_val_acc:
            self.best_val_acc, self.best_epoch = metrics["val_acc"], epoch


def save_resume(
    path: Path,
    *,
    method: nn.Module,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    progress: Progress,
    plan: dict[str, Any],
) -> None:
    optim_tensors, optim_meta = flatten_optimizer(optimizer)
    tensors = prefixed("model.", method.state_dict()) | optim_tensors | rng_tensors(generator)
    meta = {
        "format": FORMAT,
        "progress": asdict(progress),
        "optimizer": optim_meta,
        "generator_device": generator.device.type,
        "plan": plan,
    }
    save_checkpoint(path, tensors=tensors, meta=meta)


def load_resume(
    path: Path,
    *,
    method: nn.Module,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
) -> Progress:
    tensors, meta = load_checkpoint(path)
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path}: unsupported resume format {meta.get('format')!r}")
    load_state_strict(method, strip_prefix("model.", tensors), source=str(path))
    unflatten_optimizer(optimizer, tensors, meta["optimizer"])
    progress = Progress(**meta["progress"])
    restore_rng(tensors, generator, same_device=meta["generator_device"] == generator.device.type)
    return progress


def rng_tensors(generator: torch.Generator) -> dict[str, Tensor]:
    tensors = {"rng.cpu": torch.get_rng_state(), "rng.loop": generator.get_state()}
    if torch.cuda.is_available():
        tensors["rng.cuda"] = torch.cuda.get_rng_state()
    return tensors


def restore_rng(tensors: dict[str, Tensor], generator: torch.Generator, same_device: bool) -> None:
    torch.set_rng_state(tensors["rng.cpu"])
    if "rng.cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["rng.cuda"])
    if same_device:
        generator.set_state(tensors["rng.loop"])
    else:
        # A CPU generator state does not fit a CUDA generator: continue, but not bit-exactly.
        log.warning("resumed on another device type; the data order will differ from the plan")
