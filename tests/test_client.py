"""The remote client's own duties (SPEC §3.1, §3.2, §4): what it sends and how it reads answers.

The semantics of every operation are proven by the shared suite, which runs against the served
app through `runstate.connect` (the `remote` backend of conftest.py). Here a fake server
(`httpx.MockTransport`) checks what only the client does: routes, percent-encoding of keys,
the error envelope mapped back to the embedded library's exceptions, the 404s that are ordinary
results, and network failures as `Unavailable`; the served app checks connection reuse.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

import httpx
import orjson
import pytest

import runstate
from runstate.client import HttpCore
from runstate.errors import ERRORS

RECORD = {
    "key": "k",
    "value": {"a": [1, 2.0]},
    "version": 7,
    "created_at": "2026-01-01T00:00:00.000000Z",
    "updated_at": "2026-01-01T00:00:01.500000Z",
    "expires_at": None,
}
INFO = {
    "name": "s",
    "records": 1,
    "bytes": 10,
    "dependents": [],
    "created_at": "2026-01-01T00:00:00.000000Z",
    "default_ttl": None,
}
UNRESERVED = set(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_~")


class FakeServer:
    """Answers each request with the next queued (status, JSON) and records what it got."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.answers: list[tuple[int, Any]] = []

    def answer(self, status: int, body: Any = None) -> FakeServer:
        self.answers.append((status, body))
        return self

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        status, body = self.answers.pop(0) if self.answers else (200, {})
        content = body if isinstance(body, bytes) else orjson.dumps(body)
        return httpx.Response(status, content=content if body is not None else b"")

    @property
    def last(self) -> httpx.Request:
        return self.requests[-1]

    def sent(self) -> list[tuple[str, str, Any]]:
        """(method, raw path with query, JSON body) of every request."""
        return [
            (r.method, r.url.raw_path.decode(), orjson.loads(r.content) if r.content else None)
            for r in self.requests
        ]


@pytest.fixture
def server() -> FakeServer:
    return FakeServer()


@pytest.fixture
def remote(server: FakeServer) -> Any:
    db = runstate.Database(
        HttpCore(
            "http://runstate.test/", "rs_secret", timeout=5, transport=httpx.MockTransport(server)
        )
    )
    yield db
    db.close()


@pytest.fixture
def store(remote: Any, server: FakeServer) -> Any:
    server.answer(200, INFO)
    s = remote.store("s")
    server.requests.clear()
    return s


def envelope(code: str, message: str = "m", **details: Any) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details}}


# --- keys in paths ------------------------------------------------------------------------------

WEIRD_KEYS = [
    ".",
    "..",
    "a/b",
    "/",
    "//x//",
    "../../v1/usage",
    "a b",
    "?#%&=+",
    "%2F",
    "%",
    "~-_",
    "é",
    "emoji 🎉",
    "tab\tnewline\n",
    "back\\slash",
    '"quoted"',
    "x" * 1024,
]


@pytest.mark.parametrize("key", WEIRD_KEYS)
def test_a_key_is_one_path_segment_that_decodes_back_to_it(store, server, key):
    server.answer(200, RECORD)
    store.get(key)
    path = server.last.url.raw_path.decode()
    prefix = "/v1/stores/s/records/"
    assert path.startswith(prefix)
    segment = path[len(prefix) :]
    assert "/" not in segment
    assert "." not in segment
    assert unquote(segment) == key


@pytest.mark.parametrize("key", WEIRD_KEYS)
def test_every_byte_outside_unreserved_is_percent_encoded(store, server, key):
    server.answer(200, RECORD)
    store.set(key, 1)
    segment = server.last.url.raw_path.decode().rsplit("/", 1)[1]
    raw = segment.encode()
    i = 0
    while i < len(raw):
        if raw[i] == ord("%"):
            assert raw[i + 1 : i + 3].decode().isalnum()
            assert raw[i + 1 : i + 3].upper() == raw[i + 1 : i + 3]
            i += 3
        else:
            assert raw[i] in UNRESERVED, chr(raw[i])
            i += 1


def test_store_names_are_encoded_so_dots_survive(remote, server):
    server.answer(200, INFO)
    remote.store_info("..")
    assert server.last.url.raw_path == b"/v1/stores/%2E%2E"


