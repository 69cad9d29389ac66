import pytest
import torch
import torch.nn.functional as F

from worker.engine.zoo import ARCHITECTURES, build_model
from worker.engine.zoo.base import eval_mode

RESNETS = [a for a in ARCHITECTURES if a.startswith("resnet")]

# Exact counts for num_classes=100, in_channels=3 follow from mdistiller's resnet.py; the
# published tables (RepDistiller / CRD, mdistiller) round them to 0.28M, 0.86M, 1.23M, 7.43M.
PARAM_COUNTS = {
    "resnet20": (278_324, 0.28e6),
    "resnet56": (861_620, 0.86e6),
    "resnet8x4": (1_233_540, 1.23e6),
    "resnet32x4": (7_433_860, 7.43e6),
    "resnet110": (1_736_564, 1.73e6),
}


def test_architecture_names_are_sorted_and_complete() -> None:
    expected = {"cnn_small", "resnet8", "resnet14", "resnet20", "resnet32", "resnet44"}
    expected |= {"resnet56", "resnet110", "resnet8x4", "resnet32x4", "mlp"}
    expected |= {"wrn_16_1", "wrn_16_2", "wrn_40_1", "wrn_40_2"}
    expected |= {"vgg8", "vgg11", "vgg13", "vgg16", "vgg19", "mobilenetv2", "mobilenetv2_half"}
    expected |= {"shufflenetv1", "shufflenetv2"}
    assert set(ARCHITECTURES) == expected
    assert list(ARCHITECTURES) == sorted(ARCHITECTURES)


@pytest.mark.parametrize("arch", PARAM_COUNTS)
def test_parameter_counts_match_published(arch: str) -> None:
    exact, published = PARAM_COUNTS[arch]
    count = sum(p.numel() for p in build_model(arch, 100, 3).parameters())
    assert count == exact
    assert abs(count - published) / published < 0.02


def test_unknown_architecture_lists_known_ones() -> None:
    with pytest.raises(ValueError, match="unknown architecture 'resnet9'.*resnet8x4"):
        build_model("resnet9", 10)


FEATURELESS = {"mlp"}
STAGES = {"vgg": 4, "mob": 4}  # by name prefix; the rest have 3


@pytest.mark.parametrize("arch", ARCHITECTURES)
@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 32, 32)])
def test_forward_shapes(arch: str, shape: tuple[int, int, int]) -> None:
    model = build_model(arch, num_classes=7, in_channels=shape[0]).eval()
    x = torch.randn(2, *shape)
    with torch.no_grad():
        logits, features = model.forward_features(x)
        assert torch.equal(model(x), logits)
    assert logits.shape == (2, 7)
    assert features.pooled.shape[0] == 2 and features.pooled.dim() == 2
    assert len(features.preact) == len(features.feats)
    assert len(features.feats) == (0 if arch in FEATURELESS else STAGES.get(arch[:3], 3))
    if arch.startswith(("resnet", "cnn")):
        for pre, feat in zip(features.preact, features.feats, strict=True):
            assert torch.equal(feat, F.relu(pre))
            assert pre.min() < 0  # really taken before the ReLU


def test_resnet_stage_shapes_follow_cifar_layout() -> None:
    model = build_model("resnet8x4", num_classes=100).eval()
    with torch.no_grad():
        _, features = model.forward_features(torch.randn(2, 3, 32, 32))
    shapes = [tuple(f.shape[1:]) for f in features.feats]
    assert shapes == [(64, 32, 32), (128, 16, 16), (256, 8, 8)]
    assert torch.allclose(features.pooled, features.feats[-1].mean(dim=(2, 3)))


def test_resnet_state_dict_uses_mdistiller_names() -> None:
    keys = set(build_model("resnet8", 10).state_dict())
    for key in ("conv1.weight", "bn1.running_mean", "layer2.0.downsample.0.weight", "fc.bias"):
        assert key in keys


def test_eval_mode_gives_each_model_its_own_mode_back_even_on_error() -> None:
    training, frozen = torch.nn.Linear(1, 1), torch.nn.Linear(1, 1).eval()
    with pytest.raises(RuntimeError, match="stopped"), eval_mode(training, frozen):
        assert not training.training and not frozen.training
        raise RuntimeError("stopped")  # what a cancel inside a validation pass does
    assert training.training and not frozen.training
