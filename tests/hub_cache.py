"""A Hugging Face hub cache the tests build themselves (random weights in the hub's file
layout), so that the real pretrained-loading code runs offline."""

from pathlib import Path

import timm
import torch
from safetensors.torch import save_file

REVISION = "0123456789abcdef0123456789abcdef01234567"


def cache_timm_weights(cache: Path, name: str) -> dict[str, torch.Tensor]:
    """timm's default weights for `name` as the hub would cache them under `cache`
    (HF_HUB_CACHE; $HF_HOME/hub by default): random ones, seeded. Returns them."""
    repo = timm.models.get_pretrained_cfg(name).hf_hub_id
    torch.manual_seed(7)
    state = {k: v.contiguous() for k, v in timm.create_model(name).state_dict().items()}
    folder = cache / f"models--{repo.replace('/', '--')}"
    snapshot = folder / "snapshots" / REVISION
    snapshot.mkdir(parents=True)
    save_file(state, str(snapshot / "model.safetensors"))
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text(REVISION)
    return state
