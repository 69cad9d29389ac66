"""IE-KD's factor modules, as in the official code (aliyun/Revisiting-Knowledge-Distillation).

A coder is three 3x3 conv + BN + LeakyReLU(0.1) layers, channels cin -> cin -> cout -> cout,
behind a leading LeakyReLU (a no-op on post-ReLU features). The decoder ends with the same
LeakyReLU: its target, a post-ReLU feature map, is >= 0, so a small negative slope costs little.
"""

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from worker.engine.data import augment_batch
from worker.engine.device import autocast
from worker.engine.methods.base import EpochContext
from worker.engine.zoo.resnet import init_weights


def coder(cin: int, cout: int) -> nn.Sequential:
    layers: list[nn.Module] = [nn.LeakyReLU(0.1)]
    for i, o in ((cin, cin), (cin, cout), (cout, cout)):
        layers += [nn.Conv2d(i, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.LeakyReLU(0.1)]
    net = nn.Sequential(*layers)
    init_weights(net)  # kaiming fan_out, BN (1, 0): the official init
    return net


class AutoEncoder(nn.Module):
    """Teacher feature (C channels) -> factor (`factor_channels`) -> reconstruction (C)."""

    def __init__(self, channels: int, factor_channels: int) -> None:
        super().__init__()
        self.encoder = coder(channels, factor_channels)
        self.decoder = coder(factor_channels, channels)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        factor = self.encoder(x)
        return factor, self.decoder(factor)


def fit_epoch(
    ae: AutoEncoder,
    features: Callable[[Tensor], Tensor],
    opt: torch.optim.Optimizer,
    ctx: EpochContext,
) -> float:
    """One epoch of L1 reconstruction (sum |.| / numel) of `features(view)`; the mean loss."""
    total, seen = torch.zeros((), device=ctx.device), 0
    for x, _ in ctx.train_batches():
        ctx.check_stop()
        view = augment_batch(x, ctx.augment, ctx.normalise, ctx.generator)
        with autocast(x.device, ctx.precision):
            with torch.no_grad():
                target = features(view)
            loss = F.l1_loss(ae(target)[1].float(), target.float())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        total, seen = total + loss.detach() * len(x), seen + len(x)
    return (total / max(seen, 1)).item()
