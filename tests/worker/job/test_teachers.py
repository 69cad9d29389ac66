"""worker/job/teachers.py: a teacher rebuilt from its file, only while the file is the one its
record names."""

import dataclasses
from pathlib import Path

import pytest
import torch

from service.errors import JobError
from service.files import sha256_file
from worker.engine.checkpoint import save_weights
from worker.engine.zoo import build_model
from worker.job.teachers import load_teacher
from worker.task.inputs import TeacherSource


@pytest.fixture
def source(tmp_path: Path) -> TeacherSource:
    torch.manual_seed(2)
    model = build_model("cnn_small", 4, 3)
    path = tmp_path / "weights.safetensors"
    save_weights(path, model)
    return TeacherSource("cnn_small", 4, 3, path, sha256_file(path), "job_a", "mdl_b")


def test_a_teacher_loads_in_eval_mode_with_its_lineage(source: TeacherSource) -> None:
    teacher = load_teacher(source)
    assert not teacher.model.training and teacher.model(torch.zeros(2, 3, 8, 8)).shape == (2, 4)
    teacher.val = {"val_acc": 0.75}
    assert teacher.lineage() == {
        "job_id": "job_a",
        "model_id": "mdl_b",
        "architecture": "cnn_small",
        "weights_sha256": source.sha256,
        "val_acc": 0.75,
    }


def test_a_changed_file_is_refused_before_it_is_read(source: TeacherSource) -> None:
    with pytest.raises(JobError) as refused:
        load_teacher(dataclasses.replace(source, sha256="0" * 64))
    assert refused.value.code == "teacher_changed" and "mdl_b" in refused.value.message
    assert not refused.value.retryable
