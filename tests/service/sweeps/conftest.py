"""Sweeps driven for real (the driver's passes, Optuna's storage, admission, the state
machine) with the worker's side played by the worker's own JobContext: each epoch recorded
through it (so the pruning hook runs as in a training process) at the val_acc a test
chooses, a step at a time, and the job ended as a worker ends it."""

import copy
from collections.abc import Callable
from typing import Any

from sqlalchemy import select

from service.config import get_settings
from service.db.sessions import session_scope
from service.db.tables import Job
from service.jobs import lifecycle
from service.spec.job import JobSpec
from service.sweeps import driver
from worker.task.context import JobContext

BASE: dict[str, Any] = {
    "method": {"name": "supervised"},
    "student": {"arch": "resnet8"},
    "data": {"dataset": "digits"},
    "train": {"epochs": 3, "batch_size": 64},
}
STEPS = 4  # steps per epoch the played worker reports


def sweep_body(**fields: Any) -> dict[str, Any]:
    """A sweep of supervised digits jobs over the learning rate."""
    body = {
        "name": "lr",
        "base": copy.deepcopy(BASE),
        "space": {"train.optimizer.lr": {"choices": [0.1, 0.05, 0.001]}},
        "trials": 3,
        "parallel": 1,
    }
    return body | fields


Curve = Callable[[dict[str, Any]], list[float]]  # a job's spec -> its val_acc per epoch


def work(job_id: str, curve: list[float], owner: str = "w1") -> str:
    """Run a queued job as a worker would, reporting `curve` epoch by epoch until it is
    told to stop; returns the status it ended with."""
    with session_scope() as s:
        claimed = lifecycle.claim(s, job_id, owner, lease_s=60)
        assert claimed is not None
        spec = JobSpec.model_validate(claimed.spec)
    ctx = JobContext(job_id, owner, spec, get_settings())
    for epoch, acc in enumerate(curve, 1):
        for step in range(1, STEPS + 1):
            if ctx.should_stop():
                return ctx.finish()
            ctx.on_step(epoch, step, STEPS)
        ctx.on_epoch(epoch, {"train_loss": 1.0 - acc, "val_acc": acc})
    return ctx.finish(result={"val_acc": curve[-1]})


def queued(sweep_id: str) -> list[Job]:
    with session_scope() as s:
        q = select(Job).where(Job.sweep_id == sweep_id, Job.status == "queued")
        return list(s.scalars(q.order_by(Job.created_at, Job.id)))


def run_sweep(sweep_id: str, curve: Curve, passes: int = 50) -> list[list[str]]:
    """Driver passes, each followed by a worker running what it queued, until a pass leaves
    nothing queued and the sweep has ended. Returns the job ids each pass queued."""
    from service.db.tables import Sweep

    made = []
    for _ in range(passes):
        driver.run_pass()
        jobs = queued(sweep_id)
        made.append([j.id for j in jobs])
        for job in jobs:
            work(job.id, curve(job.spec))
        with session_scope() as s:
            if s.get_one(Sweep, sweep_id).status not in ("queued", "running"):
                return made
    raise AssertionError(f"sweep {sweep_id} still running after {passes} passes")
