"""The HTTP routes: each handler translates a request into core calls and the result into JSON.

`ROUTES` is the one table of the API: the router (`app.py`), the OpenAPI document
(`openapi.py`) and the tests all read it. A route names its path template, the role it needs,
its query parameters (each with its parser), its body, its success status and the error
statuses it can answer. Handlers never restate an operation's rules: they build `runstate.ops`
objects (which check their inputs) and hand them to the engine (reads, on the event loop) or to
the group-commit writer (writes).
"""

from __future__ import annotations

import asyncio
import functools
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote_to_bytes

import orjson

from .. import actions, ops
from ..engine.base import Row
from ..errors import Error, Forbidden, InvalidRequest, NotFound, ValueTooLarge
from ..model import (
    check_key,
    check_limit,
    check_store_name,
    check_ttl,
    check_version,
    check_workflow,
)
from ..tokens import DEFAULT_WORKSPACE, TokenInfo, check_workspace_name, issue_token
from ..transfer import export_line, importer, parse_line
from .auth import require_role, require_store
from .watch import event_stream
from .writer import Work

if TYPE_CHECKING:
    from .app import State

__all__ = ["ROUTES", "Param", "Request", "Response", "Route", "StreamResponse"]

JSON = b"application/json"
NDJSON = b"application/x-ndjson"
EVENT_STREAM = b"text/event-stream"


# --- requests and responses -------------------------------------------------------------------


@dataclass(slots=True)
class Response:
    status: int
    body: bytes
    content_type: bytes = JSON
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)


@dataclass(slots=True)
class StreamResponse:
    status: int
    chunks: AsyncIterator[bytes]
    content_type: bytes = NDJSON
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)


def json_response(data: Any, status: int = 200) -> Response:
    return Response(status, orjson.dumps(data))


@dataclass(slots=True)
class Request:
    """One request, after routing, authentication and parsing of its path and query."""

    state: State
    route: Route
    params: dict[str, str]
    query: dict[str, Any]
    token: TokenInfo | None
    receive: Callable[[], Awaitable[dict[str, Any]]]
    headers: Mapping[bytes, bytes]
    body: Any = None

    @property
    def workspace(self) -> str:
        assert self.token is not None
        return self.token.workspace

    @property
    def store(self) -> str:
        return self.params["store"]

    def require(self, role: str) -> None:
        assert self.token is not None
        require_role(self.token, role)


Handler = Callable[[Request], Awaitable[Response | StreamResponse]]


# --- parameters -------------------------------------------------------------------------------

_INTEGER = re.compile(r"-?[0-9]{1,20}")


def _integer(text: str, name: str) -> int:
    if not _INTEGER.fullmatch(text):
        raise InvalidRequest(f"{name} must be an integer", {name: text[:100]})
    return int(text)


def _boolean(text: str, name: str) -> bool:
    if text not in ("true", "false"):
        raise InvalidRequest(f"{name} must be true or false", {name: text[:100]})
    return text == "true"


def _no_nul(text: str, name: str) -> str:
    if "\x00" in text:
        raise InvalidRequest(f"{name} must not contain NUL", {name: None})
    return text


@dataclass(frozen=True, slots=True)
class Param:
    """A query parameter: its name, a parser from the decoded text (raising the spec's error)
    and its name in the OpenAPI document's parameter schemas."""

    name: str
    parse: Callable[[str], Any]
    schema: str
    description: str


PREFIX = Param("prefix", lambda t: _no_nul(t, "prefix") or None, "Prefix", "keys starting with")
START = Param("start", check_key, "Key", "first key (inclusive)")
LIMIT = Param("limit", lambda t: check_limit(_integer(t, "limit")), "Limit", "page size")
CURSOR = Param("cursor", lambda t: t, "Cursor", "next_cursor of the previous page")
REVERSE = Param("reverse", lambda t: _boolean(t, "reverse"), "Boolean", "descending order")
IF_VERSION = Param(
    "if_version",
    lambda t: check_version(_integer(t, "if_version")),
    "Version",
    "only if the record is at this version",
)
WORKSPACE = Param(
    "workspace", check_workspace_name, "WorkspaceName", "another workspace (operator only)"
)
LISTING = (PREFIX, START, LIMIT, CURSOR, REVERSE)


