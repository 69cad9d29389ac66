"""The job's teacher: a succeeded job's student or a registered model (POST /v1/models),
rebuilt from its architecture and safetensors weights (nothing is ever unpickled), and a
teacher job's training route for RCO."""

from dataclasses import dataclass, field
from typing import Any

import torch

from service import jobs, store, teachers
from service.db import session_scope
from service.spec import TeacherRef
from worker.engine.checkpoint import load_weights
from worker.engine.models import build_model


@dataclass
class TeacherInfo:
    job_id: str
    arch: str
    model: torch.nn.Module
    weights_sha256: str = ""  # of its weights file, as the artifact store / model row holds it
    model_id: str | None = None  # a registered model (POST /v1/models), when it is one
    val: dict[str, float] = field(default_factory=dict)


def job_teacher(job_id: str) -> TeacherInfo:
    """A succeeded job's student, rebuilt from its spec and safetensors weights."""
    with session_scope() as s:
        job = jobs.get_job(s, job_id)
        student = job.spec["student"]
        art, path = store.get_artifact(s, job_id, "student.safetensors")
    model = build_model(student["arch"], student["num_classes"], student["in_channels"])
    load_weights(model, path)
    return TeacherInfo(job_id, student["arch"], model.eval(), weights_sha256=art.sha256)


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


class TeacherChanged(ValueError):
    """A model file that is no longer the one its row's sha256 names."""


def load_teacher(ref: TeacherRef) -> TeacherInfo:
    if ref.model is None:
        return job_teacher(ref.job or "")
    with session_scope() as s:
        row = teachers.get_model(s, ref.model)
        path = teachers.weights_path(row)
    if store.sha256_file(path) != row.sha256:
        raise TeacherChanged(f"model {row.id!r}: weights.safetensors does not match its sha256")
    model = build_model(row.arch, row.num_classes, row.in_channels)
    load_weights(model, path)  # float16 / bfloat16 uploads are cast to the float32 parameters
    return TeacherInfo(
        row.source_job_id or "",
        row.arch,
        model.eval(),
        weights_sha256=row.sha256,
        model_id=row.id,
    )
