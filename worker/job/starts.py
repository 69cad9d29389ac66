"""Where a student's weights start (`student.init`): random, timm's pretrained weights from
the worker's Hugging Face cache, or a registered model's or a succeeded job's file. Only
safetensors are read; a classifier trained for another class count is replaced by a fresh
one. Each start says what the model card records of it."""

from pathlib import Path
from typing import Any

from safetensors.torch import load_file
from torch import nn

from service import files
from service.errors import JobError
from service.spec.job import JobSpec
from worker.engine.zoo import build_model
from worker.engine.zoo.registry import TIMM
from worker.task.inputs import JobInputs, StartSource

WEIGHTS = "model.safetensors"  # timm's weights file on the Hugging Face hub


def start_student(
    spec: JobSpec, inputs: JobInputs, num_classes: int, in_channels: int
) -> tuple[nn.Module, dict[str, Any] | None]:
    """The student, and where its weights came from (None: random)."""
    arch, init = spec.student.arch, spec.student.init
    if init is None:
        return build_model(arch, num_classes, in_channels), None
    if init.pretrained:
        return pretrained(arch, num_classes, in_channels)
    assert inputs.start is not None, "the job's inputs name the start's file"
    model = build_model(arch, num_classes, in_channels)
    return model, load_start(model, inputs.start)


def pretrained(arch: str, num_classes: int, in_channels: int) -> tuple[nn.Module, dict[str, Any]]:
    """timm's default pretrained weights for `arch`, read from the worker's Hugging Face cache
    (downloaded first unless HF_HUB_OFFLINE=1)."""
    import timm
    from huggingface_hub import hf_hub_download

    name = arch.removeprefix(TIMM)
    cfg = timm.models.get_pretrained_cfg(name)
    if cfg is None or not cfg.hf_hub_id:
        raise JobError("pretrained_unavailable", f"timm has no hub weights for {arch}")
    try:
        path = Path(hf_hub_download(cfg.hf_hub_id, WEIGHTS))
    except Exception as exc:  # offline without them, no such file, network: all say why
        why = f"{cfg.hf_hub_id}/{WEIGHTS} is not in the worker's Hugging Face cache: {exc}"
        raise JobError("pretrained_unavailable", why, retryable=True) from exc
    overlay = {"source": "", "file": str(path)}  # this file, whatever timm's default source
    model = timm.create_model(
        name,
        pretrained=True,
        pretrained_cfg_overlay=overlay,
        num_classes=num_classes,
        in_chans=in_channels,
    )
    setattr(model, "arch", arch)  # noqa: B010 (as build_model names it)
    return model, {
        "pretrained": cfg.hf_hub_id,
        "revision": path.parent.name,  # the cache's snapshots/<commit>/ folder
        "sha256": files.sha256_file(path),
        "head_replaced": num_classes != cfg.num_classes,
    }


def load_start(model: nn.Module, start: StartSource) -> dict[str, Any]:
    """Load a model's or a job's weights into `model`: every tensor must fit, but those of a
    classifier made for another class count, which keeps its fresh weights."""
    if files.sha256_file(start.path) != start.sha256:
        raise JobError("start_changed", f"{start.path.name} does not match its sha256")
    state, own = load_file(str(start.path)), model.state_dict()
    misshapen = {k for k in set(state) & set(own) if state[k].shape != own[k].shape}
    replaced = misshapen & classifier_keys(model)
    if unexpected := sorted((set(own) ^ set(state) | misshapen) - replaced):
        raise JobError("start_mismatch", f"the start's weights do not fit: {unexpected[:10]}")
    model.load_state_dict({k: v for k, v in state.items() if k not in replaced}, strict=False)
    ident = {"model": start.model_id} if start.model_id else {"job": start.job_id}
    return {**ident, "sha256": start.sha256, "head_replaced": bool(replaced)}


def classifier_keys(model: nn.Module) -> set[str]:
    """The state_dict keys of the model's classifier: timm's `get_classifier()`, else the
    last linear layer (the zoo's heads)."""
    get = getattr(model, "get_classifier", None)
    head = get() if callable(get) else None
    if not isinstance(head, nn.Module):
        head = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    return {
        f"{name}.{key}" if name else key
        for name, module in model.named_modules()
        if module is head
        for key in module.state_dict()
    }
