"""Events say which attempt recorded them, and a job's best epoch comes from its events with
each epoch's latest attempt winning: a job resumed from an older checkpoint retrains an epoch,
and the earlier attempt's numbers for it no longer count (HTTP against the app)."""

from collections.abc import Callable
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select

from service.db.sessions import session_scope
from service.db.tables import WebhookDelivery
from service.errors import JobError
from service.jobs import lifecycle


def claim(job_id: str, owner: str, lease_s: float = 60) -> None:
    with session_scope() as s:
        assert lifecycle.claim(s, job_id, owner, lease_s=lease_s) is not None


def epochs(job_id: str, owner: str, *accuracies: tuple[int, float]) -> None:
    for epoch, val_acc in accuracies:
        with session_scope() as s:
            assert lifecycle.record_epoch(s, job_id, owner, {"epoch": epoch, "val_acc": val_acc})


def lose_worker(job_id: str) -> None:
    """The owner's lease runs out and the watchdog requeues the job."""
    with session_scope() as s:
        assert [j.id for j in lifecycle.watchdog(s)] == [job_id]


def resumed_job(new_job: Callable[..., str]) -> str:
    """Attempt 1 records epochs 1-2 and is lost; attempt 2, from epoch 1's checkpoint,
    retrains epoch 2 (worse than attempt 1 did) and runs epoch 3."""
    job_id = new_job()
    claim(job_id, "w1", lease_s=-1)
    epochs(job_id, "w1", (1, 0.5), (2, 0.9))
    lose_worker(job_id)
    claim(job_id, "w2")
    epochs(job_id, "w2", (2, 0.6), (3, 0.7))
    return job_id


def test_events_carry_the_attempt_that_recorded_them(
    client: TestClient, new_job: Callable[..., str]
) -> None:
    job_id = resumed_job(new_job)
    events = client.get(f"/v1/jobs/{job_id}/events").json()["data"]
    seen = [(e["type"], e["data"].get("epoch"), e["attempt"]) for e in events]
    assert seen == [
        ("status", None, 0),  # queued
        ("status", None, 1),  # attempt 1 started
        ("metrics", 1, 1),
        ("metrics", 2, 1),
        ("status", None, 1),  # lease expired after attempt 1; requeued
        ("status", None, 2),  # attempt 2 started
        ("metrics", 2, 2),
        ("metrics", 3, 2),
    ]


def test_the_best_epoch_counts_only_each_epochs_latest_attempt(
    client: TestClient, new_job: Callable[..., str]
) -> None:
    job_id = resumed_job(new_job)
    job = client.get(f"/v1/jobs/{job_id}").json()
    # attempt 1's 0.9 at epoch 2 was retrained away; the best left is epoch 3's
    assert job["best"] == {"val_acc": 0.7, "epoch": 3}
    listed = client.get("/v1/jobs").json()["data"]
    assert [j["best"] for j in listed if j["id"] == job_id] == [{"val_acc": 0.7, "epoch": 3}]


def best_of(client: TestClient, job_id: str) -> Any:
    return client.get(f"/v1/jobs/{job_id}").json()["best"]


def test_an_unfinished_cancelled_or_failed_job_shows_its_best_not_its_latest(
    client: TestClient, job_in: Callable[..., str]
) -> None:
    queued = job_in("queued")
    assert best_of(client, queued) is None
    running = job_in("running")
    epochs(running, "w1", (1, 0.5), (2, 0.636), (3, 0.625))
    job = client.get(f"/v1/jobs/{running}").json()
    assert job["metrics"]["val_acc"] == 0.625 and job["best"] == {"val_acc": 0.636, "epoch": 2}
    cancelling = job_in("running")
    epochs(cancelling, "w1", (1, 0.4), (2, 0.3))
    client.post(f"/v1/jobs/{cancelling}/cancel")
    with session_scope() as s:
        assert lifecycle.finish(s, cancelling, "w1") == "cancelled"
    assert best_of(client, cancelling) == {"val_acc": 0.4, "epoch": 1}
    failing = job_in("running")
    epochs(failing, "w1", (1, 0.8), (2, 0.8), (3, 0.1))
    with session_scope() as s:
        lifecycle.finish(s, failing, "w1", error=JobError("boom", "diverged"))
    assert best_of(client, failing) == {"val_acc": 0.8, "epoch": 1}  # the first of a tie


def test_an_epoch_webhook_says_which_attempt_sent_it(
    client: TestClient, new_job: Callable[..., str]
) -> None:
    hook = {"url": "http://127.0.0.1:9/hook", "events": ["job.epoch"]}
    r = client.post("/v1/webhooks", json=hook)
    assert r.status_code == 201, r.text
    job_id = resumed_job(new_job)
    with session_scope() as s:
        sent = s.scalars(select(WebhookDelivery).where(WebhookDelivery.job_id == job_id)).all()
        payloads = [d.payload["data"] for d in sent]
    got = sorted((p["epoch"]["epoch"], p["attempt"]) for p in payloads)
    assert got == [(1, 1), (2, 1), (2, 2), (3, 2)]
