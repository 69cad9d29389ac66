from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from worker.engine.checkpoint import load_checkpoint, load_weights
from worker.engine.data import Augment, DataSplit, load_dataset, num_batches
from worker.engine.device import autocast, compiled, memory_format, resolve_precision
from worker.engine.loop import (
    Diverged,
    Preempted,
    Stopped,
    TrainPlan,
    evaluate,
    resolve_device,
    train,
)
from worker.engine.methods import Batch, Method
from worker.engine.zoo import build_model

from .helpers import (
    Recorder,
    assert_same_weights,
    make_method,
    make_plan,
    normalised,
    spec_schedule,
    synthetic_options,
    tensor_images,
)

EPOCH_KEYS = {"train_loss", "train_ce", "val_loss", "val_acc", "lr", "epoch_time_s", "images_per_s"}


@pytest.fixture(scope="module")
def teacher_run(digits: DataSplit, tmp_path_factory: pytest.TempPathFactory):
    plan = make_plan(digits, tmp_path_factory.mktemp("teacher"), arch="resnet8", epochs=5)
    recorder = Recorder()
    return plan, train(plan, recorder), recorder


@pytest.fixture(scope="module")
def reference_run(digits: DataSplit, tmp_path_factory: pytest.TempPathFactory) -> TrainPlan:
    plan = make_plan(digits, tmp_path_factory.mktemp("reference"), epochs=3)
    train(plan, Recorder())
    return plan


def test_supervised_teacher_learns_digits(teacher_run) -> None:
    plan, result, recorder = teacher_run
    assert result.final_metrics["val_acc"] >= 0.9
    assert (result.epochs_run, result.resumed_from_epoch) == (5, None)
    assert (result.device, result.precision) == ("cpu", "fp32")
    assert result.best_val_acc == max(h["val_acc"] for h in result.history)
    assert [e for e, _ in recorder.epochs] == [1, 2, 3, 4, 5]
    assert set(recorder.epochs[0][1]) == EPOCH_KEYS
    steps = num_batches(len(plan.data.train), plan.batch_size, shuffle=True)
    assert recorder.steps[:2] == [(1, 1, steps), (1, 2, steps)] and len(recorder.steps) == 5 * steps
    resume = plan.checkpoint_dir / "resume.safetensors"
    route = plan.checkpoint_dir / "route" / "epoch_0005.safetensors"  # a teacher's last epoch
    assert recorder.checkpoints == [(resume, e, "resume", None) for e in range(1, 6)] + [
        (route, 5, "route", None)
    ]
    assert list((plan.checkpoint_dir / "route").iterdir()) == [route]


def test_kd_from_the_teacher_reports_each_term(
    teacher_run, digits: DataSplit, tmp_path: Path
) -> None:
    teacher = teacher_run[0].method.output_model()
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    plan = make_plan(digits, tmp_path, method="kd", teacher=teacher, epochs=3)
    recorder = Recorder()
    result = train(plan, recorder)
    metrics = result.final_metrics
    assert metrics["train_loss"] == pytest.approx(metrics["train_ce"] + metrics["train_kd"])
    assert metrics["val_acc"] >= 0.85
    assert not teacher.training
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())
    _, meta = load_checkpoint(plan.checkpoint_dir / "resume.safetensors")
    assert meta["progress"]["epoch"] == 3 and meta["plan"]["method"] == "KD"


def test_same_seed_same_plan_same_weights(reference_run, digits, tmp_path: Path) -> None:
    plan = make_plan(digits, tmp_path, epochs=3)
    train(plan, Recorder())
    assert_same_weights(plan.method, reference_run.method)


def test_resume_after_a_stop_matches_an_uninterrupted_run(
    reference_run, digits, tmp_path: Path
) -> None:
    steps = num_batches(len(digits.train), 64, shuffle=True)
    with pytest.raises(Stopped):
        train(make_plan(digits, tmp_path, epochs=3), Recorder(stop_after_steps=2 * steps + 3))
    _, meta = load_checkpoint(tmp_path / "resume.safetensors")
    assert meta["progress"]["epoch"] == 2

    resumed = make_plan(digits, tmp_path, epochs=3, init_seed=123)  # other init: must be loaded
    recorder = Recorder()
    result = train(resumed, recorder)
    assert result.resumed_from_epoch == 2 and [e for e, _ in recorder.epochs] == [3]
    assert len(result.history) == 3 and result.epochs_run == 3
    assert_same_weights(resumed.method, reference_run.method)


