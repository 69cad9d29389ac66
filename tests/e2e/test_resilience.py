"""Cancel, a worker killed mid-training, and duplicate deliveries, through real processes."""

import re
import time
from collections.abc import Callable
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


def wait_until(done: Callable[[], bool], what: str, timeout: float = 60) -> None:
    """Until `done()` (a state that stays once reached); `what` names it on a timeout."""
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.25)


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
    exit_s = service.terminate_worker()  # on its own: it has 60 s before the test fails
    queued = service.job(job["id"])
    assert (queued["status"], queued["attempt"]) == ("queued", 0)  # the attempt given back
    saved = [e["data"] for e in service.events(job["id"]) if e["type"] == "checkpoint"][-1]
    assert saved["epoch"] >= running["progress"]["epoch"] - 1
    service.start_worker()
    done = service.wait_status(job["id"], "succeeded")
    completed = saved["epoch"] - (saved["step"] is not None)  # saved mid-epoch: in that epoch
    assert done["attempt"] == 1 and done["result"]["resumed_from_epoch"] == completed
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
    line = f"woken for job {job['id']}: nothing queued"
    wait_until(lambda: log.read_text().count(line) == 2, "the duplicate deliveries")
    assert service.job(job["id"])["attempt"] == done["attempt"] == 1
    assert [e["status"] for e in status_events(service, job["id"])] == [
        "queued",
        "running",
        "succeeded",
    ]


def test_a_flood_of_stale_messages_delays_a_new_job_by_none(service: Service) -> None:
    """150 stale messages, then a new job, all queued while no worker runs: the first stale
    message the worker reads starts the new job (each wakes its queue), not the job's own
    message behind them. The worker's log records which message ran it."""
    done = service.wait_status(service.submit(SHORT_SPEC)["id"], "succeeded")
    service.kill_worker()
    for job_id in ["job_" + "0" * 24] * 75 + [done["id"]] * 75:  # a query or two apiece
        dispatch.send(job_id, QUEUE)
    job = service.submit(SHORT_SPEC)
    service.start_worker()
    assert service.wait_status(job["id"], "succeeded")["attempt"] == 1
    log = service.log_dir / f"worker{service.workers}.log"
    wait_until(lambda: ": ['succeeded']" in log.read_text(), "the run's end in the log")
    text = log.read_text()
    first = re.search(r"run_job\[([0-9a-f-]+)\] received", text)
    assert first is not None, text
    ran = re.search(rf"run_job\[{first[1]}\] succeeded in [0-9.]+s: \['succeeded'\]", text)
    assert ran is not None, text
