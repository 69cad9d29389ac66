"""Xu & Liu 2019, "Data-Distortion Guided Self-Distillation for Deep Neural Networks".

One network sees two distorted views a, b of each image. With p = softmax(z / T) and f the
pooled penultimate feature:
    "ce":  CE(z_a, y) + CE(z_b, y)
    "kl":  kl_weight * T^2 * [KL(p_a || p_b) + KL(p_b || p_a)]  (each target detached by default)
    "mmd": mmd_weight * MMD^2(f_a, f_b)
T^2 is Hinton's scale correction; it is 1 at the paper's T = 1.
"""

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from worker.engine.methods.base import Batch, Method
from worker.engine.methods.kd import kd_loss
from worker.engine.methods.registry import register
from worker.engine.zoo.base import forward_stages, has_stages


def symmetric_kl(z_a: Tensor, z_b: Tensor, temperature: float, detach_targets: bool) -> Tensor:
    """T^2 * [KL(p_a || p_b) + KL(p_b || p_a)]; the target side of each KL detached if asked."""
    t_a, t_b = (z_a.detach(), z_b.detach()) if detach_targets else (z_a, z_b)
    return kd_loss(z_b, t_a, temperature) + kd_loss(z_a, t_b, temperature)


def mmd_linear(f_a: Tensor, f_b: Tensor) -> Tensor:
    """||mean f_a - mean f_b||^2: MMD^2 with the linear kernel."""
    return (f_a.float().mean(dim=0) - f_b.float().mean(dim=0)).square().sum()


def sq_distances(x: Tensor, y: Tensor) -> Tensor:
    with torch.autocast(x.device.type, enabled=False):
        d = x.square().sum(1)[:, None] + y.square().sum(1)[None, :] - 2 * x @ y.T
    return d.clamp_min(0)  # rounding can dip below zero on the diagonal


def median_distance(f: Tensor) -> Tensor:
    """The median distance over distinct pairs of rows (detached): the bandwidth heuristic."""
    f = f.detach()
    i, j = torch.triu_indices(len(f), len(f), offset=1, device=f.device)
    return sq_distances(f, f)[i, j].sqrt().median().clamp_min(1e-6)


def mmd_gaussian(f_a: Tensor, f_b: Tensor, sigma: float | None) -> Tensor:
    """Biased MMD^2 with k(x, y) = exp(-||x - y||^2 / (2 sigma^2)); sigma None: the median
    distance among the 2N pooled features."""
    f_a, f_b = f_a.float(), f_b.float()
    s = median_distance(torch.cat([f_a, f_b])) if sigma is None else float(sigma)

    def k(x: Tensor, y: Tensor) -> Tensor:
        return torch.exp(-sq_distances(x, y) / (2 * s**2)).mean()

    return k(f_a, f_a) + k(f_b, f_b) - 2 * k(f_a, f_b)


# mmd_kernel -> MMD^2(f_a, f_b, sigma)
KERNELS: dict[str, Callable[[Tensor, Tensor, float | None], Tensor]] = {
    "linear": lambda f_a, f_b, _sigma: mmd_linear(f_a, f_b),
    "gaussian": mmd_gaussian,
}


@register("ddgsd")
class DDGSD(Method):
    needs_teacher = False

    def __init__(
        self,
        *,
        kl_weight: float,
        mmd_weight: float,
        temperature: float,
        detach_targets: bool,
        mmd_kernel: str,
        mmd_sigma: float | None,
        **base: Any,
    ) -> None:
        super().__init__(**base)
        if not has_stages(self.student):
            raise ValueError("ddgsd needs a model with stage features: it reads the pooled one")
        self.kl_weight, self.mmd_weight, self.temperature = kl_weight, mmd_weight, temperature
        self.detach_targets, self.mmd = detach_targets, KERNELS[mmd_kernel]
        self.mmd_sigma = mmd_sigma

    def losses(self, batch: Batch, epoch: int) -> dict[str, Tensor]:
        # One forward over both views: BatchNorm sees the 2N images together.
        views = torch.cat([batch.view(), batch.view()])
        logits, stages = forward_stages(self.student, views)
        (z_a, z_b), (f_a, f_b) = logits.chunk(2), stages.pooled.chunk(2)
        kl = symmetric_kl(z_a, z_b, self.temperature, self.detach_targets)
        return {
            "ce": F.cross_entropy(z_a.float(), batch.labels)
            + F.cross_entropy(z_b.float(), batch.labels),
            "kl": self.kl_weight * kl,
            "mmd": self.mmd_weight * self.mmd(f_a, f_b, self.mmd_sigma),
        }
