"""The training loop: lr, view, forward, losses, backward, step, log; eval and checkpoint.

Epochs are 0-based inside, 1-based in callbacks, metrics and checkpoint names.
"""

import dataclasses
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor

from worker.engine.checkpoint import save_weights
from worker.engine.data import DataSplit, Images, choose_placement, num_batches
from worker.engine.data.images import Batches
from worker.engine.device import (
    autocast,
    compiled,
    place,
    resolve_device,
    resolve_precision,
)
from worker.engine.distributed import Shard, current_shard, sum_across, wrap
from worker.engine.evaluate import evaluate
from worker.engine.methods import Batch, EpochContext, Method
from worker.engine.optim import Optimizer, Schedule, build_optimizer, lr_at, set_lr
from worker.engine.resume import RESUME, Progress, load_resume, save_resume, verified_resume
from worker.engine.stop import Preempted, Stopped

__all__ = [
    "Callbacks",
    "Diverged",
    "Preempted",
    "Quiet",
    "Stopped",
    "TrainPlan",
    "TrainResult",
    "evaluate",
    "resolve_device",
    "train",
]


class Diverged(RuntimeError):
    """An epoch's training loss was NaN or infinite."""


@dataclass
class TrainPlan:
    """One run, every job value given (worker/job/build.py makes it from the job spec)."""

    method: Method
    data: DataSplit
    epochs: int
    batch_size: int
    optimizer: Optimizer
    schedule: Schedule
    seed: int
    precision: str  # "auto" | "fp32" | "bf16"
    device: str | torch.device  # "auto" | "cpu" | "cuda", or one device (a DDP rank's GPU)
    checkpoint_dir: Path  # resume.safetensors, and route/epoch_NNNN.safetensors
    spec: dict[str, Any]  # the resolved job spec, kept in checkpoints
    compile: bool  # torch.compile the student's and teacher's forward
    data_placement: str  # "auto" | "device" | "host" | "stream" (worker/engine/data/loader.py)


class Callbacks(Protocol):
    def on_step(self, epoch: int, step: int, steps_per_epoch: int) -> None: ...
    def should_stop(self) -> bool: ...
    def preempted(self) -> bool: ...
    def on_epoch(self, epoch: int, metrics: dict[str, float]) -> None: ...
    def on_checkpoint(self, path: Path, epoch: int, kind: str, step: int | None) -> None:
        """Saved in 1-based `epoch`: at its end (step None) or after `step` of its steps."""

    def on_event(self, type_: str, message: str, data: dict[str, Any]) -> None: ...


class Quiet:
    """Callbacks that report nothing and never stop: benches and the other ranks of a job."""

    def on_step(self, epoch: int, step: int, steps_per_epoch: int) -> None: ...
    def should_stop(self) -> bool:
        return False

    def preempted(self) -> bool:
        return False

    def on_epoch(self, epoch: int, metrics: dict[str, float]) -> None: ...
    def on_checkpoint(self, path: Path, epoch: int, kind: str, step: int | None) -> None: ...
    def on_event(self, type_: str, message: str, data: dict[str, Any]) -> None: ...


@dataclass
class TrainResult:
    final_metrics: dict[str, float]
    best_val_acc: float
    best_epoch: int
    epochs_run: int  # epochs completed in total, including those before a resume
    resumed_from_epoch: int | None
    device: str
    precision: str
    history: list[dict[str, float]]


@dataclass
class Run:
    """What every step needs, resolved once at the start."""

    plan: TrainPlan
    callbacks: Callbacks
    device: torch.device
    precision: str
    shard: Shard  # this process's rank in the job; rank 0 reports and writes checkpoints
    model: torch.nn.Module  # the method, wrapped in DDP when the job spans processes
    optimizer: torch.optim.Optimizer
    generator: torch.Generator
    data: DataSplit  # placed: each split where it is kept
    steps_per_epoch: int
    routes: set[int]  # 1-based epochs that also save route weights


def train(plan: TrainPlan, callbacks: Callbacks) -> TrainResult:
    run = start_run(plan, callbacks)
    resume_path = plan.checkpoint_dir / RESUME
    progress, resumed_from, order = Progress(), None, None
    source, skipped = verified_resume(plan.checkpoint_dir)
    for problem in skipped if run.shard.is_main else ():
        callbacks.on_event("warning", f"resume checkpoint {problem}", {})
    if source is not None:
        progress, order = load_resume(
            source, method=plan.method, optimizer=run.optimizer, generator=run.generator
        )
        resumed_from = progress.epoch
    ctx = epoch_context(run)
    with compiled(plan.method.forward_models(), enabled=plan.compile):
        for epoch in range(progress.epoch, plan.epochs):
            try:
                metrics = run_epoch(run, ctx, progress, epoch, order)
            except Preempted as preempted:
                if run.shard.is_main and preempted.step is not None:
                    progress.step = preempted.step
                    save_resume_checkpoint(run, progress, resume_path, preempted.order)
                raise
            order = None
            if run.shard.is_main:
                callbacks.on_epoch(epoch + 1, metrics)
                save_epoch_checkpoints(run, progress, resume_path)
    return result(progress, resumed_from, run)


