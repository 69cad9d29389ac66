"""A cap on request bodies, counted while they stream in (a lying Content-Length too)."""

import contextlib
import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send


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

    def limit(self, scope: Scope, headers: dict[bytes, bytes]) -> int:
        content_type = headers.get(b"content-type", b"")
        raw = content_type.split(b";")[0].strip().lower() == b"application/octet-stream"
        if raw and scope["path"].rstrip("/") in self.upload_paths:
            return self.upload_bytes
        return self.max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        limit = self.limit(scope, headers)
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await self._reject(scope, send, limit)
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
            await self._reject(scope, send, limit)

    async def _reject(self, scope: Scope, send: Send, limit: int) -> None:
        body = json.dumps(
            {
                "type": "https://distillery.dev/problems/body_too_large",
                "title": "Request body too large",
                "status": 413,
                "code": "body_too_large",
                "detail": f"request body exceeds {limit} bytes",
                "instance": scope["path"],
                "errors": [{"field": "body", "message": f"larger than {limit} bytes"}],
            }
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/problem+json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
