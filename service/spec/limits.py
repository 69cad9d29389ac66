"""Limits on what a request may hold and the value types that enforce them: how deep JSON
nests (loads refuses it before parsing), integers a BIGINT column holds, characters a text
column can store, epoch counts. service/api/middleware.py applies the body limits."""

import json
import re
from typing import Annotated, Any

import numpy as np
from pydantic import AfterValidator, Field

MAX_JSON_DEPTH = 32  # a job spec nests 4 levels deep, a safetensors header 3
Int64 = Annotated[int, Field(ge=-(2**63), le=2**63 - 1)]  # what a BIGINT column holds
MAX_EPOCHS = 10_000  # a job's train.epochs; every count or index of epochs is within it
Epoch = Annotated[int, Field(ge=1, le=MAX_EPOCHS)]  # an epoch, 1-based, or a count of epochs
Epochs = Annotated[int, Field(ge=0, le=MAX_EPOCHS)]  # a count of epochs that may be none
CONTROL = r"\x00-\x1f\x7f"  # C0 and DEL
CONTROL_CHARS = re.compile(f"[{CONTROL}]")
STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)  # a JSON string, escapes and all
STEP = np.zeros(256, dtype=np.int64)  # what each byte does to the nesting depth
STEP[list(b"[{")] = 1
STEP[list(b"]}")] = -1


def printable(value: str) -> str:
    """`value` when it holds no control character (NUL, which PostgreSQL text cannot store,
    and the rest of C0 and DEL, which make no sense in a name or an id)."""
    if CONTROL_CHARS.search(value):
        raise ValueError("must not contain control characters (U+0000-U+001F, U+007F)")
    return value


# a name, an id or a key
Name = Annotated[
    str, AfterValidator(printable), Field(json_schema_extra={"pattern": f"^[^{CONTROL}]*$"})
]
Ident = Annotated[Name, Field(min_length=1, max_length=64)]  # a job's, a model's, a dataset's


def without_nul(value: Any) -> Any:
    """`value` when no string in it (a key, an item) holds NUL: text columns cannot store it."""
    if isinstance(value, str) and "\x00" in value:
        raise ValueError("must not contain NUL characters")
    if isinstance(value, dict):
        for item in value.items():
            without_nul(item)
    elif isinstance(value, list | tuple):
        for item in value:
            without_nul(item)
    return value


class TooDeep(ValueError):
    def __init__(self) -> None:
        super().__init__(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")


def json_depth(raw: bytes | bytearray) -> int:
    """How deep the arrays and objects of a JSON text nest (brackets in strings do not
    count), measured without parsing it."""
    skeleton = np.frombuffer(STRING.sub(b"", raw), dtype=np.uint8)
    return int(np.cumsum(STEP[skeleton]).max(initial=0))


def loads(raw: str | bytes) -> Any:
    """json.loads, refusing (TooDeep, a ValueError) JSON nested deeper than MAX_JSON_DEPTH
    before the parser recurses into it."""
    if json_depth(raw.encode() if isinstance(raw, str) else raw) > MAX_JSON_DEPTH:
        raise TooDeep
    return json.loads(raw)
