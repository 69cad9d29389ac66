"""Hinton et al. 2015, "Distilling the Knowledge in a Neural Network".

loss = ce_weight * CE(z_s, y) + kd_weight * T^2 * KL(p_t || p_s), p = softmax(z / T).
The T^2 factor keeps the soft-target gradients on the same scale as the hard-label ones when
T changes. With `logit_standardisation` (Sun et al. 2024, sunshangquan/logit-standardization-KD
`mdistiller/distillers/KD.py`), both sides' logits are z-scored per sample before the
temperature, which then acts as a base temperature; CE stays on the raw logits.
"""

from typing import Any

import torch.nn.functional as F
from torch import Tensor

from worker.engine.methods.base import Batch, Method
from worker.engine.methods.registry import register

STD_EPS = 1e-7  # the authors' `normalize`: (z - mean) / (1e-7 + std)


def standardise(logits: Tensor) -> Tensor:
    """Each row z-scored in float32: (z - mean) / (unbiased std + 1e-7)."""
    z = logits.float()
    return (z - z.mean(dim=1, keepdim=True)) / (z.std(dim=1, keepdim=True) + STD_EPS)


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
        self,
        *,
        temperature: float,
        ce_weight: float,
        kd_weight: float,
        logit_standardisation: bool,
        **base: Any,
    ) -> None:
        super().__init__(**base)
        self.temperature, self.ce_weight, self.kd_weight = temperature, ce_weight, kd_weight
        self.logit_standardisation = logit_standardisation

    def losses(self, batch: Batch, epoch: int) -> dict[str, Tensor]:
        images = batch.view()  # the teacher sees exactly the view the student sees
        logits = self.student(images)
        teacher_logits = self.ask_teacher(images)
        ce = F.cross_entropy(logits.float(), batch.labels)
        if self.logit_standardisation:
            logits, teacher_logits = standardise(logits), standardise(teacher_logits)
        kd = kd_loss(logits, teacher_logits, self.temperature)
        return {"ce": self.ce_weight * ce, "kd": self.kd_weight * kd}
