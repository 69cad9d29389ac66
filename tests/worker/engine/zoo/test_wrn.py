import pytest
import torch
import torch.nn.functional as F

from worker.engine.zoo import build_model
from worker.engine.zoo.wrn import VARIANTS, WideResNet

# Published (RepDistiller / CRD and mdistiller tables, num_classes=100): 2.26M, 0.70M, 0.57M,
# 0.18M. The exact counts are derived by hand in `counted` from the architecture.
PUBLISHED = {"wrn_40_2": 2.26e6, "wrn_16_2": 0.70e6, "wrn_40_1": 0.57e6, "wrn_16_1": 0.18e6}
EXACT = {"wrn_40_2": 2_255_156, "wrn_16_2": 703_284, "wrn_40_1": 569_780, "wrn_16_1": 180_916}


def counted(depth: int, widen: int, classes: int = 100, in_channels: int = 3) -> int:
    """Weights by hand: stem conv, pre-activation blocks, final BN, classifier."""

    def block(i: int, o: int) -> int:
        shortcut = i * o if i != o else 0
        return 2 * i + 9 * i * o + 2 * o + 9 * o * o + shortcut

    n, w = (depth - 4) // 6, [16, 16 * widen, 32 * widen, 64 * widen]
    total = 9 * in_channels * 16
    for i, o in zip(w[:-1], w[1:], strict=True):
        total += block(i, o) + (n - 1) * block(o, o)
    return total + 2 * w[3] + w[3] * classes + classes


@pytest.mark.parametrize("arch", sorted(VARIANTS))
def test_parameter_counts_match_published(arch: str) -> None:
    count = sum(p.numel() for p in build_model(arch, 100, 3).parameters())
    assert count == EXACT[arch] == counted(*VARIANTS[arch])
    assert abs(count - PUBLISHED[arch]) / PUBLISHED[arch] < 0.01


@pytest.mark.parametrize("arch", sorted(VARIANTS))
@pytest.mark.parametrize(("shape", "classes"), [((1, 8, 8), 10), ((3, 32, 32), 100)])
def test_forward_shapes_and_feats_are_relu_of_preact(
    arch: str, shape: tuple[int, int, int], classes: int
) -> None:
    torch.manual_seed(0)
    model = build_model(arch, classes, shape[0]).eval()
    logits, f = model.forward_features(torch.randn(2, *shape))
    widen, h = VARIANTS[arch][1], shape[1]
    assert logits.shape == (2, classes)
    expected = [
        (2, 16 * widen, h, h),
        (2, 32 * widen, h // 2, h // 2),
        (2, 64 * widen, h // 4, h // 4),
    ]
    assert [tuple(p.shape) for p in f.preact] == expected
    assert [tuple(a.shape) for a in f.feats] == expected
    for pre, act in zip(f.preact, f.feats, strict=True):
        assert torch.equal(act, F.relu(pre))
        assert (pre < 0).any()  # pre-ReLU, not a copy of the feats
    assert torch.allclose(f.pooled, f.feats[-1].mean(dim=(2, 3)))
    assert torch.allclose(logits, model.fc(f.pooled))


def mdistiller_forward(model: WideResNet, x: torch.Tensor) -> tuple[torch.Tensor, list]:
    """mdistiller's WRN forward and its `preact_feats` (eval mode: a second BN call is harmless)."""
    f1 = model.block1(model.conv1(x))
    f2 = model.block2(f1)
    f3 = model.block3(f2)
    pooled = F.relu(model.bn1(f3)).mean(dim=(2, 3))
    pre = [model.block2.layer[0].bn1(f1), model.block3.layer[0].bn1(f2), model.bn1(f3)]
    return model.fc(pooled), pre


@pytest.mark.parametrize("arch", ["wrn_16_1", "wrn_16_2"])
def test_matches_the_reference_forward(arch: str) -> None:
    torch.manual_seed(0)
    model = build_model(arch, 10, 3)
    model.train()
    model(torch.randn(8, 3, 16, 16))  # move the BN statistics off their initial values
    model.eval()
    assert isinstance(model, WideResNet)
    x = torch.randn(3, 3, 16, 16)
    logits, f = model.forward_features(x)
    ref_logits, ref_pre = mdistiller_forward(model, x)
    assert torch.allclose(logits, ref_logits, atol=1e-5)
    for got, want in zip(f.preact, ref_pre, strict=True):
        assert torch.allclose(got, want, atol=1e-5)


def test_module_names_match_mdistiller_and_each_bn_runs_once() -> None:
    keys = build_model("wrn_40_2", 100, 3).state_dict().keys()
    assert {"conv1.weight", "bn1.running_mean", "fc.weight"} <= keys
    assert "block1.layer.0.convShortcut.weight" in keys  # 16 -> 32 channels
    assert "block1.layer.1.convShortcut.weight" not in keys
    assert "block3.layer.5.conv2.weight" in keys  # (40 - 4) / 6 = 6 blocks per stage
    narrow = build_model("wrn_40_1", 100, 3).state_dict().keys()
    assert "block1.layer.0.convShortcut.weight" not in narrow  # 16 -> 16: identity
    model = build_model("wrn_16_2", 10, 3).train()
    model(torch.randn(4, 3, 8, 8))
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(int(bn.num_batches_tracked) == 1 for bn in bns)


def test_depth_must_be_6n_plus_4() -> None:
    with pytest.raises(ValueError, match="6n\\+4"):
        WideResNet(20, 1, 10, 3)
