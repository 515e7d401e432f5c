"""QUALITY R6: fuzzing of the request parser and validator (Hypothesis), no network.

1. The ASGI app is called directly with synthetic ``scope`` / ``receive`` / ``send``: random
   methods, raw paths (API and dashboard route templates with odd segments: ``..``, ``%2F``,
   bad percent-escapes, invalid UTF-8, NUL, very long ones, or plain random bytes), query
   strings, headers (every kind of token, session cookies, bad Content-Length, Last-Event-ID),
   and bodies (random bytes, random JSON, and near-valid bodies of every route: record puts,
   batches of every op, stores, tokens, actions, NDJSON imports), delivered in random chunks.
   Half the paths first take the way `runstate serve` hands them over (granian decodes them,
   `server/rsgi.py` encodes them again). Every answer must be a success or the error envelope
   of SPEC §4 with the status of its code; never a 500, never a 503 (nothing is wrong with the
   database here: a 503 would be an exception mapped to ``unavailable``), no traceback, no
   token value, nothing logged as an error, and a refused request leaves every table of the
   database exactly as it was.
2. The validators themselves: `runstate.ops.parse_op`, `parse_check`, `build` of every op, the
   model's checks and JSON decoding, and the library's store methods with arbitrary Python
   objects: nothing but a `runstate.Error` escapes.

`make soak` (``RUNSTATE_SOAK=1``) runs many more examples.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import string
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote_to_bytes, urlencode

import orjson
import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

import runstate
from runstate import model, ops
from runstate.config import ServerConfig
from runstate.errors import ERRORS
from runstate.server.app import create_app, open_engine
from runstate.server.dashboard import DASHBOARD_ROUTES
from runstate.server.routes import ROUTES
from runstate.server.rsgi import raw_path as rsgi_raw_path
from runstate.tokens import issue_token
from served_process import soak

EXAMPLES = soak(400, 5000)
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=False,
)


# --- the app, called directly on a loop of its own --------------------------------------------


class _ErrorLogs(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


class Harness:
    """The app on its own event loop in a thread, a seeded database and tokens of every kind."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / "state.db"
        config = ServerConfig(db=str(self.path), port=0, durability="fast", purge_interval=3600)
        self.engine = open_engine(config)
        self.app = create_app(config, self.engine)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.run(self.app.startup())
        self.tokens = {
            role: issue_token(self.engine, role=role)[0] for role in ("admin", "write", "read")
        }
        self.tokens["limited"] = issue_token(self.engine, role="write", stores=["s"])[0]
        self.tokens["tenant"] = issue_token(self.engine, role="admin", workspace="other")[0]
        self.logs = _ErrorLogs()
        logging.getLogger("runstate").addHandler(self.logs)
        self.dump = sqlite3.connect(self.path)
        self.seed()

    def seed(self) -> None:
        for store in ("s", "t"):
            self.request(
                "PUT", f"/v1/stores/{store}/records/k", self.tokens["admin"], b'{"value":1}'
            )
            self.request("PUT", f"/v1/stores/{store}/dependents/wf", self.tokens["admin"], b"")

    def run(self, coro: Any, timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def request(
        self,
        method: str,
        raw_path: bytes | str,
        token: str | None = None,
        body: bytes = b"",
        query: bytes = b"",
        headers: list[tuple[bytes, bytes]] | None = None,
        chunks: list[int] | None = None,
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        raw = raw_path.encode() if isinstance(raw_path, str) else raw_path
        sent_headers = list(headers or [])
        if token is not None:
            sent_headers.append((b"authorization", b"Bearer " + token.encode()))
        if headers is None:
            sent_headers.append((b"content-length", b"%d" % len(body)))
        pieces = _split(body, chunks or [])
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": raw.decode("latin-1"),
            "raw_path": raw,
            "query_string": query,
            "root_path": "",
            "headers": sent_headers,
            "client": ("127.0.0.1", 40000),
            "server": ("127.0.0.1", 8765),
        }
        answer: dict[str, Any] = {"body": b""}

        async def receive() -> dict[str, Any]:
            if pieces:
                piece = pieces.pop(0)
                return {"type": "http.request", "body": piece, "more_body": bool(pieces)}
            return {"type": "http.disconnect"}  # after the body: the client has gone

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                assert "status" not in answer, "two response starts"
                answer["status"] = message["status"]
                answer["headers"] = message.get("headers", [])
            else:
                assert "status" in answer, "a body before the response start"
                answer["body"] += message.get("body", b"")

        self.run(asyncio.wait_for(self.app(scope, receive, send), 20))
        assert "status" in answer, "the app answered nothing"
        return answer["status"], answer["headers"], answer["body"]

    def tables(self) -> list[str]:
        """Every row of every table: a refused request must not change any."""
        return list(self.dump.iterdump())

    def close(self) -> None:
        logging.getLogger("runstate").removeHandler(self.logs)
        self.dump.close()
        self.run(self.app.shutdown())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()
        self.engine.close()


def _split(body: bytes, cuts: list[int]) -> list[bytes]:
    """The body in pieces at the given cut points (an empty body is one empty message)."""
    points = sorted({c % (len(body) + 1) for c in cuts})
    pieces, last = [], 0
    for point in points:
        pieces.append(body[last:point])
        last = point
    pieces.append(body[last:])
    return pieces


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    served = Harness(tmp_path_factory.mktemp("fuzz"))
    yield served
    served.close()


# --- what a request is made of ----------------------------------------------------------------

_ODD_SEGMENTS = [
    "s", "t", "k", "wf", "", ".", "..", "%2E", "%2E%2E", "%2F", "a%2Fb", "%", "%z", "%zz", "%2",
    "%00", "%ff", "%C3", "%C3%A9", "%F0%9F%98%80", "%ED%A0%80", "a b", "x" * 300, "k" * 1100,
    "execution:1", "flow:a:b", "store.get_record", "usage_metrics", "tok_0", "%252F", ";", "?",
]  # fmt: skip

_segment = st.one_of(
    st.sampled_from(_ODD_SEGMENTS),
    st.text(max_size=12).map(lambda t: quote(t, safe="")),
    st.binary(max_size=8).map(lambda b: quote(b, safe="")),
    st.text(alphabet=string.printable, max_size=8).map(lambda t: t.replace("/", "")),
)


@st.composite
def _paths(draw: Any) -> bytes:
    choice = draw(st.integers(0, 9))
    if choice == 0:
        return draw(st.binary(max_size=40))
    if choice == 1:
        segments = draw(st.lists(_segment, max_size=6))
        return ("/" + "/".join(segments)).encode("utf-8", "surrogatepass")
    template = draw(st.sampled_from([route.path for route in (*ROUTES, *DASHBOARD_ROUTES)]))
    parts = []
    for part in template.strip("/").split("/"):
        parts.append(draw(_segment) if part.startswith("{") else part)
    if draw(st.integers(0, 9)) == 0:  # an extra or a missing segment
        parts = [*parts, draw(_segment)] if draw(st.booleans()) else parts[:-1]
    return ("/" + "/".join(parts)).encode("utf-8", "surrogatepass")


_QUERY_NAMES = ["prefix", "start", "limit", "cursor", "reverse", "if_version", "workspace", "x"]
_query_value = st.one_of(
    st.sampled_from(["", "0", "1", "-1", "1000", "1001", "true", "false", "True", "1e3", "%00",
                     "99999999999999999999", "a" * 2000, "\x00", "é", "%zz"]),
    st.text(max_size=10),
)  # fmt: skip
_queries = st.one_of(
    st.just(b""),
    st.binary(max_size=40),
    st.lists(st.tuples(st.sampled_from(_QUERY_NAMES), _query_value), max_size=4).map(
        lambda pairs: urlencode(pairs).encode()
    ),
    st.lists(st.tuples(st.sampled_from(_QUERY_NAMES), _query_value), max_size=3).map(
        lambda pairs: "&".join(f"{k}={v}" for k, v in pairs).encode("utf-8", "surrogatepass")
    ),
)

_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
)
_json = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)
_keys = st.one_of(
    st.sampled_from(["k", "", "\x00", "k" * 1025, "a/b", "..", "%2F"]),
    st.text(max_size=8),
    _scalars,
)
_fields = st.sampled_from(
    ["key", "value", "ttl", "if_version", "amount", "values", "flatten", "keys", "entries",
     "prefix", "start", "limit", "cursor", "reverse", "default", "version", "x"]
)  # fmt: skip