def test_listing_parameters_are_percent_encoded_in_the_query(store, server):
    server.answer(200, {"keys": ["a b"], "next_cursor": None})
    assert list(store.keys(prefix="a b&c=+/é", start="a b", reverse=True, limit=7)) == ["a b"]
    url = server.last.url
    assert url.path == "/v1/stores/s/keys"
    query = url.query.decode()
    assert "+" not in query
    assert dict(httpx.QueryParams(query)) == {
        "prefix": "a b&c=+/é",
        "start": "a b",
        "limit": "7",
        "reverse": "true",
    }


def test_keys_pages_through_the_cursor(store, server):
    server.answer(200, {"keys": ["a", "b"], "next_cursor": "Yg"})
    server.answer(200, {"keys": ["c"], "next_cursor": None})
    assert list(store.keys(limit=2)) == ["a", "b", "c"]
    assert httpx.QueryParams(server.requests[1].url.query)["cursor"] == "Yg"


def test_records_use_the_records_listing(store, server):
    server.answer(200, {"records": [RECORD], "next_cursor": None})
    records = list(store.records(prefix="k"))
    assert [r.value for r in records] == [RECORD["value"]]
    assert server.last.url.path == "/v1/stores/s/records"


# --- routes -------------------------------------------------------------------------------------


def test_set_puts_the_value_ttl_and_if_version(store, server):
    server.answer(200, RECORD)
    record = store.set("k", {"a": [1, 2.0]}, ttl=60, if_version=3)
    assert record == runstate.Record.from_json(RECORD)
    assert server.sent() == [
        ("PUT", "/v1/stores/s/records/k", {"value": {"a": [1, 2.0]}, "ttl": 60.0, "if_version": 3})
    ]


def test_set_without_options_sends_only_the_value(store, server):
    server.answer(200, RECORD)
    store["k"] = None
    assert server.sent() == [("PUT", "/v1/stores/s/records/k", {"value": None})]


def test_get_reads_the_record_route(store, server):
    server.answer(200, RECORD)
    assert store.get("k") == {"a": [1, 2.0]}
    assert server.sent() == [("GET", "/v1/stores/s/records/k", None)]


def test_delete_with_if_version_passes_it_in_the_query(store, server):
    server.answer(200, {"deleted": True})
    assert store.delete("k", if_version=4) is True
    assert server.sent() == [("DELETE", "/v1/stores/s/records/k?if_version=4", None)]


@pytest.mark.parametrize(
    ("call", "op", "result"),
    [
        (lambda s: s.increment("n", 2), {"op": "increment", "key": "n", "amount": 2}, 5),
        (lambda s: s.has("n"), {"op": "has", "key": "n"}, True),
        (
            lambda s: s.append_many("l", [1, [2]], flatten=True),
            {"op": "append_many", "key": "l", "values": [1, [2]], "flatten": True},
            3,
        ),
        (lambda s: s.clear(), {"op": "clear"}, 4),
        (lambda s: s.set_ttl("k", None), {"op": "set_ttl", "key": "k", "ttl": None}, True),
    ],
)
def test_other_operations_are_one_op_batches(store, server, call, op, result):
    server.answer(200, {"results": [result]})
    assert call(store) == result
    assert server.sent() == [("POST", "/v1/stores/s/batch", {"checks": [], "ops": [op]})]


def test_an_atomic_block_is_one_batch_with_its_checks(store, server):
    server.answer(200, {"results": [RECORD, 1]})
    with store.atomic() as tx:
        tx.check("k", version=0)
        tx.set("k", 1)
        tx.increment("n")
    assert tx.results == [runstate.Record.from_json(RECORD), 1]
    assert server.sent() == [
        (
            "POST",
            "/v1/stores/s/batch",
            {
                "checks": [{"key": "k", "version": 0}],
                "ops": [
                    {"op": "set", "key": "k", "value": 1},
                    {"op": "increment", "key": "n", "amount": 1},
                ],
            },
        )
    ]


def test_store_admin_routes(remote, server):
    usage = {"records": 1, "bytes": 10, "quota_bytes": 100, "stores": [INFO]}
    for body in ({"stores": [INFO]}, INFO, INFO, INFO, INFO, INFO, None, usage):
        server.answer(200, body)
    assert remote.stores()[0].name == "s"
    remote.store_info("s")
    remote.create_store("s", default_ttl=5)
    remote.update_store("s", default_ttl=None)
    remote.add_dependent("s", "wf/1")
    remote.remove_dependent("s", "wf/1")
    remote.delete_store("s")
    assert remote.usage().quota_bytes == 100
    assert server.sent() == [
        ("GET", "/v1/stores", None),
        ("GET", "/v1/stores/s", None),
        ("POST", "/v1/stores", {"name": "s", "default_ttl": 5.0}),
        ("PATCH", "/v1/stores/s", {"default_ttl": None}),
        ("PUT", "/v1/stores/s/dependents/wf%2F1", None),
        ("DELETE", "/v1/stores/s/dependents/wf%2F1", None),
        ("DELETE", "/v1/stores/s", None),
        ("GET", "/v1/usage", None),
    ]


