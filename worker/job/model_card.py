"""The model card (model.json): what the student is, where it came from, how well it does
and how fast it runs on the worker that trained it."""

import hashlib
import platform
import time
from importlib import metadata
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from service.spec import recipes
from service.spec.job import JobSpec
from worker.engine.data import DataSplit, Images, Streamed
from worker.engine.device import autocast, memory_format, place, resolve_device
from worker.engine.loop import TrainResult

MODEL_CARD_FORMAT = "distillery.model/v1"
WARMUP = 3
TIMED = 20  # iterations per batch size, fewer when they would pass the budget
MIN_TIMED = 5
BUDGET_S = 0.3  # timed seconds per batch size: a big model at a big batch on a CPU is slow


def model_card(
    job_id: str,
    spec: JobSpec,
    data: DataSplit,
    outcome: TrainResult,
    model: nn.Module,
    *,
    teacher: dict[str, Any] | None,
    warnings: list[str],
    exports: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    """Measures `model` (on the job's device and precision) for its accuracy per class and
    latency; the rest comes from the job."""
    device, precision, batch_size = outcome.device, outcome.precision, spec.train.batch_size
    return {
        "format": MODEL_CARD_FORMAT,
        "job_id": job_id,
        "architecture": getattr(model, "arch", spec.student.arch),
        "parameters": sum(p.numel() for p in model.parameters()),
        "num_classes": data.num_classes,
        "in_channels": data.input_shape[0],
        "input_shape": list(data.input_shape),
        "normalisation": {"mean": data.mean, "std": data.std},
        "class_names": data.class_names,
        "dataset": dataset_lineage(spec, data),
        "metrics": {
            "final": outcome.final_metrics,
            "best": {"val_acc": outcome.best_val_acc, "epoch": outcome.best_epoch},
        },
        "per_class_accuracy": per_class_accuracy(model, data, batch_size, device, precision),
        "latency_ms": latency_ms(model, data.input_shape, [1, batch_size], device, precision),
        "exports": exports,
        "method": spec.method.model_dump(),
        "derived": spec.derived,  # how admission derived each default that fits the job
        "teacher": teacher,
        "recipe": recipes.card(spec.recipe),  # the published settings the spec started from
        "warnings": warnings,
        "spec": spec.model_dump(mode="json"),  # resolved at submission
        "versions": versions(),
        "device": device,
        "precision": precision,
    }


def dataset_lineage(spec: JobSpec, data: DataSplit) -> dict[str, Any]:
    """Where the data came from; val_fraction only when it split the validation set off."""
    fraction = {} if data.own_val else {"val_fraction": spec.data.val_fraction}
    return {
        "name": spec.data.dataset,
        "upload": spec.data.upload,
        **fraction,
        "split_seed": spec.data.split_seed,
        "train_size": len(data.train),
        "holdout_size": 0 if data.holdout is None else len(data.holdout),
        "val_size": len(data.val),
        "image_size": data.augment.size,
        "augment": data.augment.mode,
        "storage": "streamed" if isinstance(data.train, Streamed) else "resident",
        "sha256": data_fingerprint(data),
    }


def data_fingerprint(data: DataSplit) -> str:
    """sha256 of the train, held-out and val splits as trained on (pixels held in memory, or
    the shards' index and which samples; labels; normalisation): the same dataset and split
    give the same hash."""
    digest = hashlib.sha256()
    for part in data.parts():
        for item in part.fingerprint():
            arr = as_array(item)
            digest.update(f"{arr.dtype}{arr.shape}".encode())  # so no two layouts collide
            digest.update(arr.tobytes())
    return digest.hexdigest()


def as_array(item: Any) -> np.ndarray:
    if isinstance(item, Tensor):
        return np.ascontiguousarray(item.detach().cpu().numpy())
    if isinstance(item, bytes):
        return np.frombuffer(item, np.uint8)
    return np.asarray(item)


def per_class_accuracy(
    model: nn.Module, data: DataSplit, batch_size: int, device: str, precision: str
) -> dict[str, float | None]:
    """{class name: accuracy on the validation split}; None for a class with no samples."""
    pred = predict(model, data.val, batch_size, device, precision)
    accuracy: dict[str, float | None] = {}
    for c, name in enumerate(data.class_names):
        mine = data.val.labels == c
        accuracy[name] = float((pred[mine] == c).double().mean()) if mine.any() else None
    return accuracy


def predict(
    model: nn.Module, images: Images, batch_size: int, device: str, precision: str
) -> Tensor:
    """Predicted classes of `model` for `images`, in order, on CPU."""
    dev = resolve_device(device)
    place(model, dev).eval()
    out = []
    with torch.inference_mode(), autocast(dev, precision):
        for xb, _ in images.ordered(batch_size):
            xb = xb.to(dev).contiguous(memory_format=memory_format(dev))
            out.append(model(xb).argmax(dim=1).cpu())
    return torch.cat(out)


def latency_ms(
    model: nn.Module,
    input_shape: tuple[int, ...],
    batch_sizes: list[int],
    device: str,
    precision: str,
) -> dict[str, Any]:
    """Forward-pass wall time in milliseconds (p50, p90) at each batch size."""
    dev = resolve_device(device)
    place(model, dev).eval()
    runs = [_time_forward(model, input_shape, n, dev, precision) for n in sorted(set(batch_sizes))]
    return {"device": str(dev), "precision": precision, "runs": runs}


def _time_forward(
    model: nn.Module, input_shape: tuple[int, ...], n: int, dev: torch.device, precision: str
) -> dict[str, Any]:
    x = torch.randn((n, *input_shape), device=dev).contiguous(memory_format=memory_format(dev))
    times: list[float] = []
    with torch.inference_mode(), autocast(dev, precision):
        for i in range(WARMUP + TIMED):
            start = time.perf_counter()
            model(x)
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)  # kernels are asynchronous
            if i >= WARMUP:
                times.append((time.perf_counter() - start) * 1000)
            if len(times) >= MIN_TIMED and sum(times) > BUDGET_S * 1000:
                break
    p50, p90 = np.percentile(times, [50, 90])
    return {"batch_size": n, "p50": float(p50), "p90": float(p90), "iterations": len(times)}


def versions() -> dict[str, str]:
    found = {"python": platform.python_version(), "torch": torch.__version__}
    for pkg in ("distillery", "numpy", "safetensors", "scikit-learn", "onnx", "onnxruntime"):
        try:
            found[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            found[pkg] = "unknown"
    return found
