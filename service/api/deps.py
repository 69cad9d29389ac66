"""What routes take from FastAPI besides their own parameters: the unit of work, and the
parameters every list shares."""

import asyncio
from collections.abc import Iterator
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.security import HTTPBearer
from pydantic import BaseModel, ValidationError
from sqlalchemy.orm import Session

from service import keys
from service.api.middleware import is_json, media_type
from service.api.schemas import problems
from service.db import tenancy
from service.db.sessions import session_scope
from service.errors import MalformedJson, UnsupportedMediaType
from service.ingest import uploads
from service.jobs import quotas
from service.spec import limits
from service.spec.limits import Name

M = TypeVar("M", bound=BaseModel)

# documents the scheme in the OpenAPI; the header itself is read by `caller`
BEARER = HTTPBearer(auto_error=False, description="an API key: distillery keys create")


async def caller(request: Request, _: Annotated[object, Depends(BEARER)]) -> keys.Caller:
    """Who the request acts for (service/keys.py); every session opened while it is served
    sees that project's rows only (service/db/tenancy.py). The key is looked up in a session of
    its own, ended at once (a connection held across the wait for the route's thread could
    leave threads waiting on connections held by requests waiting on threads), and only
    when this process has not found it valid in the last `key_cache_s`."""
    settings = request.app.state.settings
    header = request.headers.get("authorization")
    known: keys.KnownKeys = request.app.state.known_keys
    who = keys.KEYLESS if not header and not settings.require_keys else known.get(header)
    if who is None:
        who = await asyncio.to_thread(_authenticate, header, settings.require_keys)
        known.add(header, who)
    tenancy.CURRENT.set(who.project_id)
    return who


def _authenticate(header: str | None, required: bool) -> keys.Caller:
    with session_scope() as s:
        return keys.authenticate(s, header, required)


Caller = Annotated[keys.Caller, Depends(caller)]


def request_session(_: Caller) -> Iterator[Session]:
    with session_scope() as s:
        yield s


# The route's unit of work, its caller's: committed (or rolled back) when the route returns,
# before the response is sent, so a client that reads right after a write sees it.
DB = Annotated[Session, Depends(request_session, scope="function")]


async def storage_room(request: Request, _: Caller) -> None:
    """429 before an upload is read when its project stores all it may (service/jobs/quotas.py);
    the body is drained so the client, still sending, reads the answer."""
    try:
        await asyncio.to_thread(_check_bytes)
    except quotas.QuotaExceeded:
        await uploads.drain(request.stream())
        raise


def _check_bytes() -> None:
    with session_scope() as s:
        quotas.check_bytes(s)


async def json_body(request: Request) -> None:
    """415 for a body sent to a route that reads JSON under another Content-Type, or none:
    FastAPI would take it as bytes and answer a 422 that names no media type."""
    route = request.scope.get("route")
    if not getattr(getattr(route, "dependant", None), "body_params", None):
        return
    given = media_type(request.scope)
    if not is_json(given) and await request.body():
        raise UnsupportedMediaType(given, "send the body as application/json")


def json_of(body: bytes) -> Any:
    """A body a route reads itself (one that also takes raw bytes) as JSON; 400 if it is not."""
    try:
        return limits.loads(body)
    except ValueError as exc:
        raise MalformedJson from exc


def validated(model: type[M], data: Any) -> M:
    """`data` as `model`, a 422 naming each bad field as FastAPI's own validation answers."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors()) from exc


AUTHENTICATED = [Depends(caller)]  # every /v1 router's
JSON_BODY = problems(415)  # what a route that reads a JSON body may answer (json_body)
UPLOAD = [Depends(storage_room)]  # the upload routes'
QUOTA = problems(429)  # what a route that adds to a project's use may answer
STORE = problems(503)  # what a route that reads or writes the object store may answer
KEYED = problems(401, 403)  # what AUTHENTICATED may answer
Limit = Annotated[int, Query(ge=1, le=200)]
Cursor = Annotated[
    Name | None, Query(max_length=200, description="the previous page's next_cursor")
]
