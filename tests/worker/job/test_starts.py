"""Where a student's weights start (worker/job/starts.py): timm's pretrained weights from an
offline hub cache the test builds, and a model's or a job's file, with the classifier
replaced for another class count."""

from pathlib import Path

import pytest
import torch
from huggingface_hub import constants

from service.errors import JobError
from service.files import sha256_file
from tests.hub_cache import REVISION, cache_timm_weights
from worker.engine.checkpoint import save_weights
from worker.engine.zoo import build_model
from worker.job.starts import classifier_keys, load_start, pretrained
from worker.task.inputs import StartSource


@pytest.fixture
def offline_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "hub"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return cache


def same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and torch.equal(a, b)


def test_pretrained_weights_load_from_the_offline_cache_with_a_new_head(offline_hub):
    cached = cache_timm_weights(offline_hub, "resnet18")
    model, record = pretrained("timm/resnet18", 10, 3)
    state = model.state_dict()
    assert all(same(state[k], v) for k, v in cached.items() if not k.startswith("fc."))
    assert state["fc.weight"].shape == (10, 512)  # a fresh head for 10 classes
    path = offline_hub / "models--timm--resnet18.a1_in1k" / "snapshots" / REVISION
    assert record == {
        "pretrained": "timm/resnet18.a1_in1k",
        "revision": REVISION,
        "sha256": sha256_file(path / "model.safetensors"),
        "head_replaced": True,
    }
    model, record = pretrained("timm/resnet18", 1000, 3)  # the cached head fits: kept
    assert all(same(model.state_dict()[k], v) for k, v in cached.items())
    assert record["head_replaced"] is False and model.arch == "timm/resnet18"


def test_pretrained_weights_missing_offline_say_so(offline_hub):
    with pytest.raises(JobError) as missing:
        pretrained("timm/resnet18", 10, 3)
    assert missing.value.code == "pretrained_unavailable"
    assert "timm/resnet18.a1_in1k/model.safetensors" in missing.value.message


@pytest.mark.parametrize("arch", ["resnet8", "timm/mobilenetv3_small_050"])
def test_a_start_loads_every_weight_and_replaces_a_head_for_other_classes(arch, tmp_path):
    torch.manual_seed(1)
    source = build_model(arch, 5, 3)
    path = tmp_path / "w.safetensors"
    save_weights(path, source)
    start = StartSource(path, sha256_file(path), model_id="mdl_x")
    torch.manual_seed(2)
    model = build_model(arch, 7, 3)
    fresh_head = {k: model.state_dict()[k].clone() for k in classifier_keys(model)}
    assert load_start(model, start) == {
        "model": "mdl_x",
        "sha256": start.sha256,
        "head_replaced": True,
    }
    state, loaded = source.state_dict(), model.state_dict()
    assert all(same(loaded[k], v) for k, v in state.items() if k not in fresh_head)
    assert all(same(loaded[k], v) for k, v in fresh_head.items())
    same_classes = build_model(arch, 5, 3)
    assert load_start(same_classes, start)["head_replaced"] is False
    assert all(same(same_classes.state_dict()[k], v) for k, v in state.items())


def test_a_start_of_another_architecture_or_a_changed_file_is_refused(tmp_path):
    path = tmp_path / "w.safetensors"
    save_weights(path, build_model("cnn_small", 5, 3))
    with pytest.raises(JobError) as misfit:
        load_start(build_model("resnet8", 5, 3), StartSource(path, sha256_file(path), job_id="j"))
    assert misfit.value.code == "start_mismatch"
    with pytest.raises(JobError) as changed:
        load_start(build_model("cnn_small", 5, 3), StartSource(path, "0" * 64, job_id="j"))
    assert changed.value.code == "start_changed"


def test_the_classifier_is_the_heads_weights():
    assert classifier_keys(build_model("resnet8", 5, 3)) == {"fc.weight", "fc.bias"}
    timm_head = classifier_keys(build_model("timm/mobilenetv3_small_050", 5, 3))
    assert timm_head == {"classifier.weight", "classifier.bias"}
