"""Callbacks, methods and plans shared by the engine tests."""

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from service.spec.job import OptimizerSpec, ScheduleSpec, SyntheticOptions, TrainSpec
from service.spec.methods import PARAMS_MODELS, JobFacts, method_name
from worker.engine.data import Augment, DataSplit, Images, Resident
from worker.engine.loop import TrainPlan
from worker.engine.methods import Batch, EpochContext, Method, create
from worker.engine.optim import Optimizer, Schedule
from worker.engine.zoo import build_model
from worker.job.build import CONSUMED

PARAMS = {method_name(model): model for model in PARAMS_MODELS}
REQUIRED = {"kdcl": {"peers": ["cnn_small"]}}  # params without a default
DEFAULT_JOB = JobFacts(True, "resnet8", TrainSpec.model_fields["epochs"].default)


def method_kwargs(name: str, **overrides: Any) -> dict[str, Any]:
    """A method's engine keywords as a job gets them: its params model's defaults (the one
    place they are written) resolved as admission would for a 5-epoch job without the
    teacher's facts, then `overrides` (engine keywords, any of them)."""
    fields = set(PARAMS[name].model_fields)
    given = {k: v for k, v in overrides.items() if k in fields}
    params = PARAMS[name].model_validate({"name": name, **REQUIRED.get(name, {}), **given})
    params = params.resolve(DEFAULT_JOB, None)  # as admission does (a job of default epochs)
    return params.model_dump(exclude={"name", *CONSUMED.get(name, ())}) | overrides


def make_method(
    name: str,
    student: nn.Module,
    teacher: nn.Module | None = None,
    input_shape: tuple[int, int, int] = (1, 8, 8),
    **overrides: Any,
) -> Method:
    return create(
        name,
        student=student,
        teacher=teacher,
        input_shape=input_shape,
        **method_kwargs(name, **overrides),
    )


SGD = Optimizer(name="sgd", lr=0.1, momentum=0.9, weight_decay=5e-4, nesterov=False)
COSINE = Schedule(name="cosine", milestones=[], gamma=0.1, warmup_epochs=0)


class Recorder:
    """Callbacks that remember everything and can ask to stop, or be preempted, after a
    number of steps."""

    def __init__(
        self, stop_after_steps: int | None = None, preempt_after_steps: int | None = None
    ) -> None:
        self.stop_after_steps = stop_after_steps
        self.preempt_after_steps = preempt_after_steps
        self.steps: list[tuple[int, int, int]] = []
        self.epochs: list[tuple[int, dict[str, float]]] = []
        self.checkpoints: list[tuple[Path, int, str, int | None]] = []
        self.events: list[tuple[str, str, dict[str, Any]]] = []

    def on_step(self, epoch: int, step: int, steps_per_epoch: int) -> None:
        self.steps.append((epoch, step, steps_per_epoch))

    def should_stop(self) -> bool:
        return self.stop_after_steps is not None and len(self.steps) >= self.stop_after_steps

    def preempted(self) -> bool:
        after = self.preempt_after_steps
        return after is not None and len(self.steps) >= after

    def on_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        self.epochs.append((epoch, metrics))

    def on_checkpoint(self, path: Path, epoch: int, kind: str, step: int | None) -> None:
        self.checkpoints.append((path, epoch, kind, step))

    def on_event(self, type_: str, message: str, data: dict[str, Any]) -> None:
        self.events.append((type_, message, data))


