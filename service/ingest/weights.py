"""Weights checked without torch: the safetensors header is parsed here, and its tensors are
compared with the architecture's signature (`signatures.json`, written by
`python -m worker.signatures`). Nothing is ever unpickled; the tensor bytes are not read."""

import json
import math
import struct
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from service.spec import limits, names
from service.spec.names import SIGNATURES

BATCHNORM_BUFFERS = (".running_mean", ".running_var", ".num_batches_tracked")  # the zoo's only
TIMM_DEFAULT_CLASSES = 1000  # timm_archs.json counts a 1000-class classifier
MAX_HEADER = 8 << 20  # the zoo's largest header is ~60 KB
MAX_LISTED = 20  # keys named in one error message
PICKLE_SUFFIXES = (".pt", ".pth", ".pkl", ".pickle", ".bin", ".ckpt", ".tar", ".zip")
ITEMSIZE = {
    "BOOL": 1,
    "U8": 1,
    "I8": 1,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
    "I16": 2,
    "U16": 2,
    "F16": 2,
    "BF16": 2,
    "I32": 4,
    "U32": 4,
    "F32": 4,
    "I64": 8,
    "U64": 8,
    "F64": 8,
}
# what the worker can cast into each parameter dtype of the zoo
ACCEPTED = {"float32": ("F32", "F16", "BF16"), "int64": ("I64", "I32")}


class NotSafetensors(ValueError):
    """Bytes that are not a safetensors file (a pickle or zip file, say)."""


@dataclass(frozen=True)
class TensorInfo:
    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int


@dataclass(frozen=True)
class Header:
    tensors: dict[str, TensorInfo]
    metadata: dict[str, str]
    length: int  # of the JSON, without the 8-byte prefix

    @property
    def file_size(self) -> int:
        """What the whole file must measure."""
        return 8 + self.length + max((t.end for t in self.tensors.values()), default=0)


def header_length(prefix: bytes | bytearray) -> int:
    """The JSON header's length from a file's first 8 bytes."""
    if len(prefix) < 8:
        raise NotSafetensors("not a safetensors file: shorter than its 8-byte header length")
    (length,) = struct.unpack("<Q", prefix[:8])
    if not 2 <= length <= MAX_HEADER:
        raise NotSafetensors(
            f"not a safetensors file: header length {length} is outside [2, {MAX_HEADER}]"
        )
    return int(length)


def parse_header(raw: bytes) -> Header:
    """The header (the JSON after the 8-byte length); raises NotSafetensors when malformed.

    As safetensors itself requires: tensors lie back to back from offset 0, in offset order,
    each as long as its dtype and shape say."""
    try:
        obj = limits.loads(raw.decode("utf-8"))
    except limits.TooDeep as exc:
        raise NotSafetensors(f"not a safetensors file: its header is {exc}") from exc
    except (UnicodeDecodeError, ValueError) as exc:
        raise NotSafetensors("not a safetensors file: its header is not JSON") from exc
    if not isinstance(obj, dict):
        raise NotSafetensors("not a safetensors file: its header is not a JSON object")
    metadata = obj.pop("__metadata__", {})
    if not isinstance(metadata, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        raise NotSafetensors("not a safetensors file: __metadata__ must map strings to strings")
    tensors = {name: _tensor(name, entry) for name, entry in obj.items()}
    position = 0
    for name, t in sorted(tensors.items(), key=lambda kv: (kv[1].begin, kv[1].end)):
        if t.begin != position:
            raise NotSafetensors(f"not a safetensors file: {name} does not start at {position}")
        position = t.end
    return Header(tensors, metadata, len(raw))


def _tensor(name: str, entry: Any) -> TensorInfo:
    bad = NotSafetensors(f"not a safetensors file: malformed entry for tensor {name!r}")
    if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
        raise bad
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if dtype not in ITEMSIZE:
        raise NotSafetensors(f"not a safetensors file: {name} has unknown dtype {dtype!r}")
    if not (isinstance(shape, list) and all(_natural(d) for d in shape)):
        raise bad
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(map(_natural, offsets))):
        raise bad
    begin, end = offsets
    if end - begin != math.prod(shape) * ITEMSIZE[dtype]:
        raise NotSafetensors(
            f"not a safetensors file: {name}'s offsets do not fit its dtype and shape"
        )
    return TensorInfo(dtype, tuple(shape), begin, end)


def _natural(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


@lru_cache
def signatures() -> dict[str, dict[str, Any]]:
    return dict(json.loads(SIGNATURES.read_text())["architectures"])


def param_count(arch: str, num_classes: int, in_channels: int) -> int:
    """How many numbers an architecture trains: a zoo model's from its signature, a timm
    model's from timm's default build with its classifier resized (service/spec/timm_archs.json)."""
    if arch.startswith(names.TIMM):
        params, per_class = names.timm_archs()["params"][arch.removeprefix(names.TIMM)]
        return int(params + per_class * (num_classes - TIMM_DEFAULT_CLASSES))
    return sum(
        math.prod(expected_shape(t["shape"], num_classes, in_channels))
        for key, t in signatures()[arch].items()
        if not key.endswith(BATCHNORM_BUFFERS)
    )


def expected_shape(symbolic: list[int | str], num_classes: int, in_channels: int) -> list[int]:
    values = {"K": num_classes, "C": in_channels}
    out = []
    for dim in symbolic:
        if isinstance(dim, int):
            out.append(dim)
        else:
            symbol, _, factor = dim.partition("*")
            out.append(values[symbol] * int(factor or 1))
    return out


def _show(symbolic: list[int | str], num_classes: int, in_channels: int) -> str:
    """[K=100, 64]: the symbols spelled out with their values for this upload."""
    values = expected_shape(symbolic, num_classes, in_channels)
    dims = [
        str(v) if isinstance(s, int) else f"{s}={v}" for s, v in zip(symbolic, values, strict=True)
    ]
    return "[" + ", ".join(dims) + "]"


def _names(keys: list[str]) -> str:
    more = f" and {len(keys) - MAX_LISTED} more" if len(keys) > MAX_LISTED else ""
    return "[" + ", ".join(keys[:MAX_LISTED]) + "]" + more


def signature_problems(header: Header, arch: str, num_classes: int, in_channels: int) -> list[str]:
    """What keeps these tensors from loading into `arch`: missing and unexpected keys, wrong
    shapes and dtypes the worker cannot cast. Empty when they fit."""
    expected = signatures()[arch]
    got = header.tensors
    problems = []
    if missing := [k for k in expected if k not in got]:
        problems.append(f"missing keys: {_names(missing)}")
    if unexpected := sorted(k for k in got if k not in expected):
        problems.append(f"unexpected keys: {_names(unexpected)}")
    wrong = []
    for name, sig in expected.items():
        if name not in got:
            continue
        t = got[name]
        if list(t.shape) != expected_shape(sig["shape"], num_classes, in_channels):
            wrong.append(
                f"shape of {name} is {list(t.shape)}, architecture expects "
                f"{_show(sig['shape'], num_classes, in_channels)}"
            )
        if t.dtype not in (accepted := ACCEPTED[sig["dtype"]]):
            wrong.append(f"dtype of {name} is {t.dtype}, expected one of {', '.join(accepted)}")
    if len(wrong) > MAX_LISTED:
        wrong[MAX_LISTED:] = [f"and {len(wrong) - MAX_LISTED} more wrong shapes or dtypes"]
    return problems + wrong
