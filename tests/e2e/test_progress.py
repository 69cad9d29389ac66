"""Live progress and JSON logs through a real API and a real worker: a 3-epoch digits job's
progress as its worker wrote it (recorded by a trigger), its final progress, and every log
line of the API, the worker and the job's process parsing as JSON with the job's id where it
is about the job."""

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from service.db import artifacts
from service.db.sessions import get_engine
from tests.conftest import Backend
from tests.e2e.conftest import Service, fresh_service

# the production shape (PostgreSQL + Redis), where JSON logs are meant to run
pytestmark = pytest.mark.parametrize("backend", ["postgres"], indirect=True)

EPOCHS = 3
SPEC = {
    "method": {"name": "supervised"},
    "student": {"arch": "resnet8"},
    "data": {"dataset": "digits"},
    "train": {"epochs": EPOCHS, "batch_size": 16},  # ~90 steps an epoch
}
# Records in the database every change of a job's progress, as the worker writes it (each
# heartbeat, DISTILLERY_HEARTBEAT_S): the tests read what was written, not what polls saw.
RECORD = """
CREATE TABLE test_progress_log (n bigserial PRIMARY KEY, job_id text, progress text);
CREATE FUNCTION test_log_progress() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
  INSERT INTO test_progress_log (job_id, progress) VALUES (NEW.id, NEW.progress::text);
  RETURN NULL;
END $$;
CREATE TRIGGER test_log_progress AFTER UPDATE ON jobs FOR EACH ROW
  WHEN (NEW.progress::text IS DISTINCT FROM OLD.progress::text)
  EXECUTE FUNCTION test_log_progress();
"""
UNDO = """
DROP TRIGGER test_log_progress ON jobs;
DROP FUNCTION test_log_progress();
DROP TABLE test_progress_log;
"""


@pytest.fixture(scope="module")
def json_service(backend: Backend, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    logs = tmp_path_factory.mktemp(f"json-logs-{backend.name}")
    env = {"DISTILLERY_LOG_FORMAT": "json", "DISTILLERY_HEARTBEAT_S": "0.1"}
    with fresh_service(backend, logs, env) as svc:
        yield svc


@pytest.fixture(scope="module")
def recorded(json_service: Service) -> Iterator[None]:
    with get_engine().begin() as conn:
        conn.exec_driver_sql(RECORD)
    yield
    with get_engine().begin() as conn:
        conn.exec_driver_sql(UNDO)


def progress_log(job_id: str) -> list[dict[str, Any]]:
    """Every progress the job's row held, in the order it was written."""
    with get_engine().connect() as conn:
        rows = conn.exec_driver_sql(
            "SELECT progress FROM test_progress_log WHERE job_id = %s ORDER BY n", (job_id,)
        )
        return [json.loads(text) for (text,) in rows]


@pytest.fixture(scope="module")
def finished(json_service: Service, recorded: None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The job, once it succeeded, and the progress it recorded while it trained."""
    job = json_service.wait_status(json_service.submit(SPEC)["id"], "succeeded")
    return job, [p for p in progress_log(job["id"]) if p.get("phase") == "train"]


def test_progress_while_training(finished):
    _, seen = finished
    assert {p["epochs"] for p in seen} == {EPOCHS}
    where = [(p["epoch"], p["step"]) for p in seen]
    assert where == sorted(where) and len(set(where)) >= 2  # it moves, never back
    timed = [p for p in seen if p.get("eta_s") is not None]
    assert timed, seen  # the pace is known after two steps
    assert all(p["images_per_s"] > 0 and p["eta_s"] >= 0 for p in timed), timed
    assert timed[0]["eta_s"] > 0
    assert all(p["steps_per_epoch"] == seen[0]["steps_per_epoch"] > 40 for p in seen)
    assert "gpu_mem_peak_bytes" not in seen[-1]  # trained on the CPU


def test_progress_is_final_when_the_job_succeeds(finished):
    job, seen = finished
    steps = seen[0]["steps_per_epoch"]
    p = job["progress"]
    final = (p["phase"], p["epoch"], p["epochs"], p["step"], p["eta_s"])
    assert final == ("done", EPOCHS, EPOCHS, steps, 0)
    assert p["images_per_s"] > 0


def json_lines(path: Path) -> list[dict[str, Any]]:
    text = path.read_text()
    assert text.strip(), path
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_every_process_logs_json_lines_with_the_job_id(json_service, finished):
    job, _ = finished
    api = json_lines(json_service.log_dir / "api.log")
    worker = json_lines(json_service.log_dir / "worker1.log")
    [rank0] = artifacts.job_dir(job["id"]).glob("ranks/*/rank0.log")
    ranks = json_lines(rank0)
    for entry in api + worker + ranks:
        assert {"ts", "level", "logger", "message"} <= set(entry), entry
    assert any(e.get("job_id") == job["id"] and e["logger"].startswith("worker") for e in worker)
    assert ranks and all(e["job_id"] == job["id"] for e in ranks)
    gets = [e for e in api if e["logger"] == "service.access" and e.get("job_id") == job["id"]]
    assert gets and {e["route"] for e in gets} == {"/v1/jobs/{job_id}"}
    assert not [e for e in api if e["logger"] == "uvicorn.access"]  # one access line, ours
