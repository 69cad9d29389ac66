"""Method names -> classes. Method modules are imported explicitly in `methods/__init__`."""

from typing import Any

from torch import nn

from worker.engine.methods.base import Method
from worker.engine.registry import Registry

METHODS: Registry[type[Method]] = Registry("method")
register = METHODS.register


def create(
    name: str,
    *,
    student: nn.Module,
    teacher: nn.Module | None,
    input_shape: tuple[int, int, int],
    **params: Any,
) -> Method:
    """`params` are the method's own keywords; `input_shape` (C, H, W) lets a method size its
    own modules by a dummy forward pass."""
    cls = METHODS.get(name)
    return cls(student=student, teacher=teacher, input_shape=input_shape, **params)


def names() -> tuple[str, ...]:
    return METHODS.names()