def run_epoch(
    run: Run, ctx: EpochContext, progress: Progress, epoch: int, order: Tensor | None
) -> dict[str, float]:
    """One epoch: train (from step `progress.step` of the batch order drawn from `order`
    when a preempted attempt left it there), the method's hooks, evaluate."""
    plan, started = run.plan, time.perf_counter()
    plan.method.begin_epoch(epoch + 1, ctx)
    metrics = train_epoch(run, epoch, (progress.step, order) if order is not None else None)
    metrics |= plan.method.end_epoch(epoch + 1, ctx)
    student = plan.method.output_model()
    metrics |= evaluate(student, ctx.val, plan.batch_size, run.device, run.precision)
    metrics["epoch_time_s"] = time.perf_counter() - started
    progress.record(epoch + 1, metrics)
    return metrics


def epoch_context(run: Run) -> EpochContext:
    plan, callbacks = run.plan, run.callbacks

    def emit(type_: str, message: str, **data: Any) -> None:
        if run.shard.is_main:
            callbacks.on_event(type_, message, data)

    def should_stop() -> bool:  # inside a hook or an evaluation: no step to resume from
        if callbacks.preempted():
            raise Preempted()
        return callbacks.should_stop()

    return EpochContext(
        train_batches=lambda: run.data.train.epoch(plan.batch_size, run.generator),
        normalise=run.data.train.normalise,
        val=run.data.val,
        holdout_images=run.data.holdout,
        device=run.device,
        batch_size=plan.batch_size,
        augment=plan.data.augment,
        generator=run.generator,
        precision=run.precision,
        emit=emit,
        should_stop=should_stop,
    )


def start_run(plan: TrainPlan, callbacks: Callbacks) -> Run:
    device, shard = resolve_device(plan.device), current_shard()
    whole = plan.method.whole_batches
    steps = num_batches(len(plan.data.train), plan.batch_size, True, shard.world, whole)
    if steps == 0:
        need = f"a whole batch of {plan.batch_size}" if whole else "two samples per process"
        raise ValueError(f"the training split needs at least {need}")
    place(plan.method, device)
    # Batch shapes repeat every step, so cuDNN's autotuned kernels pay off.
    torch.backends.cudnn.benchmark = device.type == "cuda"
    torch.manual_seed(plan.seed)  # methods that draw from the global RNG stay reproducible
    generator = torch.Generator(device=device)
    generator.manual_seed(plan.seed)
    return Run(
        plan=plan,
        callbacks=callbacks,
        device=device,
        precision=resolve_precision(plan.precision, device),
        shard=shard,
        model=wrap(plan.method, device, shard),
        optimizer=build_optimizer(plan.method.trainable_parameters(), plan.optimizer, device),
        generator=generator,
        data=place_data(plan.data, device, plan.data_placement),
        steps_per_epoch=steps,
        routes=plan.method.route_epochs(plan.epochs, plan.schedule.drops()),
    )


def place_data(data: DataSplit, device: torch.device, requested: str) -> DataSplit:
    """Each split where `requested` (or, for "auto", its size) says it is kept."""

    def placed(images: Images) -> Images:
        return images.place(device, choose_placement(requested, images.nbytes, device))

    held = data.holdout
    return dataclasses.replace(
        data,
        train=placed(data.train),
        val=placed(data.val),
        holdout=None if held is None else placed(held),
    )


def train_epoch(run: Run, epoch: int, resume: tuple[int, Tensor] | None = None) -> dict[str, float]:
    """One pass over the training split; `resume` = (steps done, the generator's state when
    the order was drawn) continues an epoch a preempted attempt left. The epoch's loss means
    then cover the steps of this attempt."""
    plan, shard = run.plan, run.shard
    plan.method.train()
    totals: dict[str, Tensor] = {}
    seen, lrs = 0, []
    started = time.perf_counter()
    first, order = resume if resume else (0, run.generator.get_state())
    data = batches_from(run, order, first)
    part, normalise = (shard.rank, shard.world), run.data.train.normalise
    for step, (x, y) in enumerate(data, start=first):
        if run.callbacks.should_stop():
            raise Stopped(f"stopped at epoch {epoch + 1}, step {step + 1}")
        if run.callbacks.preempted():
            raise Preempted(step, order)
        lrs.append(lr_for(run, epoch, step))
        set_lr(run.optimizer, lrs[-1])
        batch = Batch(x, y, plan.data.augment, normalise, run.generator, part)
        add_terms(totals, train_step(run, batch, epoch), len(y))
        seen += len(y)
        if shard.is_main:
            run.callbacks.on_step(epoch + 1, step + 1, run.steps_per_epoch)
    means, seen = mean_terms(totals, seen, shard)  # the epoch's one host sync
    elapsed = time.perf_counter() - started
    return epoch_metrics(means, lr=lrs[0], images_per_s=seen / max(elapsed, 1e-9), epoch=epoch)


