"""Jin et al. 2019, "Knowledge Distillation via Route Constrained Optimization" (RCO).

The student distils from the teacher's own training checkpoints (its `route`), easy to hard,
ending with the converged teacher; stage k is KD against anchor k. Which anchors and how many
student epochs each stage gets is planned at admission (service/spec/methods.py, RCOParams:
the LR-drop checkpoints, every n-th, or an explicit list). `greedy` chooses its own: before
each stage, the farthest later checkpoint whose gap KL(p_anchor || p_student) at T = 1 on a
few validation batches is under `threshold` (the nearest later one if none is).
"""

import itertools
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from worker.engine.checkpoint import load_weights
from worker.engine.methods.base import EpochContext
from worker.engine.methods.kd import KD, kd_loss
from worker.engine.methods.registry import register
from worker.engine.zoo.base import eval_mode

GAP_BATCHES = 4  # validation batches the greedy choice looks at


def stage_at(epoch: int, stage_epochs: list[int]) -> int:
    """0-based stage of a 1-based epoch; epochs past the plan stay in the last stage."""
    ends = list(itertools.accumulate(stage_epochs))
    return next((k for k, end in enumerate(ends) if epoch <= end), len(ends) - 1)


def greedy_pick(gaps: list[float], threshold: float) -> int:
    """Index of the farthest candidate (route order) with a gap under threshold, else 0."""
    return max((i for i, gap in enumerate(gaps) if gap < threshold), default=0)


@register("rco")
class RCO(KD):
    """KD's loss against the anchor of the current stage."""

    stage: Tensor
    anchor_epoch: Tensor

    def __init__(
        self,
        *,
        route: dict[int, Path],
        anchors: list[int],
        stage_epochs: list[int],
        greedy: bool,
        threshold: float,
        temperature: float,
        ce_weight: float,
        kd_weight: float,
        **base: Any,
    ) -> None:
        """`route`: the teacher's checkpoints by epoch; `anchors` and `stage_epochs`: the
        admitted plan (greedy uses only the number of stages)."""
        super().__init__(
            temperature=temperature,
            ce_weight=ce_weight,
            kd_weight=kd_weight,
            logit_standardisation=False,  # RCO is the plain KD of its paper
            **base,
        )
        self.route, self.anchors, self.stage_epochs = route, anchors, stage_epochs
        self.greedy, self.threshold = greedy, threshold
        self._loaded = False  # whether the teacher module holds this run's anchor yet
        self.register_buffer("stage", torch.tensor(-1))  # a resume restores stage and anchor
        self.register_buffer("anchor_epoch", torch.tensor(0))

    def begin_epoch(self, epoch: int, ctx: EpochContext) -> None:
        k = stage_at(epoch, self.stage_epochs)
        if k != int(self.stage):
            anchor, gap = self.choose_anchor(k, ctx)
            self.stage.fill_(k)
            self.anchor_epoch.fill_(anchor)
            load_weights(self.teacher, self.route[anchor])
            data = {"stage": k + 1, "anchor_epoch": anchor, "stage_epochs": self.stage_epochs[k]}
            ctx.emit("stage", f"stage {k + 1}: anchor epoch {anchor}", **data, **gap)
        elif not self._loaded:  # resumed inside a stage: the teacher holds the final weights
            load_weights(self.teacher, self.route[int(self.anchor_epoch)])
        self._loaded = True

    def choose_anchor(self, k: int, ctx: EpochContext) -> tuple[int, dict[str, float]]:
        if not self.greedy:
            return self.anchors[k], {}
        later = [e for e in sorted(self.route) if e > int(self.anchor_epoch)]
        if k == len(self.stage_epochs) - 1 or not later:
            later = [max(self.route)]  # the last stage always distils from the converged teacher
        gaps = self.kl_gaps(later, ctx)
        i = greedy_pick(gaps, self.threshold)
        return later[i], {"kl_gap": gaps[i]}

    def kl_gaps(self, epochs: list[int], ctx: EpochContext) -> list[float]:
        """KL(p_anchor || p_student) at T = 1 over the first validation batches, per epoch."""
        held_out = tuple(
            x for x, _ in itertools.islice(ctx.val.ordered(ctx.batch_size), GAP_BATCHES)
        )
        with torch.no_grad(), eval_mode(self.student):
            student = [self.student(x) for x in held_out]
            return [self.gap_to(epoch, held_out, student) for epoch in epochs]

    def gap_to(self, epoch: int, held_out: tuple[Tensor, ...], student: list[Tensor]) -> float:
        load_weights(self.teacher, self.route[epoch])
        pairs = zip(held_out, student, strict=True)
        kls = torch.stack([kd_loss(s, self.teacher(x), 1.0) * len(x) for x, s in pairs])
        return (kls.sum() / sum(len(x) for x in held_out)).item()
