"""The ceiling of the HTTP rows: a bare app on granian that reads the request body and answers
a fixed JSON body the size of a runstate record, over ASGI (`app`) and over RSGI (`rsgi_app`,
the interface `runstate serve` uses). Whatever runstate serves per second below this app is what
its own code costs.

    granian --interface asgi bench.asgi_bare:app
    granian --interface rsgi bench.asgi_bare:rsgi_app
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

__all__ = ["BODY", "app", "rsgi_app"]

# A record object as runstate answers it, with a 100-character value.
BODY = (
    b'{"key":"k00042","value":"' + b"v" * 100 + b'","version":42,'
    b'"created_at":"2026-01-01T00:00:00.000000Z","updated_at":"2026-01-01T00:00:00.000000Z",'
    b'"expires_at":null}'
)
_HEADERS = [
    (b"content-type", b"application/json"),
    (b"content-length", str(len(BODY)).encode()),
]

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = bool(message.get("more_body", False))
    await send({"type": "http.response.start", "status": 200, "headers": _HEADERS})
    await send({"type": "http.response.body", "body": BODY})


_RSGI_HEADERS = [("content-type", "application/json")]


async def rsgi_app(scope: Any, proto: Any) -> None:
    if scope.proto != "http":
        return
    if scope.method in ("PUT", "POST"):
        await proto()
    proto.response_bytes(200, _RSGI_HEADERS, BODY)
