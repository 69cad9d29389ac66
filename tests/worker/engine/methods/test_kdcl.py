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
    make_context,
    make_method,
    make_plan,
    normalised,
    np_ce,
    np_log_softmax,
    tensor_images,
)
from worker.engine.data import Augment, DataSplit, carve_holdout, num_batches
from worker.engine.loop import Stopped, train
from worker.engine.methods import Batch, EpochContext, ensemble, kdcl
from worker.engine.zoo import build_model

# Three peers, two samples, three classes; labels 0 and 1.
PEERS = [
    [[2.0, 1.0, 0.0], [0.5, 3.0, -1.0]],
    [[1.0, 2.5, 0.5], [0.0, 1.0, 2.0]],
    [[3.0, 0.0, 1.5], [1.0, 0.5, 0.0]],
]
LABELS = [0, 1]


def stacked() -> tuple[torch.Tensor, torch.Tensor]:
    return torch.tensor(PEERS), torch.tensor(LABELS)


def test_min_logit_golden_values() -> None:
    # By hand: sample 0 (y=0) peers minus their z[0]: [0,-1,-2], [0,1.5,-0.5], [0,-3,-1.5];
    # sample 1 (y=1) minus z[1]: [-2.5,0,-4], [-1,0,1], [0.5,0,-0.5]; the min over peers:
    by_hand = np.array([[0.0, -3.0, -2.0], [-2.5, 0.0, -4.0]])
    z = np.array(PEERS)
    by_numpy = (z - z[:, [0, 1], LABELS][:, :, None]).min(axis=0)
    np.testing.assert_allclose(by_numpy, by_hand)
    got = ensemble.min_logit(*stacked())
    np.testing.assert_allclose(got.numpy(), by_hand, rtol=0, atol=1e-6)
    assert (got[torch.arange(2), torch.tensor(LABELS)] == 0).all()  # exactly, every sample


def test_min_logit_true_class_is_exactly_zero_on_random_logits() -> None:
    g = torch.Generator().manual_seed(0)
    logits, labels = (
        10 * torch.randn(4, 32, 10, generator=g),
        torch.randint(0, 10, (32,), generator=g),
    )
    got = ensemble.min_logit(logits, labels)
    assert torch.equal(got[torch.arange(32), labels], torch.zeros(32))
    z = logits.double().numpy()
    margins = z - np.take_along_axis(z, labels.numpy()[None, :, None], axis=2)
    np.testing.assert_allclose(got.numpy(), margins.min(axis=0), atol=1e-5)


def test_naive_picks_the_lowest_ce_per_batch_and_per_sample() -> None:
    # CE by hand: sample 0: 0.4076, 1.8064, 0.2413; sample 1: 0.0956, 1.4076, 1.1803.
    ce = np_ce(np.array(PEERS), LABELS)
    np.testing.assert_allclose(
        ce, [[0.4076, 0.0956], [1.8064, 1.4076], [0.2413, 1.1803]], atol=1e-4
    )
    assert ce.mean(axis=1).argmin() == 0 and list(ce.argmin(axis=0)) == [2, 0]
    logits, labels = stacked()
    assert torch.equal(ensemble.naive(logits, labels, "batch"), logits[0])
    per_sample = ensemble.naive(logits, labels, "sample")
    assert torch.equal(per_sample, torch.stack([logits[2, 0], logits[0, 1]]))
    with pytest.raises(ValueError, match="naive_per"):
        ensemble.naive(logits, labels, "epoch")


PROBS = [
    [[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.3, 0.3, 0.4], [0.5, 0.4, 0.1]],
    [[0.4, 0.4, 0.2], [0.2, 0.6, 0.2], [0.1, 0.2, 0.7], [0.6, 0.2, 0.2]],
    [[0.9, 0.05, 0.05], [0.5, 0.4, 0.1], [0.2, 0.2, 0.6], [0.2, 0.5, 0.3]],
]
PROB_LABELS = [0, 1, 2, 0]


