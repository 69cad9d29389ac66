"""Jobs from their claim to their outcome, as the Celery task runs them: woken by a job's
message, claim the oldest job queued in its queue, start the job's processes
(worker/task/supervisor.py), wait for rank 0's outcome, record the end; then the next queued job,
until the queue is empty. Nothing here imports torch: a stale or duplicate message costs
two queries."""

import logging
import threading

from service import logs
from service.config import get_settings
from service.db.sessions import session_scope
from service.errors import JobError
from service.jobs import lifecycle
from worker.engine.stop import Preempted, Stopped
from worker.task.context import JobContext, LeaseLost
from worker.task.supervisor import Ranks

log = logging.getLogger(__name__)

# Set when the worker starts shutting down (SIGTERM: a deploy, a spot reclaim): the job
# running saves where it is and goes back to its queue, and no other job is claimed.
DRAINING = threading.Event()
ENDED = ("succeeded", "failed", "cancelled")  # a job's final statuses, as run_claimed says


def run(job_id: str, delivered_to: str | None = None) -> list[str]:
    """Run the queued jobs of `job_id`'s queue, oldest first. Returns their final statuses.

    Whichever job a message names, it wakes its queue: one for a job that ended, or that is
    no longer there (then the queue it was delivered to), still starts the jobs waiting."""
    queue = _queue_of(job_id) or delivered_to
    outcomes: list[str] = []
    while queue is not None and not DRAINING.is_set():
        ctx = JobContext.claim(queue, get_settings())
        if ctx is None:
            break
        outcomes.append(run_claimed(ctx))
        if outcomes[-1] in ENDED:  # lost or requeued, another attempt may still use it
            ctx.drop_scratch()
    if not outcomes:
        log.info("woken for job %s: nothing queued in %s", job_id, queue)
    return outcomes


def _queue_of(job_id: str) -> str | None:
    with session_scope() as s:
        return lifecycle.queue_of(s, job_id)


def run_claimed(ctx: JobContext) -> str:
    """Train the claimed job and record its outcome; returns its final status."""
    with logs.job_context(ctx.job_id), ctx:
        try:
            with Ranks.started(ctx, ctx.inputs()) as ranks:
                result = ranks.outcome(ctx, DRAINING)
        except LeaseLost:
            log.warning("job %s: lease lost, another attempt owns it now", ctx.job_id)
            return "lost"
        except Preempted:
            log.warning("job %s: the worker is shutting down; requeued", ctx.job_id)
            return ctx.release()
        except Stopped:
            return ctx.finish(error=ctx.stop_error())
        except JobError as exc:
            return ctx.finish(error=exc)
        except Exception as exc:  # every failure reaches the job's status with a reason
            log.exception("job %s failed", ctx.job_id)
            return ctx.finish(error=JobError("training_error", f"{type(exc).__name__}: {exc}"))
        return ctx.finish(result=result)
