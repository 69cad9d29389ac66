"""Structured logs (service/logs.py): the API's one JSON access line per request, with its
route template, request id and the job it is about. (A real worker's JSON logs:
tests/e2e/test_progress.py.)"""

import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service import logs
from service.app import create_app
from service.config import Settings


@pytest.fixture
def json_client(clean_db: Any) -> Iterator[TestClient]:
    with TestClient(create_app(Settings(watchdog_s=0, log_format="json"))) as c:
        yield c
    logs.configure(Settings())  # back to text for the tests after


def lines(err: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in err.splitlines() if line.strip()]


def test_one_json_access_line_per_request(json_client, new_job, capsys):
    job_id = new_job()
    capsys.readouterr()
    r = json_client.get(f"/v1/jobs/{job_id}", headers={"X-Request-ID": "req-42"})
    assert r.status_code == 200 and r.headers["x-request-id"] == "req-42"
    missing = json_client.get("/v1/jobs/job_x")
    new_id = missing.headers["x-request-id"]  # none given: a new one
    assert new_id and new_id != json_client.get("/healthz").headers["x-request-id"]
    access = [e for e in lines(capsys.readouterr().err) if e["logger"] == "service.access"]
    assert [(e["route"], e["status"], e.get("job_id")) for e in access] == [
        ("/v1/jobs/{job_id}", 200, job_id),
        ("/v1/jobs/{job_id}", 404, "job_x"),
        ("/healthz", 200, None),
    ]
    first = access[0]
    assert (first["method"], first["path"], first["request_id"], first["level"]) == (
        "GET",
        f"/v1/jobs/{job_id}",
        "req-42",
        "INFO",
    )
    assert first["duration_ms"] > 0 and first["ts"].endswith("+00:00")


def test_records_inside_a_job_context_carry_its_id(capsys):
    logs.configure(Settings(log_format="json"))
    try:
        with logs.job_context("job_abc"):
            logging.getLogger("worker.task.runner").warning("lease lost", extra={"attempt": 2})
        logging.getLogger("worker.task.runner").info("idle")
        try:
            raise ValueError("boom")
        except ValueError:
            logging.getLogger("x").exception("failed")
    finally:
        logs.configure(Settings())
    inside, outside, failed = lines(capsys.readouterr().err)
    assert inside | {"ts": None} == {
        "ts": None,
        "level": "WARNING",
        "logger": "worker.task.runner",
        "message": "lease lost",
        "job_id": "job_abc",
        "attempt": 2,
    }
    assert "job_id" not in outside and "ValueError: boom" in failed["exc"]


def test_text_logs_name_the_job(capsys):
    logs.configure(Settings(log_format="text"))
    with logs.job_context("job_abc"):
        logging.getLogger("worker.task.runner").warning("lease lost")
    assert "WARNING worker.task.runner [job_abc]: lease lost" in capsys.readouterr().err
