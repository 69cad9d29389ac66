"""The API's edge middleware: limits enforced before any route parses or stores a body.
BodySizeLimit counts a body as it streams in (a lying Content-Length too); JsonDepthLimit
refuses JSON nested deeper than MAX_JSON_DEPTH before a parser recurses into it. Each
refusal is problem+json, sent from the middleware itself."""

import contextlib
import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import PROBLEM, BodyTooLarge, DistilleryError, JsonTooDeep
from service.spec.limits import MAX_JSON_DEPTH, TooDeep, json_depth


async def send_problem(scope: Scope, send: Send, err: DistilleryError) -> None:
    """Answer with `err` as problem+json, from a middleware."""
    body = json.dumps(err.as_problem(scope["path"])).encode()
    headers = [(b"content-type", PROBLEM.encode()), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": err.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class TooLarge(Exception):
    pass


class BodySizeLimit:
    """`max_bytes` for every body, except raw uploads (application/octet-stream) to one of
    `upload_paths`: those stream to disk and may reach `upload_bytes`."""

    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int,
        upload_bytes: int = 0,
        upload_paths: tuple[str, ...] = (),
    ) -> None:
        self.app, self.max_bytes = app, max_bytes
        self.upload_bytes, self.upload_paths = upload_bytes, upload_paths

    def limit(self, scope: Scope) -> int:
        raw = media_type(scope) == "application/octet-stream"
        if raw and scope["path"].rstrip("/") in self.upload_paths:
            return self.upload_bytes
        return self.max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit(scope)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await send_problem(scope, send, BodyTooLarge(limit))
            return
        seen = 0
        exceeded = started = False

        async def counted() -> Message:
            nonlocal seen, exceeded
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > limit:
                exceeded = True
                raise TooLarge
            return message

        async def tracked(message: Message) -> None:
            # the app may turn TooLarge into an error response of its own: drop it
            nonlocal started
            if exceeded:
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        with contextlib.suppress(TooLarge):
            await self.app(scope, counted, tracked)
        if exceeded and not started:
            await send_problem(scope, send, BodyTooLarge(limit))


class JsonDepthLimit:
    """Refuses (400) a JSON body that nests deeper than MAX_JSON_DEPTH before any route
    parses it: Python's parser recurses once per level. A JSON body is read whole first
    (BodySizeLimit, outside, caps it); any other streams through untouched."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not is_json(media_type(scope)):
            await self.app(scope, receive, send)
            return
        body = bytearray()
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
        if json_depth(body) > MAX_JSON_DEPTH:
            await send_problem(scope, send, JsonTooDeep(str(TooDeep())))
            return
        await self.app(scope, replay(bytes(body), receive), send)


def replay(body: bytes, receive: Receive) -> Receive:
    """A receive that gives `body` whole first, then whatever `receive` gives."""
    given = False

    async def again() -> Message:
        nonlocal given
        if given:
            return await receive()
        given = True
        return {"type": "http.request", "body": body, "more_body": False}

    return again


def media_type(scope: Scope) -> str:
    """The request's Content-Type without its parameters, lower case; "" when none."""
    content_type = dict(scope["headers"]).get(b"content-type", b"")
    return content_type.split(b";")[0].strip().lower().decode("latin-1")


def is_json(media: str) -> bool:
    """Whether FastAPI parses a body of this media type as JSON."""
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )
