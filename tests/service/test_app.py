"""create_app(): the lifespan's watchdog and the one problem+json error shape."""

import time
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from service.app import create_app
from service.config import Settings
from service.db.sessions import session_scope
from service.db.tables import Job, utcnow
from service.jobs import lifecycle


def test_lifespan_runs_the_watchdog(job_in):
    job_id = job_in("running")
    with session_scope() as s:
        s.execute(
            update(Job).where(Job.id == job_id).values(lease_until=utcnow() - timedelta(seconds=1))
        )
    with TestClient(create_app(Settings(watchdog_s=0.05))):
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with session_scope() as s:
                if lifecycle.get_job(s, job_id).status == "queued":
                    break
            time.sleep(0.05)
    with session_scope() as s:
        assert lifecycle.get_job(s, job_id).status == "queued"


def test_without_lifespan_watchdog_nothing_moves(client, job_in):
    job_id = job_in("running")
    with session_scope() as s:
        s.execute(
            update(Job).where(Job.id == job_id).values(lease_until=utcnow() - timedelta(seconds=1))
        )
    assert client.get(f"/v1/jobs/{job_id}").json()["status"] == "running"


@pytest.mark.parametrize(("method", "path"), [("GET", "/v1/nothing"), ("DELETE", "/healthz")])
def test_router_errors_are_problem_json(client, method, path):
    r = client.request(method, path)
    assert r.status_code in (404, 405)
    assert r.headers["content-type"] == "application/problem+json"
