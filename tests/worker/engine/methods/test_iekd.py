from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tests.worker.engine.helpers import (
    Recorder,
    arrays,
    batch,
    first_train,
    make_context,
    make_method,
    make_plan,
)
from worker.engine.data import DataSplit
from worker.engine.loop import Stopped, train
from worker.engine.methods.iekd import EXPLORATION, IEKD, cosine_overlap, factor_distance
from worker.engine.zoo import StageFeatures, ZooModel, build_model

# Two samples of a (2, 1, 2) factor, written out so the golden values below are reproducible.
A = [[[[1.0, -2.0]], [[0.5, 3.0]]], [[[2.0, 0.0]], [[-1.0, 1.0]]]]
B = [[[[0.0, 1.0]], [[2.0, 2.0]]], [[[1.0, -3.0]], [[0.5, 0.25]]]]


def numpy_normalised(x: list) -> np.ndarray:
    flat = np.array(x, dtype=np.float64).reshape(len(x), -1)
    return flat / np.linalg.norm(flat, axis=1, keepdims=True)


def test_factor_distance_golden_value() -> None:
    # Golden: numpy in float64, each sample flattened and L2-normalised, then
    # sum |a - b| / numel = 0.515495142213213 (the official code's FT loss with p = 1).
    expected = np.abs(numpy_normalised(A) - numpy_normalised(B)).sum() / 8
    assert expected == pytest.approx(0.515495142213213, rel=1e-12)
    got = factor_distance(torch.tensor(A), torch.tensor(B))
    assert got.dtype == torch.float32 and got.item() == pytest.approx(expected, rel=1e-6)


def test_factor_distance_by_hand() -> None:
    # (3, 4) / 5 = (0.6, 0.8) and (4, 3) / 5 = (0.8, 0.6): |diff| = (0.2, 0.2), mean 0.2.
    a, b = torch.tensor([[3.0, 4.0]]), torch.tensor([[4.0, 3.0]])
    assert factor_distance(a, b).item() == pytest.approx(0.2, abs=1e-7)
    # The scale of a factor does not matter, only its direction.
    assert factor_distance(10 * a, b).item() == pytest.approx(0.2, abs=1e-6)
    assert factor_distance(a, a.clone()).item() == 0.0


def test_cosine_overlap_golden_and_by_hand() -> None:
    # Golden: numpy float64 per-sample cosines 0.44151079 and 0.2224746, mean of |.| below.
    cosines = (numpy_normalised(A) * numpy_normalised(B)).sum(axis=1)
    assert np.abs(cosines).mean() == pytest.approx(0.33199269492282635, rel=1e-12)
    assert cosine_overlap(torch.tensor(A), torch.tensor(B)).item() == pytest.approx(
        0.33199269492282635, rel=1e-6
    )
    # By hand: cos((1, 0), (1, 1)) = 1/sqrt(2); (1, 2) . (-2, 1) = 0; |cos((1, 0), (-1, 0))| = 1.
    a, b = torch.tensor([[1.0, 0.0], [1.0, 2.0]]), torch.tensor([[1.0, 1.0], [-2.0, 1.0]])
    assert cosine_overlap(a, b).item() == pytest.approx(0.5 / np.sqrt(2.0), rel=1e-6)
    assert cosine_overlap(a[:1], -a[:1]).item() == pytest.approx(1.0, rel=1e-6)


def test_exploration_term_is_negative_and_descent_moves_away() -> None:
    target = torch.tensor(B)
    start = torch.tensor(A)
    assert EXPLORATION["l1"](start, target).item() == pytest.approx(-0.515495142213213, rel=1e-6)
    assert EXPLORATION["cosine"](start, target).item() == pytest.approx(0.33199269, rel=1e-6)
    for kind, exploration in EXPLORATION.items():
        f_exp = start.clone().requires_grad_(True)
        exploration(f_exp, target).backward()
        assert f_exp.grad is not None
        moved = (start - 0.5 * f_exp.grad).detach()  # one descent step on the loss
        # Minimising the term pushes the exploration factor away from the teacher's (l1) or
        # toward orthogonality (cosine): both lower the term.
        assert exploration(moved, target) < exploration(start, target), kind
    assert factor_distance(-target, target) > factor_distance(start, target)


