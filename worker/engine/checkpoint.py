"""Checkpoints as safetensors only: weights are never read back through pickle.

A resume checkpoint is one safetensors file: tensors (model, optimizer state, RNG states)
plus one JSON string in the metadata for everything that is not a tensor.
"""

import contextlib
import hashlib
import json
import os
import uuid
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save
from torch import Tensor, nn

META_KEY = "distillery"


class CheckpointError(ValueError):
    """A checkpoint that does not fit the model or optimizer it is loaded into."""


def save_checkpoint(path: Path, *, tensors: dict[str, Tensor], meta: dict[str, Any]) -> str:
    """Write atomically: a reader sees the old file or the new one, never half of one.
    Returns the sha256 of what was written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    plain = {name: t.detach().to("cpu").contiguous() for name, t in tensors.items()}
    try:
        # serialised here and written by Python: a full disk is an OSError (ENOSPC) that
        # says so, and the temporary file goes
        data = save(plain, metadata={META_KEY: json.dumps(meta)})
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    fsync_dir(path.parent)
    return hashlib.sha256(data).hexdigest()


def fsync_dir(directory: Path) -> None:
    # The rename is only durable once the directory entry is on disk (POSIX only).
    if os.name != "posix":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def load_checkpoint(path: Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    with safe_open(str(path), framework="pt") as f:
        raw = (f.metadata() or {}).get(META_KEY, "{}")
        tensors = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118 (safe_open is not iterable)
    return tensors, json.loads(raw)


def save_weights(path: Path, model: nn.Module) -> None:
    save_checkpoint(path, tensors=dict(model.state_dict()), meta={})


def load_weights(model: nn.Module, path: Path) -> None:
    load_state_strict(model, load_file(str(path)), source=str(path))


def load_state_strict(model: nn.Module, state: dict[str, Tensor], source: str) -> None:
    """`load_state_dict(strict=True)` with an error that names every offending key."""
    if problems := state_problems(model.state_dict(), state):
        raise CheckpointError(f"{source} does not fit the model; " + "; ".join(problems))
    model.load_state_dict(state, strict=True)


def state_problems(
    expected: dict[str, Tensor], state: dict[str, Tensor], limit: int | None = None
) -> list[str]:
    """Missing, unexpected and misshapen keys of `state`, one line per kind naming the keys
    (the first `limit` of each)."""
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong_shape = sorted(
        f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    )
    kinds = (
        ("missing keys", missing),
        ("unexpected keys", unexpected),
        ("shape mismatch", wrong_shape),
    )
    return [f"{label}: {', '.join(keys[:limit])}" for label, keys in kinds if keys]


def prefixed(prefix: str, tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    return {f"{prefix}{name}": t for name, t in tensors.items()}


def strip_prefix(prefix: str, tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    return {name[len(prefix) :]: t for name, t in tensors.items() if name.startswith(prefix)}


def flatten_optimizer(optimizer: torch.optim.Optimizer) -> tuple[dict[str, Tensor], dict]:
    """Per-parameter state tensors as `optim.<param index>.<name>`; the rest as JSON."""
    state_dict = optimizer.state_dict()
    tensors: dict[str, Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, param_state in state_dict["state"].items():
        for name, value in param_state.items():
            if isinstance(value, Tensor):
                tensors[f"optim.{index}.{name}"] = value
            else:
                scalars.setdefault(str(index), {})[name] = value
    meta = {"param_groups": state_dict["param_groups"], "scalars": scalars}
    return tensors, meta


def unflatten_optimizer(
    optimizer: torch.optim.Optimizer, tensors: dict[str, Tensor], meta: dict
) -> None:
    state: dict[int, dict[str, Any]] = {}
    for key, value in strip_prefix("optim.", tensors).items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    for index, scalars in meta["scalars"].items():
        state.setdefault(int(index), {}).update(scalars)
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
