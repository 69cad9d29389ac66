"""Distillation methods, one module each, registered by name on import."""

from worker.engine.methods import ddgsd, dist, dkd, iekd, kd, kdcl, rco, reviewkd, supervised
from worker.engine.methods.base import Batch, EpochContext, Method
from worker.engine.methods.registry import create, names, register

METHOD_NAMES: tuple[str, ...] = names()

__all__ = [
    "METHOD_NAMES",
    "Batch",
    "EpochContext",
    "Method",
    "create",
    "ddgsd",
    "dist",
    "dkd",
    "iekd",
    "kd",
    "kdcl",
    "rco",
    "reviewkd",
    "names",
    "register",
    "supervised",
]
