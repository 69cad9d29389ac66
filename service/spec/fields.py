"""How the API names a field of a request from pydantic's error locations: dotted, as the
spec spells it, without the union members and tags pydantic puts in the path."""

import re
from typing import Any

from service.spec.methods import METHODS

UNION_MEMBER = re.compile(r"\[(?!key\]$)|^constrained-|^function-")  # not a dict's [key]


def field_path(loc: tuple[Any, ...], kind: str) -> str:
    """`method.kd.temperature` -> `method.temperature`; `body` for the request itself."""
    # pydantic names a union's members in the path (anchors.list[constrained-int].0): not keys
    parts = [str(p) for p in loc if p != "body" and not UNION_MEMBER.search(str(p))]
    # discriminated unions put the tag in the path: method.kd.temperature -> method.temperature
    parts = [
        p for i, p in enumerate(parts) if not (i and parts[i - 1] == "method" and p in METHODS)
    ]
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        parts.append("name")
    return ".".join(parts) or "body"
