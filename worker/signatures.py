"""The zoo's weight signatures for the API, which has no torch: `service/spec/signatures.json`.

Each architecture is built for two (num_classes, in_channels) pairs; every state_dict entry
is written with its dtype and shape, a dimension that follows num_classes as "K" and one
that follows in_channels as "C" (or a multiple: "C*64"). tests/worker/test_signatures.py
rebuilds this and compares it with the committed file, so the file cannot go stale.

Regenerate with `python -m worker.signatures`.
"""

import json
import sys
from typing import Any

from service.spec.names import SIGNATURES
from worker.engine.zoo import ARCHITECTURES, build_model

PATH = SIGNATURES  # read by service/ingest/weights.py
FORMAT = "distillery.signatures/v1"
# (K, C) pairs: no dimension can follow both, since 10/3 != 100/1
PAIRS = ((10, 3), (100, 1))
Dim = int | str


def symbolic(dims: tuple[int, int]) -> Dim:
    """One dimension seen under both PAIRS, as a constant, "K", "C" or "K*n" / "C*n"."""
    if dims[0] == dims[1]:
        return dims[0]
    for symbol, index in (("K", 0), ("C", 1)):
        values = [pair[index] for pair in PAIRS]
        ratios = {d // v for d, v in zip(dims, values, strict=True) if d % v == 0}
        if len(ratios) == 1 and all(d % v == 0 for d, v in zip(dims, values, strict=True)):
            n = ratios.pop()
            return symbol if n == 1 else f"{symbol}*{n}"
    raise ValueError(f"dimension {dims} follows neither num_classes nor in_channels")


def signature(arch: str) -> dict[str, dict[str, Any]]:
    first, second = (build_model(arch, k, c).state_dict() for k, c in PAIRS)
    if list(first) != list(second):
        raise ValueError(f"{arch}: state_dict keys depend on num_classes/in_channels")
    return {
        name: {
            "dtype": str(tensor.dtype).removeprefix("torch."),
            "shape": [symbolic(d) for d in zip(tensor.shape, second[name].shape, strict=True)],
        }
        for name, tensor in first.items()
    }


def signatures() -> dict[str, Any]:
    return {
        "format": FORMAT,
        "symbols": {"K": "num_classes", "C": "in_channels"},
        "architectures": {arch: signature(arch) for arch in sorted(ARCHITECTURES)},
    }


def render(sigs: dict[str, Any]) -> str:
    """One line per tensor: small diffs when an architecture changes."""
    lines = ["{", f'  "format": {json.dumps(sigs["format"])},']
    lines.append(f'  "symbols": {json.dumps(sigs["symbols"])},')
    lines.append('  "architectures": {')
    archs = list(sigs["architectures"].items())
    for i, (arch, tensors) in enumerate(archs):
        lines.append(f"    {json.dumps(arch)}: {{")
        entries = [f"      {json.dumps(n)}: {json.dumps(t)}" for n, t in tensors.items()]
        lines.append(",\n".join(entries))
        lines.append("    }" + ("," if i < len(archs) - 1 else ""))
    lines += ["  }", "}"]
    return "\n".join(lines) + "\n"


def main() -> None:
    PATH.write_text(render(signatures()))
    sys.stderr.write(f"wrote {PATH}\n")


if __name__ == "__main__":
    main()
