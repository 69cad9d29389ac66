"""KDCL's ensemble teachers (Guo et al. 2020): pure functions of the peers' logits, and the
pass over the held-out part of the training split that measures the peers and estimates the
"general" ensemble's error covariance.

Logits come stacked as (m, N, C) (peer, sample, class); everything runs in float32 (the
linear solve in float64) with autocast off, because the small solves here would lose their
accuracy in bf16.
"""

import functools
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from worker.engine.data.images import Images
from worker.engine.device import autocast, memory_format
from worker.engine.methods.base import EpochContext
from worker.engine.zoo.base import eval_mode


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


def linear_weights(logits: Tensor, labels: Tensor) -> Tensor:
    """w on the simplex minimising f(w) = CE(sum_i w_i z_i, y): projected Newton, to optimality.

    f is convex in only m <= 8 unknowns. Its value, gradient and Hessian are reduced in float64
    where the logits are (a GPU streams the (m, N, C) array far faster than the host); the
    tiny m x m step is solved on the host. Each Newton step minimises f's exact quadratic
    model over the simplex, exactly: the model's stationary point on each of the 2^m - 1
    faces comes from one small batched KKT solve, and the best feasible one is the step. A
    backtracking line search keeps every iterate feasible and f decreasing, and near the
    optimum the full step is taken, so convergence is quadratic. It stops once the Frank-Wolfe gap
    max_i g.(w - e_i) >= f(w) - f* (convexity) certifies the optimum to _GAP nats. It starts
    from the best of the uniform mix and the single peers, and a single peer (a vertex) is
    still returned if it is better, so the mix never loses to the best peer. Unlike a
    general solver (SLSQP stops on small changes of f, and a first-order method takes
    thousands of steps on ill-conditioned batches), this lands exactly on a face of the
    simplex, needs 3-5 Hessians, and is deterministic.
    """
    with torch.autocast(logits.device.type, enabled=False):
        z = _margins(logits.detach(), labels)
        vertices = torch.logsumexp(z, dim=2).mean(dim=1)
        w, f = _newton(z, *_start(z, vertices))
        if vertices.min() < f:
            w = _vertex(z, int(vertices.argmin()))
    return w.float()


_GAP = 1e-12  # the Frank-Wolfe gap to stop at, in nats
_MAX_STEPS = 100


def _margins(logits: Tensor, labels: Tensor) -> Tensor:
    """(m, N, C) float64 z_i[n, c] - z_i[n, y_n], on the logits' device: CE(s) is then
    logsumexp(s)."""
    z = logits.to(torch.float64)
    y = labels.to(z.device).view(1, -1, 1).expand(len(z), -1, 1)
    return z - z.gather(2, y)


def _vertex(z: Tensor, i: int) -> Tensor:
    return torch.eye(len(z), dtype=z.dtype, device=z.device)[i]


def _objective(w: Tensor, z: Tensor) -> Tensor:
    return torch.logsumexp(torch.tensordot(w, z, dims=1), dim=1).mean()


def _start(z: Tensor, vertices: Tensor) -> tuple[Tensor, Tensor]:
    """The better of the uniform mix and the best single peer, and its f."""
    m = len(z)
    uniform = torch.full((m,), 1.0 / m, dtype=z.dtype, device=z.device)
    f = _objective(uniform, z)
    if f <= vertices.min():
        return uniform, f
    return _vertex(z, int(vertices.argmin())), vertices.min()


def _newton(z: Tensor, w: Tensor, f: Tensor) -> tuple[Tensor, Tensor]:
    """Newton steps from w (f = f(w)) until the Frank-Wolfe gap g.w - min_i g_i <= _GAP."""
    for _ in range(_MAX_STEPS):
        p = torch.softmax(torch.tensordot(w, z, dims=1), dim=1)
        mean = (z * p).sum(dim=2)  # E_p[z_i] of every sample
        g = mean.mean(dim=1)
        if g @ w - g.min() <= _GAP:
            break
        v = _newton_target(w, g, _hessian(z, p, mean))
        step = _line_search(z, w, v, f, g @ (v - w))
        if step is None:
            break  # no descent left in float64
        w, f = step
    return w, f