def iekd(teacher: nn.Module, student: nn.Module, shape: tuple, **params) -> IEKD:
    method = make_method("iekd", student, teacher, shape, **params)
    assert isinstance(method, IEKD)
    return method


def digits_pair(seed: int = 0) -> tuple[ZooModel, ZooModel]:
    torch.manual_seed(seed)
    return build_model("resnet8", 10, 1), build_model("cnn_small", 10, 1)


def test_sizes_from_a_dummy_pass_and_the_autoencoder_is_not_trainable() -> None:
    teacher, student = digits_pair()
    before = {k: v.clone() for k, v in student.state_dict().items()}
    method = iekd(teacher, student, (1, 8, 8), rate=0.5)
    # resnet8's last stage has 64 channels -> a 32-channel factor; cnn_small's 64 split 32/32.
    assert method.autoencoder.encoder[-3].out_channels == 32
    assert method.autoencoder.decoder[-3].out_channels == 64
    assert method.inherit[1].in_channels == 32 and method.explore[1].in_channels == 32
    assert method.inherit[-3].out_channels == 32
    for name, value in student.state_dict().items():  # the dummy pass left BN stats alone
        assert torch.equal(value, before[name]), name
    trainable = {id(p) for p in method.trainable_parameters()}
    assert not any(id(p) in trainable for p in method.autoencoder.parameters())
    assert all(id(p) in trainable for p in method.inherit.parameters())
    assert method.channel_order.tolist() == list(range(64))


def test_losses_wire_halves_to_the_teacher_factor() -> None:
    teacher, student = digits_pair()
    method = iekd(teacher, student, (1, 8, 8), inh_weight=2.0, exp_weight=0.5, ce_weight=1.5)
    method.eval()  # BN on running stats: the manual recomputation below sees the same numbers
    x, y = torch.randn(4, 1, 8, 8), torch.tensor([0, 1, 2, 3])
    terms = method.losses(batch(x, y, "none"), epoch=0)
    assert set(terms) == {"ce", "inh", "exp"}
    logits, feats = student.forward_features(x)
    factor_t = method.autoencoder.encoder(teacher.forward_features(x)[1].feats[-1])
    s = feats.feats[-1]
    d_inh = factor_distance(method.inherit(s[:, :32]), factor_t)
    d_exp = factor_distance(method.explore(s[:, 32:]), factor_t)
    assert terms["ce"].item() == pytest.approx(1.5 * F.cross_entropy(logits, y).item(), rel=1e-5)
    assert terms["inh"].item() == pytest.approx(2.0 * d_inh.item(), rel=1e-5)
    assert terms["exp"].item() == pytest.approx(-0.5 * d_exp.item(), rel=1e-5)
    assert terms["exp"].item() < 0
    method.exploration = EXPLORATION["cosine"]  # what exp_loss "cosine" chooses
    cos = cosine_overlap(method.explore(s[:, 32:]), factor_t)
    terms = method.losses(batch(x, y, "none"), epoch=0)
    assert terms["exp"].item() == pytest.approx(0.5 * cos.item(), rel=1e-5)


def test_random_split_is_a_permutation_kept_in_the_state() -> None:
    teacher, student = digits_pair()
    torch.manual_seed(1)
    method = iekd(teacher, student, (1, 8, 8), split="random")
    order = method.channel_order.clone()
    assert sorted(order.tolist()) == list(range(64)) and order.tolist() != list(range(64))
    torch.manual_seed(2)
    other = iekd(*digits_pair(), (1, 8, 8), split="random")
    assert not torch.equal(other.channel_order, order)
    other.load_state_dict(method.state_dict())  # what a resume does
    assert torch.equal(other.channel_order, order)


