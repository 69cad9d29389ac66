"""What every model in the zoo exposes, so methods never reach into layer indices."""

import contextlib
from collections.abc import Iterator
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


@contextlib.contextmanager
def eval_mode(*models: nn.Module) -> Iterator[None]:
    """The models in eval mode for the block; each one's own mode back after, also on error."""
    modes = [m.training for m in models]
    try:
        for m in models:
            m.eval()
        yield
    finally:
        for m, mode in zip(models, modes, strict=True):
            m.train(mode)


def has_stages(model: nn.Module) -> bool:
    """Whether `forward_stages` can read the model's stage features."""
    return isinstance(model, ZooModel) or hasattr(model, "forward_intermediates")


def forward_stages(model: nn.Module, x: Tensor) -> tuple[Tensor, StageFeatures]:
    """Logits and stage features: a zoo model's own, or a timm model's through timm's
    feature API (`forward_intermediates`: each stage's output, which timm gives after its
    activation, so preact and feats are the same maps)."""
    if isinstance(model, ZooModel):
        return model.forward_features(x)
    final, stages = model.forward_intermediates(x)  # type: ignore[operator]
    logits = model.forward_head(final)  # type: ignore[operator]
    pooled = model.forward_head(final, pre_logits=True)  # type: ignore[operator]
    return logits, StageFeatures(preact=list(stages), feats=list(stages), pooled=pooled)


def probe(
    model: nn.Module, input_shape: tuple[int, int, int], why: str
) -> tuple[Tensor, StageFeatures]:
    """Logits and stage features of one zero image on the model's own device, in eval mode
    and without gradients. Methods size their own modules by it."""
    if not has_stages(model):
        raise ValueError(f"{why} needs models with stage features, got {type(model)}")
    device = next(model.parameters()).device
    with torch.no_grad(), eval_mode(model):
        return forward_stages(model, torch.zeros(1, *input_shape, device=device))
