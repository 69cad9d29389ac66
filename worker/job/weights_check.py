"""An uploaded model's weights against its architecture, in a process of its own:

    python -m worker.job.weights_check ARCH NUM_CLASSES IN_CHANNELS INPUT_SIZE PATH

Reads the safetensors file (never a pickle), compares every key and shape with the
architecture built for that head and those channels, loads it and runs one forward pass;
prints one JSON line: {"status": "ready", "parameters", "output_shape"} or
{"status": "invalid", "problems": [...]} naming the keys."""

import json
import sys
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from worker.engine.checkpoint import state_problems
from worker.engine.zoo import build_model

MAX_LISTED = 20  # keys named in one problem
DEFAULT_SIZE = 224  # a forward pass at this size when the upload names none


def check(arch: str, num_classes: int, in_channels: int, size: int, path: Path) -> dict[str, Any]:
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError) as exc:
        return {"status": "invalid", "problems": [f"not readable as safetensors: {exc}"]}
    model = build_model(arch, num_classes, in_channels).eval()
    if problems := state_problems(model.state_dict(), state, limit=MAX_LISTED):
        return {"status": "invalid", "problems": problems}
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    try:
        with torch.inference_mode():
            out = model(torch.zeros(1, in_channels, size, size))
    except RuntimeError as exc:
        why = f"a forward pass at {size}x{size} failed: {exc}"
        return {"status": "invalid", "problems": [why[:500]]}
    return {
        "status": "ready",
        "parameters": sum(p.numel() for p in model.parameters()),
        "output_shape": list(out.shape[1:]),
    }


if __name__ == "__main__":
    arch, num_classes, in_channels, size, path = sys.argv[1:]
    outcome = check(arch, int(num_classes), int(in_channels), int(size or DEFAULT_SIZE), Path(path))
    sys.stdout.write(json.dumps(outcome) + "\n")
