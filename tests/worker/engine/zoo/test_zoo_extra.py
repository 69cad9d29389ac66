from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F

from worker.engine.zoo import build_model, mlp, mobilenetv2, shufflenet, vgg
from worker.engine.zoo.registry import ZOO

CONV = ["vgg8", "vgg11", "vgg13", "vgg16", "vgg19", "mobilenetv2", "mobilenetv2_half"]
CONV += ["shufflenetv1", "shufflenetv2"]
EXTRA = [*CONV, "mlp"]
WITH_RELU = [a for a in CONV if not a.startswith("mobilenetv2")]

# Exact counts at num_classes=100, in_channels=3 are those of RepDistiller / mdistiller's
# `vgg*_bn`, `mobilenetv2_T_w(6, w)`, `ShuffleV1`, `ShuffleV2` (same layers, same state-dict
# keys, checked by loading their weights into ours). Published: the CIFAR-100 tables of the
# KD papers on that zoo (CRD lineage: vgg8 3.96M, vgg13 9.46M, MobileNetV2 0.81M, ...).
PARAM_COUNTS = {
    "vgg8": (3_965_028, 3.96e6),
    "vgg11": (9_277_284, None),
    "vgg13": (9_462_180, 9.46e6),
    "vgg16": (14_774_436, None),
    "vgg19": (20_086_692, None),
    "mobilenetv2": (2_353_060, None),
    "mobilenetv2_half": (812_836, 0.81e6),
    "shufflenetv1": (949_258, 0.95e6),
    "shufflenetv2": (1_355_528, 1.36e6),
}

