"""A small conv net for tiny inputs (8x8 digits): fast enough to train in tests on a CPU."""

import torch.nn.functional as F
from torch import Tensor, nn

from worker.engine.zoo.base import StageFeatures, ZooModel
from worker.engine.zoo.registry import register
from worker.engine.zoo.resnet import init_weights


class ConvStage(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.bn(self.conv(x))


class SmallCNN(ZooModel):
    def __init__(self, num_classes: int, in_channels: int, widths: tuple[int, ...]) -> None:
        super().__init__()
        strides = [1] + [2] * (len(widths) - 1)
        ins = [in_channels, *widths[:-1]]
        self.stages = nn.ModuleList(
            ConvStage(i, o, s) for i, o, s in zip(ins, widths, strides, strict=True)
        )
        self.fc = nn.Linear(widths[-1], num_classes)
        init_weights(self)

    def forward_features(self, x: Tensor) -> tuple[Tensor, StageFeatures]:
        preact, feats = [], []
        for stage in self.stages:
            pre = stage(x)
            x = F.relu(pre)
            preact.append(pre)
            feats.append(x)
        pooled = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.fc(pooled), StageFeatures(preact, feats, pooled)


@register("cnn_small")
def cnn_small(num_classes: int, in_channels: int) -> SmallCNN:
    return SmallCNN(num_classes, in_channels, widths=(16, 32, 64))
