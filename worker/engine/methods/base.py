"""What every distillation method is: a module that turns a batch into named loss terms."""

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from worker.engine.data.augment import augment_batch


@dataclass
class Batch:
    images: Tensor  # normalised, not augmented, on the training device
    labels: Tensor
    augment_mode: str
    generator: torch.Generator | None = None

    def view(self) -> Tensor:
        """A fresh augmented view on each call; multi-view methods draw several."""
        return augment_batch(self.images, self.augment_mode, self.generator)


class Method(nn.Module):
    """The student (and the method's own modules) train; the teacher only answers.

    The teacher is held outside the registered children, so it is neither in
    `parameters()` nor in `state_dict()`: checkpoints and optimizers never see it.
    """

    needs_teacher: ClassVar[bool] = False
    saves_route: ClassVar[bool] = False  # route checkpoints at LR drops and the end (for RCO)

    def __init__(self, *, student: nn.Module, teacher: nn.Module | None, params: dict) -> None:
        super().__init__()
        name = type(self).__name__
        if self.needs_teacher and teacher is None:
            raise ValueError(f"method {name} needs a teacher")
        if not self.needs_teacher and teacher is not None:
            raise ValueError(f"method {name} takes no teacher")
        self.student = student
        self._teacher = (teacher.eval().requires_grad_(False),) if teacher is not None else ()
        self.params = dict(params)

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

    def param(self, name: str, default: Any) -> Any:
        value = self.params.get(name)
        return default if value is None else value