def test_selecting_an_existing_store_only_reads_it(remote, server):
    server.answer(200, INFO)
    remote.store("s")
    assert server.sent() == [("GET", "/v1/stores/s", None)]


def test_selecting_a_missing_store_creates_it(remote, server):
    server.answer(404, envelope("not_found")).answer(201, INFO).answer(200, INFO)
    assert remote.store("s", workflow="wf").name == "s"
    assert [(m, p) for m, p, _ in server.sent()] == [
        ("GET", "/v1/stores/s"),
        ("POST", "/v1/stores"),
        ("PUT", "/v1/stores/s/dependents/wf"),
    ]


def test_losing_the_race_to_create_a_store_is_fine(remote, server):
    server.answer(404, envelope("not_found")).answer(409, envelope("conflict"))
    assert remote.store("s").name == "s"


def test_the_token_is_sent_as_a_bearer_header(store, server):
    server.answer(200, RECORD)
    store.get("k")
    assert server.last.headers["authorization"] == "Bearer rs_secret"


def test_without_a_token_no_authorization_header_is_sent(server):
    transport = httpx.MockTransport(server)
    server.answer(200, {"stores": []})
    with runstate.Database(HttpCore("http://runstate.test", timeout=5, transport=transport)) as db:
        db.stores()
    assert "authorization" not in server.last.headers


def test_invalid_input_raises_before_anything_is_sent(store, server):
    with pytest.raises(runstate.InvalidKey):
        store.set("", 1)
    with pytest.raises(runstate.InvalidValue):
        store.set("k", float("nan"))
    with pytest.raises(runstate.InvalidRequest):
        store.increment("k", 1.5)
    with pytest.raises(runstate.InvalidRequest):
        store._db.create_store("s", default_ttl=float("nan"))
    assert server.requests == []


def test_an_unencodable_batched_default_is_invalid_value(store, server):
    with pytest.raises(runstate.InvalidValue), store.atomic() as tx:
        tx.get("k", default=object())
    assert server.requests == []


def test_a_url_without_http_scheme_is_refused():
    with pytest.raises(runstate.InvalidRequest):
        runstate.connect("127.0.0.1:8765")


# --- tokens, import and export: what the command line calls ------------------------------------

TOKEN = {
    "id": "tok_0123456789abcdef",
    "role": "read",
    "stores": ["a"],
    "workspace": "acme",
    "created_at": "2026-01-01T00:00:00.000000Z",
}


def test_token_routes_send_only_what_is_given_and_read_token_info(remote, server):
    core = remote.core
    server.answer(201, {"token": "rs_new", **TOKEN}).answer(200, {"tokens": [TOKEN]})
    server.answer(200, {"revoked": True}).answer(404, envelope("not_found"))
    token, info = core.issue_token(role="read", stores=["a"])
    assert (token, info.to_json()) == ("rs_new", TOKEN)
    assert [i.to_json() for i in core.list_tokens("acme")] == [TOKEN]
    assert core.revoke_token("tok_a.b") is True
    assert core.revoke_token("tok_gone") is False
    assert server.sent() == [
        ("POST", "/v1/tokens", {"role": "read", "stores": ["a"]}),
        ("GET", "/v1/tokens?workspace=acme", None),
        ("DELETE", "/v1/tokens/tok_a%2Eb", None),
        ("DELETE", "/v1/tokens/tok_gone", None),
    ]


def test_an_import_streams_ndjson_and_waits_for_its_answer_without_a_read_timeout(remote, server):
    lines = [b'{"key": "a", "value": 1}\n', b'{"key": "b", "value": 2}\n']
    server.answer(200, {"imported": 2})
    assert remote.core.import_records("s", iter(lines)) == 2
    request = server.last
    assert (request.method, request.url.path) == ("POST", "/v1/stores/s/import")
    assert request.headers["content-type"] == "application/x-ndjson"
    assert request.content == b"".join(lines)
    assert request.extensions["timeout"]["read"] is None


def test_an_import_error_is_raised_with_its_line(remote, server):
    server.answer(400, envelope("invalid_request", "line 2: bad", line=2, reason="invalid_key"))
    with pytest.raises(runstate.InvalidRequest) as caught:
        remote.core.import_records("s", b"{}\n")
    assert caught.value.details == {"line": 2, "reason": "invalid_key"}


