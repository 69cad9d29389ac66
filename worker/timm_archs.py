"""timm's architectures for the API, which has no torch: `service/timm_archs.json`.

Every name `timm.list_models()` knows, with its number of stage features (the length of its
`feature_info`, what `forward_intermediates` returns), and the names that have pretrained
weights: the API validates `timm/<name>`, pairs ReviewKD's stages and accepts
`init: {"pretrained": true}` by them. Models are built on the meta device (no weights
allocated); the whole list takes a few minutes. tests/worker/test_timm_archs.py checks the
names against the installed timm and the stage counts of a sample against real models.

Regenerate with `python -m worker.timm_archs` after changing the timm version.
"""

import json
import sys
from pathlib import Path
from typing import Any

import timm
import torch

PATH = Path(__file__).resolve().parent.parent / "service" / "timm_archs.json"
FORMAT = "distillery.timm_archs/v1"


def stage_count(name: str) -> int:
    with torch.device("meta"):
        model = timm.create_model(name)
    return len(model.feature_info)  # type: ignore[arg-type]


def timm_archs(names: list[str] | None = None) -> dict[str, Any]:
    names = names if names is not None else timm.list_models()
    return {
        "format": FORMAT,
        "timm": timm.__version__,
        "stages": {name: stage_count(name) for name in sorted(names)},
        "pretrained": pretrained(),
    }


def pretrained() -> list[str]:
    """The models with pretrained weights in timm's registry (by default tag or any)."""
    return sorted({name.split(".")[0] for name in timm.list_models(pretrained=True)})


def render(archs: dict[str, Any]) -> str:
    """One line per model: small diffs when timm changes."""
    rows = [f"    {json.dumps(name)}: {count}" for name, count in archs["stages"].items()]
    names = [f"    {json.dumps(name)}" for name in archs["pretrained"]]
    head = f'{{\n  "format": {json.dumps(archs["format"])},\n  "timm": {json.dumps(archs["timm"])},'
    stages = '\n  "stages": {\n' + ",\n".join(rows) + "\n  },"
    return head + stages + '\n  "pretrained": [\n' + ",\n".join(names) + "\n  ]\n}\n"


def main() -> None:
    PATH.write_text(render(timm_archs()))
    sys.stderr.write(f"wrote {PATH}\n")


if __name__ == "__main__":
    main()
