"""worker/job/outputs.py: what a finished job writes into its folder, and what it reports, with
no database (the context registers the files it lists)."""

import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from service.spec.job import JobSpec
from service.spec.methods import ReviewKDParams
from tests.worker.engine.helpers import first_train, make_plan
from worker.engine.data import load_dataset
from worker.engine.loop import Quiet, TrainResult, train
from worker.engine.zoo import build_model
from worker.job.build import Built
from worker.job.outputs import write_outputs
from worker.job.teachers import TeacherInfo
from worker.task.inputs import TeacherSource

SPEC = JobSpec.model_validate(
    {
        "method": {"name": "supervised"},
        "student": {"arch": "cnn_small", "num_classes": 10, "in_channels": 1},
        "data": {"dataset": "digits", "val_fraction": 0.1},
        "train": {"epochs": 1, "batch_size": 64},
        "exports": ["torchscript"],
    }
)


def trained(tmp_path: Path, n: int, teacher_acc: float) -> tuple[Built, TrainResult]:
    """One epoch of cnn_small on n digits, with a teacher measured at `teacher_acc`."""
    data = first_train(load_dataset("digits", 0.1, 0), n)
    plan = make_plan(data, tmp_path / "checkpoints", epochs=1)
    outcome = train(plan, Quiet())
    teacher = TeacherInfo(
        TeacherSource("resnet8", 10, 1, tmp_path / "t.safetensors", "ab" * 32, "job_t"),
        build_model("resnet8", 10, 1),
        val={"val_acc": teacher_acc},
    )
    return Built(data, teacher, plan.method, plan), outcome


def test_a_finished_job_writes_its_student_card_metrics_and_exports(tmp_path: Path) -> None:
    built, outcome = trained(tmp_path, 256, teacher_acc=1.0)  # better: no warning
    plan = built.plan
    out = write_outputs("job_x", tmp_path, SPEC, built, outcome)

    assert out.files == {
        "student.safetensors": "student",
        "model.json": "model_card",
        "metrics.json": "metrics",
        "student.torchscript.pt": "torchscript",
    }
    assert all((tmp_path / name).is_file() for name in out.files)
    saved = load_file(str(tmp_path / "student.safetensors"))
    assert all(torch.equal(saved[k], v) for k, v in plan.method.student.state_dict().items())
    card = json.loads((tmp_path / "model.json").read_text())
    assert card["job_id"] == "job_x" and card["spec"] == SPEC.model_dump(mode="json")
    assert card["teacher"]["job_id"] == "job_t" and card["teacher"]["val_acc"] == 1.0
    assert card["dataset"]["holdout_size"] == 0 and card["dataset"]["train_size"] == 256
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics == {"job_id": "job_x", "epochs": outcome.history}
    assert out.result["metrics"] == card["metrics"]
    assert out.result["artifacts"] == sorted(out.files)
    assert out.result["warnings"] == [] and out.events[0][0] == "export"
    assert "student.torchscript.pt: max abs diff" in out.events[0][1]


def test_a_teacher_no_better_than_the_student_is_a_warning(tmp_path: Path) -> None:
    built, outcome = trained(tmp_path, 128, teacher_acc=0.0)
    spec = SPEC.model_copy(update={"exports": []})
    out = write_outputs("job_y", tmp_path, spec, built, outcome)
    [warning] = out.result["warnings"]
    assert "no better than the student's" in warning and out.events == [("warning", warning)]
    assert "student.torchscript.pt" not in out.files


def test_the_card_names_the_recipe_a_job_started_from(tmp_path: Path) -> None:
    built, outcome = trained(tmp_path, 64, teacher_acc=1.0)
    spec = JobSpec.model_validate(SPEC.model_dump() | {"recipe": "cifar100", "exports": []})
    write_outputs("job_r", tmp_path, spec, built, outcome)
    card = json.loads((tmp_path / "model.json").read_text())
    assert card["spec"]["recipe"] == "cifar100" and card["spec"]["train"]["epochs"] == 1
    assert card["recipe"]["name"] == "cifar100" and card["recipe"]["published"] is None
    assert any("mdistiller" in source for source in card["recipe"]["sources"])


def test_a_student_below_its_scratch_runs_is_a_warning(tmp_path: Path) -> None:
    built, outcome = trained(tmp_path, 128, teacher_acc=1.0)
    acc = outcome.final_metrics["val_acc"]
    spec = SPEC.model_copy(update={"exports": []})
    above = write_outputs("job_a", tmp_path, spec, built, outcome, {"job_s": acc - 0.01})
    assert above.result["warnings"] == [] and above.events == []
    runs = {"job_s1": acc + 0.01, "job_s2": acc + 0.03}
    below = write_outputs("job_b", tmp_path, spec, built, outcome, runs)
    [warning] = below.result["warnings"]
    assert warning == (
        f"val_acc {acc:.4f} ends below {acc + 0.02:.4f}, the final val_acc of the mean of 2 "
        "supervised runs of the same student on the same data for as many epochs "
        "(job_s1, job_s2): the method did not help here"
    )
    assert below.events == [("warning", warning)]
    card = json.loads((tmp_path / "model.json").read_text())
    assert card["warnings"] == [warning]


def test_the_card_says_how_defaults_were_derived_and_repeats_the_schedule_warning(
    tmp_path: Path,
) -> None:
    built, outcome = trained(tmp_path, 128, teacher_acc=1.0)
    spec = SPEC.model_copy(
        update={
            "method": ReviewKDParams(name="reviewkd", weight=1.0, warmup_epochs=1),
            "derived": {"method.warmup_epochs": "1: 20 of the paper's 240 epochs"},
            "exports": [],
        }
    )
    [schedule] = spec.warnings()
    assert schedule.startswith("train.epochs 1 is 240x shorter than the 240 epochs reviewkd")
    out = write_outputs("job_c", tmp_path, spec, built, outcome)
    card = json.loads((tmp_path / "model.json").read_text())
    assert card["derived"] == {"method.warmup_epochs": "1: 20 of the paper's 240 epochs"}
    assert card["warnings"] == out.result["warnings"] == [schedule]
    assert out.events == []  # an event since the job was queued (service/jobs/lifecycle.py)