@st.composite
def _batch_ops(draw: Any) -> Any:
    op: dict[str, Any] = {"op": draw(st.sampled_from([*sorted(ops.OPS), "nope", 1, None]))}
    if draw(st.booleans()):
        op["key"] = draw(_keys)
    for name in draw(st.lists(_fields, max_size=3)):
        op[name] = draw(_json)
    return op


def _dumps(body: Any) -> bytes:
    """JSON text of any drawn body (the standard encoder: integers of any size)."""
    return json.dumps(body, ensure_ascii=False).encode()


_bodies_json = st.one_of(
    _json,
    st.fixed_dictionaries(
        {"value": _json},
        optional={"ttl": _json, "if_version": _json, "x": _json},
    ),
    st.fixed_dictionaries(
        {"ops": st.lists(_batch_ops(), max_size=4)},
        optional={
            "checks": st.lists(
                st.fixed_dictionaries({"key": _keys, "version": _json}) | _json, max_size=3
            )
        },
    ),
    st.fixed_dictionaries({"name": _keys}, optional={"default_ttl": _json, "x": _json}),
    st.fixed_dictionaries({"default_ttl": _json}),
    st.fixed_dictionaries(
        {"role": st.sampled_from(["admin", "write", "read", "root", 1])},
        optional={"stores": _json, "workspace": _json},
    ),
    st.fixed_dictionaries({"store": _keys}, optional={"key": _keys, "value": _json, "x": _json}),
)
_raw_bodies = st.sampled_from(
    [b"", b" ", b"{", b"[" * 70 + b"]" * 70, b'{"value": NaN}', b'{"value": Infinity}',
     b'{"value": 1e999}', b'{"value": 99999999999999999999}', b'{"value": "\\ud800"}',
     b'{"value": 1}{"value": 2}', b'\xff\xfe', b'{"value": "\xff"}', b"null", b"\x00",
     b'{"key": "a", "value": 1}\n{"key": 2}\n', b'{"key": "a", "value": 1, "expires_at": "x"}\n',
     b'{"ops": [{"op": "increment", "key": "k", "amount": 9223372036854775807}]}']
)  # fmt: skip
_bodies = st.one_of(
    st.binary(max_size=80),
    _raw_bodies,
    _bodies_json.map(_dumps),
    st.lists(_bodies_json.map(_dumps), max_size=3).map(lambda lines: b"\n".join(lines)),
)
_TOKENS = ["admin", "write", "read", "limited", "tenant", None, "garbage"]
_METHODS = ["GET", "PUT", "POST", "DELETE", "PATCH", "HEAD", "OPTIONS", "get", "BREW"]


