"""Training throughput: the engine's KD step against a plain reference step and the research
recipe, measured side by side in one process on the same data and the same models.

    python bench/train_throughput.py                        # CUDA when present, else small CPU
    python bench/train_throughput.py --device cuda --compile --json out.json

Teacher resnet32x4 -> student resnet8x4 (the zoo's), Hinton KD (T 4, 0.1 CE + 0.9 KD), on
synthetic CIFAR-shaped data (32x32x3, 100 classes) that lives on the device:
  (a) engine    the step a job runs: loop.train_step on a plan built as the runner builds it
                (precision auto, channels_last, fused SGD, teacher in inference mode)
  (b) reference the plain step of kd_ref_bench: bf16 autocast, channels_last, eager, nothing
                more (its loop is carried below, since users have no ../shared)
  (c) research  what the research code runs: fp32, batch 64, eager, contiguous tensors
and the engine's whole epoch: shuffle, gather, crop + flip on the device, the lr per step and
the epoch's metrics, as images/s over every training image, with the data resident on the
device and streamed from host memory (and compiled, with --compile). Steps are timed in
rounds and the median is reported (every round is in the JSON); rounds alternate between
the runs so that drift in clocks or load falls on all of them alike. Nothing is asserted.
"""

import argparse
import contextlib
import copy
import dataclasses
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from service.spec.job import JobSpec  # noqa: E402
from worker.engine import loop  # noqa: E402
from worker.engine.data import Augment, DataSplit  # noqa: E402
from worker.engine.device import compiled, resolve_device  # noqa: E402
from worker.engine.methods import Batch, create  # noqa: E402
from worker.engine.zoo import build_model  # noqa: E402
from worker.job.build import load_data, method_kwargs, plan_for  # noqa: E402
from worker.task.inputs import JobInputs  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--teacher", default="resnet32x4")
    p.add_argument("--student", default="resnet8x4")
    p.add_argument("--batch", type=int, help="engine and reference batch (512 on CUDA, 32 on CPU)")
    p.add_argument("--research-batch", type=int, help="research-recipe batch (64; 8 on CPU)")
    p.add_argument("--samples", type=int, help="training images (50000 on CUDA, 256 on CPU)")
    p.add_argument("--steps", type=int, help="timed steps per round (50 on CUDA, 2 on CPU)")
    p.add_argument("--rounds", type=int, default=5, help="timed rounds per figure (median)")
    p.add_argument("--compile", action="store_true", help="also time the engine compiled")
    p.add_argument("--json", type=Path, help="also write the figures here")
    args = p.parse_args(argv)
    cuda = resolve_device(args.device).type == "cuda"
    defaults = {"batch": 512, "research_batch": 64, "samples": 50_000, "steps": 50}
    if not cuda:
        defaults = {"batch": 32, "research_batch": 8, "samples": 256, "steps": 2}
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    return args


def kd_loss(s: Tensor, t: Tensor, y: Tensor, temperature: float = 4.0, alpha: float = 0.9):
    """kd_ref_bench's loss: (1 - a) CE + a T^2 KL(p_t || p_s)."""
    kl = F.kl_div(
        F.log_softmax(s / temperature, 1),
        F.log_softmax(t / temperature, 1),
        reduction="batchmean",
        log_target=True,
    )
    return (1 - alpha) * F.cross_entropy(s, y) + alpha * temperature**2 * kl


def plain_step(
    teacher: nn.Module, student: nn.Module, x: Tensor, y: Tensor, bf16: bool
) -> Callable[[], None]:
    """The reference KD step (b) with bf16, the research step (c) without."""
    opt = torch.optim.SGD(student.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)

    def autocast() -> torch.autocast:
        return torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16)

    def step() -> None:
        with torch.no_grad(), autocast():
            t = teacher(x)
        with autocast():
            loss = kd_loss(student(x).float(), t.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], None], dev: torch.device) -> float:
    sync(dev)
    started = time.perf_counter()
    fn()
    sync(dev)
    return time.perf_counter() - started


def interleaved(
    runs: dict[str, tuple[Callable[[], None], int]], rounds: int, dev: torch.device
) -> dict[str, list[float]]:
    """Images/s of each run per round; rounds alternate between the runs, so a drift in
    clocks or load falls on all of them alike. Each run is called once first to warm up."""
    for fn, _ in runs.values():
        fn()
    rates: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, (fn, images) in runs.items():
            rates[name].append(images / timed(fn, dev))
    return rates


def repeat(step: Callable[[], None], times: int) -> Callable[[], None]:
    def steps() -> None:
        for _ in range(times):
            step()

    return steps


def job_spec(args: argparse.Namespace, **train_fields: Any) -> JobSpec:
    """The KD job the engine runs: the service's defaults (T 4, 0.1 CE + 0.9 KD, SGD with
    momentum 0.9 and weight decay 5e-4) at a constant lr of 0.05, without augmentation."""
    return JobSpec.model_validate(
        {
            "method": {"name": "kd"},
            "teacher": {"job": "bench-teacher"},
            "student": {"arch": args.student, "num_classes": 100, "in_channels": 3},
            "data": {
                "dataset": "synthetic",
                "val_fraction": 0.02,
                "augment": "none",
                "synthetic": {"num_samples": args.samples, "num_classes": 100, "size": 32},
            },
            "train": {
                "epochs": 1,
                "batch_size": args.batch,
                "device": args.device,
                "optimizer": {"name": "sgd", "lr": 0.05},
                "schedule": {"name": "constant"},
                **train_fields,
            },
        }
    )


