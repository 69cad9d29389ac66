"""The student in serving formats: ONNX (run back through onnxruntime) and TorchScript.

Each export is written to a temporary file, loaded back and run against the PyTorch model on a
seeded random batch; only a file that reproduces the model's outputs is moved into place.
"""

import contextlib
import copy
import logging
import os
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import onnxruntime as ort
import torch
from torch import Tensor, nn

# torch's torch.export-based exporter (the default since 2.9; the TorchScript-based one is
# deprecated) implements opset 18 natively: asking for less runs a conversion pass that fails
# on our zoo's reductions. onnxruntime has run opset 18 since 1.14.
OPSET = 18
TOLERANCE = 1e-3  # max abs difference of logits allowed between an export and PyTorch
TRACE_BATCH = 2
CHECK_BATCH = 5  # not the trace batch: the check also proves the batch axis is dynamic


class ExportError(RuntimeError):
    """An export that does not reproduce the model it was made from."""


def export_onnx(
    model: nn.Module, input_shape: tuple[int, ...], path: Path, opset: int = OPSET
) -> dict[str, Any]:
    """`model` as ONNX at `path` (fp32, input "input" (N, C, H, W), output "logits")."""
    model, path = _cpu_copy(model), Path(path)
    batch = torch.export.Dim("batch", min=1)
    with _atomic(path) as tmp, _quiet():
        torch.onnx.export(
            model,
            (_random_batch(input_shape, TRACE_BATCH, seed=0),),
            str(tmp),
            dynamo=True,
            opset_version=opset,
            external_data=False,  # one self-contained file; the zoo is far below 2 GB
            input_names=["input"],
            output_names=["logits"],
            dynamic_shapes=({0: batch},),
            verbose=False,
        )
        session = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
        x = _random_batch(input_shape, CHECK_BATCH, seed=1)
        got = torch.from_numpy(session.run(["logits"], {"input": x.numpy()})[0])
        diff = check_parity("onnx", _reference(model, x), got)
    return {"format": "onnx", "opset": opset, "max_abs_diff": diff, "file": path.name}


def export_torchscript(
    model: nn.Module, input_shape: tuple[int, ...], path: Path
) -> dict[str, Any]:
    """`model` traced to TorchScript at `path`, for torch.jit.load without our code."""
    model, path = _cpu_copy(model), Path(path)
    with _atomic(path) as tmp, _quiet(), torch.no_grad():
        example = _random_batch(input_shape, TRACE_BATCH, seed=0)
        # check_trace off: check_parity below compares the reloaded file, a stronger check
        traced = torch.jit.trace(model, example, check_trace=False)
        torch.jit.save(traced, str(tmp))
        loaded = torch.jit.load(str(tmp), map_location="cpu")
        x = _random_batch(input_shape, CHECK_BATCH, seed=1)
        diff = check_parity("torchscript", _reference(model, x), loaded(x))
    return {"format": "torchscript", "max_abs_diff": diff, "file": path.name}


def check_parity(fmt: str, expected: Tensor, got: Tensor) -> float:
    """Max abs difference of the logits; raises when over TOLERANCE or when a prediction
    differs on a row whose top two logits the reference separates by more than TOLERANCE
    (an untrained model's near-ties may flip on rounding alone)."""
    if got.shape != expected.shape:
        raise ExportError(
            f"{fmt} export gives shape {tuple(got.shape)}, not {tuple(expected.shape)}"
        )
    diff = float((expected - got).abs().max())
    if not diff <= TOLERANCE:  # also catches NaN
        raise ExportError(f"{fmt} export differs from PyTorch by {diff:.3g} > {TOLERANCE}")
    top2 = expected.topk(2, dim=1).values if expected.shape[1] > 1 else expected
    decided = (top2[:, 0] - top2[:, -1]) > TOLERANCE
    if (decided & (expected.argmax(1) != got.argmax(1))).any():
        raise ExportError(f"{fmt} export predicts other classes than the PyTorch model")
    return diff


def _cpu_copy(model: nn.Module) -> nn.Module:
    # a copy: the caller's model may live on a GPU, in training mode
    return copy.deepcopy(model).to("cpu", torch.float32).eval()


def _random_batch(input_shape: tuple[int, ...], n: int, seed: int) -> Tensor:
    return torch.randn((n, *input_shape), generator=torch.Generator().manual_seed(seed))


def _reference(model: nn.Module, x: Tensor) -> Tensor:
    with torch.no_grad():
        return model(x)


@contextlib.contextmanager
def _atomic(path: Path) -> Iterator[Path]:
    """A temporary path beside `path`, moved onto it only if the block succeeds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Without the warnings torch.jit and the exporter give on every call (their own
    deprecations; torchvision ops skipped, which the zoo does not use)."""
    registration = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registration.level
    registration.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            for category in (DeprecationWarning, FutureWarning, torch.jit.TracerWarning):
                warnings.simplefilter("ignore", category)
            yield
    finally:
        registration.setLevel(level)