@st.composite
def _headers(draw: Any) -> list[tuple[bytes, bytes]] | None:
    if draw(st.integers(0, 3)):
        return None  # a correct Content-Length
    headers = []
    if draw(st.booleans()):
        length = draw(st.sampled_from([b"0", b"-1", b"abc", b"1" * 25, b"5", b"2000000", b" 3"]))
        headers.append((b"content-length", length))
    if draw(st.booleans()):
        headers.append((b"last-event-id", draw(st.binary(max_size=22))))
    if draw(st.booleans()):
        headers.append((b"content-type", draw(st.binary(max_size=20))))
    if draw(st.booleans()):  # the dashboard's session and sign-in cookies, and its origin check
        name = draw(st.sampled_from([b"runstate_session=", b"runstate_signin=", b""]))
        headers.append((b"cookie", name + draw(st.binary(max_size=40))))
    if draw(st.booleans()):
        headers.append((b"origin", draw(st.sampled_from([b"http://127.0.0.1:8765", b"null"]))))
    return headers


def _check_answer(harness: Harness, status: int, headers: Any, body: bytes, token: str | None):
    assert status not in (500, 503), body
    assert b"Traceback" not in body, body
    if token is not None:
        assert token.encode() not in body
    if status < 400:
        return
    error = orjson.loads(body)["error"]
    assert set(error) == {"code", "message", "details"}, error
    assert isinstance(error["message"], str), error
    assert isinstance(error["details"], dict), error
    expected = 405 if status == 405 else ERRORS[error["code"]].status
    assert status == expected, (status, error)


@FUZZ
@given(
    method=st.sampled_from(_METHODS),
    path=_paths(),
    query=_queries,
    token=st.sampled_from(_TOKENS),
    headers=_headers(),
    body=_bodies,
    chunks=st.lists(st.integers(0, 200), max_size=3),
    via_rsgi=st.booleans(),
)
def test_no_request_gets_anything_but_a_success_or_our_error(
    harness, method, path, query, token, headers, body, chunks, via_rsgi
):
    if via_rsgi:  # as `runstate serve` gets it: decoded by granian, re-encoded by rsgi.py
        path = rsgi_raw_path(unquote_to_bytes(path).decode("utf-8", "replace"))
    secret = harness.tokens.get(token or "", "rs_garbage" if token == "garbage" else None)
    before = harness.tables()
    errors_before = len(harness.logs.records)
    status, answer_headers, answer = harness.request(
        method, path, secret, body, query, headers, chunks
    )
    note(repr((method, path, query, token, headers, body, chunks, status, answer)))
    _check_answer(harness, status, answer_headers, answer, secret)
    assert harness.logs.records[errors_before:] == [], "the request logged an error"
    if status >= 400:
        assert harness.tables() == before, (status, answer)


