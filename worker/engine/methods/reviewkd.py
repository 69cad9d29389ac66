"""Chen et al. 2021, "Distilling Knowledge via Knowledge Review" (as dvlab-research/ReviewKD).

The student's post-ReLU stage features and pooled feature go deepest-first through ABF blocks,
each fusing its level with the residual of the deeper one; the outputs match the teacher's
pre-ReLU stage features and pooled feature under HCL (`hcl_loss`).

loss = ce_weight * CE + weight * min(1, epoch / warmup_epochs) * HCL, with the loop's 0-based
epoch as in the official `for epoch in range(args.epochs)` (mdistiller counts from 1: 1/20
more in each warm-up epoch). Published weights, CIFAR-100: 5.0 for resnet32x4->resnet8x4 and
WRN students, 0.6 for resnet56->resnet20, 1.0 for resnet110->resnet32, 8.0 for ShuffleV2.

Channels and sizes come from a dummy forward pass of both models. A student level whose size
differs from the teacher's is resized (nearest) after fusion, as the official ABF does.
"""

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from worker.engine.methods.base import Batch, Method
from worker.engine.methods.registry import register
from worker.engine.zoo.base import StageFeatures, forward_stages, probe


def hcl_loss(student_feats: list[Tensor], teacher_feats: list[Tensor]) -> Tensor:
    """Sum over levels of MSE plus MSE of 4/2/1 average pools smaller than the map, weighted
    1, 1/2, 1/4, ... in the order used and divided by the weights' sum (official `hcl`)."""
    total = torch.zeros((), device=student_feats[0].device)
    for fs, ft in zip(student_feats, teacher_feats, strict=True):
        fs, ft = fs.float(), ft.float()
        loss, weight, weights = F.mse_loss(fs, ft), 1.0, 1.0
        for size in (s for s in (4, 2, 1) if s < fs.shape[2]):
            weight /= 2
            pooled = F.adaptive_avg_pool2d(fs, size), F.adaptive_avg_pool2d(ft, size)
            loss = loss + weight * F.mse_loss(*pooled)
            weights += weight
        total = total + loss / weights
    return total


class ABF(nn.Module):
    """Attention-based fusion: 1x1 conv+BN to `mid`, fuse the deeper residual, 3x3 conv+BN."""

    def __init__(self, in_channels: int, mid: int, out_channels: int, fuse: bool) -> None:
        super().__init__()
        reduce = nn.Conv2d(in_channels, mid, 1, bias=False)
        out = nn.Conv2d(mid, out_channels, 3, padding=1, bias=False)
        for conv in (reduce, out):
            nn.init.kaiming_uniform_(conv.weight, a=1)
        self.conv1 = nn.Sequential(reduce, nn.BatchNorm2d(mid))
        self.conv2 = nn.Sequential(out, nn.BatchNorm2d(out_channels))
        self.att_conv = nn.Sequential(nn.Conv2d(2 * mid, 2, 1), nn.Sigmoid()) if fuse else None

    def forward(
        self, x: Tensor, residual: Tensor | None, out_size: tuple[int, int]
    ) -> tuple[Tensor, Tensor]:
        """(output at the teacher's width and size, residual for the next shallower ABF)."""
        x = self.conv1(x)
        if self.att_conv is not None and residual is not None:
            residual = F.interpolate(residual, x.shape[2:], mode="nearest")
            att = self.att_conv(torch.cat([x, residual], dim=1))
            x = x * att[:, :1] + residual * att[:, 1:]
        if tuple(x.shape[2:]) != out_size:
            x = F.interpolate(x, out_size, mode="nearest")
        return self.conv2(x), x


def levels(f: StageFeatures, preact: bool) -> list[Tensor]:
    """[stage 1, ..., stage k, pooled (N, D, 1, 1)]; the student's post-ReLU, the teacher's not."""
    return [*(f.preact if preact else f.feats), f.pooled[:, :, None, None]]


@register("reviewkd")
class ReviewKD(Method):
    needs_teacher = True

    def __init__(
        self,
        *,
        weight: float,
        warmup_epochs: int,
        mid_channels: int | None,
        ce_weight: float,
        **base: Any,
    ) -> None:
        super().__init__(**base)
        self.weight, self.warmup_epochs, self.ce_weight = weight, warmup_epochs, ce_weight
        s = levels(probe(self.student, self.input_shape, "reviewkd")[1], preact=False)
        t = levels(probe(self.teacher, self.input_shape, "reviewkd")[1], preact=True)
        if len(s) != len(t):
            raise ValueError(f"reviewkd: student has {len(s)} levels, teacher {len(t)}")
        mid = mid_channels or min(512, s[-1].shape[1])
        self.out_sizes = [(f.shape[2], f.shape[3]) for f in t]
        # Shallow to deep, as the levels; all but the deepest fuse a deeper residual.
        fuse = [True] * (len(s) - 1) + [False]
        self.abfs = nn.ModuleList(
            ABF(fs.shape[1], mid, ft.shape[1], f) for fs, ft, f in zip(s, t, fuse, strict=True)
        )

    def review(self, feats: list[Tensor]) -> list[Tensor]:
        """ABF outputs, shallow to deep, computed deepest first."""
        outputs: list[Tensor] = []
        residual = None
        for x, abf, size in zip(feats[::-1], self.abfs[::-1], self.out_sizes[::-1], strict=True):
            out, residual = abf(x, residual, size)
            outputs.insert(0, out)
        return outputs

    def losses(self, batch: Batch, epoch: int) -> dict[str, Tensor]:
        images = batch.view()
        logits, s = forward_stages(self.student, images)
        with torch.no_grad():
            _, t = forward_stages(self.teacher, images)
        ce = F.cross_entropy(logits.float(), batch.labels)
        hcl = hcl_loss(self.review(levels(s, preact=False)), levels(t, preact=True))
        factor = self.weight * warmup(epoch, self.warmup_epochs)
        return {"ce": self.ce_weight * ce, "hcl": factor * hcl}


def warmup(epoch: int, warmup_epochs: int) -> float:
    """min(1, epoch / warmup_epochs) for the 0-based epoch; no warm-up when it is 0."""
    return 1.0 if warmup_epochs <= 0 else min(1.0, epoch / warmup_epochs)