def test_an_export_yields_the_streamed_body(remote, server):
    body = b'{"key": "a", "value": 1, "expires_at": null}\n'
    server.answer(200, body)
    assert b"".join(remote.core.export_records("s.1")) == body
    assert server.last.url.raw_path == b"/v1/stores/s%2E1/export"


def test_an_export_error_raises_its_class_before_any_bytes(remote, server):
    server.answer(403, envelope("forbidden"))
    with pytest.raises(runstate.Forbidden):
        next(remote.core.export_records("s"))


def test_an_export_over_a_failing_network_is_unavailable():
    def fail(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow")

    core = HttpCore("http://runstate.test", timeout=5, transport=httpx.MockTransport(fail))
    with runstate.Database(core), pytest.raises(runstate.Unavailable):
        list(core.export_records("s"))


# --- 404s that are results ----------------------------------------------------------------------


def test_get_of_a_missing_record_is_the_default(store, server):
    server.answer(404, envelope("not_found", key="k"))
    assert store.get("k", default={"d": 1}) == {"d": 1}


def test_get_record_of_a_missing_record_is_none(store, server):
    server.answer(404, envelope("not_found"))
    assert store.get_record("k") is None


def test_a_missing_key_through_the_mapping_is_a_key_error(store, server):
    server.answer(404, envelope("not_found")).answer(404, envelope("not_found"))
    with pytest.raises(KeyError):
        store["k"]
    with pytest.raises(KeyError):
        del store["k"]


def test_delete_of_a_missing_record_is_false(store, server):
    server.answer(404, envelope("not_found"))
    assert store.delete("k") is False


def test_an_if_version_set_of_a_missing_record_raises_not_found(store, server):
    server.answer(404, envelope("not_found", "no record 'k'", key="k", expected=3, actual=0))
    with pytest.raises(runstate.NotFound) as caught:
        store.set("k", 1, if_version=3)
    assert caught.value.details == {"key": "k", "expected": 3, "actual": 0}


def test_info_of_a_missing_store_raises_not_found(remote, server):
    server.answer(404, envelope("not_found", store="x"))
    with pytest.raises(runstate.NotFound):
        remote.store_info("x")


def test_a_get_that_fails_otherwise_raises(store, server):
    server.answer(403, envelope("forbidden", "not this store"))
    with pytest.raises(runstate.Forbidden):
        store.get("k")


# --- the error envelope -------------------------------------------------------------------------


@pytest.mark.parametrize("code", sorted(ERRORS))
def test_every_error_code_maps_back_to_its_class(store, server, code):
    cls = ERRORS[code]
    server.answer(cls.status, envelope(code, "what happened", key="n", limit=3))
    with pytest.raises(cls) as caught:
        store.increment("n")
    error = caught.value
    assert type(error) is cls
    assert (error.code, error.message, error.details) == (
        code,
        "what happened",
        {"key": "n", "limit": 3},
    )


@pytest.mark.parametrize("code", sorted(ERRORS))
def test_every_error_code_maps_back_on_the_record_routes(store, server, code):
    cls = ERRORS[code]
    server.answer(cls.status, envelope(code, "m", x=1))
    with pytest.raises(cls):
        store.set("k", 1)


def test_a_lone_op_loses_the_batch_index_the_user_never_saw(store, server):
    server.answer(422, envelope("type_mismatch", "m", key="n", op=0))
    with pytest.raises(runstate.TypeMismatch) as caught:
        store.increment("n")
    assert caught.value.details == {"key": "n"}


def test_a_batch_keeps_the_index_of_its_failing_op_or_check(store, server):
    server.answer(422, envelope("type_mismatch", "m", key="n", op=1))
    server.answer(409, envelope("conflict", "m", key="k", check=0))
    tx = store.atomic()
    tx.set("k", 1)
    tx.increment("n")
    with pytest.raises(runstate.TypeMismatch) as caught:
        tx.commit()
    assert caught.value.details == {"key": "n", "op": 1}
    tx = store.atomic()
    tx.check("k", 0)
    with pytest.raises(runstate.Conflict) as caught:
        tx.commit()
    assert caught.value.details == {"key": "k", "check": 0}


def test_an_unknown_code_is_the_base_error(store, server):
    server.answer(418, envelope("teapot", "short and stout"))
    with pytest.raises(runstate.Error) as caught:
        store.increment("n")
    assert type(caught.value) is runstate.Error
    assert caught.value.message == "short and stout"


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_a_server_error_without_an_envelope_is_unavailable(store, server, status):
    server.answer(status, b"<html>Bad Gateway</html>")
    with pytest.raises(runstate.Unavailable) as caught:
        store.increment("n")
    assert caught.value.details == {"status": status}


def test_a_client_error_without_an_envelope_is_the_base_error(store, server):
    server.answer(400, b"nope")
    with pytest.raises(runstate.Error) as caught:
        store.increment("n")
    assert type(caught.value) is runstate.Error


@pytest.mark.parametrize("body", [b"<html>a captive portal</html>", {"unexpected": 1}, [1]])
def test_a_success_that_is_not_a_runstate_answer_is_unavailable(store, server, body):
    server.answer(200, body)
    with pytest.raises(runstate.Unavailable):
        store.get("k")


# --- the network --------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize(
    "call",
    [
        lambda db: db.stores(),
        lambda db: db.store("s"),
        lambda db: db.usage(),
    ],
)
def test_a_dead_server_is_unavailable(call: Callable[[Any], Any]):
    with runstate.connect(f"http://127.0.0.1:{free_port()}", token="t", timeout=2) as db:
        with pytest.raises(runstate.Unavailable) as caught:
            call(db)
    assert caught.value.code == "unavailable"
    assert "t" not in caught.value.details.values()