def parse_query(raw: bytes, params: tuple[Param, ...]) -> dict[str, Any]:
    """Decode ``a=1&b=2`` (percent-encoding and ``+`` as space, UTF-8) and parse each value.
    Unknown, repeated or undecodable parameters are `invalid_request`."""
    if not raw:
        return {}
    known = {p.name: p for p in params}
    out: dict[str, Any] = {}
    for pair in raw.split(b"&"):
        if not pair:
            continue
        name_raw, _, value_raw = pair.partition(b"=")
        try:
            name = unquote_to_bytes(name_raw.replace(b"+", b" ")).decode()
            value = unquote_to_bytes(value_raw.replace(b"+", b" ")).decode()
        except UnicodeDecodeError:
            raise InvalidRequest("query parameters must be UTF-8") from None
        param = known.get(name)
        if param is None:
            raise InvalidRequest(
                f"unknown query parameter {name[:100]!r}", {"parameter": name[:100]}
            )
        if name in out:
            raise InvalidRequest(f"query parameter {name!r} is given twice", {"parameter": name})
        out[name] = param.parse(value)
    return out


class Disconnected(Exception):
    """The client went away before its request body was read."""


def _too_large(limit: int) -> ValueTooLarge:
    return ValueTooLarge(f"the request body is over the limit of {limit} bytes", {"limit": limit})


async def body_chunks(
    receive: Callable[[], Awaitable[dict[str, Any]]], headers: Mapping[bytes, bytes], limit: int
) -> AsyncIterator[bytes]:
    """The request body as it arrives. A Content-Length over `limit` is refused before any of
    the body is read, and a body without one (chunked) as soon as it passes `limit`."""
    _check_length(headers, limit)
    total = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise Disconnected
        chunk = message.get("body", b"")
        total += len(chunk)
        if total > limit:
            raise _too_large(limit)
        if chunk:
            yield chunk
        if not message.get("more_body", False):
            return


def _check_length(headers: Mapping[bytes, bytes], limit: int) -> int | None:
    """The declared Content-Length (None for a chunked body), refused over `limit`."""
    declared = headers.get(b"content-length")
    if declared is None:
        return None
    if not declared.isdigit() or len(declared) > 18:
        raise InvalidRequest("Content-Length must be a number of bytes")
    length = int(declared)
    if length > limit:
        raise _too_large(limit)
    return length


async def read_body(
    receive: Callable[[], Awaitable[dict[str, Any]]], headers: Mapping[bytes, bytes], limit: int
) -> bytes:
    """The whole body, with the checks of `body_chunks`, read without an async generator. Once
    the declared Content-Length has arrived the body is complete (the HTTP framing allows no
    more): it is not waited on for the closing empty message some servers send (granian's
    costs a round trip to its I/O thread)."""
    declared = _check_length(headers, limit)
    chunks: list[bytes] = []
    total = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise Disconnected
        chunk = message.get("body", b"")
        total += len(chunk)
        if total > limit:
            raise _too_large(limit)
        chunks.append(chunk)
        if total == declared or not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def fields(body: Any, allowed: tuple[str, ...], required: tuple[str, ...] = ()) -> dict[str, Any]:
    """A JSON object body with only `allowed` fields and every `required` one."""
    if not isinstance(body, dict):
        raise InvalidRequest("the body must be a JSON object")
    if not set(body).issubset(allowed):
        unknown = sorted(set(body) - set(allowed))
        raise InvalidRequest(
            f"unknown field {unknown[0][:100]!r}", {"unknown": [u[:100] for u in unknown]}
        )
    for name in required:
        if name not in body:
            missing = [name for name in required if name not in body]
            raise InvalidRequest(f"the body needs {missing[0]!r}", {"missing": missing})
    return body


# --- stores -----------------------------------------------------------------------------------


def _visible(req: Request, infos: list[Any]) -> list[dict[str, Any]]:
    assert req.token is not None
    return [i.to_json() for i in infos if req.token.can_use_store(i.name)]


async def list_stores(req: Request) -> Response:
    infos = await asyncio.to_thread(req.state.engine.list_stores, req.workspace)
    return json_response({"stores": _visible(req, infos)})


async def create_store(req: Request) -> Response:
    body = fields(req.body, ("name", "default_ttl"), ("name",))
    name = check_store_name(body["name"])
    assert req.token is not None
    require_store(req.token, name)
    ttl = body.get("default_ttl")
    ttl = check_ttl(ttl, "default_ttl") if ttl is not None else None
    info = await asyncio.to_thread(req.state.engine.create_store, req.workspace, name, ttl)
    return json_response(info.to_json(), 201)


async def store_info(req: Request) -> Response:
    info = await asyncio.to_thread(req.state.engine.store_info, req.workspace, req.store)
    return json_response(info.to_json())


