"""The ASGI application: routing by raw path segments, the request pipeline, and the lifespan.

Pipeline of a request (each step answers with the error envelope of SPEC §4 when it fails):

1. route by method and the RAW path (``scope["raw_path"]``): split on ``/``, each segment
   percent-decoded exactly once and never normalised, so ``%2F``, ``%2E`` and ``..`` in a key
   arrive as written (unknown path: 404 ``not_found``; unknown method: 405 with ``Allow``);
2. authenticate the bearer token, or else the dashboard's session cookie (401; a cookie
   request that writes also needs its CSRF token and the same origin, `dashboard.sessions`),
   apply the rate limit (429) and the route's role (403);
3. check path parameters and the query (400), read and parse the JSON body (413 before reading
   when Content-Length is over the limit; 400 when it is not JSON);
4. apply the token's store limit (403) and run the handler.

No exception escapes as a 500: `runstate.Error` is the envelope with its status; a database
failure is 503 ``unavailable`` with Retry-After; anything else is logged (the exception, never a
token) and answered as 503 ``unavailable`` too, without a traceback.

Lifespan: startup opens the engine (unless one was given), starts the group-commit writer and the
purge task; shutdown (SIGTERM through granian, or uvicorn's exit) stops the purge task, drains
the writer (every queued write commits and is answered) and closes the engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import sqlite3
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from time import perf_counter
from typing import Any
from urllib.parse import quote, unquote_to_bytes

from ..errors import (
    DISK_FULL_ERRNOS,
    Error,
    InvalidKey,
    InvalidRequest,
    NotFound,
    RateLimited,
    Unavailable,
)
from ..model import decode_json
from ..tokens import TokenInfo
from .auth import Authenticator, RateLimiter, require_role, require_store
from .dashboard import DASHBOARD_ROUTES, session_token
from .metrics import Metrics
from .routes import (
    ROUTES,
    Disconnected,
    Request,
    Response,
    Route,
    StreamResponse,
    parse_query,
    path_param_parsers,
    read_body,
)
from .watch import Feed, close_on_stop_signal
from .writer import Writer

__all__ = ["App", "State", "create_app", "open_engine"]

log = logging.getLogger("runstate.server")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

RETRY_AFTER_UNAVAILABLE = b"1"


def open_engine(config: Any) -> Any:
    """The engine a server runs on, from its `ServerConfig`: SQLite or PostgreSQL by URL."""
    from ..engine import open_engine as open_url

    return open_url(
        config.db,
        durability=config.durability,
        quota_bytes=config.quota_bytes,
        max_value_bytes=config.max_value_bytes,
        clock=config.clock,
        event_retention=config.event_retention,
        pool_size=config.pool_size,
    )


@dataclass
class State:
    """What the handlers share: configuration, engine, writer, token cache, metrics."""

    config: Any
    engine: Any  # SqliteEngine or PostgresEngine
    writer: Writer
    auth: Authenticator
    limiter: RateLimiter | None
    metrics: Metrics
    openapi: bytes
    feed: Feed
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)


# --- routing ------------------------------------------------------------------------------------


class _MethodNotAllowed(Exception):
    def __init__(self, allowed: list[str]) -> None:
        self.allowed = allowed


class _Node:
    """A trie node: literal children by raw segment, one parameter child, routes by method."""

    __slots__ = ("literals", "param", "routes")

    def __init__(self) -> None:
        self.literals: dict[bytes, _Node] = {}
        self.param: _Node | None = None
        self.routes: dict[str, tuple[Route, tuple[_Param, ...]]] = {}


# A path parameter of a route: its segment index, name, check, and the error class for a
# segment that is not percent-encoded UTF-8.
_Param = tuple[int, str, Callable[[str], str], type[Error]]


# Matched paths the router remembers, of paths up to _MEMO_PATH bytes (a few MiB at most).
_MEMO = 16384
_MEMO_PATH = 256


class Router:
    """Matches a method and raw path against `ROUTES` by walking a trie of path segments
    (literals before parameters); path parameters are percent-decoded once."""

    def __init__(self, routes: tuple[Route, ...]) -> None:
        self._memo: dict[tuple[str, bytes], tuple[Route, dict[str, str]]] = {}
        self._root = _Node()
        parsers = path_param_parsers()
        for route in routes:
            node = self._root
            names: list[_Param] = []
            for index, segment in enumerate(route.segments):
                if segment.startswith("{"):
                    node.param = node.param or _Node()
                    node = node.param
                    name = segment[1:-1]
                    error = InvalidKey if name == "key" else InvalidRequest
                    names.append((index, name, parsers[name], error))
                else:
                    node = node.literals.setdefault(segment.encode(), _Node())
            node.routes[route.method] = (route, tuple(names))

    def match(self, method: str, raw_path: bytes) -> tuple[Route, dict[str, str]]:
        """The route and the parsed path parameters (which callers only read: a match is
        remembered, up to `_MEMO` of them, since a workflow's requests repeat their paths and
        parsing one is ~1.5 µs of a GET's ~6). What does not match raises, every time."""
        found = self._memo.get((method, raw_path))
        if found is not None:
            return found
        found = self._match(method, raw_path)
        if len(raw_path) <= _MEMO_PATH:
            if len(self._memo) >= _MEMO:
                self._memo.clear()
            self._memo[method, raw_path] = found
        return found

    def _match(self, method: str, raw_path: bytes) -> tuple[Route, dict[str, str]]:
        segments = raw_path[1:].split(b"/") if raw_path.startswith(b"/") else [raw_path]
        # The first path of the depth-first walk (a literal before the parameter at each
        # segment) without recursion; only a dead end needs the backtracking walk.
        node = self._root
        for segment in segments:
            child = node.literals.get(segment) or node.param
            if child is None:
                break
            node = child
        else:
            child = node if node.routes else None
        if child is None:
            found_node = _walk(self._root, segments, 0)
            if found_node is None:
                raise NotFound("no such path in this API (see /openapi.json)")
            node = found_node
        found = node.routes.get(method)
        if found is None:
            raise _MethodNotAllowed(list(node.routes))  # in ROUTES order
        route, names = found
        params: dict[str, str] = {}
        for index, name, parse, error in names:
            raw = segments[index]
            try:
                text = (unquote_to_bytes(raw) if b"%" in raw else raw).decode("utf-8")
            except UnicodeDecodeError:
                raise error(f"the {name} in the path is not percent-encoded UTF-8") from None
            params[name] = parse(text)
        return route, params


def _walk(node: _Node, segments: list[bytes], index: int) -> _Node | None:
    if index == len(segments):
        return node if node.routes else None
    child = node.literals.get(segments[index])
    if child is not None:
        found = _walk(child, segments, index + 1)
        if found is not None:
            return found
    if node.param is not None:
        return _walk(node.param, segments, index + 1)
    return None


# --- responses ------------------------------------------------------------------------------------


def error_response(exc: Error, status: int | None = None) -> Response:
    response = Response(status or exc.status, _envelope(exc))
    if isinstance(exc, RateLimited):
        wait = exc.details.get("retry_after", 1)
        response.headers.append((b"retry-after", str(wait).encode()))
    elif isinstance(exc, Unavailable):
        response.headers.append((b"retry-after", RETRY_AFTER_UNAVAILABLE))
    elif exc.status == 401:
        response.headers.append((b"www-authenticate", b'Bearer realm="runstate"'))
    return response


def _envelope(exc: Error) -> bytes:
    import orjson

    try:
        return orjson.dumps({"error": exc.to_dict()})
    except TypeError:  # details that are not JSON (should not happen): drop them
        return orjson.dumps({"error": {"code": exc.code, "message": exc.message, "details": {}}})


async def send_response(send: Send, response: Response | StreamResponse) -> None:
    """`response` as ASGI messages."""
    if isinstance(response, StreamResponse):
        await send(
            {
                "type": "http.response.start",
                "status": response.status,
                "headers": [(b"content-type", response.content_type), *response.headers],
            }
        )
        try:
            async for chunk in response.chunks:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except Exception:  # the status is sent: end the stream short, and log why
            log.exception("a streamed response failed")
        await send({"type": "http.response.body", "body": b""})
        return
    headers = [
        (b"content-type", response.content_type),
        (b"content-length", b"%d" % len(response.body)),
    ]
    if response.headers:
        headers += response.headers
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    await send({"type": "http.response.body", "body": response.body})


def _internal(exc: BaseException) -> Unavailable:
    """The 503 for a failure no handler turned into a SPEC error, logged (without a traceback
    for the expected kinds), never echoed: a database error, a file the server could not read or
    write (the disk full: `disk_full`, as the engines report it), or a bug."""
    if isinstance(exc, sqlite3.Error):
        log.warning("database error handling a request: %s", exc)
        return Unavailable("the database is unavailable", {"reason": type(exc).__name__})
    if isinstance(exc, OSError):
        log.warning("file error handling a request: %s", exc)
        if exc.errno in DISK_FULL_ERRNOS:
            return Unavailable(
                "the server is out of disk space; writes resume once space is freed",
                {"reason": "disk_full"},
            )
        name = errno.errorcode.get(exc.errno or 0, type(exc).__name__)
        return Unavailable("the server could not read or write a file", {"reason": name})
    log.error("unexpected error handling a request", exc_info=exc)
    return Unavailable("the server failed to answer; it has been logged", {"reason": "internal"})


# --- the application ------------------------------------------------------------------------------


class App:
    """The runstate ASGI application (HTTP and lifespan)."""

    def __init__(self, config: Any, engine: Any = None) -> None:
        self.config = config
        self._given_engine = engine
        self.state: State | None = None
        self._router = Router(ROUTES + DASHBOARD_ROUTES)
        self._start_lock = asyncio.Lock()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI: HTTP requests through `handle`, then the response as ASGI messages.
        Lifespan: `_lifespan`."""
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                await self._lifespan(receive, send)
            return
        raw = scope.get("raw_path")
        if raw is None:  # a server without raw_path: re-encode the decoded path
            raw = quote(scope["path"], safe="/").encode()
        response = await self.handle(
            scope["method"], raw, scope.get("query_string", b""), dict(scope["headers"]), receive
        )
        if response is not None:
            await send_response(send, response)

    async def handle(
        self,
        method: str,
        raw: bytes,
        query_string: bytes,
        headers: Mapping[bytes, bytes],
        receive: Receive,
    ) -> Response | StreamResponse | None:
        """The request pipeline (module docstring), for both front doors (ASGI `__call__`
        and RSGI `rsgi.RsgiApp`): the response to send, or None when the client went away.
        One coroutine rather than a chain of them, since every level of awaiting costs again
        each time a request waits (for its body, its write) and resumes."""
        started = perf_counter()
        label = "unmatched"
        code: str | None = None
        try:
            state = self.state or await self.startup()
            route, params = self._router.match(method, raw)
            label = route.path
            token: TokenInfo | None = None
            if route.role is not None:
                authorization = headers.get(b"authorization")
                if authorization is None and b"cookie" in headers:  # the dashboard's session
                    token = session_token(state, method, headers)
                else:
                    token = state.auth.cached(authorization)
                    if token is None and state.engine.blocking:  # a round trip: off the loop
                        token = await asyncio.to_thread(state.auth.authenticate, authorization)
                    elif token is None:
                        token = state.auth.authenticate(authorization)
                if state.limiter is not None:
                    state.limiter.check(token.id)
                require_role(token, route.role)
            query = parse_query(query_string, route.query)
            req = Request(state, route, params, query, token, receive, headers)
            if route.body is not None and route.body != "ndjson":
                body = await read_body(receive, headers, state.config.max_body_bytes)
                if not body or body.isspace():
                    raise InvalidRequest("this request needs a JSON body")
                req.body = decode_json(body)
            if token is not None and "store" in params:
                require_store(token, params["store"])
            response = await route.handler(req)
        except _MethodNotAllowed as exc:
            code = InvalidRequest.code
            response = error_response(
                InvalidRequest(f"{method} is not allowed here", {"allowed": exc.allowed}), 405
            )
            response.headers.append((b"allow", ", ".join(exc.allowed).encode()))
        except Error as exc:
            code = exc.code
            response = error_response(exc)
        except Disconnected:
            return None
        except Exception as exc:
            error = _internal(exc)
            code = error.code
            response = error_response(error)
        if self.state is not None:
            if code is not None:
                self.state.metrics.error(code)
            self.state.metrics.observe(label, method, response.status, perf_counter() - started)
        return response

    # --- lifespan ---------------------------------------------------------------------------

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:
                    log.error("runstate failed to start: %s", exc)
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def startup(self) -> State:
        """Open the engine and start the writer (also done by the first request, for a server
        that does not run the lifespan protocol)."""
        async with self._start_lock:
            if self.state is not None:
                return self.state
            from .openapi import document_bytes

            engine = self._given_engine
            if engine is None:
                engine = await asyncio.to_thread(open_engine, self.config)
            metrics = Metrics()
            feed = Feed(engine)

            def committed(units: int) -> None:
                metrics.commit(units)
                feed.committed(units)  # wakes this process's change-feed streams

            writer = Writer(engine, on_commit=committed)
            writer.start()
            rate = self.config.rate_limit
            state = State(
                config=self.config,
                engine=engine,
                writer=writer,
                auth=Authenticator(engine),
                limiter=RateLimiter(rate) if rate is not None else None,
                metrics=metrics,
                openapi=document_bytes(),
                feed=feed,
            )
            state.tasks.append(asyncio.create_task(self._purge_loop(state)))
            state.tasks.append(asyncio.create_task(feed.run()))
            close_on_stop_signal(feed)
            self.state = state
            return state

    async def shutdown(self) -> None:
        state, self.state = self.state, None
        if state is None:
            return
        state.feed.close()
        for task in state.tasks:
            task.cancel()
        for task in state.tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await asyncio.to_thread(state.writer.close)
        if self._given_engine is None:
            state.engine.close()

    async def _purge_loop(self, state: State) -> None:
        interval = self.config.purge_interval
        while True:
            await asyncio.sleep(interval)
            try:
                await asyncio.to_thread(state.engine.purge_expired)
            except Exception as exc:  # the next round tries again; reads never see expired rows
                log.warning("purging expired records failed: %s", exc)


def create_app(config: Any, engine: Any = None) -> App:
    """The ASGI app for `config` (a `ServerConfig`). With `engine`, the app runs on it and
    leaves it open at shutdown (the caller owns it); without, it opens and closes its own."""
    return App(config, engine)
