"""The runner's teacher: a succeeded job's student or a registered model (POST /v1/models),
rebuilt from its architecture and safetensors weights. Nothing is ever unpickled."""

from service import store, teachers
from service.db import session_scope
from service.spec import TeacherRef
from worker import outputs
from worker.engine.checkpoint import load_weights
from worker.engine.models import build_model
from worker.outputs import TeacherInfo


class TeacherChanged(ValueError):
    """A model file that is no longer the one its row's sha256 names."""


def load_teacher(ref: TeacherRef) -> TeacherInfo:
    if ref.model is None:
        return outputs.load_teacher(ref.job or "")
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
