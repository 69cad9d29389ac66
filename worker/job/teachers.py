"""A job's teacher, rebuilt from its architecture and safetensors weights (nothing is ever
unpickled), after checking the file is still the one its record names."""

from dataclasses import dataclass, field

import torch

from service import files
from service.errors import JobError
from worker.engine.checkpoint import load_weights
from worker.engine.zoo import build_model
from worker.task.inputs import TeacherSource


@dataclass
class TeacherInfo:
    source: TeacherSource
    model: torch.nn.Module
    val: dict[str, float] = field(default_factory=dict)  # measured on the job's validation split

    def lineage(self) -> dict[str, object]:
        """Where the teacher came from and how well it did, for the model card."""
        return {
            "job_id": self.source.job_id,
            "model_id": self.source.model_id,
            "architecture": self.source.arch,
            "weights_sha256": self.source.sha256,
            **self.val,
        }


def load_teacher(source: TeacherSource) -> TeacherInfo:
    """The teacher in eval mode; float16 / bfloat16 weights are cast to float32 parameters."""
    if files.sha256_file(source.path) != source.sha256:
        what = f"model {source.model_id!r}" if source.model_id else f"job {source.job_id!r}"
        raise JobError("teacher_changed", f"{what}: {source.path.name} does not match its sha256")
    model = build_model(source.arch, source.num_classes, source.in_channels)
    load_weights(model, source.path)
    return TeacherInfo(source, model.eval())
