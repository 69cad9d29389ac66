"""DKD's two terms against the paper's definition and the authors' code's values, its
warm-up, its float32 log-space arithmetic where the reference's log of probabilities
fails, and a short real training run."""

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tests.worker.engine.helpers import Recorder, batch, make_method, make_plan
from worker.engine.data import DataSplit
from worker.engine.loop import train
from worker.engine.methods.dkd import dkd_terms, others

STUDENT = [[1.0, 2.0, 0.5, -1.0], [0.0, -1.0, 3.0, 0.25], [2.5, 0.5, -0.5, 1.0]]
TEACHER = [[2.0, 1.0, 0.0, -0.5], [1.0, 1.0, 1.0, 2.0], [0.5, 3.0, -1.0, 0.0]]
LABELS = [0, 2, 1]
# (TCKD, NCKD) by temperature, computed once by running mdistiller's `dkd_loss` body
# (mdistiller/distillers/DKD.py at a08d46f, verbatim, float64) on these logits and labels
GOLDEN = {4.0: (1.05622722, 0.154160918), 1.0: (1.12389257, 0.107463623)}


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def kl_rows(p: np.ndarray, q: np.ndarray) -> float:
    """Mean over rows of KL(p || q)."""
    return float((p * np.log(p / q)).sum(axis=1).mean())


def numpy_dkd(student: list, teacher: list, labels: list, t: float) -> tuple[float, float]:
    """The paper's definition in float64: TCKD on (p_target, 1 - p_target), NCKD on the
    softmax over the non-target classes alone, both x T^2."""
    s, te, y = np.array(student) / t, np.array(teacher) / t, np.array(labels)
    rows, width = np.arange(len(y)), s.shape[1] - 1
    others = np.ones(s.shape, dtype=bool)
    others[rows, y] = False
    p_s, p_t = softmax(s), softmax(te)
    rest_s, rest_t = p_s[others].reshape(-1, width), p_t[others].reshape(-1, width)
    b_s = np.stack([p_s[rows, y], rest_s.sum(axis=1)], axis=1)
    b_t = np.stack([p_t[rows, y], rest_t.sum(axis=1)], axis=1)
    q_s, q_t = softmax(s[others].reshape(-1, width)), softmax(te[others].reshape(-1, width))
    return kl_rows(b_t, b_s) * t * t, kl_rows(q_t, q_s) * t * t


@pytest.mark.parametrize("temperature", sorted(GOLDEN))
def test_dkd_terms_golden_values(temperature: float) -> None:
    by_definition = numpy_dkd(STUDENT, TEACHER, LABELS, temperature)
    assert by_definition == pytest.approx(GOLDEN[temperature], rel=1e-7)
    tckd, nckd = dkd_terms(
        torch.tensor(STUDENT), torch.tensor(TEACHER), torch.tensor(LABELS), temperature
    )
    assert (tckd.item(), nckd.item()) == pytest.approx(GOLDEN[temperature], rel=1e-5)


def test_where_the_references_log_of_probabilities_fails_the_terms_stay_exact() -> None:
    """Logits 200 apart: in float32 the reference's softmax gives the student's non-target
    classes a probability of exactly 0, and its log an infinite loss. The log-space terms
    equal the definition's in float64."""
    student, teacher, labels = [[200.0, 0.0, 0.0]], [[0.0, 200.0, 100.0]], [0]
    z_s, z_t, y = torch.tensor(student), torch.tensor(teacher), torch.tensor(labels)
    p_s = F.softmax(z_s, dim=1)
    reference_tckd = F.kl_div(
        torch.log(torch.stack([p_s[:, 0], p_s[:, 1:].sum(1)], 1)),
        torch.stack([F.softmax(z_t, 1)[:, 0], F.softmax(z_t, 1)[:, 1:].sum(1)], 1),
        reduction="sum",
    )
    assert not torch.isfinite(reference_tckd)
    tckd, nckd = dkd_terms(z_s, z_t, y, 1.0)
    assert (tckd.item(), nckd.item()) == pytest.approx(numpy_dkd(student, teacher, labels, 1.0))
    half = dkd_terms(z_s.bfloat16(), z_t.bfloat16(), y, 1.0)
    assert all(term.dtype == torch.float32 and torch.isfinite(term) for term in half)


def test_bf16_logits_give_float32_terms_close_to_float32_ones() -> None:
    torch.manual_seed(0)
    z_s, z_t, y = torch.randn(16, 10) * 3, torch.randn(16, 10) * 3, torch.randint(0, 10, (16,))
    exact = dkd_terms(z_s, z_t, y, 4.0)
    rounded = dkd_terms(z_s.bfloat16(), z_t.bfloat16(), y, 4.0)
    for a, b in zip(exact, rounded, strict=True):
        assert b.dtype == torch.float32 and b.item() == pytest.approx(a.item(), rel=0.05)


def test_the_non_target_indices_of_each_row_in_class_order() -> None:
    got = others(torch.tensor(LABELS), 4).tolist()
    assert got == [[1, 2, 3], [0, 1, 3], [0, 2, 3]]


def test_dkd_needs_three_classes() -> None:
    z = torch.zeros(2, 2)
    with pytest.raises(ValueError, match="at least 3 classes"):
        dkd_terms(z, z, torch.tensor([0, 1]), 4.0)


def linear_pair() -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(4, 5)), nn.Sequential(
        nn.Flatten(), nn.Linear(4, 5)
    )


@pytest.mark.parametrize(("epoch", "ramp"), [(0, 0.25), (2, 0.75), (3, 1.0), (9, 1.0)])
def test_the_warm_up_scales_the_dkd_terms_only_counting_epochs_from_one(
    epoch: int, ramp: float
) -> None:
    """The loop's 0-based epoch e is mdistiller's e + 1: min((e + 1) / warmup, 1)."""
    student, teacher = linear_pair()
    params = {"alpha": 2.0, "beta": 3.0, "temperature": 2.0, "ce_weight": 0.5}
    method = make_method("dkd", student, teacher, (1, 2, 2), warmup_epochs=4, **params)
    x, y = torch.randn(6, 1, 2, 2), torch.tensor([0, 1, 2, 3, 4, 0])
    terms = method.losses(batch(x, y), epoch=epoch)
    z_s, z_t = student(x), teacher(x)
    tckd, nckd = dkd_terms(z_s, z_t, y, 2.0)
    assert terms["ce"].item() == pytest.approx(0.5 * F.cross_entropy(z_s, y).item(), rel=1e-6)
    assert terms["tckd"].item() == pytest.approx(ramp * 2.0 * tckd.item(), rel=1e-6)
    assert terms["nckd"].item() == pytest.approx(ramp * 3.0 * nckd.item(), rel=1e-6)
    no_ramp = make_method("dkd", student, teacher, (1, 2, 2), warmup_epochs=0, **params)
    assert no_ramp.losses(batch(x, y), epoch=0)["nckd"].item() == pytest.approx(3.0 * nckd.item())


def test_dkd_trains_a_digits_student(
    digits: DataSplit, mlp_teacher: nn.Module, tmp_path: Path
) -> None:
    plan = make_plan(digits, tmp_path, method="dkd", teacher=mlp_teacher, epochs=2)
    result = train(plan, Recorder())
    metrics = result.final_metrics
    terms = metrics["train_ce"] + metrics["train_tckd"] + metrics["train_nckd"]
    assert metrics["train_loss"] == pytest.approx(terms)
    assert metrics["val_acc"] >= 0.6
