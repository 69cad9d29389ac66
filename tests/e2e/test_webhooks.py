"""A real job through a real worker: the API process's own sender (its lifespan, under
uvicorn) POSTs the job's epoch and its success to a receiver on 127.0.0.1, signed so that
the `standardwebhooks` package verifies them. On PostgreSQL + Redis, the production shape;
tests/service/jobs/test_webhooks.py sends through both backends."""

import time

import pytest

from tests.e2e.conftest import Service
from tests.e2e.test_resilience import SHORT_SPEC
from tests.service.jobs.test_webhooks import Receiver

ONE_EPOCH = {**SHORT_SPEC, "train": {**SHORT_SPEC["train"], "epochs": 1}}


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
def test_a_finished_job_is_posted_to_its_webhook(service: Service) -> None:
    receiver = Receiver()
    try:
        r = service.http.post(
            "/v1/webhooks", json={"url": receiver.url, "events": ["job.succeeded", "job.epoch"]}
        )
        assert r.status_code == 201, r.text
        hook = r.json()
        job = service.submit(ONE_EPOCH)
        job = service.wait_status(job["id"], "succeeded")
        deadline = time.monotonic() + 20
        while len(receiver.got) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        receiver.close()
    by_type = {p["type"]: p["data"] for p in receiver.payloads(hook["secret"])}
    assert set(by_type) == {"job.epoch", "job.succeeded"} and len(receiver.got) == 2
    done = by_type["job.succeeded"]
    assert (done["id"], done["status"], done["metrics"]) == (job["id"], "succeeded", job["metrics"])
    assert (done["result"], done["progress"]) == (job["result"], job["progress"])
    epoch = by_type["job.epoch"]["epoch"]
    assert epoch["epoch"] == 1 and epoch["val_acc"] == job["metrics"]["val_acc"]
    r = service.http.get(f"/v1/webhooks/{hook['id']}/deliveries")
    listed = [
        (d["event"], d["status"], d["attempts"], d["last_status_code"]) for d in r.json()["data"]
    ]
    assert sorted(listed) == [
        ("job.epoch", "succeeded", 1, 200),
        ("job.succeeded", "succeeded", 1, 200),
    ]