# --- the validators, directly -------------------------------------------------------------------


def _python_values() -> Any:
    odd = st.sampled_from(
        [float("nan"), float("inf"), -float("inf"), 2**63, -(2**63) - 1, 10**100, b"bytes",
         bytearray(b"x"), object(), {1, 2}, frozenset(), (1, 2), 1 + 2j, "\ud800", {1: "a"},
         {(1,): 2}, type, print, Ellipsis, [float("nan")], {"a": {"b": object()}}]
    )  # fmt: skip
    return st.recursive(
        st.one_of(_scalars, odd),
        lambda inner: (
            st.lists(inner, max_size=3)
            | st.dictionaries(st.one_of(st.text(max_size=4), st.integers()), inner, max_size=3)
            | st.tuples(inner)
        ),
        max_leaves=8,
    )


@FUZZ
@given(data=st.one_of(_python_values(), st.dictionaries(_fields | st.just("op"), _python_values())))
def test_parse_op_raises_only_our_errors(data):
    for parse in (ops.parse_op, ops.parse_check):
        try:
            parse(data)
        except runstate.Error:
            pass


@FUZZ
@given(
    name=st.sampled_from(sorted(ops.OPS)),
    inputs=st.dictionaries(_fields, _python_values(), max_size=4),
)
def test_every_op_checks_its_inputs_with_our_errors(name, inputs):
    try:
        ops.parse_op({"op": name, **inputs})
    except runstate.Error:
        pass


_CHECKS = [
    model.check_key,
    model.check_store_name,
    model.check_workflow,
    model.check_ttl,
    model.check_limit,
    model.check_version,
    model.decode_cursor,
    model.encode_value,
    lambda v: model.check_int(v, "amount"),
    lambda v: model.check_bool(v, "reverse"),
    lambda v: model.check_scope_id("instance_id", v),
]


@FUZZ
@given(value=_python_values())
def test_model_checks_raise_only_our_errors(value):
    for check in _CHECKS:
        try:
            check(value)
        except runstate.Error:
            pass


@FUZZ
@given(data=st.one_of(st.binary(max_size=60), _raw_bodies, st.text(max_size=30)))
def test_json_decoding_raises_only_our_errors(data):
    try:
        model.decode_json(data)
    except runstate.Error:
        pass


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with runstate.open(tmp_path_factory.mktemp("lib") / "state.db") as db:
        db.store("s").set("k", [1])
        yield db


_METHOD_CALLS = {
    "set": lambda s, k, v: s.set(k, v),
    "set_ttl": lambda s, k, v: s.set(k, 1, ttl=v),
    "if_version": lambda s, k, v: s.set(k, 1, if_version=v),
    "increment": lambda s, k, v: s.increment(k, v),
    "append": lambda s, k, v: s.append(k, v),
    "append_many": lambda s, k, v: s.append_many(k, v),
    "add_to_set": lambda s, k, v: s.add_to_set(k, v),
    "set_many": lambda s, k, v: s.set_many({k: v}) if isinstance(k, str) else s.set_many(v),
    "get": lambda s, k, v: s.get(k, v),
    "keys": lambda s, k, v: list(s.keys(prefix=k, limit=v)),
    "get_or_create": lambda s, k, v: s.get_or_create(k, v),
    "delete_many": lambda s, k, v: s.delete_many(v),
}


@FUZZ
@given(
    call=st.sampled_from(sorted(_METHOD_CALLS)),
    key=st.one_of(st.sampled_from(["k", "", "\x00", "\ud800", "k" * 1025]), _python_values()),
    value=_python_values(),
)
def test_library_methods_raise_only_our_errors_and_refusals_change_nothing(
    library, call, key, value
):
    store = library.store("s")
    before = list(store.records())
    try:
        _METHOD_CALLS[call](store, key, value)
    except runstate.Error:
        assert list(store.records()) == before
    finally:
        store.set("k", [1])
