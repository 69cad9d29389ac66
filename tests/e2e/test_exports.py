"""A student asked for in every format: downloaded over HTTP as safetensors, ONNX and
TorchScript, the three give the same predictions; its model card says what it is, where it
came from, how well it does per class and how fast it runs."""

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import torch

from tests.e2e.conftest import Service, download, load_student, validation
from worker.engine.checkpoint import load_weights
from worker.engine.data import load_dataset
from worker.engine.zoo import build_model
from worker.job.exports import OPSET, TOLERANCE

# training through a real worker is the same on either backend: the production shape only
# (the API's and the job lifecycle's backend differences are tested on both elsewhere)
pytestmark = pytest.mark.parametrize("backend", ["postgres"], indirect=True)

VAL_FRACTION, SPLIT_SEED = 0.2, 3
DATA = {"dataset": "digits", "val_fraction": VAL_FRACTION, "split_seed": SPLIT_SEED}
SPEC = {
    "name": "digits-exports",
    "method": {"name": "supervised"},
    "student": {"arch": "cnn_small"},
    "data": DATA,
    "train": {"epochs": 2, "batch_size": 64, "optimizer": {"lr": 0.1}},
    "exports": ["onnx", "torchscript"],
}
FILES = {"student.safetensors": "student", "student.onnx": "onnx"}
FILES |= {"student.torchscript.pt": "torchscript"}


@pytest.fixture(scope="module")
def exported(service: Service) -> dict[str, Any]:
    job = service.submit(SPEC)
    return service.wait_status(job["id"], "succeeded")


@pytest.fixture(scope="module")
def distilled(service: Service, exported: dict[str, Any]) -> dict[str, Any]:
    """A KD student of the exported job, on the same data, with no exports."""
    spec = {**SPEC, "name": "digits-kd", "method": {"name": "kd"}, "exports": []}
    spec |= {"teacher": {"job": exported["id"]}, "train": {"epochs": 1, "batch_size": 64}}
    job = service.submit(spec)
    return service.wait_status(job["id"], "succeeded")


def artifacts(service: Service, job_id: str) -> dict[str, dict[str, Any]]:
    listed = service.http.get(f"/v1/jobs/{job_id}/artifacts").json()["data"]
    return {a["name"]: a for a in listed}


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")
def test_three_formats_download_and_predict_alike(
    service: Service, exported: dict[str, Any], tmp_path: Path
) -> None:
    listed = artifacts(service, exported["id"])
    assert {name: listed[name]["kind"] for name in FILES} == FILES
    paths = {name: download(service, exported["id"], name, tmp_path) for name in FILES}
    for name, path in paths.items():
        assert hashlib.sha256(path.read_bytes()).hexdigest() == listed[name]["sha256"]

    card = load_student(service, exported, tmp_path)  # safetensors scores what the job said
    val_x, val_y = validation(load_dataset("digits", VAL_FRACTION, card["dataset"]["split_seed"]))
    model = build_model(card["architecture"], card["num_classes"], card["in_channels"])
    load_weights(model, paths["student.safetensors"])
    with torch.no_grad():
        expected = model.eval()(val_x)
        scripted = torch.jit.load(str(paths["student.torchscript.pt"]))(val_x)
    session = ort.InferenceSession(str(paths["student.onnx"]), providers=["CPUExecutionProvider"])
    from_onnx = session.run(None, {"input": val_x.numpy()})[0]

    np.testing.assert_allclose(from_onnx, expected.numpy(), atol=TOLERANCE)
    assert (from_onnx.argmax(1) == expected.argmax(1).numpy()).all()
    assert torch.equal(scripted.argmax(1), expected.argmax(1))
    accuracy = float((expected.argmax(1) == val_y).float().mean())
    assert accuracy == pytest.approx(card["metrics"]["final"]["val_acc"], abs=1e-6)


def test_model_card_has_size_per_class_accuracy_latency_and_export_parity(
    service: Service, exported: dict[str, Any], tmp_path: Path
) -> None:
    card = load_student(service, exported, tmp_path)
    model = build_model("cnn_small", 10, 1)
    assert card["parameters"] == sum(p.numel() for p in model.parameters())

    per_class = card["per_class_accuracy"]
    assert list(per_class) == [str(c) for c in range(10)]
    _, val_y = validation(load_dataset("digits", VAL_FRACTION, SPLIT_SEED))
    counts = torch.bincount(val_y, minlength=10).tolist()
    overall = sum(per_class[str(c)] * n for c, n in enumerate(counts)) / sum(counts)
    assert overall == pytest.approx(card["metrics"]["final"]["val_acc"], abs=1e-6)

    latency = card["latency_ms"]
    assert latency["device"] == "cpu" and latency["precision"] == "fp32"
    assert [run["batch_size"] for run in latency["runs"]] == [1, 64]
    assert all(0 < run["p50"] <= run["p90"] for run in latency["runs"])

    exports = card["exports"]
    assert exports["onnx"]["opset"] == OPSET and exports["onnx"]["file"] == "student.onnx"
    assert exports["torchscript"]["file"] == "student.torchscript.pt"
    assert all(0 <= e["max_abs_diff"] <= TOLERANCE for e in exports.values())
    events = [e["message"] for e in service.events(exported["id"]) if e["type"] == "export"]
    assert [m.split(":")[0] for m in events] == ["student.onnx", "student.torchscript.pt"]


def test_lineage_names_the_teacher_weights_and_the_data(
    service: Service, exported: dict[str, Any], distilled: dict[str, Any], tmp_path: Path
) -> None:
    teacher_card = load_student(service, exported, tmp_path)
    card = load_student(service, distilled, tmp_path)
    teacher_weights = artifacts(service, exported["id"])["student.safetensors"]["sha256"]
    assert card["teacher"]["job_id"] == exported["id"]
    assert card["teacher"]["weights_sha256"] == teacher_weights
    assert len(card["dataset"]["sha256"]) == 64
    assert card["dataset"]["sha256"] == teacher_card["dataset"]["sha256"]  # same data, same hash
    assert card["exports"] == {}
    assert not {"student.onnx", "student.torchscript.pt"} & set(artifacts(service, distilled["id"]))
