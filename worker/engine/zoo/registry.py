"""Architecture names -> models: the zoo's (each module registers itself on import) and any
timm architecture by name."""

from collections.abc import Callable

from torch import nn

from worker.engine.registry import Registry
from worker.engine.zoo.base import ZooModel

Factory = Callable[[int, int], ZooModel]  # (num_classes, in_channels) -> model

ZOO: Registry[Factory] = Registry("architecture")
register = ZOO.register
TIMM = "timm/"  # "timm/<name>": a timm architecture (the API validates the name)


def build_model(arch: str, num_classes: int, in_channels: int = 3) -> nn.Module:
    if arch.startswith(TIMM):
        model = timm_model(arch.removeprefix(TIMM), num_classes, in_channels)
    else:
        model = ZOO.get(arch)(num_classes, in_channels)
    setattr(model, "arch", arch)  # noqa: B010 (what the model card and artifacts name it)
    return model


def timm_model(name: str, num_classes: int, in_channels: int) -> nn.Module:
    """A timm architecture from random weights, with this head and input channels."""
    import timm  # only a job that names a timm architecture pays for importing it

    return timm.create_model(name, num_classes=num_classes, in_chans=in_channels)
