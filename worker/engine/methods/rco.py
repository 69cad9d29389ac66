"""Jin et al. 2019, "Knowledge Distillation via Route Constrained Optimization" (RCO).

The student distils from the teacher's own training checkpoints ("anchors", from the route the
runner passes), easy to hard, ending with the converged teacher; stage k is KD against anchor k.
Anchors: the LR-drop checkpoints plus the last (`lr_drops`), every n-th, an explicit list, or
`greedy`: before each stage, the farthest later checkpoint whose gap KL(p_anchor || p_student)
at T = 1 on a few validation batches is under `threshold` (the nearest later one if none is).
Greedy runs as many stages as `stage_epochs` lists, else as many as `lr_drops` has anchors.
"""

import itertools
from pathlib import Path

import torch
from torch import Tensor

from worker.engine.checkpoint import load_weights
from worker.engine.methods.base import EpochContext
from worker.engine.methods.kd import KD, kd_loss
from worker.engine.methods.registry import register
from worker.engine.models.base import eval_mode

GAP_BATCHES = 4  # validation batches the greedy choice looks at


def fixed_anchors(route: list[int], anchors: object, milestones: list[int], n: int) -> list[int]:
    """Anchor epochs for every mode but greedy; always ending at the route's last epoch."""
    if isinstance(anchors, list):
        chosen = [int(a) for a in anchors]
        if missing := sorted(set(chosen) - set(route)):
            raise ValueError(f"no route checkpoint at epochs {missing}; the route has {route}")
    elif anchors == "every_n":
        chosen = route[n - 1 :: n]
    elif anchors in ("lr_drops", "greedy"):
        chosen = [m for m in milestones if m in route] if milestones else route
    else:
        raise ValueError(f"unknown anchors {anchors!r}; known: every_n, greedy, lr_drops, a list")
    return sorted(set(chosen) | {route[-1]})


def split_epochs(total: int, stages: int) -> list[int]:
    """Even split; the remainder goes one epoch each to the last stages."""
    base, rest = divmod(total, stages)
    return [base + (k >= stages - rest) for k in range(stages)]


def stage_at(epoch: int, stage_epochs: list[int]) -> int:
    """0-based stage of a 1-based epoch; epochs past the plan stay in the last stage."""
    ends = list(itertools.accumulate(stage_epochs))
    return next((k for k, end in enumerate(ends) if epoch <= end), len(ends) - 1)


def greedy_pick(gaps: list[float], threshold: float) -> int:
    """Index of the farthest candidate (route order) with a gap under threshold, else 0."""
    return max((i for i, gap in enumerate(gaps) if gap < threshold), default=0)


@register("rco")
class RCO(KD):
    """KD's loss and params (temperature, ce_weight, kd_weight); the teacher changes by stage."""

    stage: Tensor
    anchor_epoch: Tensor

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.route = {int(r["epoch"]): Path(r["path"]) for r in self.param("route", [])}
        if not self.route:
            raise ValueError("rco needs the teacher's route checkpoints (params['route'])")
        mode, milestones = self.param("anchors", "lr_drops"), self.param("teacher_milestones", [])
        every_n, self.greedy = int(self.param("every_n", 1)), mode == "greedy"
        self.anchors = fixed_anchors(sorted(self.route), mode, milestones, every_n)
        self.stage_epochs = self.plan_stages(len(self.anchors))
        self._loaded = False  # whether the teacher module holds this run's anchor yet
        self.register_buffer("stage", torch.tensor(-1))  # a resume restores stage and anchor
        self.register_buffer("anchor_epoch", torch.tensor(0))

    def plan_stages(self, n_anchors: int) -> list[int]:
        if (given := self.param("stage_epochs", None)) is not None:
            if not self.greedy and len(given) != n_anchors:
                raise ValueError(f"stage_epochs has {len(given)} stages for {n_anchors} anchors")
            return [int(e) for e in given]
        if (total := self.param("student_epochs", None)) is None:
            raise ValueError("rco needs stage_epochs or student_epochs to plan its stages")
        return split_epochs(int(total), n_anchors)

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
        i = greedy_pick(gaps, float(self.param("threshold", 2.0)))
        return later[i], {"kl_gap": gaps[i]}

    def kl_gaps(self, epochs: list[int], ctx: EpochContext) -> list[float]:
        """KL(p_anchor || p_student) at T = 1 over the first validation batches, per epoch."""
        held_out = ctx.val_x[: GAP_BATCHES * ctx.batch_size].split(ctx.batch_size)
        with torch.no_grad(), eval_mode(self.student):
            student = [self.student(x) for x in held_out]
            return [self.gap_to(epoch, held_out, student) for epoch in epochs]

    def gap_to(self, epoch: int, held_out: tuple[Tensor, ...], student: list[Tensor]) -> float:
        load_weights(self.teacher, self.route[epoch])
        pairs = zip(held_out, student, strict=True)
        kls = torch.stack([kd_loss(s, self.teacher(x), 1.0) * len(x) for x, s in pairs])
        return (kls.sum() / sum(len(x) for x in held_out)).item()
