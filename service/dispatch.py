"""Sends job ids to the queue by task name, only once the job's row is committed."""

import logging
from functools import lru_cache

from celery import Celery
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


def send_check(model_id: str, queue: str) -> None:
    """Ask a worker to check an uploaded model's weights (a timm architecture's)."""
    try:
        producer().send_task(CHECK_MODEL_TASK, kwargs={"model_id": model_id}, queue=queue)
    except Exception:  # the model stays validating; uploading it again is the way out
        log.exception("could not send the check of model %s to queue %s", model_id, queue)


def send_after_commit(s: Session, job_id: str, queue: str) -> None:
    """A message before the commit could reach a worker that cannot see the row yet."""
    event.listen(s, "after_commit", lambda _s: send(job_id, queue), once=True)
