"""The remote client: the library API over HTTP (SPEC §3.2), sync and asyncio.

::

    _HttpBase          no I/O: routes, percent-encoding, request bodies, reading answers, errors
    ├── HttpCore       `engine.base.Core` on one keep-alive `httpx.Client` (`runstate.connect`)
    └── AsyncHttpCore  the same on one `httpx.AsyncClient` (`runstate.connect_async`)

Every method of the core is written once, in `_HttpBase`: it describes the request as a `_Call`
(what to send, how to read a success, which error code stands for an ordinary result) and hands
it to `_send`, the only method the two subclasses write, so the sync and the async client share
every rule. An answer is read in one place, `_HttpBase._answer`: the error envelope becomes
``errors.error_class(code)(message, details)``, so a remote call raises exactly what the
embedded library raises; a network failure becomes `Unavailable`.

Routes: get, get_record, set and delete of one record use the record routes (a 404 there is the
default, None, or False); keys and records use the listing routes; every other operation is a
one-op ``POST .../batch``, whose ``details.op = 0`` is removed from its errors because the user
did not batch it. The workspace is the token's: the `workspace` arguments of `Core` are not sent.

Past `Core`, for the command line: tokens (``/v1/tokens``), a store's NDJSON import (an upload
with no limit on the wait for the answer, which comes once all of it is written) and, on the
sync client, its export as the server streams it (`transfer` defines the line format).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Sequence,
)
from dataclasses import dataclass
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import httpx
import orjson

from .errors import Error, InvalidRequest, InvalidValue, Unavailable, error_class
from .model import Event, Record, StoreInfo, Usage, check_store_name, check_ttl, check_workflow
from .ops import Check, Delete, Get, GetRecord, Keys, Op, Set
from .tokens import TokenInfo

__all__ = ["AsyncHttpCore", "HttpCore"]

_R = TypeVar("_R")


def _segment(text: str) -> str:
    """One path segment: every byte outside RFC 3986 unreserved percent-encoded, ``/`` as
    ``%2F`` and ``.`` as ``%2E`` too, so that ``.`` and ``..`` survive dot-segment removal."""
    return quote(text, safe="").replace(".", "%2E")


def _query(params: dict[str, Any]) -> str:
    """A query string from the parameters that are set, encoded like path segments (no ``+``
    for spaces, which a decoder could read either way); booleans as ``true``/``false``."""
    pairs = [
        f"{name}={_segment(str(value).lower() if type(value) is bool else str(value))}"
        for name, value in params.items()
        if value is not None
    ]
    return "?" + "&".join(pairs) if pairs else ""


def _body(data: Any) -> bytes:
    try:
        return orjson.dumps(data)
    except TypeError as exc:  # only what the ops left unchecked: a batched get's `default`
        raise InvalidValue("the value cannot be encoded as JSON", {"reason": str(exc)}) from None


def _nothing(data: Any) -> None:
    return None


def _true(data: Any) -> bool:
    return True


def _value(data: Any) -> Any:
    return data["value"]


def _store_list(data: Any) -> list[StoreInfo]:
    return [StoreInfo.from_json(info) for info in data["stores"]]


def _token_list(data: Any) -> list[TokenInfo]:
    return [TokenInfo.from_json(info) for info in data["tokens"]]


def _issued(data: Any) -> tuple[str, TokenInfo]:
    return str(data["token"]), TokenInfo.from_json(data)


def _imported(data: Any) -> int:
    return int(data["imported"])


_NDJSON = {"Content-Type": "application/x-ndjson"}


@dataclass(frozen=True, slots=True)
class _Call:
    """One request and how to read its answer.

    `read` turns the JSON of a 2xx answer into the result. `otherwise` is ``(code, result)``:
    an error answer with that code is not raised but gives `result` (a `_Call` result is sent
    next: a step of a longer exchange). `single_op` marks a lone op sent as a batch. `upload`:
    the body is NDJSON (bytes or an iterable of them) and the answer has no read timeout."""

    method: str
    path: str
    body: bytes | Iterable[bytes] | AsyncIterable[bytes] | None = None
    read: Callable[[Any], Any] = _nothing
    otherwise: tuple[str, Any] | None = None
    single_op: bool = False
    upload: bool = False


class _HttpBase(Generic[_R]):
    """Everything but the I/O. `_R` is what `_send` returns: the result for the sync client,
    an awaitable of it for the async one."""

    def __init__(self, url: str, token: str | None, timeout: float) -> None:
        if not url.startswith(("http://", "https://")):
            raise InvalidRequest(
                "the server URL must start with http:// or https://", {"url": url[:200]}
            )
        self.url = url.rstrip("/")
        self._headers = {"Accept": "application/json", "Content-Type": "application/json"}
        if token is not None:
            self._headers["Authorization"] = f"Bearer {token}"
        self._timeout = timeout

    def _send(self, call: _Call) -> _R:
        raise NotImplementedError

    def _options(self, call: _Call) -> dict[str, Any]:
        """The keyword arguments of httpx's ``request`` for `call`, after method and path."""
        if not call.upload:
            return {"content": call.body}
        # An import is answered once every line is checked and written: no limit on that wait.
        timeout = httpx.Timeout(self._timeout, read=None)
        return {"content": call.body, "headers": _NDJSON, "timeout": timeout}

    def __repr__(self) -> str:
        return f"<runstate.{type(self).__name__} {self.url}>"

    # --- reading answers: the one place errors are translated --------------------------------

    def _answer(self, call: _Call, status: int, content: bytes) -> Any:
        """The result of `call` from its answer, or raise the error it carries."""
        if 200 <= status < 300:
            return self._read(call, self._json(content) if content else None)
        error = self._error(status, content)
        if call.otherwise is not None and error.code == call.otherwise[0]:
            return call.otherwise[1]
        if call.single_op:
            error.details.pop("op", None)
        raise error

    def _read(self, call: _Call, data: Any) -> Any:
        try:
            return call.read(data)
        except (LookupError, TypeError, ValueError, InvalidRequest):
            raise Unavailable(
                f"the server at {self.url} answered {call.method} {call.path.split('?')[0]}"
                " in an unexpected shape; is it a runstate server of this version?"
            ) from None

    def _json(self, content: bytes) -> Any:
        try:
            return orjson.loads(content)
        except orjson.JSONDecodeError:
            raise Unavailable(
                f"the server at {self.url} answered something that is not JSON"
            ) from None

    def _error(self, status: int, content: bytes) -> Error:
        """The exception an error answer stands for: the envelope's code, message and details;
        without an envelope (a proxy's page), `Unavailable` for a 5xx, else the base `Error`."""
        try:
            found = orjson.loads(content)["error"]
            code, message, details = found["code"], found["message"], found.get("details")
            return error_class(code)(str(message), dict(details or {}))
        except (orjson.JSONDecodeError, TypeError, KeyError, ValueError):
            pass
        cls = Unavailable if status >= 500 else Error
        return cls(f"the server at {self.url} answered HTTP {status}", {"status": status})

    def _unreachable(self, exc: httpx.RequestError) -> Unavailable:
        return Unavailable(
            f"cannot reach the runstate server at {self.url}: {exc or type(exc).__name__}",
            {"reason": type(exc).__name__},
        )

    # --- paths ------------------------------------------------------------------------------

    @staticmethod
    def _store_path(name: str) -> str:
        return f"/v1/stores/{_segment(check_store_name(name))}"

    def _record_path(self, store: str, key: str) -> str:
        return f"{self._store_path(store)}/records/{_segment(key)}"

    def _dependent_path(self, name: str, workflow: str) -> str:
        return f"{self._store_path(name)}/dependents/{_segment(check_workflow(workflow))}"

    # --- records: the Core interface ---------------------------------------------------------

    def execute(self, workspace: str, store: str, op: Op) -> _R:
        """Run one operation (checked by its constructor before anything is sent)."""
        return self._send(self._op_call(store, op))

    def _op_call(self, store: str, op: Op) -> _Call:
        if isinstance(op, Get):
            path = self._record_path(store, op.key)
            return _Call("GET", path, read=_value, otherwise=("not_found", op.default))
        if isinstance(op, GetRecord):
            path = self._record_path(store, op.key)
            return _Call("GET", path, read=Record.from_json, otherwise=("not_found", None))
        if isinstance(op, Set):
            body = {name: v for name, v in op.args().items() if name != "key"}
            path = self._record_path(store, op.key)
            return _Call("PUT", path, _body(body), read=Record.from_json)
        if isinstance(op, Delete):
            path = self._record_path(store, op.key) + _query({"if_version": op.if_version})
            return _Call("DELETE", path, read=_true, otherwise=("not_found", False))
        if isinstance(op, Keys):  # and Records
            path = f"{self._store_path(store)}/{op.name}" + _query(op.args())
            return _Call("GET", path, read=op.result_from_json)
        return self._batch_call(store, [], [op], single_op=True)

    def batch(
        self, workspace: str, store: str, checks: Sequence[Check], ops: Sequence[Op]
    ) -> _R:
        """Run checks and operations as one transaction on the server (SPEC §2.2)."""
        return self._send(self._batch_call(store, checks, ops))

    def _batch_call(
        self,
        store: str,
        checks: Sequence[Check],
        batch: Sequence[Op],
        *,
        single_op: bool = False,
    ) -> _Call:
        body = {
            "checks": [check.args() for check in checks],
            "ops": [{"op": op.name, **op.args()} for op in batch],
        }

        def read(data: Any) -> list[Any]:
            return [op.result_from_json(r) for op, r in zip(batch, data["results"], strict=True)]

        def read_one(data: Any) -> Any:
            return read(data)[0]

        path = f"{self._store_path(store)}/batch"
        how = read_one if single_op else read
        return _Call("POST", path, _body(body), read=how, single_op=single_op)

    # --- stores and usage --------------------------------------------------------------------

    def list_stores(self, workspace: str) -> _R:
        return self._send(_Call("GET", "/v1/stores", read=_store_list))

    def store_info(self, workspace: str, name: str) -> _R:
        return self._send(_Call("GET", self._store_path(name), read=StoreInfo.from_json))

    def _create_call(self, name: str, default_ttl: float | None, **how: Any) -> _Call:
        body: dict[str, Any] = {"name": check_store_name(name)}
        if default_ttl is not None:
            body["default_ttl"] = check_ttl(default_ttl, "default_ttl")
        return _Call("POST", "/v1/stores", _body(body), **how)

    def create_store(self, workspace: str, name: str, default_ttl: float | None = None) -> _R:
        return self._send(self._create_call(name, default_ttl, read=StoreInfo.from_json))

    def ensure_store(self, workspace: str, name: str, default_ttl: float | None = None) -> _R:
        """Select or create: look the store up (a read token may use an existing store) and
        create it only if it is missing; losing that race to another client is fine."""
        create = self._create_call(name, default_ttl, otherwise=("conflict", None))
        return self._send(_Call("GET", self._store_path(name), otherwise=("not_found", create)))

    def update_store(self, workspace: str, name: str, default_ttl: float | None) -> _R:
        ttl = check_ttl(default_ttl, "default_ttl") if default_ttl is not None else None
        body = _body({"default_ttl": ttl})
        return self._send(_Call("PATCH", self._store_path(name), body, StoreInfo.from_json))

    def delete_store(self, workspace: str, name: str) -> _R:
        return self._send(_Call("DELETE", self._store_path(name)))

    def add_dependent(self, workspace: str, name: str, workflow: str) -> _R:
        path = self._dependent_path(name, workflow)
        return self._send(_Call("PUT", path, read=StoreInfo.from_json))

    def remove_dependent(self, workspace: str, name: str, workflow: str) -> _R:
        path = self._dependent_path(name, workflow)
        return self._send(_Call("DELETE", path, read=StoreInfo.from_json))

    def usage(self, workspace: str) -> _R:
        return self._send(_Call("GET", "/v1/usage", read=Usage.from_json))

    # --- import and tokens: past `Core` ------------------------------------------------------

    def import_records(
        self, store: str, lines: bytes | Iterable[bytes] | AsyncIterable[bytes]
    ) -> _R:
        """Upload NDJSON lines (`transfer`; for the async client, bytes or an async iterable).
        The server checks every line, then writes them all in one transaction or nothing; an
        error names its line in ``details.line``. The result: how many records were written."""
        path = f"{self._store_path(store)}/import"
        return self._send(_Call("POST", path, lines, read=_imported, upload=True))

    def issue_token(
        self, *, role: str = "read", stores: list[str] | None = None, workspace: str | None = None
    ) -> _R:
        """A new token and what it grants: ``(token, TokenInfo)``; the token is shown only now.
        Needs an admin token; `workspace` (None: the caller's) another one, the operator's."""
        asked = {"role": role, "stores": stores, "workspace": workspace}
        body = _body({name: value for name, value in asked.items() if value is not None})
        return self._send(_Call("POST", "/v1/tokens", body, read=_issued))

    def list_tokens(self, workspace: str | None = None) -> _R:
        """The live tokens (`TokenInfo`) of `workspace` (None: the caller's)."""
        path = "/v1/tokens" + _query({"workspace": workspace})
        return self._send(_Call("GET", path, read=_token_list))

    def revoke_token(self, token_id: str) -> _R:
        """Revoke a token: True, or False if there is no such token."""
        path = f"/v1/tokens/{_segment(token_id)}"
        return self._send(_Call("DELETE", path, read=_true, otherwise=("not_found", False)))

    # --- pre-built actions: past `Core` ------------------------------------------------------

    def list_actions(self) -> _R:
        """The catalogue of pre-built actions (`runstate.actions`), as JSON."""
        return self._send(_Call("GET", "/v1/actions", read=_actions))

    def run_action(self, name: str, inputs: dict[str, Any]) -> _R:
        """Run a pre-built action on the server; its JSON result."""
        path = f"/v1/actions/{_segment(name)}"
        return self._send(_Call("POST", path, _body(inputs), read=_result))

    # --- change feed: the request and its lines (the I/O is each subclass's `watch`) ------

    def _watch_request(
        self, store: str, prefix: str | None, position: int | None
    ) -> tuple[str, dict[str, str], httpx.Timeout]:
        """Path, headers and timeout of a watch from `position` (None: from now). The read
        timeout outlasts the server's heartbeats (every 15 s)."""
        path = f"{self._store_path(store)}/watch" + _query({"prefix": prefix})
        headers = {"Accept": "text/event-stream"}
        if position is not None:
            headers["Last-Event-ID"] = str(position)
        return path, headers, httpx.Timeout(self._timeout, read=max(self._timeout, 45.0))

    def _ended(self) -> Unavailable:
        return Unavailable(f"the server at {self.url} keeps ending the change feed")