def _hessian(z: Tensor, p: Tensor, mean: Tensor) -> Tensor:
    """f's Hessian E_n Cov_p(z_i, z_j), centred first so that it stays accurate."""
    m, n, _ = z.shape
    centred = (z - mean[:, :, None]).mul_(p.sqrt()).view(m, -1)
    return centred @ centred.T / n


def _line_search(
    z: Tensor, w: Tensor, v: Tensor, f: Tensor, slope: Tensor
) -> tuple[Tensor, Tensor] | None:
    """Backtracking (Armijo) from the full step w -> v; None if no step lowers f."""
    t = 1.0
    while slope < 0 and t > 1e-12:
        trial = ((1 - t) * w + t * v).clamp_min(0)
        trial = trial / trial.sum()
        f_trial = _objective(trial, z)
        if f_trial <= f + 1e-4 * t * slope:
            return trial, f_trial
        t /= 2
    return None


def _newton_target(w: Tensor, g: Tensor, h: Tensor) -> Tensor:
    """argmin_v g.(v - w) + (v - w)^T h (v - w) / 2 over the simplex, exactly, solved on the
    host; h + lambda I (lambda tiny) keeps the faces' solves regular where peers (nearly)
    coincide."""
    device, (w, g, h) = w.device, (t.cpu() for t in (w, g, h))
    m = len(w)
    h = h + (1e-9 * h.trace() / m + 1e-12) * torch.eye(m, dtype=h.dtype)
    return _simplex_qp(g - h @ w, h).to(device)


def _simplex_qp(c: Tensor, h: Tensor) -> Tensor:
    """argmin_v c.v + v^T h v / 2 over the simplex, h positive definite: the stationary point
    of every face (with v = 0 off it and sum v = 1), and the lowest feasible one."""
    m = len(c)
    face = _faces(m).to(h.dtype)
    kkt = torch.zeros(len(face), m + 1, m + 1, dtype=h.dtype)
    kkt[:, :m, :m] = face[:, :, None] * h * face[:, None, :] + torch.diag_embed(1 - face)
    kkt[:, :m, m] = kkt[:, m, :m] = face
    rhs = torch.cat([-face * c, torch.ones(len(face), 1, dtype=h.dtype)], dim=1)
    v = torch.linalg.solve(kkt, rhs)[:, :m]
    q = v @ c + ((v @ h) * v).sum(dim=1) / 2
    q[~((v >= 0).all(dim=1) & q.isfinite())] = torch.inf
    return v[q.argmin()]


@functools.cache
def _faces(m: int) -> Tensor:
    """(2^m - 1, m) 0/1 masks of the simplex's faces, the vertices first."""
    masks = (torch.arange(1, 2**m)[:, None] >> torch.arange(m)) & 1
    return masks[masks.sum(dim=1).argsort(stable=True)]


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


def covariance(models: Sequence[nn.Module], held: Images, ctx: EpochContext) -> Tensor:
    """C_ij = E[(p_i - onehot(y)) . (p_j - onehot(y))] over (x, y) (the held-out part of the
    training split), each model in eval mode on the same images, p = softmax(z) at T = 1 (C
    estimates the ensemble's error on the labels, which are a T = 1 distribution)."""
    return holdout_pass(models, held, ctx)[0]


@torch.no_grad()
def holdout_pass(
    models: Sequence[nn.Module], held: Images, ctx: EpochContext
) -> tuple[Tensor, list[float]]:
    """The covariance above and each model's accuracy on `held`, from one pass."""
    n = len(models)
    gram = torch.zeros(n, n, device=ctx.device)
    correct = torch.zeros(n, device=ctx.device)
    with eval_mode(*models):
        for xb, yb in held.ordered(ctx.batch_size):
            ctx.check_stop()
            xb = xb.contiguous(memory_format=memory_format(xb.device))
            with autocast(xb.device, ctx.precision):
                probs = torch.stack([F.softmax(m(xb).float(), dim=1) for m in models])
            gram += error_gram(probs, yb)
            correct += (probs.argmax(dim=2) == yb).sum(dim=1)
    return gram / len(held), (correct / len(held)).tolist()
