"""A job from its claim to its outcome, as the Celery task runs it: claim, start the job's
processes (worker/ranks.py), wait for rank 0's outcome, record the end. Nothing here
imports torch: a stale or duplicate delivery costs one conditional UPDATE."""

import logging

from service.config import get_settings
from service.errors import JobError
from worker.context import JobContext, LeaseLost
from worker.engine.stop import Stopped
from worker.ranks import Ranks

log = logging.getLogger(__name__)


def run(job_id: str) -> str:
    """Claim the job, train, record the outcome. Returns the final status (or 'skipped')."""
    ctx = JobContext.claim(job_id, get_settings())
    if ctx is None:
        log.info("job %s not claimable; skipping", job_id)
        return "skipped"
    with ctx:
        try:
            with Ranks.started(ctx, ctx.inputs()) as ranks:
                result = ranks.outcome(ctx)
        except LeaseLost:
            log.warning("job %s: lease lost, another attempt owns it now", job_id)
            return "lost"
        except Stopped:
            return ctx.finish(error=ctx.stop_error())
        except JobError as exc:
            return ctx.finish(error=exc)
        except Exception as exc:  # every failure reaches the job's status with a reason
            log.exception("job %s failed", job_id)
            return ctx.finish(error=JobError("training_error", f"{type(exc).__name__}: {exc}"))
        return ctx.finish(result=result)
