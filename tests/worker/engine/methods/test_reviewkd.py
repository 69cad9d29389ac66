import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from tests.worker.engine.helpers import Recorder, batch, first_train, make_method, make_plan
from worker.engine.data import DataSplit
from worker.engine.loop import train
from worker.engine.methods.reviewkd import ABF, ReviewKD, hcl_loss, levels, warmup
from worker.engine.zoo import StageFeatures, ZooModel, build_model
from worker.engine.zoo import wrn as _wrn  # noqa: F401  (registers the wrn_* names)

# One level of each pooling regime: 8x8 pools to 4, 2, 1; 4x4 to 2, 1; 2x2 to 1; 1x1 not at all.
SHAPES = [(2, 3, 8, 8), (2, 3, 4, 4), (2, 2, 2, 2), (2, 4, 1, 1)]
# Computed once in float64 by `numpy_hcl` below (the official `hcl` rewritten in numpy with
# block means for the pools) and written here; per level 0.66137566, 0.72065450, 0.30168842,
# 0.68935205.
HCL_GOLDEN = 2.3730706268


def fixed_pair(k: int, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    n = np.arange(math.prod(shape), dtype=np.float64)
    return np.sin(0.37 * n + k).reshape(shape), np.cos(0.11 * (k + 1) * n).reshape(shape)


def numpy_hcl(pairs: list[tuple[np.ndarray, np.ndarray]]) -> float:
    """Per level: (MSE + sum_i 2^-i MSE(pool_i)) / (1 + sum_i 2^-i), pools 4, 2, 1 below h."""

    def pool(a: np.ndarray, s: int) -> np.ndarray:
        n, c, h, w = a.shape
        return a.reshape(n, c, s, h // s, s, w // s).mean(axis=(3, 5))

    total = 0.0
    for fs, ft in pairs:
        sizes = [s for s in (4, 2, 1) if s < fs.shape[2]]
        weights = [1.0] + [0.5 ** (i + 1) for i in range(len(sizes))]
        terms = [((fs - ft) ** 2).mean()] + [
            ((pool(fs, s) - pool(ft, s)) ** 2).mean() for s in sizes
        ]
        total += sum(w * t for w, t in zip(weights, terms, strict=True)) / sum(weights)
    return float(total)


def test_hcl_golden_value() -> None:
    pairs = [fixed_pair(k, s) for k, s in enumerate(SHAPES)]
    assert numpy_hcl(pairs) == pytest.approx(HCL_GOLDEN, rel=1e-9)
    fs = [torch.tensor(a, dtype=torch.float32) for a, _ in pairs]
    ft = [torch.tensor(b, dtype=torch.float32) for _, b in pairs]
    got = hcl_loss(fs, ft)
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(HCL_GOLDEN, rel=1e-6)
    assert hcl_loss([f.bfloat16() for f in fs], ft).dtype == torch.float32


def test_hcl_by_hand() -> None:
    # 2x2 map [[1, 2], [3, 4]] against zeros: MSE 30/4 = 7.5; pooled to 1: 2.5^2 = 6.25 at
    # weight 1/2; (7.5 + 3.125) / 1.5 = 7.0833333.
    fs = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    assert hcl_loss([fs], [torch.zeros_like(fs)]).item() == pytest.approx(85 / 12, rel=1e-6)
    # A constant difference c has every MSE equal to c^2: the normalisation keeps it c^2 at any
    # size, and levels add up.
    maps = [torch.full((1, 2, s, s), 3.0) for s in (8, 4, 1)]
    zeros = [torch.zeros_like(m) for m in maps]
    assert hcl_loss(maps, zeros).item() == pytest.approx(27.0, rel=1e-6)


def test_abf_fusion_shapes() -> None:
    torch.manual_seed(0)
    abf, deepest = ABF(8, 6, 5, fuse=True), ABF(8, 6, 5, fuse=False)
    assert deepest.att_conv is None
    out, residual = deepest(torch.randn(2, 8, 1, 1), None, (1, 1))
    assert out.shape == (2, 5, 1, 1) and residual.shape == (2, 6, 1, 1)
    out, residual = abf(torch.randn(2, 8, 4, 4), torch.randn(2, 6, 2, 2), (4, 4))
    assert out.shape == (2, 5, 4, 4) and residual.shape == (2, 6, 4, 4)
    out, residual = abf(torch.randn(2, 8, 4, 4), torch.randn(2, 6, 2, 2), (8, 8))
    assert out.shape == (2, 5, 8, 8) and residual.shape == (2, 6, 8, 8)


def reviewkd(student: str, teacher: str, shape=(3, 32, 32), classes=100, **params) -> ReviewKD:
    torch.manual_seed(0)
    s, t = build_model(student, classes, shape[0]), build_model(teacher, classes, shape[0])
    method = make_method("reviewkd", s, t, shape, **params)
    assert isinstance(method, ReviewKD)
    return method


def outputs_and_targets(method: ReviewKD, x: Tensor) -> tuple[list[Tensor], list[Tensor]]:
    assert isinstance(method.student, ZooModel) and isinstance(method.teacher, ZooModel)
    _, s = method.student.forward_features(x)
    _, t = method.teacher.forward_features(x)
    return method.review(levels(s, preact=False)), levels(t, preact=True)


# The official CIFAR-100 `build_review_kd` tables (student channels deepest last, teacher
# channels): ours are derived by a dummy forward pass and must agree.
OFFICIAL = {
    ("resnet8x4", "resnet32x4"): ([64, 128, 256, 256], [64, 128, 256, 256]),
    ("resnet20", "resnet56"): ([16, 32, 64, 64], [16, 32, 64, 64]),
    ("wrn_16_2", "wrn_40_2"): ([32, 64, 128, 128], [32, 64, 128, 128]),
    ("wrn_40_1", "wrn_40_2"): ([16, 32, 64, 64], [32, 64, 128, 128]),
}


@pytest.mark.parametrize(("student", "teacher"), list(OFFICIAL))
def test_outputs_have_the_teacher_stage_shapes(student: str, teacher: str) -> None:
    method = reviewkd(student, teacher)
    in_channels, out_channels = OFFICIAL[(student, teacher)]
    abfs = [m for m in method.abfs if isinstance(m, ABF)]
    assert [a.conv1[0].in_channels for a in abfs] == in_channels
    assert [a.conv2[0].out_channels for a in abfs] == out_channels
    assert all(a.conv1[0].out_channels == min(512, in_channels[-1]) for a in abfs)
    assert [a.att_conv is not None for a in abfs] == [True, True, True, False]
    outputs, targets = outputs_and_targets(method.eval(), torch.randn(1, 3, 32, 32))
    assert [o.shape for o in outputs] == [t.shape for t in targets]
    assert [o.shape[2] for o in outputs] == [32, 16, 8, 1]


def test_mid_channels_param() -> None:
    method = reviewkd("resnet8", "resnet14", shape=(1, 8, 8), classes=10, mid_channels=7)
    assert all(m.conv1[0].out_channels == 7 for m in method.abfs if isinstance(m, ABF))


class HalfSize(ZooModel):
    """A zoo model that sees its input at half the size: every stage is half as large."""

    def __init__(self, inner: ZooModel) -> None:
        super().__init__()
        self.inner = inner

    def forward_features(self, x: Tensor) -> tuple[Tensor, StageFeatures]:
        return self.inner.forward_features(F.avg_pool2d(x, 2))


def test_spatial_mismatch_is_resized_to_the_teacher() -> None:
    torch.manual_seed(0)
    student, teacher = HalfSize(build_model("cnn_small", 10, 3)), build_model("resnet8", 10, 3)
    method = make_method("reviewkd", student, teacher, (3, 16, 16))
    assert isinstance(method, ReviewKD)
    outputs, targets = outputs_and_targets(method, torch.randn(2, 3, 16, 16))
    assert [o.shape for o in outputs] == [t.shape for t in targets]
    assert [o.shape[2] for o in outputs] == [16, 8, 4, 1]


def test_construction_errors_and_modes() -> None:
    s, t = build_model("resnet8", 10, 1), build_model("resnet8", 10, 1)
    with pytest.raises(ValueError, match="stage features"):
        make_method("reviewkd", torch.nn.Linear(2, 2), t, (1, 8, 8))
    s.train()
    method = make_method("reviewkd", s, t, (1, 8, 8))
    assert method.student.training and not method.teacher.training  # the probe restored modes


@pytest.mark.parametrize(
    ("epoch", "factor"), [(0, 0.0), (1, 0.05), (10, 0.5), (20, 1.0), (30, 1.0)]
)
def test_warmup_factor(epoch: int, factor: float) -> None:
    assert warmup(epoch, 20) == pytest.approx(factor)
    assert warmup(epoch, 0) == 1.0


def test_losses_teacher_gets_no_gradient_and_abfs_train() -> None:
    method = reviewkd(
        "resnet8", "resnet14", shape=(1, 8, 8), classes=10, weight=2.0, warmup_epochs=20
    )
    method.train()
    x, y = torch.randn(6, 1, 8, 8), torch.tensor([0, 1, 2, 3, 4, 5])
    at_10 = method.losses(batch(x, y, "none"), epoch=10)
    at_20 = method.losses(batch(x, y, "none"), epoch=20)
    assert set(at_20) == {"ce", "hcl"}
    assert at_10["hcl"].item() == pytest.approx(at_20["hcl"].item() / 2, rel=1e-5)
    assert method.losses(batch(x, y, "none"), epoch=0)["hcl"].item() == 0.0
    sum(at_20.values()).backward()
    trainable = {id(p) for p in method.trainable_parameters()}
    assert all(id(p) not in trainable and p.grad is None for p in method.teacher.parameters())
    assert all(id(p) in trainable and p.grad is not None for p in method.abfs.parameters())
    keys = method.state_dict().keys()
    assert "abfs.0.conv1.0.weight" in keys and not any(k.startswith("_teacher") for k in keys)
    assert method.output_model() is method.student


def test_short_run_on_digits(digits: DataSplit, tmp_path: Path) -> None:
    # A third of the training split keeps this fast on a busy CPU.
    digits = first_train(digits, 512)
    torch.manual_seed(1)
    teacher = build_model("resnet8", digits.num_classes, digits.input_shape[0])
    plan = make_plan(digits, tmp_path, epochs=2)
    method = make_method("reviewkd", plan.method.student, teacher, digits.input_shape, weight=5.0)
    recorder = Recorder()
    result = train(dataclasses.replace(plan, method=method), recorder)
    (_, first), (_, second) = recorder.epochs
    assert first["train_hcl"] == 0.0  # epoch 0 of the warm-up, as the official loop
    assert second["train_hcl"] > 0.0 and math.isfinite(second["train_hcl"])
    assert math.isfinite(first["train_ce"]) and math.isfinite(second["train_ce"])
    assert result.epochs_run == 2
