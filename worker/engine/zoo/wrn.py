"""CIFAR wide ResNets (Zagoruyko & Komodakis 2016) as in RepDistiller / mdistiller `wrn.py`.

Module names match theirs (conv1, block1..3.layer.N.{bn1,conv1,bn2,conv2,convShortcut}, bn1,
fc) so converted published weights load as they are. Pooling is adaptive so any input size
works.

A WRN block is pre-activation: its output is a plain residual sum, and the BN + ReLU that
follows it is the first thing the next stage (or, after the last stage, the head) does. So a
stage's `preact` is that following BN applied to the stage's output, and `feats` is its ReLU,
exactly what the next stage consumes: `feats == relu(preact)` holds for every stage. This is the
teacher feature mdistiller and the official ReviewKD take with `preact=True`; we compute each BN
once, where they call the next stage's `bn1` a second time (which in training mode also moves
its running statistics twice per step). Logits are the same as theirs.
"""

import torch.nn.functional as F
from torch import Tensor, nn

from worker.engine.zoo.base import StageFeatures, ZooModel
from worker.engine.zoo.registry import register
from worker.engine.zoo.resnet import init_weights


class WideBlock(nn.Module):
    def __init__(self, in_planes: int, out_planes: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.conv2 = nn.Conv2d(out_planes, out_planes, 3, padding=1, bias=False)
        self.convShortcut: nn.Module | None = None
        if in_planes != out_planes:
            self.convShortcut = nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False)

    def forward_activated(self, x: Tensor, act: Tensor) -> Tensor:
        """The block given its input `x` and `act = relu(bn1(x))`, computed by the caller."""
        out = self.conv2(F.relu(self.bn2(self.conv1(act))))
        # As in the original: an identity shortcut carries the raw input, a projection the
        # activated one.
        shortcut = x if self.convShortcut is None else self.convShortcut(act)
        return shortcut + out

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_activated(x, F.relu(self.bn1(x)))


class NetworkBlock(nn.Module):
    """One stage: `blocks` WideBlocks, the first one changing width and stride."""

    def __init__(self, blocks: int, in_planes: int, out_planes: int, stride: int) -> None:
        super().__init__()
        layers = [WideBlock(in_planes, out_planes, stride)]
        layers += [WideBlock(out_planes, out_planes, 1) for _ in range(blocks - 1)]
        self.layer = nn.Sequential(*layers)

    def first(self) -> WideBlock:
        block = self.layer[0]
        assert isinstance(block, WideBlock)
        return block

    def forward_activated(self, x: Tensor, act: Tensor) -> Tensor:
        return self.layer[1:](self.first().forward_activated(x, act))

    def forward(self, x: Tensor) -> Tensor:
        return self.layer(x)


class WideResNet(ZooModel):
    def __init__(self, depth: int, widen: int, num_classes: int, in_channels: int) -> None:
        super().__init__()
        if (depth - 4) % 6 != 0:
            raise ValueError(f"depth must be 6n+4, got {depth}")
        n = (depth - 4) // 6
        widths = [16, 16 * widen, 32 * widen, 64 * widen]
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False)
        self.block1 = NetworkBlock(n, widths[0], widths[1], stride=1)
        self.block2 = NetworkBlock(n, widths[1], widths[2], stride=2)
        self.block3 = NetworkBlock(n, widths[2], widths[3], stride=2)
        self.bn1 = nn.BatchNorm2d(widths[3])
        self.fc = nn.Linear(widths[3], num_classes)
        init_weights(self)
        nn.init.zeros_(self.fc.bias)

    def forward_features(self, x: Tensor) -> tuple[Tensor, StageFeatures]:
        out = self.block1(self.conv1(x))
        preact, feats = [], []
        for stage in (self.block2, self.block3, None):
            norm = self.bn1 if stage is None else stage.first().bn1
            pre = norm(out)
            act = F.relu(pre)
            preact.append(pre)
            feats.append(act)
            if stage is not None:
                out = stage.forward_activated(out, act)
        pooled = F.adaptive_avg_pool2d(feats[-1], 1).flatten(1)
        return self.fc(pooled), StageFeatures(preact, feats, pooled)


VARIANTS = {"wrn_16_1": (16, 1), "wrn_16_2": (16, 2), "wrn_40_1": (40, 1), "wrn_40_2": (40, 2)}


def _register(name: str, depth: int, widen: int) -> None:
    def factory(num_classes: int, in_channels: int) -> WideResNet:
        return WideResNet(depth, widen, num_classes, in_channels)

    register(name)(factory)


for _name, (_depth, _widen) in VARIANTS.items():
    _register(_name, _depth, _widen)
