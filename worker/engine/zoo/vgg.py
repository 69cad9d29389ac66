"""CIFAR VGGs with batch norm, as RepDistiller / mdistiller `vgg8_bn` ... `vgg19_bn`.

Five conv blocks (block0..block4, 3x3 conv + BN + ReLU each, the block's last ReLU left to
the caller), max-pools between them, global average pooling and one linear classifier.
Module names match theirs, so converted published weights load as they are.

Stages: block1..block4 (4 stages, as their `get_stage_channels()[1:]`); preact is the
block's output at its last BN, feats the ReLU of it. block0 is the stem.

Tiny inputs: a 2x2 max-pool only halves a side that is at least 2 pixels long, so a map
already down to one pixel passes through instead of failing. The fourth pool (before
block4) only runs on maps wider than 4x4: skipped at 32x32 like RepDistiller, applied at
64x64 like mdistiller's TinyImageNet rule. At 32x32 and 8x8 the network is theirs exactly.
"""

import torch.nn.functional as F
from torch import Tensor, nn

from worker.engine.zoo.base import StageFeatures, ZooModel
from worker.engine.zoo.registry import register
from worker.engine.zoo.resnet import init_weights

CONFIGS: dict[str, list[list[int]]] = {
    "vgg8": [[64], [128], [256], [512], [512]],
    "vgg11": [[64], [128], [256, 256], [512, 512], [512, 512]],
    "vgg13": [[64, 64], [128, 128], [256, 256], [512, 512], [512, 512]],
    "vgg16": [[64, 64], [128, 128], [256, 256, 256], [512, 512, 512], [512, 512, 512]],
    "vgg19": [
        [64, 64],
        [128, 128],
        [256, 256, 256, 256],
        [512, 512, 512, 512],
        [512, 512, 512, 512],
    ],
}


def make_block(in_channels: int, widths: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for width in widths:
        layers += [nn.Conv2d(in_channels, width, 3, padding=1), nn.BatchNorm2d(width)]
        layers.append(nn.ReLU(inplace=True))
        in_channels = width
    return nn.Sequential(*layers[:-1])  # ends at the BN: the pre-ReLU map is a stage output


def halve(x: Tensor) -> Tensor:
    """2x2 max-pool that leaves a side of one pixel as it is."""
    kernel = (min(2, x.shape[-2]), min(2, x.shape[-1]))
    return F.max_pool2d(x, kernel)


class VGG(ZooModel):
    def __init__(self, config: list[list[int]], num_classes: int, in_channels: int) -> None:
        super().__init__()
        ins = [in_channels] + [widths[-1] for widths in config[:-1]]
        self.block0 = make_block(ins[0], config[0])
        self.block1 = make_block(ins[1], config[1])
        self.block2 = make_block(ins[2], config[2])
        self.block3 = make_block(ins[3], config[3])
        self.block4 = make_block(ins[4], config[4])
        self.classifier = nn.Linear(config[4][-1], num_classes)
        init_with_small_head(self)

    def forward_features(self, x: Tensor) -> tuple[Tensor, StageFeatures]:
        x = F.relu(self.block0(x))
        preact, feats = [], []
        for i, block in enumerate((self.block1, self.block2, self.block3, self.block4)):
            if i < 3 or min(x.shape[-2:]) > 4:
                x = halve(x)
            pre = block(x)
            x = F.relu(pre)
            preact.append(pre)
            feats.append(x)
        pooled = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.classifier(pooled), StageFeatures(preact, feats, pooled)


def init_with_small_head(model: nn.Module) -> None:
    """RepDistiller's VGG / MobileNetV2 init: He convs, zero conv biases, N(0, 0.01) head."""
    init_weights(model)
    for m in model.modules():
        if isinstance(m, nn.Conv2d) and m.bias is not None:
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.01)
            nn.init.zeros_(m.bias)


def _register(name: str, config: list[list[int]]) -> None:
    def factory(num_classes: int, in_channels: int) -> VGG:
        return VGG(config, num_classes, in_channels)

    register(name)(factory)


for _name, _config in CONFIGS.items():
    _register(_name, _config)