@pytest.mark.parametrize("into_epoch", [3, 0])
def test_resume_after_a_preemption_mid_epoch_matches_an_uninterrupted_run(
    reference_run, digits, tmp_path: Path, into_epoch: int
) -> None:
    steps = num_batches(len(digits.train), 64, shuffle=True)
    preempting = Recorder(preempt_after_steps=steps + into_epoch)
    with pytest.raises(Preempted) as info:
        train(make_plan(digits, tmp_path, epochs=3), preempting)
    assert info.value.step == into_epoch
    _, meta = load_checkpoint(tmp_path / "resume.safetensors")
    assert (meta["progress"]["epoch"], meta["progress"]["step"]) == (1, into_epoch)
    where = (2, "resume", into_epoch) if into_epoch else (1, "resume", None)  # at epoch 1's end
    assert preempting.checkpoints[-1][1:] == where

    resumed = make_plan(digits, tmp_path, epochs=3, init_seed=123)
    recorder = Recorder()
    result = train(resumed, recorder)
    assert recorder.steps[0][:2] == (2, into_epoch + 1)  # on from the next step
    assert len(recorder.steps) == 2 * steps - into_epoch
    assert [e for e, _ in recorder.epochs] == [2, 3] and result.epochs_run == 3
    assert_same_weights(resumed.method, reference_run.method)


def test_a_finished_run_is_not_repeated(reference_run) -> None:
    recorder = Recorder()
    result = train(reference_run, recorder)
    assert result.resumed_from_epoch == 3 and recorder.steps == [] and result.epochs_run == 3


@pytest.mark.parametrize("after", [0, 5])
def test_should_stop_stops_at_once_and_saves_nothing(digits, tmp_path: Path, after: int) -> None:
    recorder = Recorder(stop_after_steps=after)
    with pytest.raises(Stopped):
        train(make_plan(digits, tmp_path), recorder)
    assert len(recorder.steps) == after
    assert recorder.epochs == [] and recorder.checkpoints == []
    assert not (tmp_path / "resume.safetensors").exists()


def test_route_checkpoints_at_every_nth_epoch_lr_drops_and_the_end(digits, tmp_path: Path) -> None:
    schedule = spec_schedule(name="multistep", milestones=[3], gamma=0.1)
    plan = make_plan(digits, tmp_path, epochs=5, schedule=schedule, params={"route_every": 2})
    recorder = Recorder()
    train(plan, recorder)
    routes = [(p.name, e) for p, e, kind, _ in recorder.checkpoints if kind == "route"]
    assert routes == [(f"epoch_{e:04d}.safetensors", e) for e in (2, 3, 4, 5)]
    assert sorted(p.name for p in (tmp_path / "route").iterdir()) == [r for r, _ in routes]
    last = build_model("cnn_small", 10, 1)
    load_weights(last, tmp_path / "route" / "epoch_0005.safetensors")
    assert_same_weights(last, plan.method.output_model())


class NaNMethod(Method):
    def losses(self, batch: Batch, epoch: int) -> dict[str, Tensor]:
        return {"ce": F.cross_entropy(self.student(batch.view()), batch.labels) * float("nan")}


def test_a_nan_loss_fails_the_run_before_any_checkpoint(digits, tmp_path: Path) -> None:
    plan = make_plan(digits, tmp_path, epochs=1)
    student = build_model("cnn_small", 10, 1)
    plan.method = NaNMethod(student=student, teacher=None, input_shape=digits.input_shape)
    with pytest.raises(Diverged, match="training loss is nan at epoch 1"):
        train(plan, Recorder())
    assert not (tmp_path / "resume.safetensors").exists()


def test_synthetic_rgb_with_crop_flip_and_bf16_on_cpu(tmp_path) -> None:
    options = synthetic_options(num_samples=256, size=16)
    data = load_dataset("synthetic", val_fraction=0.25, seed=0, **options)
    plan = make_plan(data, tmp_path, arch="resnet8", epochs=1, augment="crop_flip")
    plan.precision = "bf16"
    result = train(plan, Recorder())
    assert result.precision == "bf16"
    assert 0.0 <= result.final_metrics["val_acc"] <= 1.0 and result.final_metrics["lr"] == 0.1


