"""Cancel, a worker killed mid-training, and duplicate deliveries, through real processes."""

import time
from typing import Any

from service import dispatch
from tests.e2e.conftest import QUEUE, Service

LONG_SPEC = {
    "method": {"name": "supervised"},
    "student": {"arch": "resnet8"},
    "data": {"dataset": "digits"},
    "train": {"epochs": 60, "batch_size": 32, "optimizer": {"lr": 0.05}},
}
SHORT_SPEC = {**LONG_SPEC, "train": {"epochs": 2, "batch_size": 64}}


def status_events(service: Service, job_id: str) -> list[dict[str, Any]]:
    return [e["data"] for e in service.events(job_id) if e["type"] == "status"]


def test_cancel_running_job_stops_within_seconds_and_twice_is_fine(service: Service) -> None:
    job = service.submit(LONG_SPEC)
    service.wait(job["id"], lambda j: j["status"] == "running" and j["progress"].get("step"))
    r = service.http.post(f"/v1/jobs/{job['id']}/cancel")
    assert r.status_code == 200 and r.json()["status"] in ("cancelling", "cancelled")
    done = service.wait_status(job["id"], "cancelled", timeout=20)
    assert done["error"] is None and done["finished_at"]
    again = service.http.post(f"/v1/jobs/{job['id']}/cancel")
    assert again.status_code == 200 and again.json()["status"] == "cancelled"


def test_killed_worker_job_is_requeued_and_resumes_from_checkpoint(service: Service) -> None:
    job = service.submit({**LONG_SPEC, "train": {**LONG_SPEC["train"], "epochs": 12}})
    service.wait(job["id"], lambda j: j["progress"].get("epoch", 0) >= 3)
    service.kill_worker()
    service.wait(job["id"], lambda j: j["status"] == "queued", timeout=30)
    service.start_worker()
    done = service.wait_status(job["id"], "succeeded")

    assert done["attempt"] == 2
    resumed = done["result"]["resumed_from_epoch"]
    assert resumed is not None and resumed >= 2
    statuses = [e["status"] for e in status_events(service, job["id"])]
    # one run at a time: every second start is preceded by a requeue
    assert statuses == ["queued", "running", "queued", "running", "succeeded"]
    epochs = [e["data"]["epoch"] for e in service.events(job["id"]) if e["type"] == "metrics"]
    second_attempt = epochs[epochs.index(resumed) + 1 :]
    assert second_attempt[0] == resumed + 1  # not from epoch 1
    assert sorted(set(epochs)) == list(range(1, 13))


def test_sigterm_mid_epoch_saves_requeues_and_the_next_worker_resumes(service: Service) -> None:
    job = service.submit({**LONG_SPEC, "train": {**LONG_SPEC["train"], "epochs": 6}})
    running = service.wait(job["id"], lambda j: j["progress"].get("step", 0) >= 3)
    exit_s = service.terminate_worker()
    assert exit_s < 30, f"the worker took {exit_s:.1f} s to exit"
    queued = service.job(job["id"])
    assert (queued["status"], queued["attempt"]) == ("queued", 0)  # the attempt given back
    saved = [e["data"] for e in service.events(job["id"]) if e["type"] == "checkpoint"][-1]
    assert saved["epoch"] >= running["progress"]["epoch"] - 1
    service.start_worker()
    done = service.wait_status(job["id"], "succeeded")
    assert done["attempt"] == 1 and done["result"]["resumed_from_epoch"] == saved["epoch"]
    statuses = [e["status"] for e in status_events(service, job["id"])]
    assert statuses == ["queued", "running", "queued", "running", "succeeded"]
    epochs = [e["data"]["epoch"] for e in service.events(job["id"]) if e["type"] == "metrics"]
    assert epochs == list(range(1, 7))  # the interrupted epoch finished once, from its step
    print(f"SIGTERM: the worker exited in {exit_s:.1f} s")


def test_task_delivered_twice_runs_once(service: Service) -> None:
    job = service.submit(SHORT_SPEC)
    dispatch.send(job["id"], QUEUE)  # a second delivery while it is queued or running
    done = service.wait_status(job["id"], "succeeded")
    dispatch.send(job["id"], QUEUE)  # and one after it finished
    log = service.log_dir / f"worker{service.workers}.log"
    deadline = time.monotonic() + 30
    while log.read_text().count(f"woken for job {job['id']}: nothing queued") < 2:
        assert time.monotonic() < deadline, "worker never saw the duplicate deliveries"
        time.sleep(0.25)
    assert service.job(job["id"])["attempt"] == done["attempt"] == 1
    assert [e["status"] for e in status_events(service, job["id"])] == [
        "queued",
        "running",
        "succeeded",
    ]


def test_a_flood_of_stale_messages_delays_a_new_job_by_seconds(service: Service) -> None:
    done = service.wait_status(service.submit(SHORT_SPEC)["id"], "succeeded")
    # each names a job that is no longer there, then a finished one: a query or two apiece,
    # no process, no torch; and each wakes its queue, the first one the new job
    for job_id in ["job_" + "0" * 24] * 75 + [done["id"]] * 75:
        dispatch.send(job_id, QUEUE)
    submitted = time.monotonic()
    job = service.submit(SHORT_SPEC)
    service.wait(job["id"], lambda j: j["status"] != "queued", timeout=60)
    waited = time.monotonic() - submitted
    assert waited < 15, f"the new job waited {waited:.1f} s behind 150 stale messages"
    service.wait_status(job["id"], "succeeded")
    print(f"a new job behind 150 stale messages started after {waited:.1f} s")
