from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tests.worker.engine.helpers import (
    Recorder,
    batch,
    first_train,
    make_method,
    make_plan,
    normalised,
)
from worker.engine.data import Augment, DataSplit
from worker.engine.loop import train
from worker.engine.methods import Batch, ddgsd
from worker.engine.zoo import build_model

Z_A = [[1.0, 2.0, 0.5, -1.0], [0.0, -1.0, 3.0, 0.25]]
Z_B = [[2.0, 1.0, 0.0, -0.5], [1.0, 1.0, 1.0, 1.0]]
F_A = [[1.0, 2.0], [3.0, 0.0], [2.0, 1.0]]
F_B = [[0.0, 0.0], [2.0, 2.0], [1.0, 1.0]]


def np_softmax(z: np.ndarray, t: float) -> np.ndarray:
    e = np.exp(z / t - (z / t).max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def np_sym_kl(z_a: np.ndarray, z_b: np.ndarray, t: float) -> float:
    """T^2 * batch mean of sum_c (p_a - p_b)(log p_a - log p_b) = KL(a||b) + KL(b||a)."""
    p_a, p_b = np_softmax(z_a, t), np_softmax(z_b, t)
    return float(t * t * ((p_a - p_b) * (np.log(p_a) - np.log(p_b))).sum(axis=1).mean())


def test_symmetric_kl_by_hand() -> None:
    # p_a = (3/4, 1/4), p_b = (1/2, 1/2): KL(a||b) = 3/4 ln(3/2) + 1/4 ln(1/2) = 0.1308120,
    # KL(b||a) = 1/2 ln(2/3) + 1/2 ln 2 = 0.1438410; the sum 0.2746531.
    z_a, z_b = torch.tensor([[float(np.log(3.0)), 0.0]]), torch.zeros(1, 2)
    assert ddgsd.symmetric_kl(z_a, z_b, 1.0, True).item() == pytest.approx(0.2746531, abs=1e-6)


@pytest.mark.parametrize("temperature", [1.0, 3.0])
def test_symmetric_kl_golden_values(temperature: float) -> None:
    expected = np_sym_kl(np.array(Z_A), np.array(Z_B), temperature)
    for detach in (True, False):
        got = ddgsd.symmetric_kl(torch.tensor(Z_A), torch.tensor(Z_B), temperature, detach)
        assert got.item() == pytest.approx(expected, rel=1e-5)


def test_detached_targets_send_gradient_only_into_the_predicting_side() -> None:
    t = 2.0
    z_a, z_b = torch.tensor(Z_A, requires_grad=True), torch.tensor(Z_B, requires_grad=True)
    ddgsd.symmetric_kl(z_a, z_b, t, detach_targets=True).backward()
    # Only KL(p_b || p_a) reaches z_a: d/dz_a T^2 KL = T (p_a - p_b) / N.
    p_a, p_b = np_softmax(np.array(Z_A), t), np_softmax(np.array(Z_B), t)
    assert z_a.grad is not None and z_b.grad is not None
    np.testing.assert_allclose(z_a.grad.numpy(), t * (p_a - p_b) / 2, atol=1e-6)
    np.testing.assert_allclose(z_b.grad.numpy(), t * (p_b - p_a) / 2, atol=1e-6)
    # Not detached, z_a also moves as the target of KL(p_a || p_b): the full derivative,
    # checked against central differences of the numpy formula in float64.
    z = torch.tensor(Z_A, requires_grad=True)
    ddgsd.symmetric_kl(z, z_b.detach(), t, detach_targets=False).backward()
    numeric = np.zeros((2, 4))
    for i, j in np.ndindex(2, 4):
        step = np.zeros((2, 4))
        step[i, j] = 1e-6
        up, down = np.array(Z_A) + step, np.array(Z_A) - step
        numeric[i, j] = (np_sym_kl(up, np.array(Z_B), t) - np_sym_kl(down, np.array(Z_B), t)) / 2e-6
    assert z.grad is not None
    np.testing.assert_allclose(z.grad.numpy(), numeric, atol=1e-5)
    assert not np.allclose(numeric, t * (p_a - p_b) / 2, atol=1e-3)


def test_linear_mmd_by_hand() -> None:
    # mean f_a = (2, 1), mean f_b = (1, 1): ||(1, 0)||^2 = 1.
    assert ddgsd.mmd_linear(torch.tensor(F_A), torch.tensor(F_B)).item() == pytest.approx(1.0)


def np_gaussian_mmd(a: np.ndarray, b: np.ndarray, sigma: float) -> float:
    def k(x: np.ndarray, y: np.ndarray) -> float:
        d = ((x[:, None, :] - y[None, :, :]) ** 2).sum(axis=2)
        return float(np.exp(-d / (2 * sigma**2)).mean())

    return k(a, a) + k(b, b) - 2 * k(a, b)


def test_gaussian_mmd_golden_values_with_a_given_and_the_median_sigma() -> None:
    a, b = np.array(F_A), np.array(F_B)
    got = ddgsd.mmd_gaussian(torch.tensor(F_A), torch.tensor(F_B), sigma=1.5).item()
    assert got == pytest.approx(np_gaussian_mmd(a, b, 1.5), rel=1e-5)
    pooled = np.concatenate([a, b])
    i, j = np.triu_indices(6, k=1)  # 15 pairs: an odd count, so the median is one of them
    median = float(np.median(np.linalg.norm(pooled[i] - pooled[j], axis=1)))
    # By hand, sorted: four 1s, four sqrt(2) (the 8th of 15), four sqrt(5), two sqrt(8), a 3.
    assert median == pytest.approx(np.sqrt(2.0))
    assert ddgsd.median_distance(torch.tensor(pooled)).item() == pytest.approx(median, rel=1e-6)
    got = ddgsd.mmd_gaussian(torch.tensor(F_A), torch.tensor(F_B), sigma=None).item()
    assert got == pytest.approx(np_gaussian_mmd(a, b, median), rel=1e-5)
    same = torch.tensor(F_A)
    assert ddgsd.mmd_gaussian(same, same.clone(), None).item() == pytest.approx(0.0, abs=1e-6)


class FixedViews(Batch):
    """Hands out given views in order, so a test knows exactly what the network saw."""

    def __init__(self, views: list[torch.Tensor], labels: torch.Tensor) -> None:
        super().__init__(views[0], labels, Augment("none", views[0].shape[-1]), normalised)
        self.queue = list(views)

    def view(self) -> torch.Tensor:
        return self.queue.pop(0)


def test_losses_are_the_weighted_terms_of_both_views() -> None:
    torch.manual_seed(0)
    student = build_model("cnn_small", 3, 1)
    params = {"kl_weight": 2.0, "mmd_weight": 0.1, "temperature": 2.0, "mmd_kernel": "gaussian"}
    method = make_method("ddgsd", student, **params).train()
    x_a, x_b, y = torch.randn(4, 1, 8, 8), torch.randn(4, 1, 8, 8), torch.tensor([0, 1, 2, 0])
    terms = method.losses(FixedViews([x_a, x_b], y), epoch=0)
    assert list(terms) == ["ce", "kl", "mmd"]
    logits, stages = student.forward_features(torch.cat([x_a, x_b]))
    (z_a, z_b), (f_a, f_b) = logits.chunk(2), stages.pooled.chunk(2)
    ce = F.cross_entropy(z_a, y) + F.cross_entropy(z_b, y)
    assert terms["ce"].item() == pytest.approx(ce.item(), rel=1e-5)
    kl = np_sym_kl(z_a.detach().double().numpy(), z_b.detach().double().numpy(), 2.0)
    assert terms["kl"].item() == pytest.approx(2.0 * kl, rel=1e-4)
    mmd = ddgsd.mmd_gaussian(f_a, f_b, None)
    assert terms["mmd"].item() == pytest.approx(0.1 * mmd.item(), rel=1e-5)


def test_identical_views_give_no_kl_and_no_mmd() -> None:
    torch.manual_seed(0)
    method = make_method("ddgsd", build_model("cnn_small", 3, 1))
    x, y = torch.randn(4, 1, 8, 8), torch.tensor([0, 1, 2, 0])
    terms = method.train().losses(batch(x, y, "none"), epoch=0)
    assert terms["kl"].item() == pytest.approx(0.0, abs=1e-6)
    assert terms["mmd"].item() == pytest.approx(0.0, abs=1e-9)


def test_ddgsd_needs_a_model_with_stage_features() -> None:
    with pytest.raises(ValueError, match="stage features"):
        make_method("ddgsd", nn.Linear(2, 2))


@pytest.mark.parametrize("kernel", ["linear", "gaussian"])
def test_ddgsd_trains_on_digits(digits: DataSplit, tmp_path: Path, kernel: str) -> None:
    small = first_train(digits, 640)
    plan = make_plan(small, tmp_path, method="ddgsd", params={"mmd_kernel": kernel}, epochs=2)
    result = train(plan, Recorder())
    metrics = result.final_metrics
    parts = metrics["train_ce"] + metrics["train_kl"] + metrics["train_mmd"]
    assert metrics["train_loss"] == pytest.approx(parts)
    assert metrics["train_kl"] > 0 and metrics["train_mmd"] > 0  # the two crops differ
    assert metrics["val_acc"] > 0.3  # chance: 0.1
    assert plan.method.output_model() is plan.method.student and plan.method.extra_models() == {}
