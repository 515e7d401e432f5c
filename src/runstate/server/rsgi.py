"""The app served through granian's RSGI protocol: a second front door, not a second app.

`runstate serve` runs the app this way because RSGI costs granian much less per request than
ASGI (measured on the bare servers, GET at 1 connection: p50 76-125 µs against 169-213 µs; see
docs/performance.md). Every request runs `App.handle`, the one pipeline that tests also drive
through ASGI (`App.__call__`: uvicorn, httpx): this adapter gives it the method, raw path, query
and headers from granian's scope and a ``receive`` over the protocol object, and answers a plain
response with one ``response_bytes`` call (no ASGI messages: that took a GET from 8.5 to 5.6 µs
of CPU in-process); a streamed one goes through the ASGI messages (`app.send_response`).
granian's init/del hooks run the lifespan.

One difference RSGI imposes: granian hands over the path already percent-decoded (and invalid
UTF-8 replaced by U+FFFD), not the raw bytes the router wants. The adapter encodes it again; as
store names, action names and token ids cannot contain ``/``, every ``/`` past
``/v1/stores/{store}/records/`` (or ``/dependents/``) belongs to the key (or workflow), so a
correctly encoded key, ``%2F`` included, reaches the handler exactly as sent. What cannot be told
apart after granian's decoding is only malformed input: an unencoded ``/`` in a key is read as
part of the key (ASGI: 404); and as granian replaces bytes that are not UTF-8 by U+FFFD, a path
segment holding U+FFFD is refused as not UTF-8 (400), even when the client sent a real U+FFFD
(encoded as ``%EF%BF%BD``): a key holding that character is reachable through ``/batch``.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import quote

from .app import App, send_response
from .routes import Response

__all__ = ["RsgiApp", "raw_path"]

# Routes whose last parameter may hold "/" (decoded from %2F): /v1/stores/{store}/{here}/{...}
_TAIL_PARAMS = frozenset(("records", "dependents"))
_DISCONNECT = {"type": "http.disconnect"}
# Characters `quote` leaves as they are: a path of only these is its own raw path.
_PLAIN = re.compile(r"[A-Za-z0-9_.~/-]*").fullmatch
# Bodies up to this size are read in one call; larger ones (imports) chunk by chunk.
_WHOLE_BODY = 1 << 20


def raw_path(path: str) -> bytes:
    """The raw path the router expects, from granian's decoded one (see the module docstring).
    U+FFFD, which is what granian made of bytes that are not UTF-8, becomes such a byte again,
    so the router refuses the segment as it would have refused the original."""
    parts = path.split("/")
    if _PLAIN(path) is not None and len(parts) <= 6:  # nothing to encode (the common case)
        return path.encode()
    if len(parts) > 6 and parts[1] == "v1" and parts[2] == "stores" and parts[4] in _TAIL_PARAMS:
        head = "/".join(parts[:5])
        raw = quote(head, safe="/") + "/" + quote("/".join(parts[5:]), safe="")
    else:
        raw = quote(path, safe="/")
    if "\ufffd" in path:
        raw = raw.replace("%EF%BF%BD", "%FF")
    return raw.encode()


class _Exchange:
    """``receive`` and ``send`` of one request over an RSGI protocol object."""

    __slots__ = ("_chunks", "_closed", "_headers", "_proto", "_request", "_status", "_stream")

    def __init__(self, proto: Any, request_headers: Any) -> None:
        self._proto = proto
        self._request = request_headers  # granian's: the body's length is read when needed
        self._chunks: Any = None
        self._closed = False
        self._status = 500
        self._headers: list[tuple[str, str]] = []
        self._stream: Any = None

    async def receive(self) -> dict[str, Any]:
        if self._closed:
            await self._proto.client_disconnect()
            return _DISCONNECT
        if self._chunks is None:
            length = self._request.get("content-length")
            if length and length.isdigit() and int(length) <= _WHOLE_BODY:
                self._closed = True
                return {"type": "http.request", "body": await self._proto(), "more_body": False}
            self._chunks = self._proto.__aiter__()
        try:
            chunk = await self._chunks.__anext__()
        except StopAsyncIteration:
            self._closed = True
            return {"type": "http.request", "body": b"", "more_body": False}
        return {"type": "http.request", "body": chunk, "more_body": True}

    async def send(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self._status = message["status"]
            self._headers = [
                (name.decode(), value.decode())
                for name, value in message["headers"]
                if name != b"content-length"  # granian frames the body itself
            ]
            return
        body: bytes = message.get("body", b"")
        more = message.get("more_body", False)
        if self._stream is None:
            if not more:
                self._proto.response_bytes(self._status, self._headers, body)
                return
            self._stream = self._proto.response_stream(self._status, self._headers)
        if body:
            try:
                await self._stream.send_bytes(body)
            except RuntimeError:  # the client went away (RSGIProtocolClosed): as ASGI, ignore
                self._closed = True


class RsgiApp:
    """granian's RSGI target for an `App` (see the module docstring)."""

    def __init__(self, app: App) -> None:
        self.app = app

    def __rsgi_init__(self, loop: asyncio.AbstractEventLoop) -> None:
        loop.run_until_complete(self.app.startup())

    def __rsgi_del__(self, loop: asyncio.AbstractEventLoop) -> None:
        loop.run_until_complete(self.app.shutdown())

    async def __rsgi__(self, scope: Any, proto: Any) -> None:
        if scope.proto != "http":
            return
        request_headers = scope.headers
        exchange = _Exchange(proto, request_headers)
        query = scope.query_string
        response = await self.app.handle(
            scope.method,
            raw_path(scope.path),
            query.encode() if query else b"",
            _Headers(request_headers),
            exchange.receive,
        )
        if response is None:
            return
        if type(response) is not Response:  # a stream: through the ASGI messages
            await send_response(exchange.send, response)
            return
        if response.headers:
            answer = [("content-type", _text(response.content_type))]
            for name, value in response.headers:
                answer.append((name.decode(), value.decode()))
        else:
            answer = _headers_for(response.content_type)
        proto.response_bytes(response.status, answer, response.body)


