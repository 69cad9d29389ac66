"""CIFAR ShuffleNets as in RepDistiller / mdistiller: `ShuffleV1` (groups 3), `ShuffleV2` (1x).

Both have a 1x1 stem to 24 channels at full resolution and three stages that each start by
halving the map; module names match theirs. Weights keep PyTorch's default init, as theirs.

Stages: layer1..layer3 (3 stages).
- ShuffleV1: a stage ends with a residual block whose output is ReLU(sum) (or ReLU(concat)
  when it downsamples); preact is the sum before that ReLU, as mdistiller.
- ShuffleV2: a stage ends with a split block, out = shuffle(cat[x1, ReLU(branch(x2))]).
  Here preact = shuffle(cat[x1, branch(x2)]): the same channel order as feats, so feats ==
  ReLU(preact) exactly (x1 is the previous block's output, already >= 0). mdistiller's
  preact is the same tensor before the shuffle, i.e. a channel permutation of ours.

Tiny inputs: downsampling is by padded 3x3 stride-2 convs and 3x3 stride-2 padded average
pools, which never shrink a side below one pixel; the head pools adaptively (theirs is a
fixed 4x4 average pool, the same thing at 32x32).
"""

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from worker.engine.zoo.base import StageFeatures, ZooModel
from worker.engine.zoo.registry import register

STEM = 24


