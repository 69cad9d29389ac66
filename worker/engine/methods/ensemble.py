"""KDCL's ensemble teachers (Guo et al. 2020): pure functions of the peers' logits, and the
validation pass that estimates the "general" ensemble's error covariance.

Logits come stacked as (m, N, C) (peer, sample, class); everything runs in float32 with
autocast off, because the small solves here would lose their accuracy in bf16.
"""

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from worker.engine.data import batches
from worker.engine.device import autocast, memory_format
from worker.engine.methods.base import EpochContext
from worker.engine.models.base import eval_mode


def peer_ce(logits: Tensor, labels: Tensor) -> Tensor:
    """(m, N) cross-entropy of every peer on every sample."""
    m, n, c = logits.shape
    ce = F.cross_entropy(logits.reshape(m * n, c).float(), labels.repeat(m), reduction="none")
    return ce.view(m, n)


def naive(logits: Tensor, labels: Tensor, per: str) -> Tensor:
    """The logits of the peer with the lowest CE, over the batch or for each sample."""
    ce = peer_ce(logits, labels)
    if per == "batch":
        return logits[ce.mean(dim=1).argmin()].float()
    if per == "sample":
        best = ce.argmin(dim=0)
        return logits[best, torch.arange(len(labels), device=logits.device)].float()
    raise ValueError(f"unknown naive_per {per!r}; known: batch, sample")


def min_logit(logits: Tensor, labels: Tensor) -> Tensor:
    """z_t[c] = min_i (z_i[c] - z_i[y]): each class at its least confusing peer; z_t[y] = 0."""
    z = logits.float()
    true = z.gather(2, labels.view(1, -1, 1).expand(z.shape[0], -1, 1))
    return (z - true).amin(dim=0)


def combine(weights: Tensor, logits: Tensor) -> Tensor:
    with torch.autocast(logits.device.type, enabled=False):
        return torch.einsum("i,inc->nc", weights.float(), logits.float())


def linear_weights(logits: Tensor, labels: Tensor, steps: int) -> Tensor:
    """w on the simplex minimising CE(sum_i w_i z_i, y): exponentiated gradient from uniform.

    The CE's curvature along the simplex is at most L = mean_n max_i range_c(z_i[n])^2 / 4
    in the l1 norm (Popoviciu), so the step 1/L lowers the CE at every step (Pinsker). A few
    steps need not reach the optimum: a single peer (a vertex) is returned if still better.
    """
    z = logits.float()
    m = z.shape[0]
    target = F.one_hot(labels, z.shape[2]).float()
    spread = (z.amax(dim=2) - z.amin(dim=2)).amax(dim=0)
    step = 4.0 / spread.square().mean().clamp_min(1e-12)
    w = z.new_full((m,), 1.0 / m)
    for _ in range(steps):
        error = F.softmax(combine(w, z), dim=1) - target
        with torch.autocast(z.device.type, enabled=False):
            grad = torch.einsum("inc,nc->i", z, error) / len(labels)
        w = w * torch.exp(-step * (grad - grad.min()))
        w = w / w.sum()
    candidates = torch.cat([w[None], torch.eye(m, device=z.device)])
    ce = torch.stack([F.cross_entropy(combine(c, z), labels) for c in candidates])
    return candidates[ce.argmin()]


def error_gram(probs: Tensor, labels: Tensor) -> Tensor:
    """(m, m) sum over samples of (p_i - onehot(y)) . (p_j - onehot(y)); probs is (m, N, C)."""
    error = probs.float() - F.one_hot(labels, probs.shape[2]).float()
    with torch.autocast(probs.device.type, enabled=False):
        return torch.einsum("inc,jnc->ij", error, error)


def general_weights(covariance: Tensor, eps: float) -> Tensor:
    """w = C^-1 1 / (1^T C^-1 1) with C + eps*I (Perrone & Cooper's generalised ensemble).

    Unconstrained in sign: a weight may be negative, as in the closed form.
    """
    c = covariance.double()
    c = c + eps * torch.eye(len(c), dtype=c.dtype, device=c.device)
    w = torch.linalg.solve(c, torch.ones(len(c), 1, dtype=c.dtype, device=c.device)).squeeze(1)
    return (w / w.sum()).float()


def validation_covariance(models: Sequence[nn.Module], ctx: EpochContext) -> Tensor:
    """C_ij = E[(p_i - onehot(y)) . (p_j - onehot(y))] over the validation split, each model
    in eval mode on the same images, p = softmax(z) at T = 1 (C estimates the ensemble's
    error on the labels, which are a T = 1 distribution)."""
    return validation_pass(models, ctx)[0]


@torch.no_grad()
def validation_pass(models: Sequence[nn.Module], ctx: EpochContext) -> tuple[Tensor, list[float]]:
    """The covariance above and each model's validation accuracy, from one pass."""
    n = len(models)
    gram = torch.zeros(n, n, device=ctx.val_x.device)
    correct = torch.zeros(n, device=ctx.val_x.device)
    with eval_mode(*models):
        for x, y in batches(ctx.val_x, ctx.val_y, ctx.batch_size, shuffle=False):
            ctx.check_stop()
            x = x.contiguous(memory_format=memory_format(x.device))
            with autocast(x.device, ctx.precision):
                probs = torch.stack([F.softmax(m(x).float(), dim=1) for m in models])
            gram += error_gram(probs, y)
            correct += (probs.argmax(dim=2) == y).sum(dim=1)
    return gram / len(ctx.val_y), (correct / len(ctx.val_y)).tolist()