def test_general_weights_match_the_closed_form() -> None:
    p, eps = np.array(PROBS), 1e-3
    err = p - np.eye(3)[PROB_LABELS]
    c = np.einsum("inc,jnc->ij", err, err) / 4
    inv = np.linalg.inv(c + eps * np.eye(3))
    expected = inv @ np.ones(3) / (np.ones(3) @ inv @ np.ones(3))
    gram = ensemble.error_gram(torch.tensor(PROBS), torch.tensor(PROB_LABELS))
    np.testing.assert_allclose(gram.numpy() / 4, c, rtol=1e-5)
    w = ensemble.general_weights(torch.tensor(c), eps)
    assert w.sum().item() == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(w.numpy(), expected, rtol=1e-5)


def test_general_weights_by_hand_and_the_eps_regulariser() -> None:
    c = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    # C^-1 1 = (1/2, 1) -> (1/3, 2/3); with eps = 1: (C + I)^-1 1 = (1/3, 1/2) -> (0.4, 0.6).
    np.testing.assert_allclose(ensemble.general_weights(c, 1e-9).numpy(), [1 / 3, 2 / 3], rtol=1e-6)
    np.testing.assert_allclose(ensemble.general_weights(c, 1.0).numpy(), [0.4, 0.6], rtol=1e-6)
    # Identical peers make C singular; eps keeps it solvable and splits the weight evenly.
    same = torch.ones(3, 3)
    np.testing.assert_allclose(ensemble.general_weights(same, 1e-3).numpy(), [1 / 3] * 3, rtol=1e-5)


def context(x: torch.Tensor, y: torch.Tensor, batch_size: int, events: list) -> EpochContext:
    return make_context((x, y), (x, y), events, batch_size=batch_size, holdout=(x, y))


def test_covariance_over_partial_batches_in_eval_mode() -> None:
    torch.manual_seed(0)
    models = [nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.Dropout(0.5)) for _ in range(2)]
    x, y = torch.randn(7, 1, 2, 2), torch.tensor([0, 1, 2, 0, 1, 2, 0])
    c = ensemble.covariance(models, tensor_images(x, y), context(x, y, batch_size=3, events=[]))
    assert all(m.training for m in models)  # modes restored
    with torch.no_grad():
        p = np.stack([F.softmax(m.eval()(x), dim=1).double().numpy() for m in models])
    err = p - np.eye(3)[y.numpy()]
    np.testing.assert_allclose(c.numpy(), np.einsum("inc,jnc->ij", err, err) / 7, rtol=1e-5)


def test_one_pass_gives_the_covariance_and_each_models_accuracy() -> None:
    torch.manual_seed(1)
    models = [nn.Sequential(nn.Flatten(), nn.Linear(4, 3)) for _ in range(3)]
    x, y = torch.randn(11, 1, 2, 2), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1])
    ctx = context(x, y, batch_size=4, events=[])
    held = ctx.holdout("test")
    gram, accs = ensemble.holdout_pass(models, held, ctx)
    assert torch.equal(gram, ensemble.covariance(models, held, ctx))
    with torch.no_grad():
        want = [float((m(x).argmax(1) == y).float().mean()) for m in models]
    assert accs == pytest.approx(want)


def test_peer_loss_golden_value() -> None:
    z, t, y = [[1.0, 2.0, 0.5, -1.0], [0.0, -1.0, 3.0, 0.25]], [[2.0, 1.0, 0.0, -0.5]] * 2, [1, 2]
    temp, weight = 2.0, 0.5
    ls, lt = np_log_softmax(np.array(z) / temp), np_log_softmax(np.array(t) / temp)
    kl = (np.exp(lt) * (lt - ls)).sum(axis=1).mean()
    ce, kd = kdcl.peer_loss(torch.tensor(z), torch.tensor(t), torch.tensor(y), temp, weight)
    assert ce.item() == pytest.approx(np_ce(np.array(z), y).mean(), rel=1e-6)
    assert kd.item() == pytest.approx(weight * temp**2 * kl, rel=1e-5)


def kdcl_method(peer: str = "cnn_small", **params: object) -> kdcl.KDCL:
    torch.manual_seed(0)
    student = build_model("cnn_small", 3, 1)
    method = make_method("kdcl", student, peers=[peer], **params)
    assert isinstance(method, kdcl.KDCL)
    return method


class CountingBatch(Batch):
    views = 0

    def view(self) -> torch.Tensor:
        self.views += 1
        return super().view()


