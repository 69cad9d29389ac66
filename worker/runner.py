"""A job from its claim to its outcome: build, train on one process or several, write the
outputs, record the end. All its database and store I/O goes through its JobContext."""

import logging
from typing import Any

from service.config import get_settings
from service.errors import JobError
from worker.build import build, measure_teacher
from worker.context import JobContext, LeaseLost
from worker.engine import loop
from worker.exports import ExportError
from worker.outputs import write_outputs
from worker.ranks import Ranks, job_device

log = logging.getLogger(__name__)

# exceptions that mean something to a user -> the job's error code ("training_error" else)
ERROR_CODES: dict[type[Exception], str] = {
    loop.Diverged: "diverged",
    ExportError: "export_failed",
}


def run(job_id: str) -> str:
    """Claim the job, train, record the outcome. Returns the final status (or 'skipped')."""
    ctx = JobContext.claim(job_id, get_settings())
    if ctx is None:
        log.info("job %s not claimable; skipping", job_id)
        return "skipped"
    with ctx:
        try:
            result = train(ctx)
        except LeaseLost:
            log.warning("job %s: lease lost, another attempt owns it now", job_id)
            return "lost"
        except loop.Stopped:
            return ctx.finish(error=ctx.stop_error())
        except Exception as exc:  # every failure reaches the job's status with a reason
            log.exception("job %s failed", job_id)
            return ctx.finish(error=job_error(exc))
        return ctx.finish(result=result)


def train(ctx: JobContext) -> dict[str, Any]:
    spec, inputs = ctx.spec, ctx.inputs()
    device = job_device(spec.train.device, spec.resources.gpus)
    with Ranks.started(spec, inputs, device) as ranks:
        built = build(spec, inputs, device)
        if built.teacher is not None:
            val = measure_teacher(built, spec, device)
            source = built.teacher.source
            message = f"teacher val_acc {val['val_acc']:.4f}"
            ctx.event("teacher", message, job=source.job_id, arch=source.arch, **val)
        outcome = ranks.train(built.plan, ctx)
    written = write_outputs(ctx.job_id, inputs.job_dir, spec, built, outcome)
    for type_, message in written.events:
        ctx.event(type_, message)
    ctx.register(written.files)
    return written.result


def job_error(exc: Exception) -> JobError:
    """The job's error for an exception: its own when it is one, else by its type."""
    if isinstance(exc, JobError):
        return exc
    code = next((c for t, c in ERROR_CODES.items() if isinstance(exc, t)), "training_error")
    # notes: the logs of the job's other processes that failed (worker/ranks.py)
    return JobError(
        code, "\n".join([f"{type(exc).__name__}: {exc}", *getattr(exc, "__notes__", [])])
    )
