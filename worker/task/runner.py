"""Jobs from their claim to their outcome, as the Celery task runs them: woken by a job's
message, claim the oldest job queued in its queue, start the job's processes
(worker/task/supervisor.py), wait for rank 0's outcome, record the end; then the next queued job,
until the queue is empty. A job across nodes is claimed by a seat in its gang, waited in
until every seat is taken (worker/task/nodes.py); node 0 then runs it here, the others their
share. Nothing here imports torch: a stale or duplicate message costs two queries."""

import logging
import socket
import threading
from collections.abc import Sequence

from service import logs
from service.config import get_settings
from service.db.sessions import session_scope
from service.errors import JobError
from service.jobs import lifecycle
from worker.engine.stop import Preempted, Stopped
from worker.task import nodes
from worker.task.context import JobContext, LeaseLost, drop_scratch
from worker.task.supervisor import Node, NodeLost, Ranks

log = logging.getLogger(__name__)

# Set when the worker starts shutting down (SIGTERM: a deploy, a spot reclaim): the job
# running saves where it is and goes back to its queue, and no other job is claimed.
DRAINING = threading.Event()
ENDED = ("succeeded", "failed", "cancelled")  # a job's final statuses, as run_claimed says


def run(job_id: str, delivered_to: str | None = None, queues: Sequence[str] = ()) -> list[str]:
    """Run the queued jobs of `job_id`'s queue, oldest first. Returns their final statuses
    (a node past 0 of a job across nodes: how its part ended).

    Whichever job a message names, it wakes its queue: one for a job that ended, or that is
    no longer there (then the queue it was delivered to), still starts the jobs waiting.
    Waiting in a gang, the worker moves to an older job of any of its `queues` with room."""
    queue = _queue_of(job_id) or delivered_to
    outcomes: list[str] = []
    settings = get_settings()
    while queue is not None and not DRAINING.is_set():
        claimed = JobContext.claim(queue, settings)
        if claimed is None:
            break
        if isinstance(claimed, JobContext):
            outcomes.append(run_claimed(claimed))
            if outcomes[-1] in ENDED:  # lost or requeued, another attempt may still use it
                claimed.drop_scratch()
            continue
        gathered = nodes.gather(claimed, sorted({*queues, queue}), settings, DRAINING)
        if isinstance(gathered, nodes.Moved):
            queue = gathered.queue
        elif isinstance(gathered, nodes.Member):
            outcomes.append(nodes.run_member(gathered, DRAINING))
            # node 0 keeps the job's record and outputs: this host's copies served this part
            drop_scratch(gathered.job_id)
        elif gathered is not None:  # node 0: the job is this worker's to run
            outcomes.append(run_claimed(gathered))
            if outcomes[-1] in ENDED:
                gathered.drop_scratch()
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
            with Ranks.started(ctx, ctx.inputs(), _node(ctx)) as ranks:
                result = ranks.outcome(ctx, DRAINING)
        except LeaseLost:
            log.warning("job %s: lease lost, another attempt owns it now", ctx.job_id)
            return "lost"
        except Preempted:
            log.warning("job %s: the worker is shutting down; requeued", ctx.job_id)
            return ctx.release()
        except NodeLost as exc:
            log.warning("job %s: a node was lost; requeued: %s", ctx.job_id, exc)
            return ctx.retry(f"a node of the job was lost: {exc}"[:4000])
        except Stopped:
            return ctx.finish(error=ctx.stop_error())
        except JobError as exc:
            return ctx.finish(error=exc)
        except Exception as exc:  # every failure reaches the job's status with a reason
            log.exception("job %s failed", ctx.job_id)
            return ctx.finish(error=JobError("training_error", f"{type(exc).__name__}: {exc}"))
        return ctx.finish(result=result)


def _node(ctx: JobContext) -> Node:
    """This worker's part: the whole job, or node 0 of a job across nodes (its rendezvous
    published at this host, DISTILLERY_NODE_HOST, on a fresh port)."""
    if ctx.spec.resources.nodes == 1:
        return Node(gpus=ctx.spec.resources.gpus)
    return nodes.rendezvous(ctx, ctx.settings.node_host or socket.gethostname())
