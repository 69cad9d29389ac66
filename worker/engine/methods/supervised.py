"""Plain cross-entropy from scratch: how a user trains a teacher.

Route checkpoints for RCO (`route_every`) are written by the loop, not here.
"""

import torch.nn.functional as F
from torch import Tensor

from worker.engine.methods.base import Batch, Method
from worker.engine.methods.registry import register


@register("supervised")
class Supervised(Method):
    needs_teacher = False
    saves_route = True  # a supervised run is how a teacher is made, and RCO needs its route

    def losses(self, batch: Batch, epoch: int) -> dict[str, Tensor]:
        logits = self.student(batch.view())
        return {"ce": F.cross_entropy(logits.float(), batch.labels)}
