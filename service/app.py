"""create_app(): the FastAPI factory, its lifespan, routers and the one error handler."""

import asyncio
import contextlib
import functools
import gc
import logging
import re
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from service import dispatch, keys, logs
from service.api import artifacts, dashboard, health, schemas
from service.api import datasets as datasets_api
from service.api import jobs as jobs_api
from service.api import models as models_api
from service.api import webhooks as webhooks_api
from service.api.deps import json_body
from service.config import Settings, get_settings
from service.db.sessions import session_scope
from service.errors import PROBLEM, DistilleryError, FieldError
from service.ingest import model_checks
from service.jobs import lifecycle, webhooks
from service.metrics import ObserveRequests
from service.spec.limits import BodySizeLimit, JsonDepthLimit
from service.spec.methods import METHODS

log = logging.getLogger(__name__)
UNION_MEMBER = re.compile(r"\[(?!key\]$)|^constrained-|^function-")  # not a dict's [key]
HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def problem(request: Request, err: DistilleryError) -> JSONResponse:
    return JSONResponse(
        err.as_problem(request.url.path),
        status_code=err.status,
        media_type=PROBLEM,
        headers=err.headers,
    )


def _field(loc: tuple[Any, ...], kind: str) -> str:
    # pydantic names a union's members in the path (anchors.list[constrained-int].0): not keys
    parts = [str(p) for p in loc if p != "body" and not UNION_MEMBER.search(str(p))]
    # discriminated unions put the tag in the path: method.kd.temperature -> method.temperature
    parts = [
        p for i, p in enumerate(parts) if not (i and parts[i - 1] == "method" and p in METHODS)
    ]
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        parts.append("name")
    return ".".join(parts) or "body"


def validation_problem(request: Request, exc: RequestValidationError) -> JSONResponse:
    errs = exc.errors()
    if any(e["type"] == "json_invalid" for e in errs):
        err = DistilleryError(
            "request body is not valid JSON",
            [FieldError("body", "malformed")],
            status=400,
            code="malformed_json",
            title="Malformed JSON",
        )
        return problem(request, err)
    fields = [FieldError(_field(tuple(e["loc"]), e["type"]), e["msg"]) for e in errs]
    return problem(
        request,
        DistilleryError(
            "invalid request: " + ", ".join(f.field for f in fields),
            fields,
            status=422,
            code="invalid_request",
            title="Invalid request",
        ),
    )


def http_problem(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        headers["Allow"] = allowed_methods(request)
    err = DistilleryError(
        str(exc.detail), status=exc.status_code, code=code, title=str(exc.detail), headers=headers
    )
    return problem(request, err)


def allowed_methods(request: Request) -> str:
    """The methods some route on the request's path answers (Starlette's own Allow names
    only those of the first route on it)."""

    def answers(method: str) -> bool:
        scope = {**request.scope, "method": method}
        return any(route.matches(scope)[0] is Match.FULL for route in request.app.router.routes)

    return ", ".join(m for m in HTTP_METHODS if answers(m))


def server_problem(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s", request.url.path, exc_info=exc)
    return problem(
        request,
        DistilleryError(
            "internal server error", status=500, code="internal", title="Internal server error"
        ),
    )


def run_watchdog(settings: Settings) -> int:
    """One watchdog pass: sends what it requeued, after the commit, then wakes the queues
    whose jobs wait with no message in the broker, and the check queue for a model check
    no worker took. Returns the messages sent."""
    with session_scope() as s:
        requeued = [(j.queue, j.id) for j in lifecycle.watchdog(s)]
        model_checks.expire(s)
    for queue, job_id in requeued:
        dispatch.send(job_id, queue)
    with session_scope() as s:
        waiting = lifecycle.waiting(s, settings.wake_after_s)
        unchecked = model_checks.waiting(s, settings.wake_after_s)
    # a check first: it takes seconds, and a queue of jobs could keep it waiting for hours
    wakes = [(q, functools.partial(dispatch.send, job_id)) for q, job_id in waiting.items()]
    if unchecked is not None:
        wakes.insert(0, (settings.check_queue, functools.partial(dispatch.send_check, unchecked)))
    return len(requeued) + sum(dispatch.wake(queue, send) for queue, send in wakes)


async def _watchdog_loop(settings: Settings) -> None:
    while True:
        try:
            await asyncio.to_thread(run_watchdog, settings)
        except Exception:  # a DB blip must not kill the loop; the next pass retries
            log.exception("watchdog pass failed")
        await asyncio.sleep(settings.watchdog_s)


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    loops = [_watchdog_loop(settings)] if settings.watchdog_s > 0 else []
    if settings.webhook_s > 0:  # webhooks are sent from here, by every API process
        loops.append(webhooks.run_sender(settings))
    tasks = [asyncio.create_task(loop) for loop in loops]
    # what start-up made lives as long as the process: out of the collector's sight, a full
    # collection stops requests for a millisecond, not the ~80 ms it takes to scan it all
    gc.freeze()
    yield
    gc.unfreeze()
    for task in tasks:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    logs.configure(settings)
    if not settings.require_keys:
        log.warning(
            "API KEYS ARE OFF: a request without a key acts for the default project. Anyone "
            "who can reach %s:%s can read and cancel its jobs. Set DISTILLERY_REQUIRE_KEYS=true "
            "and make keys with `distillery keys create --project NAME` (production must).",
            settings.host,
            settings.port,
        )
    app = FastAPI(
        title="Distillery",
        version="0.1.0",
        lifespan=lifespan,
        docs_url=None,  # service/api/dashboard.py serves /docs and /redoc from local assets
        redoc_url=None,
        description="Knowledge distillation as a service.",
        dependencies=[Depends(json_body)],
    )
    app.state.settings = settings
    app.state.known_keys = keys.KnownKeys(settings.key_cache_s)
    app.add_middleware(JsonDepthLimit)  # inside BodySizeLimit: it reads what that counts
    app.add_middleware(
        BodySizeLimit,
        max_bytes=settings.max_body_bytes,
        upload_bytes=settings.max_upload_bytes,
        upload_paths=("/v1/models", "/v1/datasets"),
    )
    # outermost: times every request and gives it its request id (service/metrics.py)
    app.add_middleware(ObserveRequests, access_log=settings.log_format == "json")
    app.add_exception_handler(DistilleryError, problem)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, validation_problem)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, http_problem)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, server_problem)
    for module in (jobs_api, artifacts, models_api, datasets_api, webhooks_api, health):
        app.include_router(module.router, responses=schemas.problems(500))
    dashboard.install(app)
    schemas.document_problems(app)
    return app