class SizeCheck(Method):
    """Supervised, recording the shapes the method is handed and the views it trains on."""

    shapes: list[tuple[tuple[int, ...], tuple[int, ...]]]

    def losses(self, batch: Batch, epoch: int) -> dict[str, Tensor]:
        view = batch.view()
        self.shapes.append((tuple(batch.images.shape[-2:]), tuple(view.shape[-2:])))
        return {"ce": F.cross_entropy(self.student(view), batch.labels)}


def test_rrc_flip_trains_at_its_size_from_a_larger_base(tmp_path) -> None:
    options = synthetic_options(num_samples=128, size=16)
    data = load_dataset("synthetic", 0.25, 0, augment="rrc_flip", image_size=14, **options)
    assert data.augment == Augment("rrc_flip", 14) and data.input_shape == (3, 14, 14)
    plan = make_plan(data, tmp_path, epochs=1, augment="rrc_flip")
    method = SizeCheck(
        student=build_model("cnn_small", 10, 3), teacher=None, input_shape=(3, 14, 14)
    )
    method.shapes = []
    plan.method = method
    result = train(plan, Recorder())
    assert set(method.shapes) == {((16, 16), (14, 14))}  # kept at 16, trained at 14
    assert 0.0 <= result.final_metrics["val_acc"] <= 1.0
    assert load_checkpoint(tmp_path / "resume.safetensors")[1]["plan"]["augment"] == {
        "mode": "rrc_flip",
        "size": 14,
    }


def test_evaluate_matches_a_direct_computation() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3)).train()
    x, y = torch.randn(10, 1, 2, 2), torch.randint(0, 3, (10,))
    got = evaluate(model, tensor_images(x, y), batch_size=4, device="cpu", precision="fp32")
    with torch.no_grad():
        logits = model(x)
    assert got["val_loss"] == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-6)
    assert got["val_acc"] == pytest.approx((logits.argmax(1) == y).float().mean().item())
    assert model.training  # the caller's mode is restored


def test_resolve_device() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA is not available"):
            resolve_device("cuda")


def test_auto_precision_is_plain_fp32_on_a_cpu() -> None:
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) == "fp32"
    with autocast(cpu, resolve_precision("auto", cpu)):
        assert not torch.is_autocast_enabled("cpu")
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32
    assert memory_format(cpu) == torch.contiguous_format


def test_the_teacher_answers_in_inference_mode_and_kd_still_backpropagates(digits) -> None:
    teacher = build_model("cnn_small", 10, 1)
    method = make_method("kd", build_model("cnn_small", 10, 1), teacher)
    x, y = next(digits.train.ordered(8))
    assert method.ask_teacher(x).is_inference()
    terms = method(Batch(x, y, digits.augment, normalised), 0)
    sum(terms.values()).backward()  # inference tensors only enter through log-softmax
    assert all(p.grad is not None for p in method.student.parameters())
    assert all(p.grad is None for p in teacher.parameters())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_bf16_channels_last_run(digits, tmp_path: Path) -> None:
    plan = make_plan(digits, tmp_path, arch="resnet8", epochs=3, device="auto")
    result = train(plan, Recorder())
    assert (result.device, result.precision) == ("cuda", "bf16")
    assert result.final_metrics["val_acc"] >= 0.8
    with pytest.raises(Stopped):
        train(make_plan(digits, tmp_path / "again", device="cuda"), Recorder(stop_after_steps=3))


def test_compile_wraps_student_and_teacher_only_while_training() -> None:
    teacher = build_model("mlp", 10, 1)
    method = make_method("kd", build_model("mlp", 10, 1), teacher)
    keys = set(method.state_dict())
    with compiled(method.forward_models(), enabled=True):
        assert all(m._compiled_call_impl is not None for m in (method.student, teacher))
        assert set(method.state_dict()) == keys  # checkpoints keep their names
    assert all(m._compiled_call_impl is None for m in (method.student, teacher))
