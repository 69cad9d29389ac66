"""A small MLP for tiny inputs (8x8 digits): flatten, two ReLU hidden layers, classifier.

It has no spatial stages: `forward_features` returns empty preact/feats lists and the last
hidden activation as `pooled`, so logit and pooled-feature methods work and stage-feature
methods (ReviewKD, IE-KD) must refuse it.

The input is first average-pooled to a fixed 8x8 grid so the first layer's width depends on
the channel count only (factories see no image size). At 8x8 that pooling is the identity:
the net is a plain MLP on the flattened pixels; larger images are averaged down to 8x8.
"""

import torch.nn.functional as F
from torch import Tensor, nn

from worker.engine.zoo.base import StageFeatures, ZooModel
from worker.engine.zoo.registry import register

GRID = 8
HIDDEN = (256, 128)


class MLP(ZooModel):
    def __init__(self, num_classes: int, in_channels: int, hidden: tuple[int, int]) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_channels * GRID * GRID, hidden[0])
        self.fc2 = nn.Linear(hidden[0], hidden[1])
        self.fc = nn.Linear(hidden[1], num_classes)

    def forward_features(self, x: Tensor) -> tuple[Tensor, StageFeatures]:
        x = F.adaptive_avg_pool2d(x, GRID).flatten(1)
        hidden = F.relu(self.fc2(F.relu(self.fc1(x))))
        return self.fc(hidden), StageFeatures([], [], hidden)


@register("mlp")
def mlp(num_classes: int, in_channels: int) -> MLP:
    return MLP(num_classes, in_channels, HIDDEN)
