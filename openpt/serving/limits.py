"""An ASGI middleware that bounds request bodies, whether or not they announce their length."""
from __future__ import annotations

import json
from typing import Any, Awaitable, Callable

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class BodyTooLarge(Exception):
    """A request body beyond the limit (raised while the app reads it; answered 413)."""


class BodyLimit:
    """Answers 413 to a body longer than ``limit`` bytes: at once when ``Content-Length`` says so,
    else as soon as the bytes received pass the limit (the app's handler of :class:`BodyTooLarge`).

    Args:
        app: the ASGI app.
        limit: most bytes of a request body.
    """

    def __init__(self, app: Any, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            body = json.dumps({"error": f"request body of {declared[:20].decode('latin-1')} bytes, at most {self.limit}"}).encode()
            await send({"type": "http.response.start", "status": 413,
                        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})
            return
        received = 0

        async def limited() -> dict[str, Any]:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise BodyTooLarge(f"request body over {self.limit} bytes")
            return message

        await self.app(scope, limited, send)
