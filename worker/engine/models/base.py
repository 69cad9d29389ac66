"""What every model in the zoo exposes, so methods never reach into layer indices."""

from dataclasses import dataclass

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
