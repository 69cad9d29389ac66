"""Names the API shares with the engine without importing it (tests keep them equal)."""

import difflib
import json
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from service.spec.limits import without_nul

ARCHITECTURES = (
    "cnn_small",
    "resnet8",
    "resnet14",
    "resnet20",
    "resnet32",
    "resnet44",
    "resnet56",
    "resnet110",
    "resnet8x4",
    "resnet32x4",
    "wrn_16_1",
    "wrn_16_2",
    "wrn_40_1",
    "wrn_40_2",
    "vgg8",
    "vgg11",
    "vgg13",
    "vgg16",
    "vgg19",
    "mobilenetv2",
    "mobilenetv2_half",
    "shufflenetv1",
    "shufflenetv2",
    "mlp",
)
ZooArch = Literal[ARCHITECTURES]  # type: ignore[valid-type]
TIMM = "timm/"  # any timm architecture: "timm/<name>", e.g. "timm/mobilenetv3_large_100"
# name lists the API checks without torch, generated from the engine and timm
TIMM_ARCHS = Path(__file__).with_name("timm_archs.json")  # python -m worker.timm_archs
SIGNATURES = Path(__file__).with_name("signatures.json")  # python -m worker.signatures


DATASETS = ("digits", "synthetic", "upload")
DatasetName = Literal[DATASETS]  # type: ignore[valid-type]
# stage features each zoo architecture exposes (a test derives them from the engine's models)
STAGES = {
    arch: 0 if arch == "mlp" else 4 if arch.startswith(("vgg", "mobilenetv2")) else 3
    for arch in ARCHITECTURES
}


@lru_cache
def timm_archs() -> dict[str, Any]:
    """The committed list: the timm version, each model's stage count, those pretrained."""
    archs = dict(json.loads(TIMM_ARCHS.read_text()))
    return archs | {"pretrained": frozenset(archs["pretrained"])}


def timm_stages() -> dict[str, int]:
    """{timm model name: its stage features}, for the timm version the file was made with."""
    stages: dict[str, int] = timm_archs()["stages"]  # shared: callers only read it
    return stages


def has_pretrained(arch: str) -> bool:
    """Whether timm has pretrained weights for a timm/<name> architecture."""
    return arch.startswith(TIMM) and arch.removeprefix(TIMM) in timm_archs()["pretrained"]


def fixed_input_size(arch: str) -> int | None:
    """The one input size a timm/<name> architecture takes (ViTs and the like); None for
    one that takes any size, and for the zoo's."""
    if not arch.startswith(TIMM):
        return None
    sizes: dict[str, int] = timm_archs()["input_size"]
    return sizes.get(arch.removeprefix(TIMM))


def stages(arch: str) -> int:
    """How many stage features an architecture exposes (0: none)."""
    if arch.startswith(TIMM):
        return timm_stages()[arch.removeprefix(TIMM)]
    return STAGES[arch]


def known_arch(arch: str) -> str:
    """`arch` when it is a zoo name or timm/<a timm model name>, else why not."""
    timm = arch.startswith(TIMM) and arch.removeprefix(TIMM) in timm_stages()
    if arch in ARCHITECTURES or timm:
        return arch
    names = [*ARCHITECTURES, *(TIMM + n for n in timm_stages())]
    close = difflib.get_close_matches(arch, names, n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise ValueError(
        f"unknown architecture {arch!r}: a zoo name ({', '.join(ARCHITECTURES)}) or "
        f"timm/<one of timm {timm_archs()['timm']}'s {len(timm_stages())} models>{hint}"
    )


Arch = Annotated[
    str,
    Field(
        max_length=100,
        description="a zoo architecture, or timm/<name> for any timm model "
        '(e.g. "timm/mobilenetv3_large_100")',
    ),
    AfterValidator(known_arch),
]


class Strict(BaseModel):
    """What a request body holds: an unknown field, a string where a number or a boolean
    belongs, NaN, an infinity or a NUL character is refused."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    @field_validator("*")
    @classmethod
    def _without_nul(cls, value: Any) -> Any:
        return without_nul(value)
