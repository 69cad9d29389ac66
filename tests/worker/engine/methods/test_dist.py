"""DIST's relation terms against Pearson correlations computed apart and the authors' code's
values, its weights, its whole batches, and a short real training run."""

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tests.worker.engine.helpers import Recorder, batch, make_method, make_plan
from worker.engine.data import DataSplit, num_batches
from worker.engine.loop import train
from worker.engine.methods.dist import dist_terms

STUDENT = [[1.0, 2.0, 0.5, -1.0], [0.0, -1.0, 3.0, 0.25], [2.5, 0.5, -0.5, 1.0]]
TEACHER = [[2.0, 1.0, 0.0, -0.5], [1.0, 1.0, 1.0, 2.0], [0.5, 3.0, -1.0, 0.0]]
# (inter, intra) by tau, computed once by running the authors' `DIST.forward`
# (hunto/image_classification_sota lib/models/losses/dist_kd.py at 6f7a70a, verbatim,
# float64) on these logits
GOLDEN = {4.0: (13.9035081, 12.2312603), 1.0: (1.11913362, 1.03428061)}


def numpy_dist(student: list, teacher: list, tau: float) -> tuple[float, float]:
    """tau^2 * (1 - mean Pearson r) of softmax(z / tau): rows (inter), columns (intra)."""

    def softmax(z: np.ndarray) -> np.ndarray:
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    y_s, y_t = softmax(np.array(student) / tau), softmax(np.array(teacher) / tau)
    inter = np.mean([np.corrcoef(a, b)[0, 1] for a, b in zip(y_s, y_t, strict=True)])
    intra = np.mean([np.corrcoef(a, b)[0, 1] for a, b in zip(y_s.T, y_t.T, strict=True)])
    return tau * tau * (1 - inter), tau * tau * (1 - intra)


@pytest.mark.parametrize("tau", sorted(GOLDEN))
def test_dist_terms_golden_values(tau: float) -> None:
    assert numpy_dist(STUDENT, TEACHER, tau) == pytest.approx(GOLDEN[tau], rel=1e-5)
    inter, intra = dist_terms(torch.tensor(STUDENT), torch.tensor(TEACHER), tau)
    assert (inter.item(), intra.item()) == pytest.approx(GOLDEN[tau], rel=1e-5)


def test_identical_logits_relate_perfectly_and_bf16_gives_float32() -> None:
    z = torch.tensor(STUDENT)
    assert [t.item() for t in dist_terms(z, z.clone(), 4.0)] == pytest.approx([0, 0], abs=1e-4)
    assert all(t.dtype == torch.float32 for t in dist_terms(z.bfloat16(), z.bfloat16(), 4.0))


def test_the_intra_class_term_reads_the_whole_batch() -> None:
    """Its mean over two halves is not its value on the batch: a rank's batch is its own."""
    torch.manual_seed(1)
    z_s, z_t = torch.randn(8, 5) * 2, torch.randn(8, 5) * 2
    whole = dist_terms(z_s, z_t, 1.0)
    halves = [dist_terms(z_s[i : i + 4], z_t[i : i + 4], 1.0) for i in (0, 4)]
    assert (halves[0][0] + halves[1][0]).item() / 2 == pytest.approx(whole[0].item())  # per row
    assert (halves[0][1] + halves[1][1]).item() / 2 - whole[1].item() > 0.2  # 0.68 against 0.47


def test_dist_weights_each_term() -> None:
    torch.manual_seed(0)
    student, teacher = (nn.Sequential(nn.Flatten(), nn.Linear(4, 3)) for _ in range(2))
    params = {"temperature": 2.0, "inter_weight": 0.5, "intra_weight": 3.0, "kd_weight": 2.0}
    method = make_method("dist", student, teacher, (1, 2, 2), ce_weight=0.7, **params)
    x, y = torch.randn(5, 1, 2, 2), torch.tensor([0, 1, 2, 0, 1])
    terms = method.losses(batch(x, y), epoch=0)
    inter, intra = dist_terms(student(x), teacher(x), 2.0)
    assert terms["ce"].item() == pytest.approx(0.7 * F.cross_entropy(student(x), y).item())
    assert terms["inter"].item() == pytest.approx(2.0 * 0.5 * inter.item(), rel=1e-6)
    assert terms["intra"].item() == pytest.approx(2.0 * 3.0 * intra.item(), rel=1e-6)


def test_whole_batches_drop_any_partial_last_batch() -> None:
    assert num_batches(130, 64, shuffle=True) == 3  # a partial batch of 2 trains
    assert num_batches(130, 64, shuffle=True, whole=True) == 2
    assert num_batches(128, 64, shuffle=True, whole=True) == 2


def test_dist_trains_a_digits_student_on_whole_batches(
    digits: DataSplit, mlp_teacher: nn.Module, tmp_path: Path
) -> None:
    plan = make_plan(digits, tmp_path, method="dist", teacher=mlp_teacher, epochs=2)
    recorder = Recorder()
    metrics = train(plan, recorder).final_metrics
    assert len(digits.train) % 64 > 1  # a partial batch that training would keep otherwise
    assert recorder.steps[-1] == (2, len(digits.train) // 64, len(digits.train) // 64)
    terms = metrics["train_ce"] + metrics["train_inter"] + metrics["train_intra"]
    assert metrics["train_loss"] == pytest.approx(terms)
    assert metrics["val_acc"] >= 0.6
