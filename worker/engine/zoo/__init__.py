"""The architecture zoo. Each module is imported explicitly so registration is visible."""

from worker.engine.zoo import cnn, mlp, mobilenetv2, resnet, shufflenet, vgg, wrn
from worker.engine.zoo.base import StageFeatures, ZooModel
from worker.engine.zoo.registry import ZOO, build_model

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
