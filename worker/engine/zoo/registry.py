"""Architecture names -> factories. Model modules register themselves on import."""

from collections.abc import Callable

from worker.engine.registry import Registry
from worker.engine.zoo.base import ZooModel

Factory = Callable[[int, int], ZooModel]  # (num_classes, in_channels) -> model

ZOO: Registry[Factory] = Registry("architecture")
register = ZOO.register


def build_model(arch: str, num_classes: int, in_channels: int = 3) -> ZooModel:
    model = ZOO.get(arch)(num_classes, in_channels)
    model.arch = arch  # what the model card and the job's artifacts name it
    return model
