"""Liveness, readiness against the real database and broker, Prometheus metrics."""

from celery import Celery

from service import dispatch


def test_healthz(client):
    r = client.get("/healthz")
    assert (r.status_code, r.json()) == (200, {"status": "ok"})


def test_readyz_checks_database_and_broker(client):
    r = client.get("/readyz")
    assert r.status_code == 200, r.text
    assert r.json() == {"status": "ok", "checks": {"database": "ok", "broker": "ok"}}


def test_readyz_reports_a_dead_broker(client, monkeypatch):
    dead = Celery("dead", broker="redis://127.0.0.1:1/0")
    monkeypatch.setattr(dispatch, "producer", lambda: dead)
    r = client.get("/readyz")
    assert r.status_code == 503
    body = r.json()
    assert body["status"] == "unavailable"
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["broker"].startswith("error")


def gauge(text: str, status: str) -> float:
    prefix = f'distillery_jobs{{status="{status}"}} '
    [line] = [line for line in text.splitlines() if line.startswith(prefix)]
    return float(line.removeprefix(prefix))


def test_metrics_counts_jobs_by_status(client, job_in):
    for status in ("queued", "queued", "cancelled", "running"):
        job_in(status)
    r = client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    assert "# TYPE distillery_jobs gauge" in r.text
    counts = {s: gauge(r.text, s) for s in ("queued", "cancelled", "running", "succeeded")}
    assert counts == {"queued": 2, "cancelled": 1, "running": 1, "succeeded": 0}
