"""Admission refuses what a worker cannot hold: a 422 naming the field, nothing stored."""

from sqlalchemy import func, select

from service.db import session_scope
from service.tables import Job

HUGE = {"num_samples": 1_000_000, "channels": 4, "size": 256}  # 977 GiB as float32


def jobs_stored() -> int:
    with session_scope() as s:
        return int(s.scalar(select(func.count()).select_from(Job)) or 0)


def test_a_synthetic_set_larger_than_a_worker_holds_is_refused(client, spec_body):
    spec_body["data"] = {"dataset": "synthetic", "synthetic": HUGE}
    r = client.post("/v1/jobs", json=spec_body)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    [error] = [e for e in r.json()["errors"] if e["field"] == "data.synthetic"]
    assert "976.6 GiB of float32 images" in error["message"]
    assert jobs_stored() == 0


def test_one_that_fits_is_accepted(client, spec_body):
    spec_body["data"] = {"dataset": "synthetic", "synthetic": {**HUGE, "num_samples": 20}}
    assert client.post("/v1/jobs", json=spec_body).status_code == 201
    assert jobs_stored() == 1