async def update_store(req: Request) -> Response:
    body = fields(req.body, ("default_ttl",), ("default_ttl",))
    ttl = body["default_ttl"]
    ttl = check_ttl(ttl, "default_ttl") if ttl is not None else None
    engine = req.state.engine
    info = await asyncio.to_thread(engine.update_store, req.workspace, req.store, ttl)
    return json_response(info.to_json())


async def delete_store(req: Request) -> Response:
    await asyncio.to_thread(req.state.engine.delete_store, req.workspace, req.store)
    return json_response({"deleted": True})


async def add_dependent(req: Request) -> Response:
    engine, workflow = req.state.engine, req.params["workflow"]
    info = await asyncio.to_thread(engine.add_dependent, req.workspace, req.store, workflow)
    return json_response(info.to_json())


async def remove_dependent(req: Request) -> Response:
    engine, workflow = req.state.engine, req.params["workflow"]
    info = await asyncio.to_thread(engine.remove_dependent, req.workspace, req.store, workflow)
    return json_response(info.to_json())


# --- records ----------------------------------------------------------------------------------


async def _read(req: Request, op: ops.Op) -> Any:
    """A read on the engine: on the event loop for SQLite (a local read, faster than a thread
    hop), on a worker thread for PostgreSQL (a network round trip must not stall the loop)."""
    engine = req.state.engine
    if engine.blocking:
        return await asyncio.to_thread(engine.execute, req.workspace, req.store, op)
    return engine.execute(req.workspace, req.store, op)


async def _call(req: Request, fn: Callable[..., Any], *args: Any) -> Any:
    """`fn(*args)`, an engine read: where `_read` runs it."""
    if req.state.engine.blocking:
        return await asyncio.to_thread(fn, *args)
    return fn(*args)


def _write(req: Request, work: Work) -> Awaitable[Any]:
    """Run `work` (a function of a `Txn`, an op or a batch) in the group-commit writer; await
    the answer for its result."""
    return req.state.writer.submit(req.workspace, req.store, work)


async def list_records(req: Request) -> Response:
    op = ops.Records(**req.query)
    return json_response(op.result_to_json(await _read(req, op)))


async def list_keys(req: Request) -> Response:
    op = ops.Keys(**req.query)
    return json_response(op.result_to_json(await _read(req, op)))


async def clear_records(req: Request) -> Response:
    return json_response({"deleted": await _write(req, ops.Clear())})


def _no_record(req: Request, key: str) -> NotFound:
    return NotFound(f"no record {key!r} in store {req.store!r}", {"key": key})


async def get_record(req: Request) -> Response:
    key = req.params["key"]
    engine = req.state.engine
    if engine.blocking:
        row = await asyncio.to_thread(engine.get_row, req.workspace, req.store, key)
    else:
        row = engine.get_row(req.workspace, req.store, key)
    if row is None:
        raise _no_record(req, key)
    return Response(200, row.to_json_bytes())


class _PutRecord(ops.Set):
    """PUT's set: it answers the stored row, whose JSON splices in the encoded value (the same
    bytes a decode and re-encode of the `Record` would give)."""

    @staticmethod
    def answer_row(row: Row) -> Row:
        return row


_PUT_FIELDS = ("value", "ttl", "if_version")
_DELETED = b'{"deleted":true}'


async def put_record(req: Request) -> Response:
    body = req.body
    if type(body) is not dict or len(body) != 1 or "value" not in body:
        body = fields(body, _PUT_FIELDS, ("value",))
    op = _PutRecord(req.params["key"], body["value"], body.get("ttl"), body.get("if_version"))
    row: Row = await _write(req, op)
    return Response(200, row.to_json_bytes())


async def delete_record(req: Request) -> Response:
    op = ops.Delete(req.params["key"], req.query.get("if_version"))
    if not await _write(req, op):
        raise _no_record(req, op.key)
    return Response(200, _DELETED)


def _parse_all(items: Any, what: str, limit: int, parse: Callable[[Any], Any]) -> list[Any]:
    if not isinstance(items, list):
        raise InvalidRequest(f"{what} must be a list")
    if len(items) > limit:
        raise InvalidRequest(
            f"a batch holds at most {limit} {what}", {what: len(items), "limit": limit}
        )
    parsed = []
    for index, item in enumerate(items):
        try:
            parsed.append(parse(item))
        except Error as exc:
            raise exc.with_details(**{what[:-1]: index}) from None
    return parsed


