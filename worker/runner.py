"""A job from its claim to its outcome: train it (on one process or several), record the end."""

import logging
import os
import socket
import uuid
from typing import Any

from service import jobs
from service.config import get_settings
from service.db import session_scope
from service.spec import JobSpec
from worker import ranks
from worker.build import JobFailed, build, job_device
from worker.engine import loop
from worker.exports import ExportError
from worker.outputs import write_outputs
from worker.reporter import JobReporter, LeaseLost

__all__ = ["ERROR_CODES", "JobFailed", "run", "train"]

log = logging.getLogger(__name__)


ERROR_CODES: dict[type[Exception], str] = {
    loop.Diverged: "diverged",
    ExportError: "export_failed",
}


def run(job_id: str) -> str:
    """Claim the job, train, record the outcome. Returns the final status (or 'skipped')."""
    settings = get_settings()
    owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    with session_scope() as s:
        job = jobs.claim(s, job_id, owner, settings.lease_s)
        if job is None:  # a duplicate or stale delivery: someone else has it, or it is done
            log.info("job %s not claimable; skipping", job_id)
            return "skipped"
        spec = JobSpec.model_validate(job.spec)
    with JobReporter(job_id, owner, settings, spec.resources.max_runtime_s) as reporter:
        try:
            result = train(job_id, spec, reporter)
        except LeaseLost:
            log.warning("job %s: lease lost, another attempt owns it now", job_id)
            return "lost"
        except loop.Stopped:
            return _finish(job_id, owner, error=reporter.stop_error())
        except JobFailed as exc:
            return _finish(job_id, owner, error=exc.error)
        except Exception as exc:  # every failure reaches the job's status with a reason
            log.exception("job %s failed", job_id)
            code = next((c for t, c in ERROR_CODES.items() if isinstance(exc, t)), "training_error")
            # notes: the logs of the job's other processes that failed (train_ddp)
            message = "\n".join([f"{type(exc).__name__}: {exc}", *getattr(exc, "__notes__", [])])
            return _finish(
                job_id, owner, error={"code": code, "retryable": False, "message": message}
            )
        return _finish(job_id, owner, result=result)


def _finish(
    job_id: str,
    owner: str,
    *,
    result: dict[str, Any] | None = None,
    error: dict[str, Any] | None = None,
) -> str:
    with session_scope() as s:
        status = jobs.finish(s, job_id, owner, result=result, error=error)
    return status or "lost"


def train(job_id: str, spec: JobSpec, reporter: JobReporter) -> dict[str, Any]:
    if spec.resources.gpus > 1:
        return ranks.train_ddp(job_id, spec, reporter)
    built = build(job_id, spec, job_device(spec.train.device), reporter)
    outcome = loop.train(built.plan, reporter)
    return write_outputs(job_id, spec, built.method, built.data, outcome, built.teacher, reporter)
