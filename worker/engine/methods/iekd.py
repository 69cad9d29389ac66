"""Huang et al. 2021, "Revisiting Knowledge Distillation: An Inheritance and Exploration
Framework" (IE-KD), following the official code's losses and auto-encoder.

Phase 1 (before the first epoch): an auto-encoder on the frozen teacher's last-stage feature,
L1 reconstruction, its own SGD. Phase 2: the student's last-stage feature is split by channels;
each half is encoded to the teacher factor's shape F_T (the frozen encoder's output) and
loss = ce_weight * CE + inh_weight * d(F_inh, F_T) - exp_weight * d(F_exp, F_T), with
d(a, b) = || a/||a||_2 - b/||b||_2 ||_1 / numel on per-sample flattened factors; or, with
exp_loss "cosine", + exp_weight * mean_n |cos(F_exp, F_T)| (pushed toward orthogonality).
"""

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from worker.engine.distributed import broadcast_from_main
from worker.engine.methods.base import Batch, EpochContext, Method
from worker.engine.methods.factor import AutoEncoder, coder, fit_epoch
from worker.engine.methods.registry import register
from worker.engine.zoo.base import forward_stages, probe


def factor_distance(a: Tensor, b: Tensor) -> Tensor:
    """Factor-transfer L1: each sample's flattened factor L2-normalised, then mean |a - b|."""
    a, b = F.normalize(a.float().flatten(1), dim=1), F.normalize(b.float().flatten(1), dim=1)
    return (a - b).abs().mean()


def cosine_overlap(a: Tensor, b: Tensor) -> Tensor:
    """Mean over samples of |cos(a_n, b_n)|: zero when every pair is orthogonal."""
    a, b = F.normalize(a.float().flatten(1), dim=1), F.normalize(b.float().flatten(1), dim=1)
    return (a * b).sum(dim=1).abs().mean()


# exp_loss -> the exploration term before its weight, as minimised: -d (away) or mean |cos|
EXPLORATION: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "l1": lambda f_exp, factor_t: -factor_distance(f_exp, factor_t),
    "cosine": cosine_overlap,
}
# split -> the order of the student's channels before the inherit/explore halves
SPLITS: dict[str, Callable[[int], Tensor]] = {"natural": torch.arange, "random": torch.randperm}
AE_MOMENTUM, AE_WEIGHT_DECAY = 0.9, 5e-4  # the official auto-encoder SGD (nesterov)


def last_stage(model: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
    logits, feats = forward_stages(model, x)
    return logits, feats.feats[-1]


@register("iekd")
class IEKD(Method):
    needs_teacher = True
    ae_trained: Tensor
    channel_order: Tensor

    def __init__(
        self,
        *,
        ae_epochs: int,
        ae_lr: float,
        rate: float,
        split: str,
        exp_loss: str,
        ce_weight: float,
        inh_weight: float,
        exp_weight: float,
        **base: Any,
    ) -> None:
        super().__init__(**base)
        self.ae_epochs, self.ae_lr, self.exploration = ae_epochs, ae_lr, EXPLORATION[exp_loss]
        self.ce_weight, self.inh_weight, self.exp_weight = ce_weight, inh_weight, exp_weight
        t_channels, s_channels = self.feature_channels()
        factor = max(1, round(t_channels * rate))
        # Built frozen: the student optimizer (made before epoch 1) never holds these weights.
        self.autoencoder = AutoEncoder(t_channels, factor).requires_grad_(False)
        self.n_inh = s_channels // 2  # the official split: int(C / 2) channels inherit
        self.inherit = coder(self.n_inh, factor)
        self.explore = coder(s_channels - self.n_inh, factor)
        order = SPLITS[split](s_channels)
        self.register_buffer("channel_order", order)  # a resume keeps the same random split
        self.register_buffer("ae_trained", torch.tensor(False))  # a resume skips phase 1

    def feature_channels(self) -> tuple[int, int]:
        """Teacher and student last-stage widths, by a dummy forward pass of each on its own
        device (a job has measured the teacher on the GPU before the student moves there)."""
        t_feat = probe(self.teacher, self.input_shape, "iekd")[1].feats[-1]
        s_feat = probe(self.student, self.input_shape, "iekd")[1].feats[-1]
        return t_feat.shape[1], s_feat.shape[1]

    def train(self, mode: bool = True) -> "IEKD":
        super().train(mode)
        self.autoencoder.eval()  # frozen after phase 1; phase 1 switches it on by itself
        return self

    def begin_epoch(self, epoch: int, ctx: EpochContext) -> None:
        if not bool(self.ae_trained):
            self.train_autoencoder(ctx)
            broadcast_from_main(self.autoencoder)
            ctx.emit("phase", "student phase: inherit and explore", phase="student")

    def train_autoencoder(self, ctx: EpochContext) -> None:
        ae, epochs = self.autoencoder.requires_grad_(True).train(), self.ae_epochs
        opt = torch.optim.SGD(
            ae.parameters(),
            self.ae_lr,
            momentum=AE_MOMENTUM,
            nesterov=True,
            weight_decay=AE_WEIGHT_DECAY,
        )
        for k in range(1, epochs + 1):
            l1 = fit_epoch(ae, lambda x: last_stage(self.teacher, x)[1], opt, ctx)
            message = f"auto-encoder epoch {k}/{epochs}: recon L1 {l1:.4f}"
            data = {"phase": "autoencoder", "ae_epoch": k, "ae_epochs": epochs, "recon_l1": l1}
            ctx.emit("phase", message, **data)
        ae.requires_grad_(False).eval()
        self.ae_trained.fill_(True)

    def losses(self, batch: Batch, epoch: int) -> dict[str, Tensor]:
        images = batch.view()
        logits, feat = last_stage(self.student, images)
        with torch.no_grad():
            factor_t = self.autoencoder.encoder(last_stage(self.teacher, images)[1])
        if feat.shape[-2:] != factor_t.shape[-2:]:
            feat = F.adaptive_avg_pool2d(feat, factor_t.shape[-2:])
        feat = feat.index_select(1, self.channel_order)
        f_inh, f_exp = self.inherit(feat[:, : self.n_inh]), self.explore(feat[:, self.n_inh :])
        ce = F.cross_entropy(logits.float(), batch.labels)
        return {
            "ce": self.ce_weight * ce,
            "inh": self.inh_weight * factor_distance(f_inh, factor_t),
            "exp": self.exp_weight * self.exploration(f_exp, factor_t),
        }