def assert_same_weights(a: nn.Module, b: nn.Module) -> None:
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(x, y), name


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
    """The fast digits recipe: SGD lr 0.1, momentum 0.9, cosine, batch 64, crop. `params`
    override the method's keywords (its spec defaults otherwise)."""
    torch.manual_seed(init_seed)
    student = build_model(arch, data.num_classes, data.input_shape[0])
    fields: dict = {
        "method": make_method(method, student, teacher, data.input_shape, **(params or {})),
        "data": data,
        "epochs": 5,
        "batch_size": 64,
        "optimizer": SGD,
        "schedule": COSINE,
        "seed": 0,
        "precision": "auto",
        "device": "cpu",
        "checkpoint_dir": checkpoint_dir,
        "spec": {},
        "compile": False,
        "data_placement": "auto",
    }
    augment = overrides.pop("augment", "crop")
    fields["data"] = with_augment(data, str(augment))
    fields.update(overrides)
    return TrainPlan(**fields)


def with_augment(data: DataSplit, mode: str) -> DataSplit:
    """`data` trained with another pad-and-crop mode (or none): the same base size."""
    return dataclasses.replace(data, augment=Augment(mode, data.augment.size))


def tensor_images(x: torch.Tensor, y: torch.Tensor) -> Resident:
    """Already normalised float images (N, C, H, W) held on the CPU."""
    channels = x.shape[1]
    cpu = torch.device("cpu")
    return Resident(y, [0.0] * channels, [1.0] * channels, x.shape[-1], cpu, pixels=x)


def arrays(images: Images) -> tuple[torch.Tensor, torch.Tensor]:
    """All of a split, in order, as evaluation sees it (normalised, centre-cropped to its
    size), and its labels."""
    xs, ys = zip(*images.ordered(max(1, len(images))), strict=True)
    return torch.cat(xs), torch.cat(ys)


def batch(
    x: torch.Tensor,
    y: torch.Tensor,
    mode: str = "none",
    generator: torch.Generator | None = None,
) -> Batch:
    """A training batch of images already at their training size, normalised already."""
    return Batch(x, y, Augment(mode, x.shape[-1]), normalised, generator)


def normalised(x: torch.Tensor) -> torch.Tensor:
    """The normaliser of tensors that are normalised already: each view as it is cut."""
    return x


def make_context(
    train: tuple[torch.Tensor, torch.Tensor],
    val: tuple[torch.Tensor, torch.Tensor],
    events: list,
    *,
    batch_size: int = 64,
    augment_mode: str = "none",
    stop: bool = False,
    holdout: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> EpochContext:
    """An epoch context on the CPU over (x, y) tensors, recording emitted events."""
    generator = torch.Generator().manual_seed(0)
    images = tensor_images(*train)
    return EpochContext(
        train_batches=lambda: images.epoch(batch_size, generator),
        normalise=images.normalise,
        val=tensor_images(*val),
        holdout_images=None if holdout is None else tensor_images(*holdout),
        device=torch.device("cpu"),
        batch_size=batch_size,
        augment=Augment(augment_mode, train[0].shape[-1]),
        generator=generator,
        precision="fp32",
        emit=lambda type_, message, **data: events.append((type_, message, data)),
        should_stop=lambda: stop,
    )


def first_train(data: DataSplit, n: int) -> DataSplit:
    """`data` with only its first `n` training samples (the validation split unchanged)."""
    return dataclasses.replace(data, train=data.train.subset(np.arange(n)))


def synthetic_options(**overrides: Any) -> dict[str, Any]:
    """A synthetic dataset's options as a job gets them: the spec's defaults, then
    `overrides`."""
    return SyntheticOptions(**overrides).model_dump()


def spec_optimizer(**fields: Any) -> Optimizer:
    """An engine optimizer as a job gets it: the spec's defaults (by name), then `fields`."""
    return Optimizer(**OptimizerSpec(**fields).model_dump())


def spec_schedule(**fields: Any) -> Schedule:
    """An engine schedule as a job gets it: the spec's defaults, then `fields`."""
    return Schedule(**ScheduleSpec(**fields).model_dump())


def np_log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def np_ce(z: np.ndarray, y: list[int]) -> np.ndarray:
    """Per-sample CE of (..., N, C) logits, in float64."""
    return -np_log_softmax(z)[..., np.arange(len(y)), y]
