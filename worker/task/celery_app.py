"""The Celery app and all its settings. No process of it imports torch: a job trains in
processes its task starts (worker/task/supervisor.py)."""

from typing import Any

from celery import Celery
from celery.signals import celeryd_init, setup_logging

from service import logs
from service.config import get_settings
from service.dispatch import CHECK_DATASET_TASK, CHECK_MODEL_TASK, RUN_JOB_TASK

__all__ = ["CHECK_DATASET_TASK", "CHECK_MODEL_TASK", "RUN_JOB_TASK", "app"]


def make_app() -> Celery:
    settings = get_settings()
    celery = Celery("distillery", broker=settings.queue_url, include=["worker.task.tasks"])
    celery.conf.update(
        task_default_queue="default",
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        # The database is the source of truth: a message only carries a job id. Ack early;
        # a job whose worker dies is requeued by the watchdog from its expired lease.
        task_acks_late=False,
        worker_prefetch_multiplier=1,
        worker_concurrency=settings.worker_concurrency,
        # Tasks run on threads (service/cli.py: worker_command): a job's CUDA state and GPU
        # memory live in the processes its task starts, and go away with them.
        broker_connection_retry_on_startup=True,
        broker_transport_options=transport_options(settings.queue_url),
    )
    return celery


def transport_options(url: str) -> dict[str, object]:
    if url.startswith("sqla+"):
        # kombu hands these straight to create_engine: let SQLite writers wait, not fail
        return {"connect_args": {"timeout": 30}}
    return {"visibility_timeout": 3600}


@setup_logging.connect
def _logging(**_: Any) -> None:
    """Our logging (service/logs.py) instead of Celery's: it would take over the root
    logger and send stdout and stderr through it."""
    logs.configure(get_settings())


@celeryd_init.connect
def _before_the_banner(instance: Any, **_: Any) -> None:
    """Our logging from the worker's first warning on; no banner (text printed to stdout)
    in a stream of JSON lines."""
    logs.configure(get_settings())
    if get_settings().log_format == "json":
        instance.quiet = True


app = make_app()
