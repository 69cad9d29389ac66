"""worker/job/build.py: a resolved spec and the job's inputs -> the engine's objects, with no
database. Every value the engine gets is the spec's."""

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
import torch

from service.files import sha256_file
from service.spec.job import JobSpec
from worker.engine.checkpoint import save_weights
from worker.engine.data import Augment
from worker.engine.methods.rco import RCO
from worker.engine.optim import Optimizer, Schedule
from worker.engine.zoo import build_model
from worker.job.build import build, method_kwargs
from worker.task.inputs import JobInputs, TeacherSource


def spec(**parts: Any) -> JobSpec:
    body = {
        "method": {"name": "supervised"},
        "student": {"arch": "cnn_small", "num_classes": 10, "in_channels": 1},
        "data": {"dataset": "digits", "val_fraction": 0.2, "split_seed": 3},
        "train": {
            "epochs": 6,
            "batch_size": 32,
            "seed": 5,
            "optimizer": {"name": "adamw"},
            "schedule": {"name": "multistep", "milestones": [2, 4], "warmup_epochs": 1},
        },
    }
    return JobSpec.model_validate(body | parts)


def test_the_plan_carries_the_specs_values(tmp_path: Path) -> None:
    job = spec(method={"name": "supervised", "route_every": 5})
    built = build(job, JobInputs(job_dir=tmp_path), "cpu")
    plan = built.plan
    assert plan.optimizer == Optimizer("adamw", 1e-3, 0.9, 0.01, False)  # adamw's defaults
    assert plan.schedule == Schedule("multistep", [2, 4], 0.1, 1)
    assert (plan.epochs, plan.batch_size, plan.seed) == (6, 32, 5)
    assert (plan.data.augment, plan.precision) == (Augment("crop", 8), "auto")  # digits' own
    assert (plan.compile, plan.data_placement) == (False, "auto")
    assert plan.checkpoint_dir == tmp_path / "checkpoints" and plan.spec == job.model_dump(
        mode="json"
    )
    # route checkpoints: every 5th epoch, each LR drop, the last epoch
    assert plan.method.route_epochs(plan.epochs, plan.schedule.drops()) == {2, 4, 5, 6}
    assert built.teacher is None and built.data.holdout is None
    assert len(built.data.val) == 360  # 20% of digits' 1797


def test_same_spec_and_inputs_build_the_same_student(tmp_path: Path) -> None:
    first = build(spec(), JobInputs(job_dir=tmp_path), "cpu").method.state_dict()
    again = build(spec(), JobInputs(job_dir=tmp_path), "cpu").method.state_dict()
    assert all(torch.equal(first[k], again[k]) for k in first)


def test_kdcl_holds_out_its_share_of_the_training_split(tmp_path: Path) -> None:
    method = {"name": "kdcl", "peers": ["cnn_small"], "holdout_fraction": 0.25}
    built = build(spec(method=method), JobInputs(job_dir=tmp_path), "cpu")
    plain = build(spec(), JobInputs(job_dir=tmp_path), "cpu").data
    assert built.data.holdout is not None
    held, train = len(built.data.holdout), len(built.data.train)
    assert held + train == len(plain.train) and abs(held - 0.25 * len(plain.train)) <= 1
    assert torch.equal(built.data.val.labels, plain.val.labels)  # the reported split is untouched


def test_synthetic_data_takes_the_specs_options(tmp_path: Path) -> None:
    synthetic = {"num_samples": 60, "num_classes": 3, "channels": 2, "size": 12}
    job = spec(
        student={"arch": "cnn_small", "num_classes": 3, "in_channels": 2},
        data={"dataset": "synthetic", "synthetic": synthetic},
    )
    data = build(job, JobInputs(job_dir=tmp_path), "cpu").data
    assert (data.num_classes, data.input_shape) == (3, (2, 12, 12))
    assert len(data.train) + len(data.val) == 60


def teacher_file(tmp_path: Path) -> tuple[torch.nn.Module, TeacherSource]:
    torch.manual_seed(1)
    teacher = build_model("resnet8", 10, 1)
    path = tmp_path / "teacher.safetensors"
    save_weights(path, teacher)
    return teacher, TeacherSource("resnet8", 10, 1, path, sha256_file(path), "job_t")


def test_the_teacher_comes_from_its_file(tmp_path: Path) -> None:
    teacher, source = teacher_file(tmp_path)
    job = spec(method={"name": "kd", "temperature": 3.0}, teacher={"job": "job_t"})
    built = build(job, JobInputs(job_dir=tmp_path, teacher=source), "cpu")
    assert built.teacher is not None and not built.teacher.model.training
    loaded = built.teacher.model.state_dict()
    assert all(torch.equal(v, loaded[k]) for k, v in teacher.state_dict().items())
    assert built.method.teacher is built.teacher.model
    assert method_kwargs(job, JobInputs(job_dir=tmp_path)) == {
        "temperature": 3.0,
        "ce_weight": 0.1,
        "kd_weight": 0.9,
        "logit_standardisation": False,
    }


@pytest.mark.parametrize(
    ("anchors", "want", "stages"),  # the job's 6 epochs in step with the teacher's route
    [
        ("lr_drops", [2, 6], [2, 4]),
        ("every_n", [4, 6], [4, 2]),
        ([4], [4, 6], [4, 2]),
        ("greedy", [2, 6], [2, 4]),
    ],
)
def test_rco_gets_the_planned_anchors_on_the_teachers_route(
    tmp_path: Path, anchors: Any, want: list[int], stages: list[int]
) -> None:
    _, source = teacher_file(tmp_path)
    route = {e: tmp_path / f"epoch_{e:04d}.safetensors" for e in (2, 4, 6)}
    inputs = JobInputs(job_dir=tmp_path, teacher=source, route=route, teacher_lr_drops=[2, 3])
    method = {"name": "rco", "anchors": anchors, "every_n": 2}
    built = build(spec(method=method, teacher={"job": "job_t"}), inputs, "cpu")
    rco = built.method
    assert isinstance(rco, RCO)
    assert (rco.anchors, rco.stage_epochs, rco.route) == (want, stages, route)
    assert rco.greedy == (anchors == "greedy") and rco.threshold == 2.0


def test_inputs_for_another_rank_round_trip(tmp_path: Path) -> None:
    _, source = teacher_file(tmp_path)
    inputs = JobInputs(
        job_dir=tmp_path,
        dataset_path=tmp_path / "data.npz",
        teacher=dataclasses.replace(source, model_id="mdl_x"),
        route={2: tmp_path / "a"},
        teacher_lr_drops=[2],
    )
    assert JobInputs.from_dict(json.loads(json.dumps(inputs.to_dict()))) == inputs
