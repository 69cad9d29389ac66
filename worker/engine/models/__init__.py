"""The architecture zoo. Each module is imported explicitly so registration is visible."""

from worker.engine.models import cnn, mlp, mobilenetv2, resnet, shufflenet, vgg, wrn
from worker.engine.models.base import StageFeatures, ZooModel
from worker.engine.models.registry import ZOO, build_model

ARCHITECTURES: tuple[str, ...] = ZOO.names()

__all__ = [
    "ARCHITECTURES",
    "StageFeatures",
    "ZooModel",
    "build_model",
    "cnn",
    "mlp",
    "mobilenetv2",
    "resnet",
    "shufflenet",
    "vgg",
    "wrn",
]
