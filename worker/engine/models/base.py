"""What every model in the zoo exposes, so methods never reach into layer indices."""

from dataclasses import dataclass

import torch
from torch import Tensor, nn


@dataclass
class StageFeatures:
    """Per-stage activations of one forward pass, shallow to deep."""

    preact: list[Tensor]  # each stage's output before its final ReLU
    feats: list[Tensor]  # the same after the ReLU
    pooled: Tensor  # (N, D) pooled penultimate feature, the classifier's input


class ZooModel(nn.Module):
    arch: str = ""  # set by build_model

    def forward_features(self, x: Tensor) -> tuple[Tensor, StageFeatures]:
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        logits, _ = self.forward_features(x)
        return logits


def probe(model: nn.Module, input_shape: tuple[int, int, int], why: str) -> StageFeatures:
    """Stage features of one zero image on the model's own device, in eval mode and without
    gradients; the model's mode is restored. Methods size their own modules by it."""
    if not isinstance(model, ZooModel):
        raise ValueError(f"{why} needs zoo models with stage features, got {type(model)}")
    was_training = model.training
    device = next(model.parameters()).device
    with torch.no_grad():
        _, feats = model.eval().forward_features(torch.zeros(1, *input_shape, device=device))
    model.train(was_training)
    return feats