def test_losses_per_peer_with_a_detached_minlogit_teacher() -> None:
    method = kdcl_method(temperature=2.0, kd_weight=0.5)
    method.train()
    x, y = torch.randn(6, 1, 8, 8), torch.tensor([0, 1, 2, 0, 1, 2])
    counting = CountingBatch(x, y, Augment("crop", 8), normalised, torch.Generator().manual_seed(0))
    terms = method.losses(counting, epoch=0)
    assert list(terms) == ["ce_0", "kd_0", "ce_1", "kd_1"] and counting.views == 2  # a view each
    terms = method.losses(batch(x, y, "none"), epoch=0)
    z = [m(x) for m in method.members()]
    target = ensemble.min_logit(torch.stack(z).detach(), y)
    for i in range(2):
        ce, kd = kdcl.peer_loss(z[i], target, y, 2.0, 0.5)
        assert terms[f"ce_{i}"].item() == pytest.approx(ce.item(), rel=1e-5)
        assert terms[f"kd_{i}"].item() == pytest.approx(kd.item(), rel=1e-5)
    terms["kd_0"].backward()  # the teacher is detached: peer 1 learns nothing from peer 0's KD
    assert all(p.grad is None for p in method.peers.parameters())
    assert any(p.grad is not None for p in method.student.parameters())


def test_peers_are_registered_and_sized_by_a_dummy_forward() -> None:
    torch.manual_seed(0)
    student = build_model("cnn_small", 5, 2)
    method = make_method("kdcl", student, input_shape=(2, 8, 8), peers=["resnet8"])
    assert isinstance(method, kdcl.KDCL) and student.training
    peer = method.peers[0]
    assert peer(torch.zeros(2, 2, 8, 8)).shape == (2, 5) and peer.arch == "resnet8"
    assert any(k.startswith("peers.0.") for k in method.state_dict())
    assert {"best_peer", "ensemble_weights"} <= set(method.state_dict())
    n_params = len(list(student.parameters())) + len(list(peer.parameters()))
    assert len(list(method.trainable_parameters())) == n_params
    assert method.output_model() is student and list(method.extra_models()) == ["peer1_resnet8"]


def always(model: nn.Module, label: int) -> None:
    """Make a zoo model predict `label` for every image."""
    fc = model.fc  # type: ignore[attr-defined]
    with torch.no_grad():
        fc.weight.zero_()
        fc.bias.copy_(torch.nn.functional.one_hot(torch.tensor(label), fc.out_features) * 5.0)


@pytest.mark.parametrize("ensemble_kind", ["minlogit", "general"])
def test_the_output_peer_is_chosen_on_the_holdout_not_on_the_reported_validation_split(
    ensemble_kind: str,
) -> None:
    method = kdcl_method(ensemble=ensemble_kind)
    always(method.student, 0)
    always(method.peers[0], 1)
    x = torch.randn(6, 1, 8, 8)
    zeros, ones = torch.zeros(6, dtype=torch.long), torch.ones(6, dtype=torch.long)
    # peer 0 is right on the held-out part, peer 1 on the validation split
    ctx = make_context((x, zeros), (x, ones), [], batch_size=4, holdout=(x, zeros))
    method.begin_epoch(1, ctx)
    metrics = method.end_epoch(1, ctx)
    assert (metrics["peer0_holdout_acc"], metrics["peer1_holdout_acc"]) == (1.0, 0.0)
    assert metrics["best_peer"] == 0 and method.output_model() is method.student


def test_without_a_holdout_the_student_stays_the_output() -> None:
    method = kdcl_method(ensemble="minlogit")
    always(method.student, 0)
    always(method.peers[0], 1)
    x, ones = torch.randn(6, 1, 8, 8), torch.ones(6, dtype=torch.long)
    # peer 1 is right on all the job sees, the student wrong: without held-out data to
    # choose on, the student (the network student.arch names) is the output all the same
    no_holdout = make_context((x, ones), (x, ones), [], batch_size=4)
    method.begin_epoch(1, no_holdout)
    assert method.end_epoch(1, no_holdout) == {}
    assert method.output_model() is method.student
    assert list(method.extra_models()) == ["peer1_cnn_small"]
    with pytest.raises(ValueError, match="held-out part"):  # admission refuses it first
        kdcl_method(ensemble="general").begin_epoch(1, no_holdout)


