"""The resume checkpoint: everything needed to continue a run exactly where it stopped.

RESUME is written atomically after each epoch (and where a preemption stopped); the one
before it is kept as PREVIOUS. Each file's sha256 is recorded beside it once it is on disk,
and a file is only resumed from when its contents hash to a recorded digest: a truncated or
corrupt checkpoint (a disk error, a crash inside the write) is skipped for the previous
one, or the run starts over, and never loaded.
"""

import contextlib
import hashlib
import json
import logging
import os
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
from worker.engine.resume_files import PREVIOUS, RESUME, digest_path, record_digest

log = logging.getLogger(__name__)
FORMAT = 1


@dataclass
class Progress:
    """Position and results so far; 1-based epoch numbers, 0 means nothing done yet."""

    epoch: int = 0
    step: int = 0  # steps of the next epoch done before a preemption; 0 at an epoch's end
    best_val_acc: float = 0.0  # meaningful once best_epoch > 0; stays JSON-safe (no -inf)
    best_epoch: int = 0
    history: list[dict[str, float]] = field(default_factory=list)

    def record(self, epoch: int, metrics: dict[str, float]) -> None:
        self.epoch, self.step = epoch, 0
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
    order: Tensor | None = None,
) -> None:
    """`order`: mid-epoch (progress.step > 0), the loop generator's state when that epoch's
    batch order was drawn, so the next attempt draws the same order and skips what is done."""
    optim_tensors, optim_meta = flatten_optimizer(optimizer)
    tensors = prefixed("model.", method.state_dict()) | optim_tensors | rng_tensors(generator)
    if order is not None:
        tensors["rng.order"] = order
    keep_previous(path)
    meta = {
        "format": FORMAT,
        "progress": asdict(progress),
        "optimizer": optim_meta,
        "generator_device": generator.device.type,
        "plan": plan,
    }
    record_digest(path, save_checkpoint(path, tensors=tensors, meta=meta))


def keep_previous(path: Path) -> None:
    """The checkpoint at `path` becomes PREVIOUS, its digest with it."""
    previous = path.with_name(PREVIOUS)
    for src, dst in ((digest_path(path), digest_path(previous)), (path, previous)):
        if src.exists():
            os.replace(src, dst)


def verified_resume(directory: Path) -> tuple[Path | None, list[str]]:
    """The newest resume checkpoint in `directory` whose contents hash to a recorded digest,
    and a line for each one skipped. A digest found beside either name counts (a crash
    between moving a file and its digest to PREVIOUS loses nothing)."""
    known = set()
    for name in (RESUME, PREVIOUS):
        with contextlib.suppress(OSError, ValueError):
            known.add(json.loads(digest_path(directory / name).read_text())["sha256"])
    skipped: list[str] = []
    for path in (directory / RESUME, directory / PREVIOUS):
        if not path.exists():
            continue
        if sha256_of(path) in known:
            return path, skipped
        skipped.append(f"{path.name} does not match its recorded sha256: skipped")
    return None, skipped


def sha256_of(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def load_resume(
    path: Path,
    *,
    method: nn.Module,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
) -> tuple[Progress, Tensor | None]:
    """The progress saved, and mid-epoch the state the epoch's batch order was drawn from."""
    tensors, meta = load_checkpoint(path)
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path}: unsupported resume format {meta.get('format')!r}")
    load_state_strict(method, strip_prefix("model.", tensors), source=str(path))
    unflatten_optimizer(optimizer, tensors, meta["optimizer"])
    progress = Progress(**meta["progress"])
    restore_rng(tensors, generator, same_device=meta["generator_device"] == generator.device.type)
    return progress, tensors.get("rng.order")


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
