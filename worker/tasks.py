"""Thin tasks: a job id in, the runner does the work, the outcome lands in the database."""

from worker.celery_app import CHECK_MODEL_TASK, RUN_JOB_TASK, app


@app.task(name=RUN_JOB_TASK)
def run_job(job_id: str) -> list[str]:
    from worker import runner  # the pool child's own imports stay out of the parent

    return runner.run(job_id)


@app.task(name=CHECK_MODEL_TASK)
def check_model(model_id: str) -> str:
    from worker import checks

    return checks.run(model_id)
