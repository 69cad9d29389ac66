"""Thin tasks: a job id in, the runner does the work, the outcome lands in the database.

They run on the worker's thread pool: all the work is in processes they start (a job's
ranks, a model's or a dataset's check), so a task only waits, and the worker's shutdown
reaches it."""

from typing import Any

from celery import Task
from celery.signals import worker_ready, worker_shutting_down

from worker.task import check_runner, presence, runner
from worker.task.celery_app import CHECK_DATASET_TASK, CHECK_MODEL_TASK, RUN_JOB_TASK, app


@app.task(name=RUN_JOB_TASK, bind=True)
def run_job(self: Task, job_id: str) -> list[str]:
    queues = list(self.app.amqp.queues.consume_from)  # an older job in any of them goes first
    return runner.run(job_id, (self.request.delivery_info or {}).get("routing_key"), queues)


@app.task(name=CHECK_MODEL_TASK)
def check_model(model_id: str) -> str:
    return check_runner.run(model_id)


@app.task(name=CHECK_DATASET_TASK)
def check_dataset(dataset_id: str) -> str:
    return check_runner.run_dataset(dataset_id)


@worker_shutting_down.connect
def drain(**_: object) -> None:
    """A warm shutdown (SIGTERM, or Ctrl-C once) waits for the running tasks: make the job
    save where it is and go back to its queue, so that takes seconds, not the whole job."""
    runner.DRAINING.set()
    presence.STOP.set()


@worker_ready.connect
def present(sender: Any, **_: object) -> None:
    """Register what this worker holds, and heartbeat (worker/task/presence.py)."""
    presence.start(sender.hostname, list(sender.app.amqp.queues.consume_from))
