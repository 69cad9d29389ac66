"""Zhao et al. 2022, "Decoupled Knowledge Distillation" (as megvii-research/mdistiller
`mdistiller/distillers/DKD.py`).

KD split in two: TCKD, the KL between the binary (target, rest) distributions, and NCKD, the
KL between the distributions over the non-target classes alone; both x T^2, batch-averaged.
loss = ce_weight * CE + min(epoch / warmup_epochs, 1) * (alpha * TCKD + beta * NCKD), with
the 1-based epoch as mdistiller counts it; the warm-up scales the DKD terms only.

The reference takes `log` of probabilities (NaN once one underflows, as under fp16/bf16).
Here both terms are computed from logits in float32 log space: log p_target is a
log-softmax, log(1 - p_target) a difference of logsumexps, and NCKD a log-softmax over the
non-target logits (what the reference's `- 1000 * gt_mask` approximates). The values are
the reference's wherever its own are finite. `logit_standardisation` z-scores both sides'
logits first (sunshangquan/logit-standardization-KD `mdistiller/distillers/DKD.py`).
"""

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from worker.engine.methods.base import Batch, Method
from worker.engine.methods.kd import standardise
from worker.engine.methods.registry import register


def dkd_terms(
    student_logits: Tensor, teacher_logits: Tensor, labels: Tensor, temperature: float
) -> tuple[Tensor, Tensor]:
    """(TCKD, NCKD), each T^2 * KL(teacher || student) summed over its classes and averaged
    over the batch, in float32."""
    classes = student_logits.shape[1]
    if classes < 3:
        why = "NCKD compares the non-target classes"
        raise ValueError(f"dkd needs at least 3 classes ({why}), not {classes}")
    rest = others(labels, classes)
    binary, non_target = [], []
    for logits in (student_logits, teacher_logits):
        z = logits.float() / temperature
        log_all = torch.logsumexp(z, dim=1, keepdim=True)
        z_rest = z.gather(1, rest)
        log_target = z.gather(1, labels[:, None]) - log_all
        log_rest = torch.logsumexp(z_rest, dim=1, keepdim=True) - log_all
        binary.append(torch.cat([log_target, log_rest], dim=1))
        non_target.append(F.log_softmax(z_rest, dim=1))
    scale = temperature**2
    tckd = F.kl_div(binary[0], binary[1], reduction="batchmean", log_target=True)
    nckd = F.kl_div(non_target[0], non_target[1], reduction="batchmean", log_target=True)
    return tckd * scale, nckd * scale


def others(labels: Tensor, classes: int) -> Tensor:
    """(N, classes - 1): each row's non-target class indices in order, made by arithmetic
    (a boolean mask would make the GPU wait for its count)."""
    index = torch.arange(classes - 1, device=labels.device).expand(len(labels), -1)
    return index + (index >= labels[:, None]).long()


def warmup(epoch: int, warmup_epochs: int) -> float:
    """min(epoch / warmup_epochs, 1) for the 1-based epoch; no warm-up when it is 0."""
    return 1.0 if warmup_epochs <= 0 else min(1.0, epoch / warmup_epochs)


@register("dkd")
class DKD(Method):
    needs_teacher = True

    def __init__(
        self,
        *,
        alpha: float,
        beta: float,
        temperature: float,
        warmup_epochs: int,
        ce_weight: float,
        logit_standardisation: bool,
        **base: Any,
    ) -> None:
        super().__init__(**base)
        self.alpha, self.beta, self.temperature = alpha, beta, temperature
        self.warmup_epochs, self.ce_weight = warmup_epochs, ce_weight
        self.logit_standardisation = logit_standardisation

    def losses(self, batch: Batch, epoch: int) -> dict[str, Tensor]:
        images = batch.view()
        logits = self.student(images)
        teacher_logits = self.ask_teacher(images)
        ce = F.cross_entropy(logits.float(), batch.labels)
        if self.logit_standardisation:
            logits, teacher_logits = standardise(logits), standardise(teacher_logits)
        tckd, nckd = dkd_terms(logits, teacher_logits, batch.labels, self.temperature)
        ramp = warmup(epoch + 1, self.warmup_epochs)  # the loop's epoch is 0-based
        return {
            "ce": self.ce_weight * ce,
            "tckd": ramp * self.alpha * tckd,
            "nckd": ramp * self.beta * nckd,
        }
