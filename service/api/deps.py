"""What routes take from FastAPI besides their own parameters: the unit of work, and the
parameters every list shares."""

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Query, Request
from fastapi.security import HTTPBearer
from sqlalchemy.orm import Session

from service import keys, quotas, tenancy, uploads
from service.api.schemas import problems
from service.db import end, new_session, unit_of_work
from service.limits import Name

# documents the scheme in the OpenAPI; the header itself is read by `caller`
BEARER = HTTPBearer(auto_error=False, description="an API key: distillery keys create")


async def caller(
    request: Request, _: Annotated[object, Depends(BEARER)]
) -> AsyncIterator[keys.Caller]:
    """Who the request acts for (service/keys.py). The session the key is looked up in is
    kept as the request's unit of work (`request_session`): one connection, one transaction
    for the key and the route. It and every session opened while the request is served see
    the caller's project's rows only (service/tenancy.py)."""
    required = request.app.state.settings.require_keys
    s = new_session()
    try:
        who = await asyncio.to_thread(
            keys.authenticate, s, request.headers.get("authorization"), required
        )
        tenancy.CURRENT.set(who.project_id)
        request.state.session = tenancy.scope(s, who.project_id)
        yield who
    finally:  # a no-op once the route's unit of work ended it; else it rolls back
        if s.in_transaction():
            await asyncio.to_thread(s.close)
        s.close()


Caller = Annotated[keys.Caller, Depends(caller)]


async def request_session(request: Request, _: Caller) -> AsyncIterator[Session]:
    """The session `caller` found the key in; it ends in a thread of its own after the
    route (the route's own thread is gone by then)."""
    s = request.state.session
    try:
        yield s
    except BaseException:
        await asyncio.to_thread(end, s, False)
        raise
    await asyncio.to_thread(end, s, True)


# The route's unit of work, its caller's: committed (or rolled back) when the route returns,
# before the response is sent, so a client that reads right after a write sees it.
DB = Annotated[Session, Depends(request_session, scope="function")]


async def storage_room(request: Request, _: Caller) -> None:
    """429 before an upload is read when its project stores all it may (service/quotas.py);
    the body is drained so the client, still sending, reads the answer. It ends the
    request's unit of work: an upload writes in sessions of its own, not holding one open
    while the body streams in."""
    try:
        await asyncio.to_thread(_check_bytes, request.state.session)
    except quotas.QuotaExceeded:
        await uploads.drain(request.stream())
        raise


def _check_bytes(s: Session) -> None:
    with unit_of_work(s):
        quotas.check_bytes(s)


AUTHENTICATED = [Depends(caller)]  # every /v1 router's
UPLOAD = [Depends(storage_room)]  # the upload routes'
QUOTA = problems(429)  # what a route that adds to a project's use may answer
KEYED = problems(401, 403)  # what AUTHENTICATED may answer
Limit = Annotated[int, Query(ge=1, le=200)]
Cursor = Annotated[
    Name | None, Query(max_length=200, description="the previous page's next_cursor")
]