class WideMap(ZooModel):
    """A one-stage model whose feature map keeps the input's 8x8 size (resnet8's is 2x2)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.fc = nn.Conv2d(1, 6, 3, padding=1), nn.Linear(6, 10)

    def forward_features(self, x: Tensor) -> tuple[Tensor, StageFeatures]:
        pre = self.conv(x)
        feat = F.relu(pre)
        pooled = feat.mean(dim=(2, 3))
        return self.fc(pooled), StageFeatures([pre], [feat], pooled)


def test_student_map_of_another_size_is_pooled_to_the_factor() -> None:
    teacher, _ = digits_pair()
    method = iekd(teacher, WideMap(), (1, 8, 8))
    terms = method.losses(batch(torch.randn(3, 1, 8, 8), torch.tensor([0, 1, 2]), "none"), 0)
    assert all(torch.isfinite(t) for t in terms.values())
    assert method.inherit[1].in_channels == 3


class Snapshots(Recorder):
    """Remembers the auto-encoder's state when phase 2 starts."""

    def __init__(self, method: IEKD, stop_after_steps: int | None = None) -> None:
        super().__init__(stop_after_steps)
        self.method = method
        self.at_student_phase: dict[str, Tensor] = {}

    def on_event(self, type_: str, message: str, data: dict) -> None:
        super().on_event(type_, message, data)
        if data.get("phase") == "student":
            self.at_student_phase = clone_state(self.method.autoencoder)


def clone_state(module: nn.Module) -> dict[str, Tensor]:
    return {k: v.clone() for k, v in module.state_dict().items()}


def small(digits: DataSplit) -> DataSplit:
    """Four batches of 64 per epoch: the mechanics, not the accuracy, are under test."""
    return first_train(digits, 4 * 64)


def iekd_plan(digits: DataSplit, checkpoint_dir: Path, seed: int):
    teacher, student = digits_pair(seed)
    method = iekd(teacher, student, digits.input_shape, ae_epochs=2, ae_lr=0.05)
    plan = make_plan(small(digits), checkpoint_dir, epochs=2)
    return replace(plan, method=method), method


def test_real_run_trains_the_autoencoder_once_then_freezes_it(
    digits: DataSplit, tmp_path: Path
) -> None:
    plan, method = iekd_plan(digits, tmp_path, seed=0)
    initial = clone_state(method.autoencoder)
    recorder = Snapshots(method)
    result = train(plan, recorder)
    phases = [d for t, _, d in recorder.events if t == "phase"]
    assert [(d["phase"], d.get("ae_epoch")) for d in phases] == [
        ("autoencoder", 1),
        ("autoencoder", 2),
        ("student", None),
    ]
    assert phases[1]["recon_l1"] < phases[0]["recon_l1"]
    assert any(not torch.equal(initial[k], v) for k, v in recorder.at_student_phase.items())
    for name, value in method.autoencoder.state_dict().items():  # untouched by phase 2
        assert torch.equal(value, recorder.at_student_phase[name]), name
    assert {"train_ce", "train_inh", "train_exp"} <= set(result.final_metrics)
    assert result.final_metrics["train_exp"] < 0


def test_resume_in_phase_two_does_not_retrain_the_autoencoder(
    digits: DataSplit, tmp_path: Path
) -> None:
    plan, first = iekd_plan(digits, tmp_path, seed=0)
    steps = 4
    with pytest.raises(Stopped):
        train(plan, Recorder(stop_after_steps=steps + 3))  # inside epoch 2: phase 2
    trained = clone_state(first.autoencoder)
    plan, second = iekd_plan(digits, tmp_path, seed=1)  # fresh, differently initialised
    recorder = Recorder()
    result = train(plan, recorder)
    assert result.resumed_from_epoch == 1
    assert not [e for e in recorder.events if e[0] == "phase"]
    assert bool(second.ae_trained)
    for name, value in second.autoencoder.state_dict().items():
        assert torch.equal(value, trained[name]), name


def test_a_stop_inside_phase_one_stops_and_leaves_it_untrained(digits: DataSplit) -> None:
    method = iekd(*digits_pair(), digits.input_shape, ae_epochs=3)
    events: list = []
    x, y = arrays(digits.train)
    train = (x[:128], y[:128])
    ctx = make_context(train, arrays(digits.val), events, augment_mode="crop", stop=True)
    with pytest.raises(Stopped):
        method.begin_epoch(1, ctx)
    assert not bool(method.ae_trained) and events == []
