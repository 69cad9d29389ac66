"""Where and in what precision to run: bf16 autocast and channels_last only on CUDA."""

import contextlib
from collections.abc import Iterable, Iterator
from typing import TypeVar

import torch
from torch import nn

M = TypeVar("M", bound=nn.Module)

PRECISIONS = ("auto", "fp32", "bf16")
DEVICES = ("auto", "cpu", "cuda")


def resolve_device(device: str | torch.device) -> torch.device:
    """A device name of DEVICES, or a device, as the device to run on."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was requested but CUDA is not available")
    return torch.device(device)


def resolve_precision(precision: str, device: torch.device) -> str:
    """ "auto" is bf16 on a CUDA device that supports it, fp32 otherwise."""
    if precision != "auto":
        return precision
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return "bf16"
    return "fp32"


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def memory_format(device: torch.device) -> torch.memory_format:
    # channels_last speeds up convolutions on tensor cores; on a CPU it is not a clear win.
    return torch.channels_last if device.type == "cuda" else torch.contiguous_format


def place(model: M, device: torch.device) -> M:
    """Move `model` (a method moves its teacher too) to `device` in its memory format."""
    # torch's stubs omit Module.to's memory_format keyword, which exists at run time.
    return model.to(device, memory_format=memory_format(device))  # type: ignore[call-overload]


@contextlib.contextmanager
def compiled(models: Iterable[nn.Module], enabled: bool) -> Iterator[None]:
    """torch.compile the models' forward (a method's student and teacher) for the duration.

    `Module.compile()` keeps the module and its state_dict keys, so checkpoints and exports
    are unchanged; the compiled call is dropped on the way out.
    """
    if not enabled:
        yield
        return
    models = list(models)
    for model in models:
        # Static shapes: a trailing partial batch gets its own graph instead of turning every
        # batch onto a slower dynamic-shape one (README, Performance on a GPU).
        model.compile(dynamic=False)
    try:
        yield
    finally:
        for model in models:
            model._compiled_call_impl = None
