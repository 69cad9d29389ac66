"""What a job leaves behind: the student's weights, its model card and its metrics."""

import json
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from service.spec.job import JobSpec
from worker.engine.checkpoint import save_weights
from worker.engine.loop import TrainResult
from worker.job.build import Built
from worker.job.exports import export_onnx, export_torchscript
from worker.job.model_card import model_card
from worker.job.teachers import TeacherInfo

# format -> (file name, artifact kind, exporter(model, input_shape, path))
EXPORTS: dict[str, tuple[str, str, Callable[..., dict[str, Any]]]] = {
    "onnx": ("student.onnx", "onnx", export_onnx),
    "torchscript": ("student.torchscript.pt", "torchscript", export_torchscript),
}


@dataclass
class Outputs:
    files: dict[str, str]  # written under the job's folder: name -> artifact kind
    result: dict[str, Any]  # the job's result summary
    events: list[tuple[str, str]]  # (type, message): teacher warnings, export checks


def write_outputs(
    job_id: str,
    out: Path,
    spec: JobSpec,
    built: Built,
    outcome: TrainResult,
    scratch: dict[str, float] | None = None,
) -> Outputs:
    """Write student.safetensors, model.json, metrics.json, the requested exports and any
    extra models (KDCL's other peers under models/) into the job's folder `out`. `scratch`:
    the final val_acc of supervised runs of the same student and data, by job id."""
    model, data, teacher = built.method.output_model(), built.data, built.teacher
    files = {
        "student.safetensors": "student",
        "model.json": "model_card",
        "metrics.json": "metrics",
    }
    save_weights(out / "student.safetensors", model)
    extras = {}
    for name, extra in built.method.extra_models().items():
        files[f"models/{name}.safetensors"] = "model"
        extras[name] = getattr(extra, "arch", "")
        save_weights(out / "models" / f"{name}.safetensors", extra)
    final = outcome.final_metrics
    found = _teacher_warning(teacher, final) + _scratch_warning(final, scratch or {})
    warnings = spec.warnings() + found  # the spec's were events when the job was queued
    exports, export_files = _write_exports(spec.exports, model, data.input_shape, out)
    files |= export_files
    card = model_card(
        job_id,
        spec,
        data,
        outcome,
        model,
        teacher=teacher.lineage() if teacher else None,
        warnings=warnings,
        exports=exports,
    )
    card["extra_models"] = extras
    card["init"] = built.start
    _write_json(out / "model.json", card)
    _write_json(out / "metrics.json", {"job_id": job_id, "epochs": outcome.history})
    checks = [
        ("export", f"{e['file']}: max abs diff {e['max_abs_diff']:.3g}") for e in exports.values()
    ]
    result = {
        "metrics": card["metrics"],
        "teacher": card["teacher"],
        "device": card["device"],
        "architecture": card["architecture"],
        "artifacts": sorted(files),
        "warnings": warnings,
        "resumed_from_epoch": outcome.resumed_from_epoch,
    }
    return Outputs(files, result, [("warning", w) for w in found] + checks)


def _write_exports(
    formats: Sequence[str], model: torch.nn.Module, input_shape: tuple[int, int, int], out: Path
) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """Each requested export, checked against `model` as it is written (an export that does
    not reproduce it fails the job); returns (parity results by format, {file: kind})."""
    results, files = {}, {}
    for fmt in dict.fromkeys(formats):
        name, kind, export = EXPORTS[fmt]
        results[fmt] = export(model, input_shape, out / name)
        files[name] = kind
    return results, files


def _teacher_warning(teacher: TeacherInfo | None, final: dict[str, float]) -> list[str]:
    if teacher is None or teacher.val.get("val_acc", 1.0) > final.get("val_acc", 0.0):
        return []
    return [
        f"teacher val_acc {teacher.val['val_acc']:.4f} is no better than the student's "
        f"{final['val_acc']:.4f}: distilling from it usually hurts; compare with a "
        "supervised run of the student"
    ]


def _scratch_warning(final: dict[str, float], scratch: dict[str, float]) -> list[str]:
    """When the student ends below the supervised runs of the same student and data."""
    if not scratch or final.get("val_acc", 0.0) >= (mean := statistics.fmean(scratch.values())):
        return []
    n = len(scratch)
    runs = "the supervised run" if n == 1 else f"the mean of {n} supervised runs"
    return [
        f"val_acc {final['val_acc']:.4f} ends below {mean:.4f}, the final val_acc of {runs} "
        f"of the same student on the same data for as many epochs ({', '.join(sorted(scratch))})"
        ": the method did not help here"
    ]


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True))
    tmp.replace(path)
