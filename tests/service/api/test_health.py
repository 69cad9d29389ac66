"""Liveness and readiness against the real database and broker (/metrics: test_metrics.py)."""

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
