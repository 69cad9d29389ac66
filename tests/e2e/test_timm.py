"""timm architectures through the service: a timm teacher trained by a real worker, then
ReviewKD (timm's feature API on both sides) into a timm student exported to ONNX."""

from pathlib import Path

from tests.e2e.conftest import Service, load_student

DATA = {
    "dataset": "synthetic",
    "val_fraction": 0.2,
    "synthetic": {"num_samples": 300, "num_classes": 3, "channels": 3, "size": 32},
}
TRAIN = {"epochs": 2, "batch_size": 32, "optimizer": {"name": "adamw"}}


def test_a_timm_teacher_distils_into_a_timm_student(service: Service, tmp_path: Path) -> None:
    teacher = service.submit(
        {
            "method": {"name": "supervised"},
            "student": {"arch": "timm/resnet18"},
            "data": DATA,
            "train": TRAIN,
        }
    )
    teacher = service.wait_status(teacher["id"], "succeeded")
    assert load_student(service, teacher, tmp_path)["architecture"] == "timm/resnet18"

    student = service.submit(
        {
            "method": {"name": "reviewkd", "warmup_epochs": 1},
            "teacher": {"job": teacher["id"]},
            "student": {"arch": "timm/mobilenetv3_small_050"},
            "data": DATA,
            "train": TRAIN,
            "exports": ["onnx"],
        }
    )
    job = service.wait_status(student["id"], "succeeded")
    metrics = [e["data"] for e in service.events(job["id"]) if e["type"] == "metrics"]
    assert [m["epoch"] for m in metrics] == [1, 2] and all("train_hcl" in m for m in metrics)
    card = load_student(service, job, tmp_path)
    assert card["architecture"] == "timm/mobilenetv3_small_050"
    assert card["teacher"]["architecture"] == "timm/resnet18"
    assert card["exports"]["onnx"]["max_abs_diff"] <= 1e-3
    assert "student.onnx" in job["result"]["artifacts"]
