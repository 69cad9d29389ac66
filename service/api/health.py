"""Liveness, readiness and Prometheus metrics."""

from fastapi import APIRouter
from fastapi.responses import JSONResponse, PlainTextResponse
from sqlalchemy import func, select, text

from service import dispatch, jobs
from service.api.schemas import Readiness
from service.db import get_engine, session_scope
from service.tables import Job

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


def _check_db() -> str:
    with get_engine().connect() as conn:
        conn.execute(text("SELECT 1"))
    return "ok"


def _check_broker() -> str:
    with dispatch.producer().connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, timeout=2)
    return "ok"


@router.get(
    "/readyz",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "the database or the broker is down"}},
)
def readyz() -> JSONResponse:
    checks: dict[str, str] = {}
    for name, check in (("database", _check_db), ("broker", _check_broker)):
        try:
            checks[name] = check()
        except Exception as exc:  # readiness reports the failure instead of raising it
            checks[name] = f"error: {type(exc).__name__}: {exc}"[:300]
    ok = all(v == "ok" for v in checks.values())
    return JSONResponse(
        {"status": "ok" if ok else "unavailable", "checks": checks}, status_code=200 if ok else 503
    )


@router.get("/metrics", response_class=PlainTextResponse)
def metrics() -> str:
    """Every project's jobs: the operator's view (no key, no project)."""
    with session_scope() as s:
        counts = dict(s.execute(select(Job.status, func.count()).group_by(Job.status)).all())
    lines = ["# HELP distillery_jobs Jobs by status.", "# TYPE distillery_jobs gauge"]
    for status in jobs.STATUSES:
        lines.append(f'distillery_jobs{{status="{status}"}} {counts.get(status, 0)}')
    return "\n".join(lines) + "\n"
