"""Sends job ids to the queue by task name, only once the job's row is committed."""

import logging
from collections.abc import Callable
from functools import lru_cache

from celery import Celery
from kombu.exceptions import ChannelError
from sqlalchemy import event
from sqlalchemy.orm import Session

from service.config import get_settings

RUN_JOB_TASK = "distillery.run_job"
CHECK_MODEL_TASK = "distillery.check_model"
log = logging.getLogger(__name__)


@lru_cache
def producer() -> Celery:
    """A send-only Celery app: the API never imports the worker package."""
    return Celery("distillery-api", broker=get_settings().queue_url)


def send(job_id: str, queue: str) -> None:
    try:
        producer().send_task(RUN_JOB_TASK, kwargs={"job_id": job_id}, queue=queue)
    except Exception:  # the watchdog re-sends queued jobs, so a broker hiccup loses nothing
        log.exception("could not send job %s to queue %s", job_id, queue)


def wake(queue: str, send: Callable[[str], None]) -> bool:
    """Call `send(queue)` when `queue` holds no message, to wake a worker. A worker woken by
    a job's message claims the queue's oldest job (service/jobs/lifecycle.py: claim_next),
    so a message lost with a broker restart or a killed worker delays nothing more than
    this. True when it sent one."""
    try:
        if waiting_messages(queue) > 0:
            return False
    except Exception:  # the broker is away: the next watchdog pass tries again
        log.warning("broker unreachable; queue %s not woken", queue, exc_info=True)
        return False
    send(queue)
    return True


def waiting_messages(queue: str) -> int:
    """Messages in the broker's `queue` not yet taken by a worker."""
    with producer().connection_or_acquire() as conn:  # from the producer's pool
        conn.ensure_connection(max_retries=1)
        try:
            return int(conn.default_channel.queue_declare(queue=queue, passive=True)[1])
        except ChannelError:  # no such queue yet (Redis drops an empty one): nothing in it
            return 0


def send_check(model_id: str, queue: str) -> None:
    """Ask a worker to check an uploaded model's weights (a timm architecture's)."""
    try:
        producer().send_task(CHECK_MODEL_TASK, kwargs={"model_id": model_id}, queue=queue)
    except Exception:  # the watchdog sends it again (service/ingest/model_checks.py)
        log.exception("could not send the check of model %s to queue %s", model_id, queue)


def send_after_commit(s: Session, job_id: str, queue: str) -> None:
    """A message before the commit could reach a worker that cannot see the row yet."""
    event.listen(s, "after_commit", lambda _s: send(job_id, queue), once=True)
