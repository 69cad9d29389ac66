"""What every distillation method is: a module that turns a batch into named loss terms."""

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from worker.engine.data.augment import Augment, augment_batch
from worker.engine.data.images import Images
from worker.engine.stop import Stopped


@dataclass
class Batch:
    images: Tensor  # as stored (uint8 or float), not augmented, at the base size, on the device
    labels: Tensor
    augment: Augment
    normalise: Callable[[Tensor], Tensor]  # the split's (Images.normalise), for each view
    generator: torch.Generator | None = None
    part: tuple[int, int] = (0, 1)  # (rank, world): this process's share of a global batch

    def view(self) -> Tensor:
        """A fresh augmented, normalised view on each call; multi-view methods draw several."""
        return augment_batch(self.images, self.augment, self.normalise, self.generator, self.part)


@dataclass
class EpochContext:
    """What a method's epoch hooks may use: the data on the device and a way to report."""

    train_batches: Callable[[], Iterator[tuple[Tensor, Tensor]]]  # a shuffled epoch, on device
    normalise: Callable[[Tensor], Tensor]  # the training split's, for views of its batches
    val: Images
    holdout_images: Images | None  # the part of the training split a method chooses on (KDCL)
    device: torch.device
    batch_size: int
    augment: Augment
    generator: torch.Generator
    precision: str
    emit: Callable[..., None]  # emit(type, message, **data) -> a job event
    should_stop: Callable[[], bool]

    def holdout(self, why: str) -> Images:
        """The held-out part of the training split; `why` names the user."""
        if self.holdout_images is None:
            raise ValueError(f"{why} needs a held-out part of the training split")
        return self.holdout_images

    def check_stop(self) -> None:
        """A long hook (IE-KD's auto-encoder phase) stops like the loop does."""
        if self.should_stop():
            raise Stopped("stopped inside a method hook")


class Method(nn.Module):
    """The student (and the method's own modules) train; the teacher only answers.

    The teacher is held outside the registered children, so it is neither in
    `parameters()` nor in `state_dict()`: checkpoints and optimizers never see it.
    """

    needs_teacher: ClassVar[bool] = False
    # True: every training batch is whole, an epoch's last partial one dropped (a loss whose
    # statistics run over the batch, like DIST's intra-class relation, needs its full size)
    whole_batches: ClassVar[bool] = False

    def __init__(
        self, *, student: nn.Module, teacher: nn.Module | None, input_shape: tuple[int, int, int]
    ) -> None:
        """Every method takes these and, as keywords without defaults, its own params: the
        fields of its params model in service/spec/methods.py (worker/job/build.py passes them)."""
        super().__init__()
        self.input_shape = input_shape
        name = type(self).__name__
        if self.needs_teacher and teacher is None:
            raise ValueError(f"method {name} needs a teacher")
        if not self.needs_teacher and teacher is not None:
            raise ValueError(f"method {name} takes no teacher")
        self.student = student
        self._teacher = (teacher.eval().requires_grad_(False),) if teacher is not None else ()

    @property
    def teacher(self) -> nn.Module:
        if not self._teacher:
            raise AttributeError(f"method {type(self).__name__} has no teacher")
        return self._teacher[0]

    def losses(self, batch: Batch, epoch: int) -> dict[str, Tensor]:
        """Already-weighted loss terms; the loop sums them and logs each by name."""
        raise NotImplementedError

    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        return (p for p in self.parameters() if p.requires_grad)

    def output_model(self) -> nn.Module:
        """The model saved as the job's student."""
        return self.student

    def forward_models(self) -> tuple[nn.Module, ...]:
        """The student and the teacher, if any: what `train.compile` compiles."""
        return (self.student, *self._teacher)

    def route_epochs(self, epochs: int, lr_drops: list[int]) -> set[int]:
        """1-based epochs after which the loop saves route weights (a supervised run's)."""
        return set()

    def extra_models(self) -> dict[str, nn.Module]:
        """Other models the job keeps as artifacts, by name (e.g. KDCL's other peers)."""
        return {}

    def begin_epoch(self, epoch: int, ctx: EpochContext) -> None:
        """Called before each epoch (1-based), also the first one after a resume."""

    def end_epoch(self, epoch: int, ctx: EpochContext) -> dict[str, float]:
        """Called after each epoch's training, before evaluation; returns extra metrics."""
        return {}

    def train(self, mode: bool = True) -> "Method":
        super().train(mode)
        for teacher in self._teacher:
            teacher.eval()
        return self

    def _apply(self, fn: Callable[[Tensor], Tensor], recurse: bool = True) -> Any:
        # Let `method.to(device, memory_format=...)` move the unregistered teacher too.
        super()._apply(fn, recurse)
        for teacher in self._teacher:
            teacher._apply(fn, recurse)
        return self

    def forward(self, batch: Batch, epoch: int) -> dict[str, Tensor]:
        """The training step's losses; DDP wraps the method and calls this."""
        return self.losses(batch, epoch)

    def ask_teacher(self, images: Tensor) -> Tensor:
        """The teacher's logits, computed in inference mode (no autograd bookkeeping).

        Inference tensors cannot be saved for backward: callers use them only through an op
        that makes a new tensor (KD's log-softmax), never directly in a loss.
        """
        with torch.inference_mode():
            return self.teacher(images)
