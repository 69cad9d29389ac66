"""Huang et al. 2022, "Knowledge Distillation from a Stronger Teacher" (DIST, as
hunto/image_classification_sota `lib/models/losses/dist_kd.py`, DIST_KD's loss).

With Y = softmax(z / tau): inter-class = 1 - the mean over samples of the Pearson
correlation of the student's and teacher's rows; intra-class = the same over classes, of
their columns across the batch. Both x tau^2 as the reference does;
loss = ce_weight * CE + kd_weight * (inter_weight * inter + intra_weight * intra).

The intra-class term reads the whole batch, so the last partial batch of an epoch is
dropped (`whole_batches`), as the authors' loader does (drop_last=True). Under DDP each rank
computes it over its own share of the global batch: the authors' batch size is per GPU too.
"""

from typing import Any

import torch.nn.functional as F
from torch import Tensor

from worker.engine.methods.base import Batch, Method
from worker.engine.methods.registry import register

EPS = 1e-8  # the reference's, in the cosine's denominator


def pearson_rows(a: Tensor, b: Tensor) -> Tensor:
    """Pearson correlation of each row of `a` with the same row of `b`."""
    a = a - a.mean(dim=1, keepdim=True)
    b = b - b.mean(dim=1, keepdim=True)
    return (a * b).sum(dim=1) / (a.norm(dim=1) * b.norm(dim=1) + EPS)


def dist_terms(
    student_logits: Tensor, teacher_logits: Tensor, temperature: float
) -> tuple[Tensor, Tensor]:
    """(inter-class, intra-class) relation losses, each x tau^2, in float32."""
    y_s = F.softmax(student_logits.float() / temperature, dim=1)
    y_t = F.softmax(teacher_logits.float() / temperature, dim=1)
    inter = 1 - pearson_rows(y_s, y_t).mean()
    intra = 1 - pearson_rows(y_s.T, y_t.T).mean()
    return inter * temperature**2, intra * temperature**2


@register("dist")
class DIST(Method):
    needs_teacher = True
    whole_batches = True  # the intra-class term's statistics are over the batch

    def __init__(
        self,
        *,
        temperature: float,
        inter_weight: float,
        intra_weight: float,
        kd_weight: float,
        ce_weight: float,
        **base: Any,
    ) -> None:
        super().__init__(**base)
        self.temperature, self.kd_weight, self.ce_weight = temperature, kd_weight, ce_weight
        self.inter_weight, self.intra_weight = inter_weight, intra_weight

    def losses(self, batch: Batch, epoch: int) -> dict[str, Tensor]:
        images = batch.view()
        logits = self.student(images)
        teacher_logits = self.ask_teacher(images)
        ce = F.cross_entropy(logits.float(), batch.labels)
        inter, intra = dist_terms(logits, teacher_logits, self.temperature)
        return {
            "ce": self.ce_weight * ce,
            "inter": self.kd_weight * self.inter_weight * inter,
            "intra": self.kd_weight * self.intra_weight * intra,
        }
