"""What a job leaves behind: the student's weights, its model card and its metrics."""

import json
import platform
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from service import jobs, store
from service.db import session_scope
from service.spec import JobSpec
from worker.engine.checkpoint import load_weights, save_weights
from worker.engine.data import DataSplit
from worker.engine.loop import TrainResult
from worker.engine.methods import Method
from worker.engine.models import build_model
from worker.reporter import JobReporter

MODEL_CARD_FORMAT = "distillery.model/v1"


@dataclass
class TeacherInfo:
    job_id: str
    arch: str
    model: torch.nn.Module
    val: dict[str, float] = field(default_factory=dict)


def load_teacher(job_id: str) -> TeacherInfo:
    """A succeeded job's student, rebuilt from its spec and safetensors weights."""
    with session_scope() as s:
        job = jobs.get_job(s, job_id)
        student = job.spec["student"]
        _, path = store.get_artifact(s, job_id, "student.safetensors")
    model = build_model(student["arch"], student["num_classes"], student["in_channels"])
    load_weights(model, path)
    return TeacherInfo(job_id=job_id, arch=student["arch"], model=model.eval())


def teacher_route(job_id: str) -> dict[str, Any]:
    """RCO's view of the teacher's training: its route checkpoints, oldest first
    ([{"epoch": E, "path": "/abs/..."}]), its epochs and the epochs its LR dropped after."""
    with session_scope() as s:
        teacher = jobs.get_job(s, job_id)
        epochs = jobs.route_epochs(s, job_id)
        names = [f"{jobs.ROUTE_PREFIX}epoch_{e:04d}.safetensors" for e in epochs]
        paths = [store.get_artifact(s, job_id, name)[1] for name in names]
    schedule = teacher.spec["train"]["schedule"]
    return {
        "route": [{"epoch": e, "path": str(p)} for e, p in zip(epochs, paths, strict=True)],
        "teacher_epochs": teacher.spec["train"]["epochs"],
        "teacher_milestones": schedule["milestones"] if schedule["name"] == "multistep" else [],
    }


def versions() -> dict[str, str]:
    found = {"python": platform.python_version(), "torch": torch.__version__}
    for pkg in ("distillery", "numpy", "safetensors", "scikit-learn"):
        try:
            found[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            found[pkg] = "unknown"
    return found


def write_outputs(
    job_id: str,
    spec: JobSpec,
    method: Method,
    data: DataSplit,
    outcome: TrainResult,
    teacher: TeacherInfo | None,
    reporter: JobReporter,
) -> dict[str, Any]:
    """Write student.safetensors, model.json, metrics.json and any extra models (KDCL's other
    peers under models/); register them all; return the job's result summary."""
    out = store.job_dir(job_id)
    model = method.output_model()
    files = {
        "student.safetensors": "student",
        "model.json": "model_card",
        "metrics.json": "metrics",
    }
    save_weights(out / "student.safetensors", model)
    extras = {}
    for name, extra in method.extra_models().items():
        files[f"models/{name}.safetensors"] = "model"
        extras[name] = getattr(extra, "arch", "")
        save_weights(out / "models" / f"{name}.safetensors", extra)
    warnings = _teacher_warning(teacher, outcome.final_metrics)
    for w in warnings:
        reporter.event("warning", w)
    card = _model_card(job_id, spec, data, outcome, teacher, warnings)
    card |= {"architecture": getattr(model, "arch", spec.student.arch), "extra_models": extras}
    _write_json(out / "model.json", card)
    _write_json(out / "metrics.json", {"job_id": job_id, "epochs": outcome.history})
    with session_scope() as s:
        for name, kind in files.items():
            store.register(s, job_id, out / name, kind=kind)
    return {
        "metrics": card["metrics"],
        "teacher": card["teacher"],
        "device": card["device"],
        "architecture": card["architecture"],
        "artifacts": sorted(files),
        "warnings": warnings,
        "resumed_from_epoch": outcome.resumed_from_epoch,
    }


def _model_card(
    job_id: str,
    spec: JobSpec,
    data: DataSplit,
    outcome: TrainResult,
    teacher: TeacherInfo | None,
    warnings: list[str],
) -> dict[str, Any]:
    return {
        "format": MODEL_CARD_FORMAT,
        "job_id": job_id,
        "num_classes": data.num_classes,
        "in_channels": data.input_shape[0],
        "input_shape": list(data.input_shape),
        "normalisation": {"mean": data.mean, "std": data.std},
        "class_names": data.class_names,
        "dataset": {
            "name": spec.data.dataset,
            "val_fraction": spec.data.val_fraction,
            "split_seed": spec.data.split_seed,
            "train_size": len(data.train_y),
            "val_size": len(data.val_y),
        },
        "metrics": {
            "final": outcome.final_metrics,
            "best": {"val_acc": outcome.best_val_acc, "epoch": outcome.best_epoch},
        },
        "method": spec.method.model_dump(),
        "teacher": None
        if teacher is None
        else {"job_id": teacher.job_id, "architecture": teacher.arch, **teacher.val},
        "warnings": warnings,
        "spec": spec.resolved(),
        "versions": versions(),
        "device": outcome.device,
        "precision": outcome.precision,
    }


def _teacher_warning(teacher: TeacherInfo | None, final: dict[str, float]) -> list[str]:
    if teacher is None or teacher.val.get("val_acc", 1.0) > final.get("val_acc", 0.0):
        return []
    return [
        f"teacher val_acc {teacher.val['val_acc']:.4f} is no better than the student's "
        f"{final['val_acc']:.4f}: distilling from it usually hurts; compare with a "
        "supervised run of the student"
    ]


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True))
    tmp.replace(path)