def _actions(data: Any) -> list[dict[str, Any]]:
    return list(data["actions"])


def _result(data: Any) -> Any:
    return data["result"]


class _EventStream:
    """Server-Sent Events, line by line, to `Event`s (no I/O). `position` is the id of the
    last event dispatched (or of an id-only block: the server's start and heartbeats), where a
    new connection resumes: an event whose connection broke before its end was never
    dispatched, so it is not skipped."""

    def __init__(self, store: str, position: int | None) -> None:
        self.store = store
        self.position = position
        self._id: int | None = None
        self._data: list[str] = []

    def line(self, line: str) -> Event | None:
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "data":
            self._data.append(value)
        elif name == "id" and value.isdigit():
            self._id = int(value)
        return None

    def _dispatch(self) -> Event | None:
        data, self._data = self._data, []
        if self._id is not None:
            self.position, self._id = self._id, None
        if not data:
            return None
        try:
            return Event.from_json(orjson.loads("\n".join(data)))
        except (orjson.JSONDecodeError, LookupError, TypeError) as exc:
            raise Unavailable(
                f"the server sent a change event in an unexpected shape ({exc})"
            ) from None


class _Reconnect:
    """When a watch reconnects: at once after the server ended a stream, with a growing pause
    after a failure, and never again after `patience` seconds of failures in a row."""

    def __init__(self, patience: float) -> None:
        self.patience = patience
        self._failing_since: float | None = None
        self._pause = 0.05

    def connected(self) -> None:
        self._failing_since = None
        self._pause = 0.05

    def failed(self, error: Unavailable) -> float:
        """Seconds to wait before the next try; raises `error` when patience runs out."""
        now = time.monotonic()
        self._failing_since = self._failing_since or now
        if now - self._failing_since > self.patience:
            raise error
        pause, self._pause = self._pause, min(self._pause * 2, 2.0)
        return pause


