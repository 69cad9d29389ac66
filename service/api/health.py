"""Liveness, readiness and Prometheus metrics."""

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy import text

from service import dispatch
from service import metrics as prometheus
from service.api.schemas import Readiness
from service.db.sessions import get_engine

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


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}}},
)
def metrics() -> Response:
    """Prometheus metrics (service/metrics.py lists them): every project's jobs, the
    operator's view (no key, no project)."""
    return Response(prometheus.render(), media_type=CONTENT_TYPE_LATEST)