async def batch(req: Request) -> Response:
    body = fields(req.body, ("checks", "ops"))
    checks = _parse_all(body.get("checks", []), "checks", ops.MAX_BATCH, ops.parse_check)
    batch_ops: list[ops.Op] = _parse_all(body.get("ops", []), "ops", ops.MAX_BATCH, ops.parse_op)
    if any(op.writes for op in batch_ops):
        req.require("write")
        results = await _write(req, ops.BatchWork(checks, batch_ops))
    else:
        engine = req.state.engine
        results = await _call(req, engine.batch, req.workspace, req.store, checks, batch_ops)
    return json_response(
        {"results": [type(op).result_to_json(r) for op, r in zip(batch_ops, results, strict=True)]}
    )


# --- export and import ------------------------------------------------------------------------


async def export_records(req: Request) -> StreamResponse:
    first = await _read(req, ops.Records(limit=ops.MAX_BATCH))  # errors answer before the stream

    async def chunks() -> AsyncIterator[bytes]:
        page = first
        while True:
            yield b"".join(map(export_line, page.items))
            if page.next_cursor is None:
                return
            await asyncio.sleep(0)  # let other requests run between pages
            page = await _read(req, ops.Records(limit=ops.MAX_BATCH, cursor=page.next_cursor))

    return StreamResponse(200, chunks())


async def _ndjson_lines(req: Request, limit: int) -> AsyncIterator[tuple[int, bytes]]:
    """Numbered non-blank lines of the streamed body (checked against `limit` as it arrives)."""
    pending = b""
    number = 0
    async for chunk in body_chunks(req.receive, req.headers, limit):
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            number += 1
            if line.strip():
                yield number, line
    if pending.strip():
        yield number + 1, pending


async def import_records(req: Request) -> Response:
    """Every line checked as it arrives (`transfer.parse_line`), then one write of them all."""
    max_value = req.state.engine.max_value_bytes
    entries = [
        parse_line(number, line, max_value)
        async for number, line in _ndjson_lines(req, req.state.config.max_import_bytes)
    ]
    return json_response({"imported": await _write(req, importer(entries))})


# --- workspace: usage and tokens ----------------------------------------------------------------


async def _usage(req: Request) -> dict[str, Any]:
    found = await asyncio.to_thread(req.state.engine.usage, req.workspace)
    data: dict[str, Any] = found.to_json()
    data["stores"] = _visible(req, found.stores)
    return data


async def usage(req: Request) -> Response:
    return json_response(await _usage(req))


def _token_workspace(req: Request, asked: Any) -> str:
    """The workspace a token call is about: the caller's own, or (operator only) another."""
    assert req.token is not None
    if asked is None or asked == req.token.workspace:
        return req.token.workspace
    check_workspace_name(asked)
    if not req.token.manages_workspaces:
        raise Forbidden(
            "only an unlimited admin token of the default workspace manages other workspaces",
            {"workspace": asked},
        )
    return str(asked)


def _require_token_admin(req: Request) -> TokenInfo:
    assert req.token is not None
    if req.token.stores is not None:
        raise Forbidden("a token limited to stores cannot manage tokens")
    return req.token


async def list_tokens(req: Request) -> Response:
    _require_token_admin(req)
    workspace = _token_workspace(req, req.query.get("workspace"))
    infos = await _call(req, req.state.engine.list_tokens, workspace)
    return json_response({"tokens": [i.to_json() for i in infos]})


async def create_token(req: Request) -> Response:
    _require_token_admin(req)
    body = fields(req.body, ("role", "stores", "workspace"), ("role",))
    workspace = _token_workspace(req, body.get("workspace"))
    token, info = await asyncio.to_thread(
        issue_token,
        req.state.engine,
        role=body["role"],
        stores=body.get("stores"),
        workspace=workspace,
    )
    return json_response({"token": token, **info.to_json()}, 201)


async def revoke_token(req: Request) -> Response:
    token = _require_token_admin(req)
    token_id = req.params["token_id"]
    within = None if token.manages_workspaces else token.workspace
    if not await asyncio.to_thread(req.state.engine.revoke_token, token_id, within):
        raise NotFound(f"no token with id {token_id[:100]!r}", {"id": token_id[:100]})
    req.state.auth.forget()  # at once in this process; other processes within a second
    return json_response({"revoked": True})


# --- pre-built actions and the change feed ------------------------------------------------------


async def list_actions(req: Request) -> Response:
    return Response(200, _catalogue())