class _Headers(Mapping[bytes, bytes]):
    """granian's request headers as the pipeline reads them (names and values as bytes),
    each looked up when asked for: a request reads two or three of them."""

    __slots__ = ("_headers",)

    def __init__(self, headers: Any) -> None:
        self._headers = headers

    def get(self, name: bytes, default: Any = None) -> Any:
        value = self._headers.get(name.decode("latin-1"))
        return default if value is None else value.encode()

    def __contains__(self, name: object) -> bool:
        return isinstance(name, bytes) and name.decode("latin-1") in self._headers

    def __getitem__(self, name: bytes) -> bytes:
        value = self.get(name)
        if value is None:
            raise KeyError(name)
        return value  # type: ignore[no-any-return]

    def __iter__(self) -> Iterator[bytes]:
        return iter([name.encode() for name, _ in self._headers.items()])

    def __len__(self) -> int:
        return len(self._headers.items())


_ANSWERS: dict[bytes, list[tuple[str, str]]] = {}


def _headers_for(content_type: bytes) -> list[tuple[str, str]]:
    """The headers of a response with no others than its content type (granian only reads
    the list): made once per content type."""
    answer = _ANSWERS.get(content_type)
    if answer is None:
        answer = [("content-type", _text(content_type))]
        if len(_ANSWERS) < 64:
            _ANSWERS[content_type] = answer
    return answer


_TEXT: dict[bytes, str] = {}


def _text(value: bytes) -> str:
    """`value` decoded, remembered (content types: a handful of constants)."""
    text = _TEXT.get(value)
    if text is None:
        text = value.decode()
        if len(_TEXT) < 64:
            _TEXT[value] = text
    return text
