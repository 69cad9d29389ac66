"""CIFAR MobileNetV2 as in RepDistiller / mdistiller `mobilenetv2.py` (from the RCO paper).

"mobilenetv2_half" is their `mobile_half` (expansion T=6, width 0.5): the network the KD
tables (CRD, ReviewKD, DKD: "MobileNetV2", ~0.81M params at 100 classes) use. "mobilenetv2"
is the same recipe at width 1.0 (`mobilenetv2_T_w(6, 1.0)`). Both keep their 1280-wide last
conv and their stride-2 stem, so a 32x32 image ends at 2x2. Module names match theirs.

Stages: the outputs of blocks[1], [2], [4] and [6] (4 stages, their `get_stage_channels()[1:]`).
Inverted residuals end in a linear bottleneck with no activation, so preact and feats are
the same tensor (mdistiller gives no preact for this net either).

Tiny inputs: every downsampling is a padded 3x3 stride-2 conv, which never shrinks a side
below one pixel, and the head pools adaptively; 8x8 inputs need nothing special.
"""

import torch.nn.functional as F
from torch import Tensor, nn

from worker.engine.zoo.base import StageFeatures, ZooModel
from worker.engine.zoo.registry import register
from worker.engine.zoo.vgg import init_with_small_head

EXPANSION = 6
# (expansion, channels, blocks, first stride) per group, as their `interverted_residual_setting`
SETTING = [
    (1, 16, 1, 1),
    (EXPANSION, 24, 2, 1),
    (EXPANSION, 32, 3, 2),
    (EXPANSION, 64, 4, 2),
    (EXPANSION, 96, 3, 1),
    (EXPANSION, 160, 3, 2),
    (EXPANSION, 320, 1, 1),
]
STAGE_ENDS = (1, 2, 4, 6)  # block groups whose outputs are the stage features
LAST_CHANNELS = 1280


def conv_bn_relu(inp: int, oup: int, kernel: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(inp, oup, kernel, stride, kernel // 2, bias=False),
        nn.BatchNorm2d(oup),
        nn.ReLU(inplace=True),
    )


class InvertedResidual(nn.Module):
    def __init__(self, inp: int, oup: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = inp * expand
        self.use_res_connect = stride == 1 and inp == oup
        self.conv = nn.Sequential(
            *conv_bn_relu(inp, hidden, 1, 1),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, oup, 1, bias=False),  # linear bottleneck: no ReLU after
            nn.BatchNorm2d(oup),
        )

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv(x)
        return x + out if self.use_res_connect else out


class MobileNetV2(ZooModel):
    def __init__(self, width: float, num_classes: int, in_channels: int) -> None:
        super().__init__()
        channels = int(32 * width)
        self.conv1 = conv_bn_relu(in_channels, channels, 3, 2)
        self.blocks = nn.ModuleList()
        for expand, c, n, s in SETTING:
            out = int(c * width)
            layers = []
            for stride in [s] + [1] * (n - 1):
                layers.append(InvertedResidual(channels, out, stride, expand))
                channels = out
            self.blocks.append(nn.Sequential(*layers))
        last = int(LAST_CHANNELS * width) if width > 1.0 else LAST_CHANNELS
        self.conv2 = conv_bn_relu(channels, last, 1, 1)
        self.classifier = nn.Sequential(nn.Linear(last, num_classes))
        init_with_small_head(self)

    def forward_features(self, x: Tensor) -> tuple[Tensor, StageFeatures]:
        x = self.conv1(x)
        feats = []
        for i, group in enumerate(self.blocks):
            x = group(x)
            if i in STAGE_ENDS:
                feats.append(x)
        pooled = F.adaptive_avg_pool2d(self.conv2(x), 1).flatten(1)
        return self.classifier(pooled), StageFeatures(list(feats), feats, pooled)


@register("mobilenetv2")
def mobilenetv2(num_classes: int, in_channels: int) -> MobileNetV2:
    return MobileNetV2(1.0, num_classes, in_channels)


@register("mobilenetv2_half")
def mobilenetv2_half(num_classes: int, in_channels: int) -> MobileNetV2:
    return MobileNetV2(0.5, num_classes, in_channels)
