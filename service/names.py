"""Names the API shares with the engine without importing it (a test keeps them equal)."""

from typing import Literal

from pydantic import BaseModel, ConfigDict

ARCHITECTURES = (
    "cnn_small",
    "resnet8",
    "resnet14",
    "resnet20",
    "resnet32",
    "resnet44",
    "resnet56",
    "resnet110",
    "resnet8x4",
    "resnet32x4",
)
Arch = Literal[ARCHITECTURES]  # type: ignore[valid-type]


DATASETS = ("digits", "synthetic")
FEATURELESS = ("mlp",)  # architectures without spatial stage features


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")
