"""Limits on what a request may hold, enforced before anything parses or stores it: the
size of a body (counted while it streams in, a lying Content-Length too), how deep its JSON
nests, integers a BIGINT column holds and characters a text column can store."""

import contextlib
import json
import re
from typing import Annotated, Any

import numpy as np
from pydantic import AfterValidator, Field
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import PROBLEM, DistilleryError, FieldError

MAX_JSON_DEPTH = 32  # a job spec nests 4 levels deep, a safetensors header 3
Int64 = Annotated[int, Field(ge=-(2**63), le=2**63 - 1)]  # what a BIGINT column holds
MAX_EPOCHS = 10_000  # a job's train.epochs; every count or index of epochs is within it
Epoch = Annotated[int, Field(ge=1, le=MAX_EPOCHS)]  # an epoch, 1-based, or a count of epochs
Epochs = Annotated[int, Field(ge=0, le=MAX_EPOCHS)]  # a count of epochs that may be none
CONTROL = r"\x00-\x1f\x7f"  # C0 and DEL
CONTROL_CHARS = re.compile(f"[{CONTROL}]")
STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)  # a JSON string, escapes and all
STEP = np.zeros(256, dtype=np.int64)  # what each byte does to the nesting depth
STEP[list(b"[{")] = 1
STEP[list(b"]}")] = -1


def printable(value: str) -> str:
    """`value` when it holds no control character (NUL, which PostgreSQL text cannot store,
    and the rest of C0 and DEL, which make no sense in a name or an id)."""
    if CONTROL_CHARS.search(value):
        raise ValueError("must not contain control characters (U+0000-U+001F, U+007F)")
    return value


# a name, an id or a key
Name = Annotated[
    str, AfterValidator(printable), Field(json_schema_extra={"pattern": f"^[^{CONTROL}]*$"})
]
Ident = Annotated[Name, Field(min_length=1, max_length=64)]  # a job's, a model's, a dataset's


def without_nul(value: Any) -> Any:
    """`value` when no string in it (a key, an item) holds NUL: text columns cannot store it."""
    if isinstance(value, str) and "\x00" in value:
        raise ValueError("must not contain NUL characters")
    if isinstance(value, dict):
        for item in value.items():
            without_nul(item)
    elif isinstance(value, list | tuple):
        for item in value:
            without_nul(item)
    return value


class TooDeep(ValueError):
    def __init__(self) -> None:
        super().__init__(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")


def json_depth(raw: bytes | bytearray) -> int:
    """How deep the arrays and objects of a JSON text nest (brackets in strings do not
    count), measured without parsing it."""
    skeleton = np.frombuffer(STRING.sub(b"", raw), dtype=np.uint8)
    return int(np.cumsum(STEP[skeleton]).max(initial=0))


def loads(raw: str | bytes) -> Any:
    """json.loads, refusing (TooDeep, a ValueError) JSON nested deeper than MAX_JSON_DEPTH
    before the parser recurses into it."""
    if json_depth(raw.encode() if isinstance(raw, str) else raw) > MAX_JSON_DEPTH:
        raise TooDeep
    return json.loads(raw)


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
            await send_problem(scope, send, too_large(limit))
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
            await send_problem(scope, send, too_large(limit))


def too_large(limit: int) -> DistilleryError:
    return DistilleryError(
        f"request body exceeds {limit} bytes",
        [FieldError("body", f"larger than {limit} bytes")],
        status=413,
        code="body_too_large",
        title="Request body too large",
    )


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
            await send_problem(scope, send, too_deep())
            return
        await self.app(scope, replay(bytes(body), receive), send)


def too_deep() -> DistilleryError:
    message = str(TooDeep())
    return DistilleryError(
        f"request body is {message}",
        [FieldError("body", message)],
        status=400,
        code="json_too_deep",
        title="JSON nested too deeply",
    )


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