class HttpCore(_HttpBase[Any]):
    """`Core` over HTTP with one `httpx.Client`: connections are kept alive and reused, and
    the client may be shared between threads. `timeout` is in seconds (connect, each read and
    write); `transport` replaces the network (tests)."""

    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        timeout: float,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(url, token, timeout)
        self._client = httpx.Client(
            base_url=self.url, headers=self._headers, timeout=timeout, transport=transport
        )

    def _send(self, call: _Call) -> Any:
        try:
            response = self._client.request(call.method, call.path, **self._options(call))
        except httpx.RequestError as exc:
            raise self._unreachable(exc) from None
        result = self._answer(call, response.status_code, response.content)
        return self._send(result) if isinstance(result, _Call) else result

    def watch(
        self, workspace: str, store: str, prefix: str | None = None, after: int | None = None
    ) -> Iterator[Event]:
        """The store's changes as the server streams them (Server-Sent Events), a blocking
        iterator; a dropped connection is resumed from the last event (``Last-Event-ID``).
        `Unavailable` once the server stays unreachable for the client's timeout."""
        stream = _EventStream(store, after)
        retry = _Reconnect(self._timeout)
        while True:
            path, headers, timeout = self._watch_request(store, prefix, stream.position)
            try:
                with self._client.stream("GET", path, headers=headers, timeout=timeout) as answer:
                    if not answer.is_success:
                        self._answer(_Call("GET", path), answer.status_code, answer.read())
                    retry.connected()
                    for line in answer.iter_lines():
                        event = stream.line(line)
                        if event is not None:
                            yield event
            except httpx.TransportError as exc:
                time.sleep(retry.failed(self._unreachable(exc)))
            else:  # the server ended the stream (it is stopping): resume where it stopped
                time.sleep(retry.failed(self._ended()))

    def export_records(self, store: str) -> Iterator[bytes]:
        """`store`'s records as NDJSON (`transfer`), in chunks of bytes as the server streams
        them. A store that does not exist exports nothing."""
        call = _Call("GET", f"{self._store_path(store)}/export")
        try:
            with self._client.stream(call.method, call.path) as response:
                if not response.is_success:
                    self._answer(call, response.status_code, response.read())  # raises
                yield from response.iter_bytes()
        except httpx.RequestError as exc:
            raise self._unreachable(exc) from None

    def close(self) -> None:
        self._client.close()


