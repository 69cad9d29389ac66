"""service/spec/timm_archs.json is the installed timm's model list, with the stage and parameter
counts the engine's models really have."""

import json

import pytest
import timm
import torch

from service.spec import names
from worker import timm_archs
from worker.engine.zoo import build_model
from worker.engine.zoo.base import forward_stages
from worker.engine.zoo.registry import TIMM

COMMITTED = json.loads(timm_archs.PATH.read_text())


def test_committed_names_are_the_installed_timms():
    """If this fails, run `python -m worker.timm_archs` and commit service/spec/timm_archs.json."""
    assert COMMITTED["timm"] == timm.__version__
    assert sorted(COMMITTED["stages"]) == sorted(timm.list_models())
    assert COMMITTED["pretrained"] == timm_archs.pretrained()
    assert COMMITTED["input_size"] == timm_archs.input_sizes(timm.list_models())
    assert timm_archs.PATH.read_text() == timm_archs.render(COMMITTED)


# every 50th model (the whole list takes minutes to rebuild) and those the tests train
SAMPLE = sorted(COMMITTED["stages"])[::50] + ["resnet18", "mobilenetv3_small_050"]


@pytest.mark.parametrize("name", SAMPLE)
def test_committed_stage_and_parameter_counts_are_the_models(name: str) -> None:
    stages, params = timm_archs.facts(name)
    assert (COMMITTED["stages"][name], COMMITTED["params"][name]) == (stages, params)


@pytest.mark.parametrize("name", ["resnet18", "mobilenetv3_small_050", "convnext_atto"])
def test_a_timm_model_has_the_stage_features_the_api_counts(name: str) -> None:
    model = build_model(f"{TIMM}{name}", 7, 2).eval()
    with torch.no_grad():
        logits, stages = forward_stages(model, torch.zeros(2, 2, 64, 64))
        assert torch.allclose(logits, model(torch.zeros(2, 2, 64, 64)), atol=1e-5)
    assert logits.shape == (2, 7) and stages.pooled.shape[0] == 2
    assert len(stages.feats) == names.stages(f"{TIMM}{name}")
    assert all(f.dim() == 4 for f in stages.feats)
    assert model.arch == f"{TIMM}{name}"  # type: ignore[comparison-overlap]


@pytest.mark.parametrize("name", ["vit_tiny_patch16_224", "swin_tiny_patch4_window7_224"])
def test_a_model_of_one_input_size_takes_only_that_one(name: str) -> None:
    size = COMMITTED["input_size"][name]
    model = build_model(f"{TIMM}{name}", 10, 1).eval()
    with torch.no_grad():
        assert model(torch.zeros(1, 1, size, size)).shape == (1, 10)
        with pytest.raises(AssertionError, match="doesn't match model"):
            model(torch.zeros(1, 1, 8, 8))  # digits: what admission now refuses


def test_a_model_that_adapts_is_not_listed():
    assert "resnet18" not in COMMITTED["input_size"]
    model = build_model(f"{TIMM}resnet18", 10, 1).eval()
    with torch.no_grad():
        assert model(torch.zeros(2, 1, 8, 8)).shape == (2, 10)


def test_the_api_and_the_engine_name_timm_alike():
    assert names.TIMM == TIMM
