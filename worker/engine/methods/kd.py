"""Hinton et al. 2015, "Distilling the Knowledge in a Neural Network".

loss = ce_weight * CE(z_s, y) + kd_weight * T^2 * KL(p_t || p_s), p = softmax(z / T).
Defaults are the CIFAR-100 recipe of RepDistiller and mdistiller. The T^2 factor keeps the
soft-target gradients on the same scale as the hard-label ones when T changes.
"""

from typing import Any

import torch.nn.functional as F
from torch import Tensor

from worker.engine.methods.base import Batch, Method
from worker.engine.methods.registry import register


def kd_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """T^2 * KL(p_t || p_s), summed over classes and averaged over the batch, in float32."""
    log_p_s = F.log_softmax(student_logits.float() / temperature, dim=1)
    log_p_t = F.log_softmax(teacher_logits.float() / temperature, dim=1)
    kl = F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True)
    return kl * temperature**2


@register("kd")
class KD(Method):
    needs_teacher = True

    def __init__(
        self, *, temperature: float, ce_weight: float, kd_weight: float, **base: Any
    ) -> None:
        super().__init__(**base)
        self.temperature, self.ce_weight, self.kd_weight = temperature, ce_weight, kd_weight

    def losses(self, batch: Batch, epoch: int) -> dict[str, Tensor]:
        images = batch.view()  # the teacher sees exactly the view the student sees
        logits = self.student(images)
        teacher_logits = self.ask_teacher(images)
        ce = F.cross_entropy(logits.float(), batch.labels)
        kd = kd_loss(logits, teacher_logits, self.temperature)
        return {"ce": self.ce_weight * ce, "kd": self.kd_weight * kd}
