"""Plain cross-entropy from scratch: how a user trains a teacher.

Such a run also chooses its route checkpoints for RCO (the loop writes them): every
`route_every`-th epoch, the last epoch before each learning-rate drop, and the final epoch.
"""

from typing import Any

import torch.nn.functional as F
from torch import Tensor

from worker.engine.methods.base import Batch, Method
from worker.engine.methods.registry import register


@register("supervised")
class Supervised(Method):
    needs_teacher = False

    def __init__(self, *, route_every: int, **base: Any) -> None:
        super().__init__(**base)
        self.route_every = route_every

    def losses(self, batch: Batch, epoch: int) -> dict[str, Tensor]:
        logits = self.student(batch.view())
        return {"ce": F.cross_entropy(logits.float(), batch.labels)}

    def route_epochs(self, epochs: int, lr_drops: list[int]) -> set[int]:
        chosen = {epochs} | {m for m in lr_drops if 1 <= m < epochs}
        if self.route_every > 0:
            chosen |= set(range(self.route_every, epochs + 1, self.route_every))
        return chosen
