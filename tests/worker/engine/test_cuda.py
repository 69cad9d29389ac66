"""The GPU path (skipped without CUDA): bf16, channels_last, fused steps, no host sync in a
step, streamed data, torch.compile."""

from pathlib import Path

import pytest
import torch

from worker.engine.data import DataSplit
from worker.engine.loop import Quiet, start_run, train, train_step
from worker.engine.methods import Batch
from worker.engine.zoo import build_model

from .helpers import Recorder, make_plan

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
    assert run.precision == "bf16" and run.feed.placement == "device"
    assert run.optimizer.defaults["fused"] is True
    conv = next(p for p in run.plan.method.student.parameters() if p.dim() == 4)
    assert conv.is_contiguous(memory_format=torch.channels_last)
    x, y = next(run.feed.epoch(64, run.generator))
    train_step(run, Batch(x, y, "crop", run.generator), 0)  # warm-up: cuDNN autotuning
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for x, y in run.feed.epoch(64, run.generator):
            train_step(run, Batch(x, y, "crop", run.generator), 0)
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