def engine_run(args: argparse.Namespace, data: DataSplit, models, workdir: Path, **train_fields):
    """A run started as the worker builds it (worker/job/build.py) from the job's spec."""
    teacher, student = (copy.deepcopy(m) for m in models)
    spec, inputs = job_spec(args, **train_fields), JobInputs(job_dir=workdir)
    kwargs = method_kwargs(spec, inputs)
    method = create("kd", student=student, teacher=teacher, input_shape=data.input_shape, **kwargs)
    plan = plan_for(spec, inputs, method, data, args.device)
    return loop.start_run(plan, loop.Quiet())


def engine_step(run: loop.Run) -> Callable[[], None]:
    x, y = next(run.data.train.epoch(run.plan.batch_size, run.generator))
    batch = Batch(x, y, run.plan.data.augment, run.data.train.normalise, run.generator)

    def step() -> None:
        loop.train_step(run, batch, 0)

    return step


def whole_epoch(run: loop.Run) -> tuple[Callable[[], None], int]:
    """One engine epoch with crop + flip, and the number of images it trains on."""
    data = run.plan.data  # kept at the training size ("none"): crop + flip keeps that base
    run.plan.data = dataclasses.replace(data, augment=Augment("crop_flip", data.augment.size))

    def epoch() -> None:
        loop.train_epoch(run, 0)

    return epoch, run.steps_per_epoch * run.plan.batch_size


def reference_inputs(run: loop.Run, batch: int, channels_last: bool) -> tuple[Tensor, Tensor]:
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x, y = next(run.data.train.ordered(batch))  # normalised, on the device
    return x.contiguous(memory_format=fmt), y


def plain_models(models, device: torch.device, channels_last: bool) -> tuple[nn.Module, nn.Module]:
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    teacher, student = (copy.deepcopy(m).to(device, memory_format=fmt) for m in models)
    return teacher.eval(), student.train()


def measure(args: argparse.Namespace) -> dict:
    dev = resolve_device(args.device)
    data = load_data(job_spec(args), JobInputs(job_dir=Path(tempfile.gettempdir())))  # no file
    torch.manual_seed(0)
    models = (build_model(args.teacher, 100, 3), build_model(args.student, 100, 3))
    out: dict = {
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "teacher": args.teacher,
        "student": args.student,
        "batch": args.batch,
        "research_batch": args.research_batch,
    }
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        steps, epochs = {}, {}
        variants: dict[str, dict[str, Any]] = {
            "engine": {},
            "engine_streamed": {"data_placement": "host"},
        }
        if args.compile:
            variants["engine_compiled"] = {"compile": True}
        for name, fields in variants.items():
            run = engine_run(args, data, models, Path(tmp) / name, **fields)
            method = run.plan.method
            stack.enter_context(compiled(method.forward_models(), enabled=run.plan.compile))
            if name != "engine_streamed":  # the same step as "engine" once the batch is there
                steps[name] = (repeat(engine_step(run), args.steps), args.batch * args.steps)
            epochs[f"{name}_epoch"] = whole_epoch(run)
        cuda = dev.type == "cuda"
        teacher, student = plain_models(models, dev, channels_last=cuda)
        x, y = reference_inputs(run, args.batch, channels_last=cuda)
        step = plain_step(teacher, student, x, y, bf16=cuda)
        steps["reference"] = (repeat(step, args.steps), args.batch * args.steps)
        teacher, student = plain_models(models, dev, channels_last=False)
        x, y = reference_inputs(run, args.research_batch, channels_last=False)
        step = plain_step(teacher, student, x, y, bf16=False)
        steps["research"] = (repeat(step, args.steps), args.research_batch * args.steps)
        rates = interleaved(steps, args.rounds, dev) | interleaved(epochs, args.rounds, dev)
    out |= {name: statistics.median(values) for name, values in rates.items()}
    out["rounds"] = rates
    return out | ratios(out)


def ratios(out: dict) -> dict[str, float]:
    best = max(out["engine"], out.get("engine_compiled", 0.0))
    r = {
        "engine/reference": out["engine"] / out["reference"],
        "engine/research": out["engine"] / out["research"],
        "epoch/step": out["engine_epoch"] / out["engine"],
        "streamed_epoch/step": out["engine_streamed_epoch"] / out["engine"],
    }
    if "engine_compiled" in out:
        r["compiled/reference"] = out["engine_compiled"] / out["reference"]
        r["compiled_epoch/compiled_step"] = out["engine_compiled_epoch"] / out["engine_compiled"]
        r["best/research"] = best / out["research"]
    return r


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    out = measure(args)
    print(f"{out['device']}, torch {out['torch']}: {out['teacher']} -> {out['student']}, KD")
    for key, value in out.items():
        if isinstance(value, float):
            unit = "" if "/" in key else " images/s"
            print(f"  {key:30s} {value:12.2f}{unit}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
