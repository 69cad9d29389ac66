"""Callbacks and plans shared by the engine tests."""

import dataclasses
from pathlib import Path
from typing import Any

import torch

from worker.engine.data import DataSplit, batches
from worker.engine.loop import TrainPlan
from worker.engine.methods import EpochContext, create
from worker.engine.models import build_model


class Recorder:
    """Callbacks that remember everything and can ask to stop after a number of steps."""

    def __init__(self, stop_after_steps: int | None = None) -> None:
        self.stop_after_steps = stop_after_steps
        self.steps: list[tuple[int, int, int]] = []
        self.epochs: list[tuple[int, dict[str, float]]] = []
        self.checkpoints: list[tuple[Path, int, str]] = []
        self.events: list[tuple[str, str, dict[str, Any]]] = []

    def on_step(self, epoch: int, step: int, steps_per_epoch: int) -> None:
        self.steps.append((epoch, step, steps_per_epoch))

    def should_stop(self) -> bool:
        return self.stop_after_steps is not None and len(self.steps) >= self.stop_after_steps

    def on_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        self.epochs.append((epoch, metrics))

    def on_checkpoint(self, path: Path, epoch: int, kind: str) -> None:
        self.checkpoints.append((path, epoch, kind))

    def on_event(self, type_: str, message: str, data: dict[str, Any]) -> None:
        self.events.append((type_, message, data))


def make_plan(
    data: DataSplit,
    checkpoint_dir: Path,
    *,
    arch: str = "cnn_small",
    method: str = "supervised",
    teacher: torch.nn.Module | None = None,
    params: dict | None = None,
    init_seed: int = 0,
    **overrides: object,
) -> TrainPlan:
    """The fast digits recipe: SGD lr 0.1, momentum 0.9, cosine, batch 64, crop."""
    torch.manual_seed(init_seed)
    student = build_model(arch, data.num_classes, data.input_shape[0])
    fields: dict = {
        "method": create(
            method,
            student=student,
            teacher=teacher,
            params=params or {},
            input_shape=data.input_shape,
        ),
        "data": data,
        "epochs": 5,
        "batch_size": 64,
        "optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4},
        "schedule": {"name": "cosine"},
        "seed": 0,
        "precision": "auto",
        "device": "cpu",
        "augment": "crop",
        "checkpoint_dir": checkpoint_dir,
    }
    fields.update(overrides)
    return TrainPlan(**fields)


def make_context(
    train: tuple[torch.Tensor, torch.Tensor],
    val: tuple[torch.Tensor, torch.Tensor],
    events: list,
    *,
    batch_size: int = 64,
    augment_mode: str = "none",
    stop: bool = False,
) -> EpochContext:
    """An epoch context on the CPU over (x, y) tensors, recording emitted events."""
    generator = torch.Generator().manual_seed(0)
    return EpochContext(
        train_batches=lambda: batches(*train, batch_size, True, generator),
        val_x=val[0],
        val_y=val[1],
        batch_size=batch_size,
        augment_mode=augment_mode,
        generator=generator,
        precision="fp32",
        emit=lambda type_, message, **data: events.append((type_, message, data)),
        should_stop=lambda: stop,
    )


def first_train(data: DataSplit, n: int) -> DataSplit:
    """`data` with only its first `n` training samples (the validation split unchanged)."""
    return dataclasses.replace(data, train_x=data.train_x[:n], train_y=data.train_y[:n])
