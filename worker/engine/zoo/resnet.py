"""CIFAR-style ResNets as in RepDistiller / mdistiller `resnet.py`.

Module names match theirs (conv1, bn1, layer1..3, fc) so converted published weights load
as they are. Pooling is adaptive so any input size works.
"""

import torch.nn.functional as F
from torch import Tensor, nn

from worker.engine.zoo.base import StageFeatures, ZooModel
from worker.engine.zoo.registry import register


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample: nn.Module | None = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, planes, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes),
            )

    def forward_preact(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        residual = x if self.downsample is None else self.downsample(x)
        return out + residual

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.forward_preact(x))


class ResNet(ZooModel):
    def __init__(self, depth: int, widths: list[int], num_classes: int, in_channels: int) -> None:
        super().__init__()
        if (depth - 2) % 6 != 0:
            raise ValueError(f"depth must be 6n+2, got {depth}")
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.layer1 = make_stage(widths[0], widths[1], n, stride=1)
        self.layer2 = make_stage(widths[1], widths[2], n, stride=2)
        self.layer3 = make_stage(widths[2], widths[3], n, stride=2)
        self.fc = nn.Linear(widths[3], num_classes)
        init_weights(self)

    def forward_features(self, x: Tensor) -> tuple[Tensor, StageFeatures]:
        x = F.relu(self.bn1(self.conv1(x)))
        preact, feats = [], []
        for stage in (self.layer1, self.layer2, self.layer3):
            pre = stage.forward_preact(x)
            x = F.relu(pre)
            preact.append(pre)
            feats.append(x)
        pooled = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.fc(pooled), StageFeatures(preact, feats, pooled)


class Stage(nn.Sequential):
    """Residual blocks whose last one can hand back its pre-ReLU output (as mdistiller)."""

    def forward_preact(self, x: Tensor) -> Tensor:
        blocks = list(self)
        for block in blocks[:-1]:
            x = block(x)
        last = blocks[-1]
        assert isinstance(last, BasicBlock)
        return last.forward_preact(x)


def make_stage(inplanes: int, planes: int, blocks: int, stride: int) -> Stage:
    layers = [BasicBlock(inplanes, planes, stride)]
    layers += [BasicBlock(planes, planes) for _ in range(blocks - 1)]
    return Stage(*layers)


def init_weights(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


NARROW = [16, 16, 32, 64]
WIDE = [32, 64, 128, 256]
DEPTHS = {
    "resnet8": (8, NARROW),
    "resnet14": (14, NARROW),
    "resnet20": (20, NARROW),
    "resnet32": (32, NARROW),
    "resnet44": (44, NARROW),
    "resnet56": (56, NARROW),
    "resnet110": (110, NARROW),
    "resnet8x4": (8, WIDE),
    "resnet32x4": (32, WIDE),
}


def _register(name: str, depth: int, widths: list[int]) -> None:
    def factory(num_classes: int, in_channels: int) -> ResNet:
        return ResNet(depth, widths, num_classes, in_channels)

    register(name)(factory)


for _name, (_depth, _widths) in DEPTHS.items():
    _register(_name, _depth, _widths)
