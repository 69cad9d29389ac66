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
    "wrn_16_1",
    "wrn_16_2",
    "wrn_40_1",
    "wrn_40_2",
    "vgg8",
    "vgg11",
    "vgg13",
    "vgg16",
    "vgg19",
    "mobilenetv2",
    "mobilenetv2_half",
    "shufflenetv1",
    "shufflenetv2",
    "mlp",
)
Arch = Literal[ARCHITECTURES]  # type: ignore[valid-type]


DATASETS = ("digits", "synthetic", "upload")
DatasetName = Literal[DATASETS]  # type: ignore[valid-type]
# stage features each architecture exposes (a test derives them from the engine's models)
STAGES = {
    arch: 0 if arch == "mlp" else 4 if arch.startswith(("vgg", "mobilenetv2")) else 3
    for arch in ARCHITECTURES
}


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")
