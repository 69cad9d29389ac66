"""timm architectures through the service, on photos of mixed sizes uploaded over HTTP: a
timm teacher trained by a real worker, then KD into a timm student exported to ONNX and
ReviewKD (timm's feature API on both sides) into another; and a student that starts from
timm's pretrained weights, read from an offline hub cache."""

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from service.files import sha256_file
from tests.conftest import Backend
from tests.e2e.conftest import Service, download, fresh_service, load_student
from tests.hub_cache import REVISION, cache_timm_weights
from tests.photos import photo_zip

# training through a real worker is the same on either backend: the production shape only
# (the API's and the job lifecycle's backend differences are tested on both elsewhere)
pytestmark = pytest.mark.parametrize("backend", ["postgres"], indirect=True)

DATA = {
    "dataset": "synthetic",
    "val_fraction": 0.2,
    "synthetic": {"num_samples": 300, "num_classes": 3, "channels": 3, "size": 32},
}
TRAIN = {"epochs": 2, "batch_size": 32, "optimizer": {"name": "adamw"}}


@pytest.fixture(scope="module")
def photos(offline_service: Service) -> dict:
    """An ImageFolder of JPEG and PNG photos of mixed sizes and modes, uploaded over HTTP."""
    r = offline_service.http.post(
        "/v1/datasets", content=photo_zip(), headers={"Content-Type": "application/octet-stream"}
    )
    assert r.status_code == 201, r.text
    return dict(r.json())


def test_timm_models_train_and_distil_on_uploaded_photos(
    offline_service: Service, photos: dict, tmp_path: Path
) -> None:
    """supervised timm/resnet18 -> kd into timm/mobilenetv3_small_050 (ONNX) and reviewkd
    into timm/resnet10t, on photos of mixed sizes at image_size 32 (rrc_flip)."""
    service = offline_service
    assert photos["input_size"] is None and photos["in_channels"] == 3
    data = {"dataset": "upload", "upload": photos["id"], "image_size": 32, "val_fraction": 0.2}

    def job(method: dict, arch: str, **more: object) -> dict:
        spec = {"method": method, "student": {"arch": arch}, "data": data, "train": TRAIN}
        return service.submit(spec | more)

    teacher = service.wait_status(job({"name": "supervised"}, "timm/resnet18")["id"], "succeeded")
    card = load_student(service, teacher, tmp_path)
    assert card["architecture"] == "timm/resnet18"
    assert card["dataset"]["image_size"] == 32 and card["dataset"]["augment"] == "rrc_flip"

    taught = {"teacher": {"job": teacher["id"]}}
    kd = job({"name": "kd"}, "timm/mobilenetv3_small_050", **taught, exports=["onnx"])
    review = job({"name": "reviewkd", "warmup_epochs": 1}, "timm/resnet10t", **taught)
    kd = service.wait_status(kd["id"], "succeeded")
    card = load_student(service, kd, tmp_path)
    assert card["architecture"] == "timm/mobilenetv3_small_050"
    assert card["input_shape"] == [3, 32, 32]
    assert card["exports"]["onnx"]["max_abs_diff"] <= 1e-3
    assert "student.onnx" in kd["result"]["artifacts"]

    review = service.wait_status(review["id"], "succeeded")
    metrics = [e["data"] for e in service.events(review["id"]) if e["type"] == "metrics"]
    assert [m["epoch"] for m in metrics] == [1, 2] and all("train_hcl" in m for m in metrics)
    card = load_student(service, review, tmp_path)
    assert card["teacher"]["architecture"] == "timm/resnet18"


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, torch.Tensor]]:
    """An offline Hugging Face hub cache holding timm's resnet18 weights (random ones)."""
    cache = tmp_path_factory.mktemp("hf") / "hub"
    return cache, cache_timm_weights(cache, "resnet18")


@pytest.fixture(scope="module")
def offline_service(
    backend: Backend, hub: tuple[Path, dict], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    env = {"HF_HUB_CACHE": str(hub[0]), "HF_HUB_OFFLINE": "1"}
    with fresh_service(backend, tmp_path_factory.mktemp(f"logs-hub-{backend.name}"), env) as svc:
        yield svc


def test_a_student_starts_from_pretrained_weights_with_a_new_head(
    offline_service: Service, hub: tuple[Path, dict], tmp_path: Path
) -> None:
    cache, cached = hub
    spec = {
        "method": {"name": "supervised"},
        "student": {"arch": "timm/resnet18", "init": {"pretrained": True}},
        "data": DATA,  # 3 classes: the 1000-class head is replaced
        "train": {
            "epochs": 1,
            "batch_size": 32,
            "optimizer": {"lr": 1e-7, "momentum": 0, "weight_decay": 0},
            "schedule": {"name": "constant"},
        },
    }
    job = offline_service.wait_status(offline_service.submit(spec)["id"], "succeeded")
    card = load_student(offline_service, job, tmp_path)
    weights = cache / "models--timm--resnet18.a1_in1k" / "snapshots" / REVISION
    assert card["init"] == {
        "pretrained": "timm/resnet18.a1_in1k",
        "revision": REVISION,
        "sha256": sha256_file(weights / "model.safetensors"),
        "head_replaced": True,
    }
    assert card["normalisation"]["mean"] == [0.485, 0.456, 0.406]  # auto: ImageNet's
    student = load_file(str(download(offline_service, job["id"], "student.safetensors", tmp_path)))
    assert student["fc.weight"].shape == (3, 512)
    for key in ("conv1.weight", "layer4.1.conv2.weight"):  # one epoch at lr 1e-7 moved them ~0
        torch.testing.assert_close(student[key], cached[key], atol=1e-4, rtol=0)
