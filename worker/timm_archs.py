"""timm's architectures for the API, which has no torch: `service/spec/timm_archs.json`.

Every name `timm.list_models()` knows, with its number of stage features (the length of its
`feature_info`, what `forward_intermediates` returns), its parameter count, the input size
of those timm declares take only that one (`fixed_input_size`), and the names that have
pretrained weights: the API validates `timm/<name>`, pairs ReviewKD's stages, sizes a job's
training state, refuses data of another size and accepts `init: {"pretrained": true}` by
them. Models are built on the meta device (no weights allocated); the whole list takes
several minutes.
tests/worker/test_timm_archs.py checks the names against the installed timm, and the stage
and parameter counts of a sample against real models.

Regenerate with `python -m worker.timm_archs` after changing the timm version.
"""

import json
import sys
from typing import Any

import timm
import torch
from timm.models import get_pretrained_cfg

from service.spec.names import TIMM_ARCHS

PATH = TIMM_ARCHS  # read by service/spec/names.py
FORMAT = "distillery.timm_archs/v3"
DEFAULT_CLASSES = 1000  # the classifier timm builds without num_classes


def facts(name: str) -> tuple[int, list[int]]:
    """A model's stage count, and its [parameters, classifier parameters per class] as timm
    builds it by default (1000 classes): what admission sizes its training state by."""
    with torch.device("meta"):
        model = timm.create_model(name)
    head = sum(p.numel() for h in classifiers(model) for p in h.parameters())
    params = sum(p.numel() for p in model.parameters())
    return len(model.feature_info), [params, head // DEFAULT_CLASSES]  # type: ignore[arg-type]


def classifiers(model: torch.nn.Module) -> tuple[torch.nn.Module, ...]:
    """A model's classifier heads: none for an encoder, two for a distilled model."""
    get = getattr(model, "get_classifier", None)
    heads = get() if callable(get) else ()
    return heads if isinstance(heads, tuple) else (heads,)


def input_sizes(names: list[str]) -> dict[str, int]:
    """{name: its input size} of the models whose default config says they take only that
    one (a ViT's position embeddings, a Swin's windows, an MLP-Mixer's token mixing)."""
    cfgs = {name: get_pretrained_cfg(name) for name in sorted(names)}
    return {n: int(c.input_size[-1]) for n, c in cfgs.items() if c and c.fixed_input_size}


def timm_archs(names: list[str] | None = None) -> dict[str, Any]:
    names = names if names is not None else timm.list_models()
    built = {name: facts(name) for name in sorted(names)}
    return {
        "format": FORMAT,
        "timm": timm.__version__,
        "stages": {name: stages for name, (stages, _) in built.items()},
        "params": {name: params for name, (_, params) in built.items()},
        "input_size": input_sizes(list(built)),
        "pretrained": pretrained(),
    }


def pretrained() -> list[str]:
    """The models with pretrained weights in timm's registry (by default tag or any)."""
    return sorted({name.split(".")[0] for name in timm.list_models(pretrained=True)})


def render(archs: dict[str, Any]) -> str:
    """One line per model: small diffs when timm changes."""
    head = f'{{\n  "format": {json.dumps(archs["format"])},\n  "timm": {json.dumps(archs["timm"])},'
    names = [f"    {json.dumps(name)}" for name in archs["pretrained"]]
    sections = [_section(archs, key) for key in ("stages", "params", "input_size")]
    return head + "".join(sections) + '\n  "pretrained": [\n' + ",\n".join(names) + "\n  ]\n}\n"


def _section(archs: dict[str, Any], key: str) -> str:
    rows = [f"    {json.dumps(name)}: {json.dumps(v)}" for name, v in archs[key].items()]
    return f'\n  "{key}": {{\n' + ",\n".join(rows) + "\n  },"


def main() -> None:
    PATH.write_text(render(timm_archs()))
    sys.stderr.write(f"wrote {PATH}\n")


if __name__ == "__main__":
    main()