class AsyncHttpCore(_HttpBase[Awaitable[Any]]):
    """The async core of `runstate.connect_async`: every method returns an awaitable."""

    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        timeout: float,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(url, token, timeout)
        self._client = httpx.AsyncClient(
            base_url=self.url, headers=self._headers, timeout=timeout, transport=transport
        )

    async def _send(self, call: _Call) -> Any:
        try:
            response = await self._client.request(call.method, call.path, **self._options(call))
        except httpx.RequestError as exc:
            raise self._unreachable(exc) from None
        result = self._answer(call, response.status_code, response.content)
        return await self._send(result) if isinstance(result, _Call) else result

    async def watch(
        self, workspace: str, store: str, prefix: str | None = None, after: int | None = None
    ) -> AsyncIterator[Event]:
        """`HttpCore.watch` for asyncio: an async iterator."""
        stream = _EventStream(store, after)
        retry = _Reconnect(self._timeout)
        while True:
            path, headers, timeout = self._watch_request(store, prefix, stream.position)
            try:
                async with self._client.stream(
                    "GET", path, headers=headers, timeout=timeout
                ) as answer:
                    if not answer.is_success:
                        self._answer(_Call("GET", path), answer.status_code, await answer.aread())
                    retry.connected()
                    async for line in answer.aiter_lines():
                        event = stream.line(line)
                        if event is not None:
                            yield event
            except httpx.TransportError as exc:
                await asyncio.sleep(retry.failed(self._unreachable(exc)))
            else:  # the server ended the stream (it is stopping): resume where it stopped
                await asyncio.sleep(retry.failed(self._ended()))

    async def close(self) -> None:
        await self._client.aclose()