def channel_shuffle(x: Tensor, groups: int) -> Tensor:
    n, c, h, w = x.shape
    return x.reshape(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


def conv(inp: int, oup: int, kernel: int = 1, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    return nn.Conv2d(inp, oup, kernel, stride, kernel // 2, groups=groups, bias=False)


class PreactBlock(nn.Module):
    """A block that can hand back its output before the final ReLU."""

    def forward_preact(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.forward_preact(x))


class Stage(nn.Sequential):
    def forward_preact(self, x: Tensor) -> Tensor:
        *body, last = self
        for block in body:
            x = block(x)
        assert isinstance(last, PreactBlock)
        return last.forward_preact(x)


class Bottleneck(PreactBlock):
    """ShuffleNetV1 unit: grouped 1x1, shuffle, depthwise 3x3, grouped 1x1, plus shortcut."""

    def __init__(self, in_planes: int, out_planes: int, stride: int, groups: int) -> None:
        super().__init__()
        mid = out_planes // 4
        self.groups_in = 1 if in_planes == STEM else groups  # the 24-wide stem is not split
        self.stride = stride
        self.conv1 = conv(in_planes, mid, groups=self.groups_in)
        self.bn1 = nn.BatchNorm2d(mid)
        self.conv2 = conv(mid, mid, 3, stride, groups=mid)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = conv(mid, out_planes, groups=groups)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.shortcut = nn.Sequential()
        if stride == 2:
            self.shortcut = nn.Sequential(nn.AvgPool2d(3, stride=2, padding=1))

    def forward_preact(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = channel_shuffle(out, self.groups_in)
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        res = self.shortcut(x)
        return torch.cat([out, res], 1) if self.stride == 2 else out + res


class ShuffleNetV1(ZooModel):
    def __init__(
        self,
        widths: tuple[int, ...],
        blocks: tuple[int, ...],
        groups: int,
        num_classes: int,
        in_channels: int,
    ) -> None:
        super().__init__()
        self.conv1 = conv(in_channels, STEM)
        self.bn1 = nn.BatchNorm2d(STEM)
        ins = (STEM, *widths[:-1])
        stages = [v1_stage(i, o, n, groups) for i, o, n in zip(ins, widths, blocks, strict=True)]
        self.layer1, self.layer2, self.layer3 = stages
        self.linear = nn.Linear(widths[-1], num_classes)

    def forward_features(self, x: Tensor) -> tuple[Tensor, StageFeatures]:
        x = F.relu(self.bn1(self.conv1(x)))
        preact, feats = run_stages(x, (self.layer1, self.layer2, self.layer3))
        pooled = F.adaptive_avg_pool2d(feats[-1], 1).flatten(1)
        return self.linear(pooled), StageFeatures(preact, feats, pooled)


def v1_stage(in_planes: int, out_planes: int, blocks: int, groups: int) -> Stage:
    # The downsampling unit concatenates its shortcut, so its branch makes only the rest.
    layers = [Bottleneck(in_planes, out_planes - in_planes, 2, groups)]
    layers += [Bottleneck(out_planes, out_planes, 1, groups) for _ in range(blocks - 1)]
    return Stage(*layers)


def run_stages(x: Tensor, stages: tuple[nn.Module, ...]) -> tuple[list[Tensor], list[Tensor]]:
    preact, feats = [], []
    for stage in stages:
        assert isinstance(stage, Stage)
        pre = stage.forward_preact(x)
        x = F.relu(pre)
        preact.append(pre)
        feats.append(x)
    return preact, feats


class SplitBlock(PreactBlock):
    """ShuffleNetV2 basic unit: half the channels pass, the other half go through a branch."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        half = channels // 2
        self.conv1 = conv(half, half)
        self.bn1 = nn.BatchNorm2d(half)
        self.conv2 = conv(half, half, 3, groups=half)
        self.bn2 = nn.BatchNorm2d(half)
        self.conv3 = conv(half, half)
        self.bn3 = nn.BatchNorm2d(half)

    def branch(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return self.bn3(self.conv3(self.bn2(self.conv2(out))))

    def forward_preact(self, x: Tensor) -> Tensor:
        x1, x2 = x.chunk(2, dim=1)
        return channel_shuffle(torch.cat([x1, self.branch(x2)], 1), 2)

    def forward(self, x: Tensor) -> Tensor:
        x1, x2 = x.chunk(2, dim=1)
        return channel_shuffle(torch.cat([x1, F.relu(self.branch(x2))], 1), 2)


class DownBlock(nn.Module):
    """ShuffleNetV2 downsampling unit: two stride-2 branches, concatenated and shuffled."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        mid = out_channels // 2
        self.conv1 = conv(in_channels, in_channels, 3, 2, groups=in_channels)
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv2 = conv(in_channels, mid)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = conv(in_channels, mid)
        self.bn3 = nn.BatchNorm2d(mid)
        self.conv4 = conv(mid, mid, 3, 2, groups=mid)
        self.bn4 = nn.BatchNorm2d(mid)
        self.conv5 = conv(mid, mid)
        self.bn5 = nn.BatchNorm2d(mid)

    def forward(self, x: Tensor) -> Tensor:
        left = F.relu(self.bn2(self.conv2(self.bn1(self.conv1(x)))))
        right = F.relu(self.bn3(self.conv3(x)))
        right = F.relu(self.bn5(self.conv5(self.bn4(self.conv4(right)))))
        return channel_shuffle(torch.cat([left, right], 1), 2)


class ShuffleNetV2(ZooModel):
    def __init__(
        self, widths: tuple[int, ...], blocks: tuple[int, ...], num_classes: int, in_channels: int
    ) -> None:
        super().__init__()
        self.conv1 = conv(in_channels, STEM)
        self.bn1 = nn.BatchNorm2d(STEM)
        ins = (STEM, *widths[:2])
        stages = [
            Stage(DownBlock(i, o), *(SplitBlock(o) for _ in range(n)))
            for i, o, n in zip(ins, widths[:3], blocks, strict=True)
        ]
        self.layer1, self.layer2, self.layer3 = stages
        self.conv2 = conv(widths[2], widths[3])
        self.bn2 = nn.BatchNorm2d(widths[3])
        self.linear = nn.Linear(widths[3], num_classes)

    def forward_features(self, x: Tensor) -> tuple[Tensor, StageFeatures]:
        x = F.relu(self.bn1(self.conv1(x)))
        preact, feats = run_stages(x, (self.layer1, self.layer2, self.layer3))
        x = F.relu(self.bn2(self.conv2(feats[-1])))
        pooled = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.linear(pooled), StageFeatures(preact, feats, pooled)


@register("shufflenetv1")
def shufflenetv1(num_classes: int, in_channels: int) -> ShuffleNetV1:
    return ShuffleNetV1((240, 480, 960), (4, 8, 4), 3, num_classes, in_channels)


@register("shufflenetv2")
def shufflenetv2(num_classes: int, in_channels: int) -> ShuffleNetV2:
    return ShuffleNetV2((116, 232, 464, 1024), (3, 7, 3), num_classes, in_channels)
