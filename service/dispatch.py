"""Sends job ids to the queue by task name, only once the job's row is committed. A broker
that is away is logged once when it goes and once when it is back, not at every try."""

import logging
import threading
from collections.abc import Callable
from functools import lru_cache

from celery import Celery
from kombu.exceptions import ChannelError
from sqlalchemy import event
from sqlalchemy.orm import Session

from service.config import get_settings

RUN_JOB_TASK = "distillery.run_job"
CHECK_MODEL_TASK = "distillery.check_model"
CHECK_DATASET_TASK = "distillery.check_dataset"
log = logging.getLogger(__name__)


class BrokerState:
    """Whether the last try reached the broker; logs one line per change."""

    def __init__(self) -> None:
        self.down = False
        self.lock = threading.Lock()

    def failed(self, what: str, exc: Exception) -> None:
        with self.lock:
            was_down, self.down = self.down, True
        if not was_down:
            log.warning("broker unreachable (%s: %s): %s; retrying", type(exc).__name__, exc, what)

    def reached(self) -> None:
        with self.lock:
            was_down, self.down = self.down, False
        if was_down:
            log.warning("broker reachable again")


broker = BrokerState()


@lru_cache
def producer() -> Celery:
    """A send-only Celery app: the API never imports the worker package."""
    return Celery("distillery-api", broker=get_settings().queue_url)


def send(job_id: str, queue: str) -> None:
    try:
        producer().send_task(RUN_JOB_TASK, kwargs={"job_id": job_id}, queue=queue)
    except Exception as exc:  # the watchdog re-sends queued jobs, so a broker hiccup loses nothing
        broker.failed(f"job {job_id} not sent to queue {queue}", exc)
    else:
        broker.reached()


def wake(queue: str, send: Callable[[str], None]) -> bool:
    """Call `send(queue)` when `queue` holds no message, to wake a worker. A worker woken by
    a job's message claims the queue's oldest job (service/jobs/lifecycle.py: claim_next),
    so a message lost with a broker restart or a killed worker delays nothing more than
    this. True when it sent one."""
    try:
        waiting = waiting_messages(queue)
    except Exception as exc:  # the broker is away: the next watchdog pass tries again
        broker.failed(f"queue {queue} not woken", exc)
        return False
    broker.reached()
    if waiting > 0:
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
    """Ask a worker to check a model's weights (a timm architecture's, or read by URI)."""
    _send_check(CHECK_MODEL_TASK, {"model_id": model_id}, queue)


def send_dataset_check(dataset_id: str, queue: str) -> None:
    """Ask a worker to read a dataset registered by URI where it lies."""
    _send_check(CHECK_DATASET_TASK, {"dataset_id": dataset_id}, queue)


def _send_check(task: str, kwargs: dict[str, str], queue: str) -> None:
    try:
        producer().send_task(task, kwargs=kwargs, queue=queue)
    except Exception as exc:  # the watchdog sends it again (service/ingest/checks.py)
        broker.failed(f"{task} {kwargs} not sent to queue {queue}", exc)
    else:
        broker.reached()


def send_after_commit(s: Session, job_id: str, queue: str, workers: int = 1) -> None:
    """A message before the commit could reach a worker that cannot see the row yet. A job
    across nodes wakes one worker per node (`workers`)."""

    def sends(_: Session) -> None:
        for _n in range(workers):
            send(job_id, queue)

    event.listen(s, "after_commit", sends, once=True)
