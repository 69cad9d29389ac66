"""The GPU path (skipped without CUDA): bf16, channels_last, fused steps, no host sync in a
step, streamed data, torch.compile."""

from pathlib import Path

import pytest
import torch

from worker.engine.data import Augment, DataSplit, Resident, augment_batch
from worker.engine.data import augment as augment_module
from worker.engine.loop import Quiet, evaluate, start_run, train, train_step
from worker.engine.methods import Batch
from worker.engine.zoo import build_model

from .helpers import Recorder, make_plan, normalised

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]


def kd_plan(digits: DataSplit, tmp_path: Path, **overrides):
    teacher = build_model("resnet8", digits.num_classes, 1)
    return make_plan(
        digits, tmp_path, arch="resnet8", method="kd", teacher=teacher, device="cuda", **overrides
    )


def test_a_kd_step_runs_bf16_channels_last_fused_without_a_host_sync(digits, tmp_path) -> None:
    run = start_run(kd_plan(digits, tmp_path), Quiet())
    assert run.precision == "bf16" and run.data.train.on_device  # type: ignore[attr-defined]
    assert run.data.train.pixels.is_cuda  # type: ignore[attr-defined]
    assert run.optimizer.defaults["fused"] is True
    conv = next(p for p in run.plan.method.student.parameters() if p.dim() == 4)
    assert conv.is_contiguous(memory_format=torch.channels_last)
    augment = run.plan.data.augment
    assert augment == Augment("crop", 8)
    norm = run.data.train.normalise
    x, y = next(run.data.train.epoch(64, run.generator))
    # warm-up: cuDNN autotuning
    train_step(run, Batch(x, y, augment, norm, run.generator), 0)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for x, y in run.data.train.epoch(64, run.generator):
            train_step(run, Batch(x, y, augment, norm, run.generator), 0)
    finally:
        torch.cuda.set_sync_debug_mode("default")


def test_streamed_data_trains_like_resident_data_on_a_gpu(digits, tmp_path) -> None:
    losses = []
    for placement in ("device", "host"):
        plan = kd_plan(digits, tmp_path / placement, epochs=2, data_placement=placement)
        losses.append([h["train_loss"] for h in train(plan, Recorder()).history])
    assert losses[1] == pytest.approx(losses[0], rel=0.02)


def test_compile_trains_and_leaves_the_modules_plain(digits, tmp_path) -> None:
    plan = make_plan(digits, tmp_path, arch="resnet8", device="cuda", epochs=3, compile=True)
    keys = set(plan.method.student.state_dict())
    result = train(plan, Recorder())
    assert result.final_metrics["val_acc"] >= 0.8
    assert set(plan.method.student.state_dict()) == keys
    assert plan.method.student._compiled_call_impl is None


def test_host_and_device_placement_give_the_same_batches(digits) -> None:
    cuda = torch.device("cuda")
    assert isinstance(digits.train, Resident)
    host, device = (digits.train.place(cuda, p) for p in ("host", "device"))
    assert not host.on_device and not host.pixels.is_cuda  # streamed by the gather thread
    assert device.on_device and device.pixels.is_cuda
    epochs = [imgs.epoch(64, torch.Generator().manual_seed(0)) for imgs in (host, device)]
    for (xa, ya), (xb, yb) in zip(*epochs, strict=True):
        assert xa.is_cuda and xb.is_cuda and torch.equal(xa, xb) and torch.equal(ya, yb)


@pytest.mark.parametrize("mode", ["crop_flip", "rrc_flip"])
def test_views_on_the_gpu_are_the_cpus(mode: str, monkeypatch) -> None:
    # the CPU's own resize of random crops repeats a crop's edge where roi_align reads beyond
    # it (test_augment.py ties the two): compare the GPU with roi_align on the CPU
    monkeypatch.setattr(augment_module, "crops_resized", augment_module.boxes_resized)
    x = torch.randn(32, 3, 16, 16)
    augment = Augment(mode, 14 if mode == "rrc_flip" else 16)
    on_cpu = augment_batch(x, augment, normalised, torch.Generator().manual_seed(0))
    on_gpu = augment_batch(x.cuda(), augment, normalised, torch.Generator().manual_seed(0))
    torch.testing.assert_close(on_gpu.cpu(), on_cpu, atol=1e-5, rtol=1e-5)


def test_evaluate_takes_a_split_still_in_host_memory(digits) -> None:
    """A teacher is measured (worker/job/build.py measure_teacher) on the split as loaded."""
    torch.manual_seed(0)
    model = build_model("cnn_small", 10, 1)
    on_gpu = evaluate(model, digits.val, 64, "cuda", "fp32")
    on_cpu = evaluate(model, digits.val, 64, "cpu", "fp32")
    assert on_gpu["val_acc"] == pytest.approx(on_cpu["val_acc"], abs=0.02)


@pytest.mark.parametrize(
    ("method", "params"),
    [
        ("dkd", {}),
        ("dkd", {"logit_standardisation": True}),
        ("dist", {}),
        ("kd", {"logit_standardisation": True}),
    ],
)
def test_logit_methods_step_in_bf16_with_finite_terms_and_no_host_sync(
    digits, tmp_path, method: str, params: dict
) -> None:
    """DKD's log-space terms (no boolean masks), DIST's relations and the z-score under
    bf16 autocast: finite float32 terms, and no step waits for the GPU."""
    teacher = build_model("resnet8", digits.num_classes, 1)
    plan = make_plan(
        digits, tmp_path, arch="resnet8", method=method, teacher=teacher, device="cuda",
        params=params,
    )  # fmt: skip
    run = start_run(plan, Quiet())
    assert run.precision == "bf16"
    augment, norm = run.plan.data.augment, run.data.train.normalise
    batches = run.data.train.epoch(64, run.generator, whole=plan.method.whole_batches)
    x, y = next(batches)
    train_step(run, Batch(x, y, augment, norm, run.generator), 0)  # cuDNN autotuning
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for x, y in batches:
            terms = train_step(run, Batch(x, y, augment, norm, run.generator), 5)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert all(t.dtype == torch.float32 and torch.isfinite(t).item() for t in terms.values())
