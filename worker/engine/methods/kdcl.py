"""Guo et al. 2020, "Online Knowledge Distillation via Collaborative Learning" (KDCL).

m peers train together from scratch, each on its own augmented view. A teacher z_t built
from their logits (`ensemble.py`) is detached; peer i minimises
    CE(z_i, y) + kd_weight * T^2 * KL(softmax(z_t / T) || softmax(z_i / T)).
Terms are per peer, "ce_{i}" and "kd_{i}"; peer 0 is the student passed in. The output is
the peer with the best accuracy on the held-out part of the training split (never on the
validation split the job reports) when the job keeps one, else the student; the others are
kept as artifacts. The "general" ensemble's error covariance is estimated on that held-out
part (it always has one: admission refuses general without).
"""

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from worker.engine.evaluate import evaluate
from worker.engine.methods import ensemble as ens
from worker.engine.methods.base import Batch, EpochContext, Method
from worker.engine.methods.kd import kd_loss
from worker.engine.methods.registry import register
from worker.engine.zoo import build_model
from worker.engine.zoo.base import probe


def peer_loss(
    logits: Tensor, target: Tensor, labels: Tensor, temperature: float, kd_weight: float
) -> tuple[Tensor, Tensor]:
    """(CE(z_i, y), kd_weight * T^2 * KL(p_t || p_i)) for one peer against the ensemble."""
    ce = F.cross_entropy(logits.float(), labels)
    return ce, kd_weight * kd_loss(logits, target.detach(), temperature)


def head_shape(model: nn.Module, input_shape: tuple[int, int, int]) -> tuple[int, int]:
    """(num_classes, in_channels) of the student, by a dummy forward pass (no hand table)."""
    logits, _ = probe(model, input_shape, "kdcl")
    return logits.shape[1], input_shape[0]


@register("kdcl")
class KDCL(Method):
    needs_teacher = False
    best_peer: Tensor  # buffers: a resume restores the chosen peer and the ensemble weights
    ensemble_weights: Tensor

    def __init__(
        self,
        *,
        peers: list[str],
        ensemble: str,
        naive_per: str,
        temperature: float,
        kd_weight: float,
        general_eps: float,
        **base: Any,
    ) -> None:
        super().__init__(**base)
        self.kind = ensemble  # a key of ENSEMBLES
        self.naive_per, self.temperature = naive_per, temperature
        self.kd_weight, self.general_eps = kd_weight, general_eps
        num_classes, in_channels = head_shape(self.student, self.input_shape)
        self.peers = nn.ModuleList(build_model(a, num_classes, in_channels) for a in peers)
        m = len(peers) + 1
        self.register_buffer("best_peer", torch.zeros((), dtype=torch.long))
        self.register_buffer("ensemble_weights", torch.full((m,), 1 / m))
        self._linear_w: list[Tensor] = []  # this epoch's linear-ensemble weights, for logging
        # general: the covariance measured with each epoch's accuracies, for the next epoch
        self._covariance: Tensor | None = None

    def members(self) -> list[nn.Module]:
        return [self.student, *self.peers]

    def losses(self, batch: Batch, epoch: int) -> dict[str, Tensor]:
        logits = [peer(batch.view()) for peer in self.members()]  # a view of its own each
        with torch.no_grad():
            stacked = torch.stack([z.float() for z in logits])
            target = ENSEMBLES[self.kind](self, stacked, batch.labels)
        t, w = self.temperature, self.kd_weight
        terms = {}
        for i, z in enumerate(logits):
            terms[f"ce_{i}"], terms[f"kd_{i}"] = peer_loss(z, target, batch.labels, t, w)
        return terms

    def linear_target(self, logits: Tensor, labels: Tensor) -> Tensor:
        weights = ens.linear_weights(logits, labels)
        self._linear_w.append(weights)
        return ens.combine(weights, logits)

    def begin_epoch(self, epoch: int, ctx: EpochContext) -> None:
        self._linear_w = []
        if self.kind == "general":
            covariance = self._covariance  # the same weights as at the last epoch's end
            if covariance is None:  # the first epoch, or the first after a resume
                covariance = ens.covariance(self.members(), ctx.holdout("kdcl"), ctx)
            self._covariance = None
            self.ensemble_weights.copy_(ens.general_weights(covariance, self.general_eps))
            weights = self.ensemble_weights.tolist()
            ctx.emit("info", f"kdcl general ensemble weights {weights}", weights=weights)

    def end_epoch(self, epoch: int, ctx: EpochContext) -> dict[str, float]:
        metrics = self.choose_output(ctx) if ctx.holdout_images is not None else {}
        if self._linear_w:
            self.ensemble_weights.copy_(torch.stack(self._linear_w).mean(dim=0))
        if self.kind in ("linear", "general"):
            weights = self.ensemble_weights.tolist()
            metrics |= {f"ensemble_w{i}": w for i, w in enumerate(weights)}
        return metrics

    def choose_output(self, ctx: EpochContext) -> dict[str, float]:
        """The peer best on the held-out part becomes the output; without one the student
        (peer 0) stays it."""
        held = ctx.holdout("kdcl")
        if self.kind == "general":  # one pass: the accuracies and the next epoch's covariance
            self._covariance, accs = ens.holdout_pass(self.members(), held, ctx)
        else:
            evals = [
                evaluate(p, held, ctx.batch_size, ctx.device, ctx.precision) for p in self.members()
            ]
            accs = [e["val_acc"] for e in evals]
        best = max(range(len(accs)), key=lambda i: accs[i])  # the first of ties
        self.best_peer.fill_(best)
        metrics = {f"peer{i}_holdout_acc": acc for i, acc in enumerate(accs)}
        return metrics | {"best_peer": float(best)}

    def output_model(self) -> nn.Module:
        return self.members()[int(self.best_peer)]

    def extra_models(self) -> dict[str, nn.Module]:
        best = int(self.best_peer)
        return {
            f"peer{i}_{(getattr(p, 'arch', '') or type(p).__name__).replace('/', '-')}": p
            for i, p in enumerate(self.members())
            if i != best
        }


# ensemble -> the teacher logits z_t from the peers' (m, N, C) logits and the labels
ENSEMBLES: dict[str, Callable[[KDCL, Tensor, Tensor], Tensor]] = {
    "naive": lambda kdcl, z, y: ens.naive(z, y, kdcl.naive_per),
    "linear": KDCL.linear_target,
    "minlogit": lambda _kdcl, z, y: ens.min_logit(z, y),
    "general": lambda kdcl, z, _y: ens.combine(kdcl.ensemble_weights, z),
}
