"""`runstate serve` answers through granian's RSGI protocol (`runstate.server.rsgi`): the same
pipeline as the ASGI app the other HTTP tests drive, so these check only what the adapter does:
the path granian decodes is encoded again without changing any correctly encoded key, bodies and
streams pass through, and a graceful stop drains the writer."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from http_server import quote_key
from runstate.server.rsgi import raw_path
from served_process import ServerProcess


@pytest.mark.parametrize(
    ("decoded", "raw"),
    [
        ("/v1/stores/s/records/a/b", b"/v1/stores/s/records/a%2Fb"),
        ("/v1/stores/s/records/.", b"/v1/stores/s/records/."),
        ("/v1/stores/s/records/%/x y", b"/v1/stores/s/records/%25%2Fx%20y"),
        ("/v1/stores/s/dependents/wf/1", b"/v1/stores/s/dependents/wf%2F1"),
        ("/v1/stores/s/records", b"/v1/stores/s/records"),
        ("/v1/stores/s/records/\ufffd", b"/v1/stores/s/records/%FF"),
        ("/v1/actions/flow.get_value", b"/v1/actions/flow.get_value"),
    ],
)
def test_the_decoded_path_is_encoded_again_for_the_router(decoded: str, raw: bytes) -> None:
    assert raw_path(decoded) == raw


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    directory = tmp_path_factory.mktemp("rsgi")
    server = ServerProcess(f"sqlite:///{directory / 'db.sqlite'}", directory / "serve.log")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def http(served: ServerProcess) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {served.admin_token}"}
    with httpx.Client(base_url=served.url, headers=headers, timeout=10) as client:
        yield client


KEYS = ["plain", "a/b", ".", "..", "%2F", "sp ace", "?#&=+", "emoji \U0001f525", "a" * 1024]


@pytest.mark.parametrize("key", KEYS)
def test_every_key_round_trips_through_the_served_path(http: httpx.Client, key: str) -> None:
    path = f"/v1/stores/rsgi/records/{quote_key(key)}"
    put = http.put(path, json={"value": key})
    assert put.status_code == 200, put.text
    assert put.json()["key"] == key
    got = http.get(path)
    assert got.status_code == 200
    assert got.json()["key"] == key
    assert got.json()["value"] == key


def test_a_key_that_is_not_utf8_is_refused(http: httpx.Client) -> None:
    answer = http.put("/v1/stores/rsgi/records/%FF", json={"value": 1})
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "invalid_key"


def test_errors_bodies_and_limits_pass_through(http: httpx.Client) -> None:
    missing = http.get("/v1/stores/rsgi/records/never")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"
    unauthorized = httpx.get(str(http.base_url) + "/v1/stores")
    assert unauthorized.status_code == 401
    assert unauthorized.headers["www-authenticate"].startswith("Bearer")
    bad = http.put("/v1/stores/rsgi/records/k", content=b"{not json")
    assert bad.json()["error"]["code"] == "invalid_request"
    big = http.put("/v1/stores/rsgi/records/k", content=b" " * (2 << 20))
    assert big.status_code == 413
    batch = http.post(
        "/v1/stores/rsgi/batch", json={"ops": [{"op": "increment", "key": "n", "amount": 2}]}
    )
    assert batch.json() == {"results": [2]}


def test_import_and_export_stream_through(http: httpx.Client) -> None:
    lines = b"".join(
        json.dumps({"key": f"i{n:04d}", "value": n, "expires_at": None}).encode() + b"\n"
        for n in range(3000)
    )
    imported = http.post(
        "/v1/stores/rsgi-import/import",
        content=iter([lines[:50_000], lines[50_000:]]),  # chunked: no Content-Length
        headers={"content-type": "application/x-ndjson"},
    )
    assert imported.json() == {"imported": 3000}, imported.text
    exported = http.get("/v1/stores/rsgi-import/export")
    assert len(exported.content.splitlines()) == 3000


def test_a_watch_streams_events_as_they_commit(http: httpx.Client) -> None:
    with http.stream("GET", "/v1/stores/rsgi-watch/watch") as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        lines = stream.iter_lines()
        assert next(lines).startswith(": runstate change feed")
        http.put("/v1/stores/rsgi-watch/records/w", json={"value": "seen"})
        data = next(line for line in lines if line.startswith("data: "))
        assert json.loads(data[6:])["value"] == "seen"


def test_a_graceful_stop_keeps_every_acknowledged_write(tmp_path: Path) -> None:
    server = ServerProcess(f"sqlite:///{tmp_path / 'db.sqlite'}", tmp_path / "serve.log")
    server.start()
    with server.connect() as db:
        store = db.store("s")
        for n in range(50):
            store.increment("n")
    server.terminate()
    server.start()
    try:
        with server.connect() as db:
            assert db.store("s").get("n") == 50
    finally:
        server.stop()


@pytest.mark.parametrize("path", ["/v1/stores/s/records/plain-key_1.~", "/healthz", "/"])
def test_a_path_with_nothing_to_encode_is_its_own_raw_path(path: str) -> None:
    assert raw_path(path) == path.encode()


class _GranianHeaders:
    """What the adapter uses of granian's RSGIHeaders (str names and values)."""

    def __init__(self, items: dict[str, str]) -> None:
        self._items = items

    def get(self, key: str, default: object = None) -> object:
        return self._items.get(key, default)

    def __contains__(self, key: str) -> bool:
        return key in self._items

    def items(self) -> list[tuple[str, str]]:
        return list(self._items.items())


def test_headers_are_read_from_granians_map_as_bytes() -> None:
    from runstate.server.rsgi import _Headers

    headers = _Headers(_GranianHeaders({"authorization": "Bearer x", "content-length": "2"}))
    assert headers.get(b"authorization") == b"Bearer x"
    assert headers.get(b"cookie") is None
    assert headers.get(b"cookie", b"") == b""
    assert b"content-length" in headers
    assert b"cookie" not in headers
    assert headers[b"content-length"] == b"2"
    with pytest.raises(KeyError):
        headers[b"origin"]
    assert sorted(headers) == [b"authorization", b"content-length"]
    assert len(headers) == 2
    assert dict(headers) == {b"authorization": b"Bearer x", b"content-length": b"2"}


def test_the_router_remembers_matches_but_raises_every_error_again() -> None:
    from runstate.errors import InvalidKey, NotFound
    from runstate.server import app

    router = app.Router(app.ROUTES)
    first = router.match("GET", b"/v1/stores/s/records/k")
    assert router.match("GET", b"/v1/stores/s/records/k") is first
    assert first[1] == {"store": "s", "key": "k"}
    for _ in range(2):
        with pytest.raises(InvalidKey):
            router.match("GET", b"/v1/stores/s/records/a%00b")
        with pytest.raises(NotFound):
            router.match("GET", b"/v1/nothing/here")
    long_key = b"k" * 300
    router.match("GET", b"/v1/stores/s/records/" + long_key)
    assert ("GET", b"/v1/stores/s/records/" + long_key) not in router._memo
    for i in range(app._MEMO + 10):
        router.match("GET", b"/v1/stores/s/records/k%d" % i)
    assert len(router._memo) <= app._MEMO