@functools.cache
def _catalogue() -> bytes:
    return orjson.dumps({"actions": [action.to_json() for action in actions.CATALOGUE]})


async def run_action(req: Request) -> Response:
    """The action's plan (`runstate.actions`), with the role and store list applied to what
    it does: a read on the engine, a write through the group-commit writer."""
    plan = actions.find(req.params["action"]).plan(req.body)
    if plan.writes:
        req.require("write")
    if plan.op is None or plan.store is None:
        return json_response({"result": await _usage(req)})
    assert req.token is not None
    require_store(req.token, plan.store)
    if plan.op.writes:
        result = await req.state.writer.submit(req.workspace, plan.store, plan.op)
    else:
        engine = req.state.engine
        result = await asyncio.to_thread(engine.execute, req.workspace, plan.store, plan.op)
    return json_response({"result": plan.answer(result)})


async def watch_store(req: Request) -> StreamResponse:
    """Server-Sent Events of the store's changes from now, or past ``Last-Event-ID``."""
    resume = req.headers.get(b"last-event-id", b"").strip()
    if resume and not (resume.isdigit() and len(resume) <= 19):
        raise InvalidRequest("Last-Event-ID must be the id of an event (an integer)")
    engine, state = req.state.engine, req.state
    position = (
        int(resume)
        if resume
        else await _call(req, engine.latest_seq, req.workspace, req.store)
    )
    chunks = event_stream(
        state.feed,
        engine,
        req.workspace,
        req.store,
        req.query.get("prefix"),
        position,
        req.receive,
        state.config.watch_heartbeat,
    )
    return StreamResponse(200, chunks, EVENT_STREAM, [(b"cache-control", b"no-cache")])


# --- service ----------------------------------------------------------------------------------


async def healthz(req: Request) -> Response:
    await _call(req, req.state.engine.has_tokens)  # one read: the database answers
    return json_response({"status": "ok"})


async def metrics(req: Request) -> Response:
    assert req.token is not None
    if req.token.workspace != DEFAULT_WORKSPACE:
        raise Forbidden("metrics cover every workspace: use a token of the default workspace")
    from .metrics import CONTENT_TYPE

    body = req.state.metrics.render(await _call(req, req.state.engine.workspace_totals))
    return Response(200, body, CONTENT_TYPE)


async def openapi_document(req: Request) -> Response:
    return Response(200, req.state.openapi)


# --- the table ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Route:
    """One operation of the API. `role` None: no token needed. `body`: the OpenAPI component
    of the JSON body (read and parsed before the handler runs), ``"ndjson"`` for a streamed
    body the handler reads itself, or None. `ok`: (status, component or media type)."""

    method: str
    path: str
    handler: Handler
    operation_id: str
    summary: str
    role: str | None
    ok: tuple[int, str]
    errors: tuple[int, ...]
    query: tuple[Param, ...] = ()
    body: str | None = None
    tag: str = "records"

    @property
    def segments(self) -> tuple[str, ...]:
        return tuple(self.path.strip("/").split("/"))


# Error statuses, by what a route does: every authenticated route can answer 400 (a bad query),
# 401, 403 (role, store limit), 429 (rate limit) and 503 (database down).
_AUTH = (400, 401, 403, 429, 503)
_STORE = (*_AUTH, 404)
_BODY = (413,)
_WRITE = (*_STORE, *_BODY, 409, 422)

