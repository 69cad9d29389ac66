"""Logit standardisation on kd and dkd: the z-score, the losses against the authors' code's
values, CE on the raw logits, and what standardising buys (no magnitude to match)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tests.worker.engine.helpers import batch, make_method
from worker.engine.methods.dkd import dkd_terms
from worker.engine.methods.kd import kd_loss, standardise

STUDENT = [[1.0, 2.0, 0.5, -1.0], [0.0, -1.0, 3.0, 0.25], [2.5, 0.5, -0.5, 1.0]]
TEACHER = [[2.0, 1.0, 0.0, -0.5], [1.0, 1.0, 1.0, 2.0], [0.5, 3.0, -1.0, 0.0]]
LABELS = [0, 2, 1]
# computed once by running the authors' `normalize` with their `kd_loss` and `dkd_loss`
# bodies (sunshangquan/logit-standardization-KD mdistiller/distillers/KD.py and DKD.py at
# f6e5aa5, verbatim, float64, logit_stand=True) on these logits
KD_GOLDEN = {2.0: 0.684685638, 3.0: 0.651456154}
DKD_GOLDEN_T2 = (0.544530754, 0.199166521)  # (TCKD, NCKD)


def numpy_standardise(z: list) -> np.ndarray:
    a = np.array(z)
    return (a - a.mean(axis=1, keepdims=True)) / (a.std(axis=1, ddof=1, keepdims=True) + 1e-7)


def test_standardise_is_a_z_score_with_the_unbiased_std() -> None:
    # row 0 by hand: mean 0.625, squared deviations sum to 4.6875, / 3 = 1.5625, std 1.25
    got = standardise(torch.tensor(STUDENT))
    assert got[0].tolist() == pytest.approx([0.3, 1.1, -0.1, -1.3], abs=1e-6)
    assert got.numpy() == pytest.approx(numpy_standardise(STUDENT), abs=1e-6)
    assert standardise(torch.tensor(STUDENT).bfloat16()).dtype == torch.float32


@pytest.mark.parametrize("temperature", sorted(KD_GOLDEN))
def test_kd_on_standardised_logits_golden_values(temperature: float) -> None:
    s, t = standardise(torch.tensor(STUDENT)), standardise(torch.tensor(TEACHER))
    assert kd_loss(s, t, temperature).item() == pytest.approx(KD_GOLDEN[temperature], rel=1e-5)


def test_dkd_on_standardised_logits_golden_values() -> None:
    s, t = standardise(torch.tensor(STUDENT)), standardise(torch.tensor(TEACHER))
    tckd, nckd = dkd_terms(s, t, torch.tensor(LABELS), 2.0)
    assert (tckd.item(), nckd.item()) == pytest.approx(DKD_GOLDEN_T2, rel=1e-5)


def pair() -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(4, 4)), nn.Sequential(
        nn.Flatten(), nn.Linear(4, 4)
    )


@pytest.mark.parametrize("name", ["kd", "dkd"])
def test_the_flag_standardises_the_distillation_terms_and_leaves_ce_raw(name: str) -> None:
    student, teacher = pair()
    flagged = make_method(name, student, teacher, (1, 2, 2), logit_standardisation=True)
    plain = make_method(name, student, teacher, (1, 2, 2), logit_standardisation=False)
    x, y = torch.randn(6, 1, 2, 2), torch.tensor([0, 1, 2, 3, 0, 1])
    on, off = flagged.losses(batch(x, y), epoch=50), plain.losses(batch(x, y), epoch=50)
    assert on["ce"].item() == pytest.approx(off["ce"].item())
    ce_weight = 0.1 if name == "kd" else 1.0
    assert on["ce"].item() == pytest.approx(ce_weight * F.cross_entropy(student(x), y).item())
    assert all(on[k].item() != pytest.approx(off[k].item()) for k in on if k != "ce")


def test_standardised_kd_asks_no_magnitude_of_the_student() -> None:
    """A student whose logits are the teacher's, scaled and shifted, matches it exactly once
    both are standardised; without standardising the gap stays."""
    z_t = torch.tensor(TEACHER)
    z_s = 0.2 * z_t + 3.0
    assert kd_loss(standardise(z_s), standardise(z_t), 2.0).item() == pytest.approx(0, abs=1e-6)
    assert kd_loss(z_s, z_t, 2.0).item() > 0.1