def batches_from(run: Run, order: Tensor, first: int) -> Batches:
    """The epoch's batches from step `first`, in the order drawn from the generator state
    `order`; the generator then goes on from where it was (mid-epoch: as it was saved)."""
    plan, shard, carry_on = run.plan, run.shard, run.generator.get_state()
    run.generator.set_state(order)
    train, whole = run.data.train, plan.method.whole_batches
    data = train.epoch(plan.batch_size, run.generator, shard.rank, shard.world, first, whole)
    if first:
        run.generator.set_state(carry_on)
    return data


def lr_for(run: Run, epoch: int, step: int) -> float:
    plan = run.plan
    return lr_at(
        epoch,
        step,
        run.steps_per_epoch,
        base_lr=plan.optimizer.lr,
        epochs=plan.epochs,
        schedule=plan.schedule,
    )


def train_step(run: Run, batch: Batch, epoch: int) -> dict[str, Tensor]:
    with autocast(run.device, run.precision):
        terms = run.model(batch, epoch)
    loss = torch.stack([t.float() for t in terms.values()]).sum()
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    run.optimizer.step()
    return terms


def epoch_metrics(
    means: dict[str, float], *, lr: float, images_per_s: float, epoch: int
) -> dict[str, float]:
    train_loss = sum(means.values())
    if not math.isfinite(train_loss):
        raise Diverged(f"training loss is {train_loss} at epoch {epoch + 1}")
    per_term = {f"train_{name}": value for name, value in means.items()}
    return {"train_loss": train_loss, **per_term, "lr": lr, "images_per_s": images_per_s}


def save_epoch_checkpoints(run: Run, progress: Progress, resume_path: Path) -> None:
    plan, epoch = run.plan, progress.epoch
    save_resume_checkpoint(run, progress, resume_path)
    if epoch in run.routes:
        route_path = plan.checkpoint_dir / "route" / f"epoch_{epoch:04d}.safetensors"
        save_weights(route_path, plan.method.output_model())
        run.callbacks.on_checkpoint(route_path, epoch, "route", None)


def save_resume_checkpoint(
    run: Run, progress: Progress, resume_path: Path, order: Tensor | None = None
) -> None:
    save_resume(
        resume_path,
        method=run.plan.method,
        optimizer=run.optimizer,
        generator=run.generator,
        progress=progress,
        plan=plan_meta(run.plan),
        order=order,
    )
    if progress.step:  # mid-epoch: progress.epoch epochs and `step` of the next are done
        run.callbacks.on_checkpoint(resume_path, progress.epoch + 1, "resume", progress.step)
    else:
        run.callbacks.on_checkpoint(resume_path, progress.epoch, "resume", None)


def add_terms(totals: dict[str, Tensor], terms: dict[str, Tensor], n: int) -> None:
    """Sum each term over samples on the device: no host sync per step."""
    for name, value in terms.items():
        weighted = value.detach().float() * n
        totals[name] = totals[name] + weighted if name in totals else weighted


def mean_terms(totals: dict[str, Tensor], seen: int, shard: Shard) -> tuple[dict[str, float], int]:
    """Per-sample means over every process, and the number of samples they saw together."""
    names = list(totals)
    local = [totals[n] for n in names] + [torch.tensor(float(seen), device=totals[names[0]].device)]
    *sums, count = sum_across(torch.stack(local), shard).tolist()
    return {n: s / count for n, s in zip(names, sums, strict=True)}, int(count)


def plan_meta(plan: TrainPlan) -> dict[str, Any]:
    return {
        "method": type(plan.method).__name__,
        "epochs": plan.epochs,
        "batch_size": plan.batch_size,
        "optimizer": asdict(plan.optimizer),
        "schedule": asdict(plan.schedule),
        "seed": plan.seed,
        "precision": plan.precision,
        "augment": asdict(plan.data.augment),
        "spec": plan.spec,
    }


def result(progress: Progress, resumed_from: int | None, run: Run) -> TrainResult:
    final = (
        {k: v for k, v in progress.history[-1].items() if k != "epoch"} if progress.history else {}
    )
    return TrainResult(
        final_metrics=final,
        best_val_acc=progress.best_val_acc,
        best_epoch=progress.best_epoch,
        epochs_run=progress.epoch,
        resumed_from_epoch=resumed_from,
        device=str(run.device),
        precision=run.precision,
        history=progress.history,
    )
