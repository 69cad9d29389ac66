"""Fixtures for the service tests: an app client, spec bodies and jobs in given states."""

import copy
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from service.app import create_app
from service.config import Settings
from service.db.sessions import session_scope
from service.db.tables import Job
from service.errors import JobError
from service.jobs import admission, lifecycle
from service.spec.job import JobSpec

SUPERVISED: dict[str, Any] = {
    "name": "digits-teacher",
    "method": {"name": "supervised"},
    "student": {"arch": "resnet8"},
    "data": {"dataset": "digits"},
    "train": {
        "epochs": 4,
        "batch_size": 64,
        "schedule": {"name": "multistep", "milestones": [2, 3]},
    },
}


@pytest.fixture
def client(clean_db: Any) -> Iterator[TestClient]:
    # Settings are built here, after `backend` has set the environment.
    with TestClient(create_app(Settings(watchdog_s=0))) as c:
        yield c


@pytest.fixture
def client_500s(clean_db: Any) -> Iterator[TestClient]:
    """Like `client`, but a server error comes back as a 500 response instead of raising."""
    with TestClient(create_app(Settings(watchdog_s=0)), raise_server_exceptions=False) as c:
        yield c


@pytest.fixture
def spec_body() -> dict[str, Any]:
    """A valid supervised digits spec, fresh for each test to mutate."""
    return copy.deepcopy(SUPERVISED)


@pytest.fixture
def count_jobs(clean_db: Any) -> Callable[[], int]:
    def count() -> int:
        with session_scope() as s:
            return s.scalar(select(func.count()).select_from(Job)) or 0

    return count


@pytest.fixture
def new_job(clean_db: Any) -> Callable[..., str]:
    """Create a queued job through service.jobs.lifecycle; keyword arguments override the spec."""

    def make(**overrides: Any) -> str:
        body = copy.deepcopy(SUPERVISED) | overrides
        with session_scope() as s:
            job, _ = admission.submit(
                s, JobSpec.model_validate(body), idempotency_key=None, request_hash=""
            )
            return job.id

    return make


@pytest.fixture
def job_in(new_job: Callable[..., str]) -> Callable[..., str]:
    """A job driven through the state machine to `status` (owner "w1")."""

    def make(status: str, **overrides: Any) -> str:
        job_id = new_job(**overrides)
        if status == "queued":
            return job_id
        with session_scope() as s:
            if status == "cancelled":
                lifecycle.cancel(s, job_id)
                return job_id
            assert lifecycle.claim(s, job_id, "w1", lease_s=60) is not None
        with session_scope() as s:
            if status == "cancelling":
                lifecycle.cancel(s, job_id)
            elif status == "succeeded":
                lifecycle.finish(s, job_id, "w1", result={"val_acc": 0.9})
            elif status == "failed":
                lifecycle.finish(s, job_id, "w1", error=JobError("boom", "x"))
        with session_scope() as s:
            assert lifecycle.get_job(s, job_id).status == status
        return job_id

    return make