def test_linear_weights_are_logged_as_the_epoch_mean() -> None:
    method = kdcl_method(ensemble="linear")
    method.train()
    x, y = torch.randn(6, 1, 8, 8), torch.tensor([0, 1, 2, 0, 1, 2])
    ctx = context(x, y, batch_size=4, events=[])
    method.begin_epoch(1, ctx)
    for _ in range(3):
        method.losses(batch(x + 0.1 * torch.randn_like(x), y, "none"), epoch=0)
    mean = torch.stack(method._linear_w).mean(dim=0)
    metrics = method.end_epoch(1, ctx)
    assert metrics["ensemble_w0"] == pytest.approx(mean[0].item()) and len(method._linear_w) == 3
    assert metrics["ensemble_w0"] + metrics["ensemble_w1"] == pytest.approx(1.0, abs=1e-6)
    assert {"peer0_holdout_acc", "peer1_holdout_acc", "best_peer"} <= set(metrics)


@pytest.fixture(scope="module")
def small_digits(digits: DataSplit) -> DataSplit:
    """10 steps of 64 per epoch keep these runs inside the CPU test budget; 72 samples of
    the training split held out, as worker/job/build.py holds them out for a KDCL job."""
    data = carve_holdout(first_train(digits, 712), 0.1, 0)
    assert data.holdout is not None and (len(data.train), len(data.holdout)) == (640, 72)
    return data


PARAMS = {"peers": ["resnet8"], "ensemble": "general"}


@pytest.fixture(scope="module")
def kdcl_run(small_digits: DataSplit, tmp_path_factory: pytest.TempPathFactory):
    plan = make_plan(
        small_digits, tmp_path_factory.mktemp("kdcl"), method="kdcl", params=PARAMS, epochs=2
    )
    recorder = Recorder()
    return plan, train(plan, recorder), recorder


def test_kdcl_trains_cnn_small_with_resnet8_and_keeps_the_best_peer(kdcl_run) -> None:
    plan, result, recorder = kdcl_run
    metrics = result.final_metrics
    terms = ["train_ce_0", "train_kd_0", "train_ce_1", "train_kd_1"]
    assert metrics["train_loss"] == pytest.approx(sum(metrics[t] for t in terms))
    best = int(metrics["best_peer"])
    held = [metrics["peer0_holdout_acc"], metrics["peer1_holdout_acc"]]
    assert metrics[f"peer{best}_holdout_acc"] == max(held) and metrics["val_acc"] > 0.3  # 0.1
    method = plan.method
    assert method.output_model() is method.members()[best]
    other = 1 - best
    assert method.extra_models() == {
        f"peer{other}_{['cnn_small', 'resnet8'][other]}": method.members()[other]
    }
    weights = [data["weights"] for type_, _, data in recorder.events if type_ == "info"]
    assert len(weights) == 2 and all(sum(w) == pytest.approx(1.0, abs=1e-5) for w in weights)
    assert metrics["ensemble_w0"] == pytest.approx(weights[-1][0])


def test_kdcl_resume_after_a_stop_matches_an_uninterrupted_run(
    kdcl_run, small_digits: DataSplit, tmp_path: Path
) -> None:
    reference = kdcl_run[0].method
    steps = num_batches(len(small_digits.train), 64, shuffle=True)
    stopped = make_plan(small_digits, tmp_path, method="kdcl", params=PARAMS, epochs=2)
    with pytest.raises(Stopped):
        train(stopped, Recorder(stop_after_steps=steps + 3))
    resumed = make_plan(
        small_digits, tmp_path, method="kdcl", params=PARAMS, epochs=2, init_seed=123
    )
    result = train(resumed, Recorder())
    assert result.resumed_from_epoch == 1
    for (name, x), y in zip(
        resumed.method.state_dict().items(), reference.state_dict().values(), strict=True
    ):
        assert torch.equal(x, y), name
    # A finished run only loads: the chosen peer and the weights come back from the buffers.
    loaded = make_plan(
        small_digits,
        kdcl_run[0].checkpoint_dir,
        method="kdcl",
        params=PARAMS,
        epochs=2,
        init_seed=7,
    )
    assert train(loaded, Recorder()).resumed_from_epoch == 2
    assert isinstance(loaded.method, kdcl.KDCL) and isinstance(reference, kdcl.KDCL)
    assert torch.equal(loaded.method.best_peer, reference.best_peer)
    assert torch.equal(loaded.method.ensemble_weights, reference.ensemble_weights)
