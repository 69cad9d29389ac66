"""Architecture names -> factories. Model modules register themselves on import."""

from collections.abc import Callable

from worker.engine.models.base import ZooModel
from worker.engine.registry import Registry

Factory = Callable[[int, int], ZooModel]  # (num_classes, in_channels) -> model

ZOO: Registry[Factory] = Registry("architecture")
register = ZOO.register


def build_model(arch: str, num_classes: int, in_channels: int = 3) -> ZooModel:
    model = ZOO.get(arch)(num_classes, in_channels)
    model.arch = arch  # what the model card and the job's artifacts name it
    return model
