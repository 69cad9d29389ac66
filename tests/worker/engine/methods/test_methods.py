import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tests.worker.engine.helpers import batch, make_method
from worker.engine.methods import METHOD_NAMES, create
from worker.engine.methods.kd import kd_loss
from worker.engine.zoo import build_model

STUDENT = [[1.0, 2.0, 0.5, -1.0], [0.0, -1.0, 3.0, 0.25]]
TEACHER = [[2.0, 1.0, 0.0, -0.5], [1.0, 1.0, 1.0, 1.0]]


def numpy_kd(student: list, teacher: list, t: float) -> float:
    """T^2 * mean over rows of sum_c p_t * (log p_t - log p_s), by hand in float64."""

    def log_softmax(z: np.ndarray) -> np.ndarray:
        z = z / t
        return z - np.log(np.exp(z).sum(axis=1, keepdims=True))

    log_s, log_t = log_softmax(np.array(student)), log_softmax(np.array(teacher))
    return float(t * t * (np.exp(log_t) * (log_t - log_s)).sum(axis=1).mean())


@pytest.mark.parametrize(("temperature", "golden"), [(1.0, 0.7957854), (4.0, 0.7722233)])
def test_kd_loss_golden_values(temperature: float, golden: float) -> None:
    # `golden` was computed once, independently, as T^2 * mean(scipy.stats.entropy(p_t, p_s))
    # with scipy.special.softmax, and is written here; numpy_kd re-derives it by hand.
    expected = numpy_kd(STUDENT, TEACHER, temperature)
    assert expected == pytest.approx(golden, rel=1e-6)
    got = kd_loss(torch.tensor(STUDENT), torch.tensor(TEACHER), temperature)
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_kd_loss_hand_computed_two_class_case() -> None:
    # p_s = (1/2, 1/2), p_t = (3/4, 1/4) at T = 1:
    # KL = 3/4 ln(3/2) + 1/4 ln(1/2) = 0.3040988 - 0.1732868 = 0.1308120
    student, teacher = torch.tensor([[0.0, 0.0]]), torch.tensor([[float(np.log(3.0)), 0.0]])
    assert kd_loss(student, teacher, 1.0).item() == pytest.approx(0.1308120, abs=1e-6)
    # At T = 2 the teacher's logits halve: p_t = (sqrt3, 1) / (sqrt3 + 1), times T^2 = 4.
    p = np.sqrt(3.0) / (np.sqrt(3.0) + 1.0)
    by_hand = 4 * (p * np.log(2 * p) + (1 - p) * np.log(2 * (1 - p)))
    assert kd_loss(student, teacher, 2.0).item() == pytest.approx(by_hand, rel=1e-5)


def test_kd_loss_is_zero_for_identical_logits_and_float32_from_bf16() -> None:
    z = torch.tensor(STUDENT)
    assert kd_loss(z, z.clone(), 4.0).item() == pytest.approx(0.0, abs=1e-7)
    # Shifting every logit of a row by a constant changes no probability.
    assert kd_loss(z, z + 5.0, 2.0).item() == pytest.approx(0.0, abs=1e-6)
    assert kd_loss(z.bfloat16(), z.bfloat16(), 4.0).dtype == torch.float32


def test_method_names_and_unknown_name() -> None:
    assert METHOD_NAMES == (
        "ddgsd",
        "dist",
        "dkd",
        "iekd",
        "kd",
        "kdcl",
        "rco",
        "reviewkd",
        "supervised",
    )
    known = "ddgsd, dist, dkd, iekd, kd, kdcl, rco, reviewkd, supervised"
    with pytest.raises(ValueError, match=f"unknown method 'crd'; known: {known}"):
        create("crd", student=nn.Linear(2, 2), teacher=None, input_shape=(1, 2, 2))


def test_teacher_requirements() -> None:
    with pytest.raises(ValueError, match="needs a teacher"):
        make_method("kd", nn.Linear(2, 2))
    with pytest.raises(ValueError, match="takes no teacher"):
        make_method("supervised", nn.Linear(2, 2), nn.Linear(2, 2))


def linear_pair() -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    student = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    teacher = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.Dropout(0.5))
    return student, teacher


def test_kd_losses_are_weighted_terms_and_teacher_gets_no_gradient() -> None:
    student, teacher = linear_pair()
    method = make_method("kd", student, teacher, (1, 2, 2), temperature=2.0)
    method.train()
    x, y = torch.randn(5, 1, 2, 2), torch.tensor([0, 1, 2, 0, 1])
    terms = method.losses(batch(x, y, "none"), epoch=0)
    z_s, z_t = student(x), teacher(x)  # teacher in eval: dropout is off
    assert terms["ce"].item() == pytest.approx(0.1 * F.cross_entropy(z_s, y).item(), rel=1e-6)
    assert terms["kd"].item() == pytest.approx(0.9 * kd_loss(z_s, z_t, 2.0).item(), rel=1e-6)
    sum(terms.values()).backward()  # type: ignore[union-attr]
    assert all(p.grad is None for p in teacher.parameters())
    assert all(p.grad is not None for p in student.parameters())


def test_teacher_is_not_trained_saved_or_switched_to_train_mode() -> None:
    student, teacher = linear_pair()
    method = make_method("kd", student, teacher, (1, 2, 2))
    assert all(k.startswith("student.") for k in method.state_dict())
    assert len(list(method.trainable_parameters())) == 2
    method.train()
    assert method.student.training and not method.teacher.training
    method.double()  # moves (here: casts) the teacher along with the student
    assert next(teacher.parameters()).dtype == torch.float64
    assert method.output_model() is student


def test_supervised_is_cross_entropy_on_a_view() -> None:
    student, _ = linear_pair()
    method = make_method("supervised", student, None, (1, 2, 2), route_every=2)
    x, y = torch.randn(5, 1, 2, 2), torch.tensor([0, 1, 2, 0, 1])
    terms = method.losses(batch(x, y, "none"), epoch=0)
    assert list(terms) == ["ce"]
    assert method.route_epochs(5, []) == {2, 4, 5} and not method.needs_teacher
    assert terms["ce"].item() == pytest.approx(F.cross_entropy(student(x), y).item())


def test_batch_view_draws_a_fresh_view_each_call() -> None:
    x = torch.randn(16, 1, 8, 8)
    cropped = batch(x, torch.zeros(16), "crop", torch.Generator().manual_seed(0))
    assert not torch.equal(cropped.view(), cropped.view())
    plain = batch(x, torch.zeros(16), "none").view()
    assert torch.equal(plain, x) and plain.data_ptr() == x.data_ptr()  # x itself, uncopied


@pytest.mark.parametrize("name", ["iekd", "reviewkd"])
def test_methods_size_their_modules_with_the_teacher_on_another_device(name: str) -> None:
    """A job measures the teacher on the GPU before the method is built (student on the
    CPU): each dummy forward must run on its own model's device. "meta" stands in here."""
    teacher = build_model("resnet20", 10, 3).to("meta")
    student = build_model("resnet8", 10, 3)
    make_method(name, student, teacher, (3, 16, 16))
