"""The error handlers: every error leaves the API as RFC 9457 problem+json. A DistilleryError
as it is; a validation error as a 422 naming each field as the spec spells it (no union tags);
Starlette's 404/405 with an Allow that lists every method the path answers; the object store
unreachable as a 503 (store_unavailable, Retry-After); anything else as a logged 500 that
says nothing of the server."""

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from service.errors import (
    PROBLEM,
    DistilleryError,
    FieldError,
    HttpProblem,
    InternalError,
    InvalidRequest,
    MalformedJson,
    StoreUnavailable,
)
from service.spec.fields import field_path
from service.store import StoreError

log = logging.getLogger(__name__)
HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def install(app: FastAPI) -> None:
    """Register the handlers on `app`."""
    app.add_exception_handler(DistilleryError, problem)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, validation_problem)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, http_problem)  # type: ignore[arg-type]
    app.add_exception_handler(StoreError, store_problem)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, server_problem)


def problem(request: Request, err: DistilleryError) -> JSONResponse:
    return JSONResponse(
        err.as_problem(request.url.path),
        status_code=err.status,
        media_type=PROBLEM,
        headers=err.headers,
    )


def validation_problem(request: Request, exc: RequestValidationError) -> JSONResponse:
    errs = exc.errors()
    if any(e["type"] == "json_invalid" for e in errs):
        return problem(request, MalformedJson())
    fields = [FieldError(field_path(tuple(e["loc"]), e["type"]), e["msg"]) for e in errs]
    detail = "invalid request: " + ", ".join(f.field for f in fields)
    return problem(request, InvalidRequest(detail, fields))


def http_problem(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        headers["Allow"] = allowed_methods(request)
    return problem(request, HttpProblem(exc.status_code, str(exc.detail), headers))


def allowed_methods(request: Request) -> str:
    """The methods some route on the request's path answers (Starlette's own Allow names
    only those of the first route on it)."""

    def answers(method: str) -> bool:
        scope = {**request.scope, "method": method}
        return any(route.matches(scope)[0] is Match.FULL for route in request.app.router.routes)

    return ", ".join(m for m in HTTP_METHODS if answers(m))


def store_problem(request: Request, exc: StoreError) -> JSONResponse:
    """A 503 that names the store, not its endpoint or keys (those go to the log)."""
    log.error("the store failed on %s: %s", request.url.path, exc)
    return problem(request, StoreUnavailable())


def server_problem(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s", request.url.path, exc_info=exc)
    return problem(request, InternalError())
