"""Job spec files (YAML or JSON) and where in them a field the API refused is written."""

from pathlib import Path
from typing import Any

import yaml


class SpecFileError(ValueError):
    """The file cannot be read as a spec (not YAML/JSON, or not a mapping)."""


def load(path: Path) -> tuple[dict[str, Any], str]:
    """The spec in `path` (JSON is YAML too) and its text."""
    try:
        text = path.read_text()
        spec = yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise SpecFileError(f"{path}: {exc}") from exc
    if not isinstance(spec, dict):
        raise SpecFileError(f"{path}: a job spec is a mapping, not {type(spec).__name__}")
    return spec, text


def line_of(text: str, field: str) -> int | None:
    """The 1-based line where the dotted `field` (as the API names it: `train.epochs`,
    `train.schedule.milestones.0`, `space.method.temperature.low`) is written, or of its
    nearest written parent. Parts that are not keys in the file (a union's tag the API adds)
    are skipped."""
    try:
        node = yaml.compose(text)
    except yaml.YAMLError:
        return None
    line, parts, i = None, field.split("."), 0
    while i < len(parts):
        # the longest key first: a sweep's space names fields by dotted keys
        for j in range(len(parts), i, -1):
            if (found := _child(node, ".".join(parts[i:j]))) is not None:
                node, mark = found
                line, i = mark.line + 1, j
                break
        else:
            i += 1
    return line


def _child(node: Any, part: str) -> tuple[Any, Any] | None:
    """The value node under key (or index) `part`, with the mark where that key is."""
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if key.value == part:
                return value, key.start_mark
    if isinstance(node, yaml.SequenceNode) and part.isdigit() and int(part) < len(node.value):
        item = node.value[int(part)]
        return item, item.start_mark
    return None