@pytest.mark.parametrize(
    "failure",
    [httpx.ConnectError("refused"), httpx.ReadTimeout("slow"), httpx.RemoteProtocolError("eof")],
)
def test_every_network_failure_is_unavailable(failure: httpx.RequestError):
    def fail(request: httpx.Request) -> httpx.Response:
        raise failure

    core = HttpCore(
        "http://runstate.test", "rs_secret", timeout=5, transport=httpx.MockTransport(fail)
    )
    with runstate.Database(core) as db, pytest.raises(runstate.Unavailable) as caught:
        db.usage()
    assert caught.value.details == {"reason": type(failure).__name__}
    assert "rs_secret" not in caught.value.message


def test_a_database_closes_its_client(server):
    core = HttpCore("http://runstate.test", timeout=5, transport=httpx.MockTransport(server))
    with runstate.Database(core):
        pass
    assert core._client.is_closed


# --- against the served app -----------------------------------------------------------------------


def test_one_client_reuses_one_kept_alive_connection(tmp_path):
    from http_server import serve_database

    with (
        serve_database(tmp_path, durability="fast") as served,
        runstate.connect(served.url, token=served.admin_token) as db,
    ):
        peers: list[Any] = []

        def peer(response: httpx.Response) -> None:
            peers.append(response.extensions["network_stream"].get_extra_info("client_addr"))

        db.core._client.event_hooks["response"].append(peer)
        store = db.store("s")
        for i in range(10):
            store.set(f"k{i}", "x" * 100_000)  # large bodies are read to the end
            store.get(f"missing{i}")  # 404s too
            store.increment("n")
            with pytest.raises(runstate.TypeMismatch):
                store.append("n", 1)
        assert len(peers) == 2 + 40  # the store is looked up, then created
        assert len(set(peers)) == 1


@pytest.mark.parametrize("key", WEIRD_KEYS)
def test_weird_keys_round_trip_through_the_served_app(tmp_path, key):
    from http_server import serve_database

    with (
        serve_database(tmp_path, durability="fast") as served,
        runstate.connect(served.url, token=served.admin_token) as db,
    ):
        store = db.store("s")
        assert store.set(key, key).key == key
        assert store.get(key) == key
        assert store.get_record(key).key == key
        assert list(store.keys()) == [key]
        assert list(store.keys(prefix=key)) == [key]
        assert list(store.keys(start=key)) == [key]
        assert store.delete(key) is True
        assert store.delete(key) is False
        assert store.increment(key) == 1


@pytest.mark.parametrize("name", [".", "..", "a.b", ":", "-_.:"])
def test_dotted_store_names_and_workflows_reach_their_own_store(tmp_path, name):
    from http_server import serve_database

    with (
        serve_database(tmp_path, durability="fast") as served,
        runstate.connect(served.url, token=served.admin_token) as db,
    ):
        db.store(name, workflow="wf.1").set("k", name)
        assert db.store_info(name).dependents == ["wf.1"]
        assert db.remove_dependent(name, "wf.1").dependents == []
        assert [info.name for info in db.stores()] == [name]
        db.delete_store(name)
        assert db.stores() == []