ROUTES: tuple[Route, ...] = (
    Route("GET", "/v1/stores", list_stores, "listStores", "List the workspace's stores",
          "read", (200, "StoreList"), _AUTH, tag="stores"),
    Route("POST", "/v1/stores", create_store, "createStore", "Create a store",
          "write", (201, "StoreInfo"), (*_AUTH, *_BODY, 409), body="StoreCreate", tag="stores"),
    Route("GET", "/v1/stores/{store}", store_info, "getStore", "A store's description",
          "read", (200, "StoreInfo"), _STORE, tag="stores"),
    Route("PATCH", "/v1/stores/{store}", update_store, "updateStore",
          "Change a store's default_ttl", "write", (200, "StoreInfo"), (*_STORE, *_BODY),
          body="StorePatch", tag="stores"),
    Route("DELETE", "/v1/stores/{store}", delete_store, "deleteStore",
          "Delete a store and its records (not while it has dependents)", "write",
          (200, "Deleted"), (*_STORE, 409), tag="stores"),
    Route("PUT", "/v1/stores/{store}/dependents/{workflow}", add_dependent, "addDependent",
          "Register a workflow as using the store", "write", (200, "StoreInfo"), _STORE,
          tag="stores"),
    Route("DELETE", "/v1/stores/{store}/dependents/{workflow}", remove_dependent,
          "removeDependent", "Unregister a workflow", "write", (200, "StoreInfo"), _STORE,
          tag="stores"),
    Route("GET", "/v1/stores/{store}/records", list_records, "listRecords",
          "A page of records in UTF-8 byte order of key", "read", (200, "RecordPage"), _STORE,
          query=LISTING),
    Route("DELETE", "/v1/stores/{store}/records", clear_records, "clearStore",
          "Delete every record of the store", "write", (200, "DeletedCount"), _STORE),
    Route("GET", "/v1/stores/{store}/keys", list_keys, "listKeys",
          "A page of keys in UTF-8 byte order", "read", (200, "KeyPage"), _STORE,
          query=LISTING),
    Route("GET", "/v1/stores/{store}/records/{key}", get_record, "getRecord", "Get a record",
          "read", (200, "Record"), _STORE),
    Route("PUT", "/v1/stores/{store}/records/{key}", put_record, "putRecord",
          "Create or replace a record", "write", (200, "Record"), _WRITE, body="RecordPut"),
    Route("DELETE", "/v1/stores/{store}/records/{key}", delete_record, "deleteRecord",
          "Delete a record", "write", (200, "Deleted"), (*_STORE, 409), query=(IF_VERSION,)),
    Route("POST", "/v1/stores/{store}/batch", batch, "batch",
          "Checks and operations as one transaction", "read", (200, "BatchResult"), _WRITE,
          body="Batch"),
    Route("GET", "/v1/stores/{store}/watch", watch_store, "watchStore",
          "Server-Sent Events: every change of the store from now (or past Last-Event-ID)",
          "read", (200, "text/event-stream"), _STORE, query=(PREFIX,)),
    Route("GET", "/v1/stores/{store}/export", export_records, "exportRecords",
          "Every record as NDJSON lines {key, value, expires_at}", "read",
          (200, "application/x-ndjson"), _STORE),
    Route("POST", "/v1/stores/{store}/import", import_records, "importRecords",
          "Write NDJSON lines {key, value, expires_at}, all or nothing", "write",
          (200, "ImportResult"), _WRITE, body="ndjson"),
    Route("GET", "/v1/usage", usage, "usage", "The workspace's usage against its quota",
          "read", (200, "Usage"), _AUTH, tag="workspace"),
    Route("GET", "/v1/actions", list_actions, "listActions",
          "The catalogue of pre-built actions", "read", (200, "ActionList"), _AUTH,
          tag="actions"),
    Route("POST", "/v1/actions/{action}", run_action, "runAction",
          "Run a pre-built action (read role, or write if it writes)", "read",
          (200, "ActionResult"), (*_WRITE, 404), body="ActionInputs", tag="actions"),
    Route("GET", "/v1/tokens", list_tokens, "listTokens", "The workspace's live tokens",
          "admin", (200, "TokenList"), _AUTH, query=(WORKSPACE,), tag="workspace"),
    Route("POST", "/v1/tokens", create_token, "createToken",
          "Create a token (shown only in this answer)", "admin", (201, "TokenCreated"),
          (*_AUTH, *_BODY), body="TokenCreate", tag="workspace"),
    Route("DELETE", "/v1/tokens/{token_id}", revoke_token, "revokeToken", "Revoke a token",
          "admin", (200, "Revoked"), (*_AUTH, 404), tag="workspace"),
    Route("GET", "/healthz", healthz, "healthz", "Liveness: the database answers", None,
          (200, "Health"), (400, 503), tag="service"),
    Route("GET", "/metrics", metrics, "metrics", "Prometheus metrics of this process", "read",
          (200, "text/plain"), _AUTH, tag="service"),
    Route("GET", "/openapi.json", openapi_document, "openapi", "This document", None,
          (200, "application/json"), (400,), tag="service"),
)  # fmt: skip


def path_param_parsers() -> Mapping[str, Callable[[str], str]]:
    """Checks of path parameters, by name (each decoded exactly once before this)."""
    return {
        "store": check_store_name,
        "key": check_key,
        "workflow": check_workflow,
        "token_id": _token_id,
        "action": _action_name,
    }


def _action_name(text: str) -> str:
    return text  # an unknown action is 404 in the handler


def _token_id(text: str) -> str:
    if not text or len(text) > 100:
        raise InvalidRequest("a token id is a string like tok_0123456789abcdef")
    return text