# (C, H, W) of each stage at a 32x32 input and at an 8x8 one, and the pooled width.
VGG_STAGES = ([(128, 16, 16), (256, 8, 8), (512, 4, 4), (512, 4, 4)], 512)
STAGES_32 = {
    **{a: VGG_STAGES for a in CONV if a.startswith("vgg")},
    "mobilenetv2": ([(24, 16, 16), (32, 8, 8), (96, 4, 4), (320, 2, 2)], 1280),
    "mobilenetv2_half": ([(12, 16, 16), (16, 8, 8), (48, 4, 4), (160, 2, 2)], 1280),
    "shufflenetv1": ([(240, 16, 16), (480, 8, 8), (960, 4, 4)], 960),
    "shufflenetv2": ([(116, 16, 16), (232, 8, 8), (464, 4, 4)], 1024),
}
SIDES_8 = {
    **{a: [4, 2, 1, 1] for a in CONV if a.startswith("vgg")},
    "mobilenetv2": [4, 2, 1, 1],
    "mobilenetv2_half": [4, 2, 1, 1],
    "shufflenetv1": [4, 2, 1],
    "shufflenetv2": [4, 2, 1],
}


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """Tiny batches: on a busy machine intra-op thread hand-offs cost 100x the math."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def forward(arch: str, shape: tuple[int, int, int], batch: int = 2, classes: int = 7):
    torch.manual_seed(0)
    model = build_model(arch, num_classes=classes, in_channels=shape[0]).eval()
    x = torch.randn(batch, *shape)
    with torch.no_grad():
        logits, features = model.forward_features(x)
        assert torch.equal(model(x), logits)
    return model, logits, features


def test_extra_architectures_are_registered() -> None:
    assert set(EXTRA) <= set(ZOO.names())
    assert isinstance(build_model("mobilenetv2_half", 10), mobilenetv2.MobileNetV2)


@pytest.mark.parametrize("arch", PARAM_COUNTS)
def test_parameter_counts_match_reference_and_published(arch: str) -> None:
    exact, published = PARAM_COUNTS[arch]
    count = sum(p.numel() for p in build_model(arch, 100, 3).parameters())
    assert count == exact
    if published is not None:
        assert abs(count - published) / published < 0.02


@pytest.mark.parametrize("arch", CONV)
def test_stage_shapes_at_32_and_8(arch: str) -> None:
    shapes, width = STAGES_32[arch]
    _, logits, features = forward(arch, (3, 32, 32))
    assert logits.shape == (2, 7) and features.pooled.shape == (2, width)
    assert [tuple(f.shape[1:]) for f in features.feats] == shapes
    assert [tuple(p.shape[1:]) for p in features.preact] == shapes
    _, logits, features = forward(arch, (1, 8, 8))
    assert logits.shape == (2, 7) and features.pooled.shape == (2, width)
    assert [f.shape[-1] for f in features.feats] == SIDES_8[arch]


@pytest.mark.parametrize("arch", WITH_RELU)
def test_feats_are_relu_of_preact(arch: str) -> None:
    _, _, features = forward(arch, (3, 32, 32))
    for pre, feat in zip(features.preact, features.feats, strict=True):
        assert torch.equal(feat, F.relu(pre))
        assert pre.min() < 0  # really taken before the ReLU


@pytest.mark.parametrize("arch", ["mobilenetv2", "mobilenetv2_half"])
def test_mobilenet_linear_bottlenecks_have_preact_equal_feats(arch: str) -> None:
    _, _, features = forward(arch, (3, 32, 32))
    for pre, feat in zip(features.preact, features.feats, strict=True):
        assert pre is feat and feat.min() < 0


def test_shufflenetv2_stage_feats_are_the_blocks_own_output() -> None:
    model, _, _ = forward("shufflenetv2", (3, 32, 32))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        _, features = model.forward_features(x)
        stem = F.relu(model.bn1(model.conv1(x)))
        assert torch.equal(model.layer1(stem), features.feats[0])


def test_vgg_pools_robustly_on_small_and_large_inputs() -> None:
    _, _, features = forward("vgg8", (3, 64, 64))  # the fourth pool runs, as mdistiller at 64
    assert [f.shape[-1] for f in features.feats] == [32, 16, 8, 4]
    for side in (1, 3, 5):
        assert forward("vgg8", (1, side, side))[1].shape == (2, 7)
    assert vgg.halve(torch.randn(1, 2, 1, 5)).shape == (1, 2, 1, 2)


def test_mlp_has_no_stages_and_pools_its_last_hidden_layer() -> None:
    model, logits, features = forward("mlp", (1, 8, 8))
    assert logits.shape == (2, 7) and features.preact == [] and features.feats == []
    assert features.pooled.shape == (2, mlp.HIDDEN[-1]) and features.pooled.min() >= 0
    assert isinstance(model, mlp.MLP) and model.fc1.in_features == 64
    assert forward("mlp", (3, 32, 32))[1].shape == (2, 7)


def test_state_dicts_use_reference_names() -> None:
    keys = {
        "vgg13": ["block0.0.weight", "block0.4.running_var", "block4.3.bias", "classifier.weight"],
        "mobilenetv2_half": ["conv1.0.weight", "blocks.6.0.conv.7.bias", "conv2.1.weight"],
        "shufflenetv1": ["layer1.0.conv1.weight", "layer3.3.bn3.bias", "linear.weight"],
        "shufflenetv2": ["layer2.0.conv5.weight", "layer3.3.bn3.bias", "bn2.weight"],
    }
    for arch, names in keys.items():
        state = build_model(arch, 100).state_dict()
        assert all(name in state for name in names), arch
    assert "classifier.0.weight" in build_model("mobilenetv2", 100).state_dict()
    assert isinstance(build_model("shufflenetv2", 10).layer1, shufflenet.Stage)


@pytest.mark.parametrize("arch", EXTRA)
def test_one_sgd_step_then_eval_on_a_single_image(arch: str) -> None:
    torch.manual_seed(0)
    model = build_model(arch, num_classes=5, in_channels=1).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    before = [p.detach().clone() for p in model.parameters()]
    loss = F.cross_entropy(model(torch.randn(4, 1, 8, 8)), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss)
    assert all(p.grad is not None for p in model.parameters())
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True))
    with torch.no_grad():  # batch statistics would fail on one 1x1 map: eval uses running ones
        assert model.eval()(torch.randn(1, 1, 8, 8)).shape == (1, 5)
        assert build_model(arch, 5, 3).eval()(torch.randn(1, 3, 32, 32)).shape == (1, 5)
