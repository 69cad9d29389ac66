"""Method names -> classes. Method modules are imported explicitly in `methods/__init__`."""

from torch import nn

from worker.engine.methods.base import Method
from worker.engine.registry import Registry

METHODS: Registry[type[Method]] = Registry("method")
register = METHODS.register


def create(name: str, *, student: nn.Module, teacher: nn.Module | None, params: dict) -> Method:
    return METHODS.get(name)(student=student, teacher=teacher, params=params)


def names() -> tuple[str, ...]:
    return METHODS.names()
