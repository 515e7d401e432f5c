"""The change feed (SPEC §2.3, docs/http-api.md "Change feed"): Server-Sent Events and the
library's `Store.watch` iterators, embedded, remote and async.

What it must prove: a watcher sees every committed change exactly once and in commit order,
also under concurrent writers and from another server or process; a resumed stream
(``Last-Event-ID``) loses nothing and doubles nothing, and says so when events it needed were
trimmed; expired records produce ``expire`` events; the prefix filter; heartbeats.
"""

from __future__ import annotations

import asyncio
import queue
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest

import runstate
from http_server import start_server
from runstate.client import _EventStream

WAIT = 10.0  # seconds a test waits for an event before it fails


@dataclass
class Block:
    """One SSE block: its fields (the last of each) and comment lines."""

    fields: dict[str, str] = field(default_factory=dict)
    comments: list[str] = field(default_factory=list)

    @property
    def data(self) -> Any:
        return orjson.loads(self.fields["data"])


class Watcher:
    """``GET /v1/stores/{store}/watch`` read on a thread; `next()` waits for the next block
    that carries an event (`blocks()` for every block)."""

    def __init__(self, served: Any, store: str, query: str = "", last_id: int | None = None):
        self._blocks: queue.Queue[Block | BaseException] = queue.Queue()
        self._stop = threading.Event()
        self._client = served.client(served.admin_token)
        headers = {} if last_id is None else {"Last-Event-ID": str(last_id)}
        self._started = threading.Event()
        self._thread = threading.Thread(
            target=self._read, args=(f"/v1/stores/{store}/watch{query}", headers), daemon=True
        )
        self._thread.start()
        assert self._started.wait(WAIT), "the watch did not start"

    def _read(self, path: str, headers: dict[str, str]) -> None:
        try:
            with self._client.stream("GET", path, headers=headers) as answer:
                assert answer.status_code == 200, answer.read()
                block = Block()
                for line in answer.iter_lines():
                    if self._stop.is_set():
                        return
                    if line == "":
                        self._blocks.put(block)
                        self._started.set()
                        block = Block()
                    elif line.startswith(":"):
                        block.comments.append(line[1:].strip())
                    else:
                        name, _, value = line.partition(": ")
                        block.fields[name] = value
        except BaseException as exc:
            self._blocks.put(exc)
            self._started.set()

    def block(self) -> Block:
        found = self._blocks.get(timeout=WAIT)
        if isinstance(found, BaseException):
            raise found
        return found

    def next(self) -> Block:
        while True:
            block = self.block()
            if "data" in block.fields:
                return block

    def events(self, count: int) -> list[Block]:
        return [self.next() for _ in range(count)]

    def quiet(self, seconds: float = 0.3) -> bool:
        """True if no event arrives within `seconds`."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                found = self._blocks.get(timeout=left)
            except queue.Empty:
                return True
            if isinstance(found, Block) and "data" in found.fields:
                return False
        return True

    def close(self) -> None:
        self._stop.set()
        self._client.close()


@pytest.fixture
def served(tmp_path: Any, clock: Any, server_db: dict[str, Any]) -> Iterator[Any]:
    server = start_server(tmp_path, clock, durability="fast", watch_heartbeat=0.2, **server_db)
    yield server
    server.close()


@pytest.fixture
def http(served: Any) -> Iterator[Any]:
    with served.client(served.admin_token) as client:
        yield client


@pytest.fixture
def watch(served: Any) -> Iterator[Any]:
    opened: list[Watcher] = []

    def open_watch(store: str, query: str = "", last_id: int | None = None) -> Watcher:
        watcher = Watcher(served, store, query, last_id)
        opened.append(watcher)
        return watcher

    yield open_watch
    for watcher in opened:
        watcher.close()


# --- the wire format ----------------------------------------------------------------------------


def test_each_change_is_one_event_with_store_key_version_and_value(http, watch):
    watcher = watch("orders")
    put = http.put("/v1/stores/orders/records/k%2F1", json={"value": {"n": 1.5e3, "b": [1]}})
    version = put.json()["version"]
    http.delete("/v1/stores/orders/records/k%2F1")
    http.delete("/v1/stores/orders/records")
    first, second, third = watcher.events(3)
    assert first.fields["event"] == "set"
    assert first.fields["id"] == str(version)
    assert first.data == {"type": "set", "store": "orders", "key": "k/1", "version": version,
                          "value": {"n": 1500.0, "b": [1]}}  # fmt: skip
    assert second.fields["event"] == "delete"
    assert second.data == {"type": "delete", "store": "orders", "key": "k/1",
                           "version": int(second.fields["id"]), "value": None}  # fmt: skip
    assert third.fields["event"] == "clear"
    assert (third.data["key"], third.data["value"]) == (None, None)
    assert version < second.data["version"] < third.data["version"]


def test_a_watch_starts_from_the_moment_of_the_request(http, watch):
    http.put("/v1/stores/s/records/before", json={"value": 1})
    watcher = watch("s")
    http.put("/v1/stores/s/records/after", json={"value": 2})
    assert watcher.next().data["key"] == "after"


def test_the_stream_is_server_sent_events_with_heartbeats(served):
    with (
        served.client(served.admin_token) as http,
        http.stream("GET", "/v1/stores/s/watch") as answer,
    ):
        assert answer.headers["content-type"] == "text/event-stream"
        assert answer.headers["cache-control"] == "no-cache"
        lines = answer.iter_lines()
        assert next(lines).startswith(":")
        assert next(lines).startswith("id: ")
        assert next(lines) == ""
        started = time.monotonic()
        assert next(lines) == ": ping"
        assert 0.1 < time.monotonic() - started < 5


def test_a_heartbeat_carries_the_position_past_other_stores_changes(http, watch, server_db):
    if server_db:  # PostgreSQL: a store's position moves only with its own events
        pytest.skip("feed positions are per store on PostgreSQL: nothing to carry past")
    watcher = watch("quiet")
    version = http.put("/v1/stores/busy/records/k", json={"value": 1}).json()["version"]
    while True:  # the heartbeat moves the resume position without an event
        block = watcher.block()
        assert "data" not in block.fields
        if block.fields.get("id") == str(version):
            assert block.comments == ["ping"]
            break


def test_watching_a_store_that_does_not_exist_yet_is_allowed(http, watch):
    watcher = watch("later")
    http.put("/v1/stores/later/records/k", json={"value": 1})
    assert watcher.next().data["key"] == "k"


def test_a_bad_last_event_id_is_invalid_request(http):
    answer = http.get("/v1/stores/s/watch", headers={"Last-Event-ID": "x1"})
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "invalid_request"


def test_the_prefix_filters_keys_but_not_clears(http, watch):
    watcher = watch("s", "?prefix=user%3A")
    for key in ("other", "user:1", "username", "user:2"):
        http.put(f"/v1/stores/s/records/{key}", json={"value": key})
    http.delete("/v1/stores/s/records")
    got = [(b.data["type"], b.data["key"]) for b in watcher.events(3)]
    assert got == [("set", "user:1"), ("set", "user:2"), ("clear", None)]


def test_another_stores_changes_never_show(http, watch):
    watcher = watch("mine")
    http.put("/v1/stores/theirs/records/k", json={"value": 1})
    http.put("/v1/stores/mine/records/k", json={"value": 2})
    assert watcher.next().data == {
        "type": "set",
        "store": "mine",
        "key": "k",
        "version": watcher_version(http, "mine", "k"),
        "value": 2,
    }
    assert watcher.quiet()


def watcher_version(http: Any, store: str, key: str) -> int:
    return int(http.get(f"/v1/stores/{store}/records/{key}").json()["version"])


def test_a_store_deleted_and_recreated_is_followed_by_name(http, watch):
    watcher = watch("s")
    http.put("/v1/stores/s/records/a", json={"value": 1})
    assert http.delete("/v1/stores/s").status_code == 200
    http.put("/v1/stores/s/records/b", json={"value": 2})
    got = [(b.data["type"], b.data["key"]) for b in watcher.events(3)]
    assert got == [("set", "a"), ("clear", None), ("set", "b")]


def test_a_deleted_stores_events_never_reach_a_store_that_reuses_its_id(http, watch):
    http.put("/v1/stores/first/records/secret", json={"value": "theirs"})
    assert http.delete("/v1/stores/first").status_code == 200
    http.put("/v1/stores/second/records/k", json={"value": "mine"})  # may take first's id
    watcher = watch("second", last_id=0)
    assert watcher.next().data["value"] == "mine"
    assert watcher.quiet()


# --- exactly once, in order ---------------------------------------------------------------------


def test_a_watcher_sees_every_change_of_1000_concurrent_writes_once_in_order(served, watch):
    watcher = watch("race")

    def write(worker: int) -> list[int]:
        with served.client(served.admin_token) as http:
            return [
                http.put(f"/v1/stores/race/records/k{worker}-{i % 7}", json={"value": i}).json()[
                    "version"
                ]
                for i in range(50)
            ]

    with ThreadPoolExecutor(20) as pool:
        versions = [v for written in pool.map(write, range(20)) for v in written]
    assert len(versions) == 1000
    seen = [block.data["version"] for block in watcher.events(1000)]
    assert seen == sorted(set(seen))  # in commit order, none twice
    assert seen == sorted(versions)  # every write, and only them
    assert watcher.quiet()


def test_resuming_with_last_event_id_loses_nothing_and_doubles_nothing(http, watch):
    watcher = watch("s")
    for i in range(10):
        http.put(f"/v1/stores/s/records/k{i}", json={"value": i})
    first = watcher.events(4)
    watcher.close()  # the connection drops after four events
    for i in range(10, 20):
        http.put(f"/v1/stores/s/records/k{i}", json={"value": i})
    resumed = watch("s", last_id=int(first[-1].fields["id"]))
    rest = resumed.events(16)
    values = [b.data["value"] for b in (*first, *rest)]
    assert values == list(range(20))
    assert resumed.quiet()


def test_a_resume_past_the_retention_reports_a_gap_first(tmp_path, clock):
    with start_server(tmp_path, clock, event_retention=1, watch_heartbeat=0.2) as served:
        with served.client(served.admin_token) as http:
            old = http.put("/v1/stores/s/records/a", json={"value": 1}).json()["version"]
            for i in range(5):
                http.put(f"/v1/stores/s/records/b{i}", json={"value": i})
            clock.advance(10)
            served.engine.purge_expired()  # every event but the newest is past retention
            watcher = Watcher(served, "s", last_id=old)
            try:
                gap, kept = watcher.events(2)
                assert gap.fields["event"] == "gap"
                assert gap.data == {"type": "gap", "store": "s", "key": None,
                                    "version": int(gap.fields["id"]), "value": None}  # fmt: skip
                assert (kept.data["key"], kept.data["value"]) == ("b4", 4)
                assert int(gap.fields["id"]) < kept.data["version"]
            finally:
                watcher.close()


def test_expired_records_produce_expire_events(http, watch, served, clock):
    watcher = watch("s")
    http.put("/v1/stores/s/records/short", json={"value": 1, "ttl": 5})
    http.put("/v1/stores/s/records/long", json={"value": 2, "ttl": 500})
    assert watcher.next().data["key"] == "short"
    assert watcher.next().data["key"] == "long"
    clock.advance(10)
    served.engine.purge_expired()
    expired = watcher.next().data
    assert (expired["type"], expired["key"], expired["value"]) == ("expire", "short", None)
    assert watcher.quiet()


# --- other servers and processes ----------------------------------------------------------------


def test_a_watcher_on_another_server_sees_the_writes(tmp_path, clock):
    with (
        start_server(tmp_path, clock, watch_heartbeat=0.2) as first,
        start_server(tmp_path, clock, watch_heartbeat=0.2) as second,
        first.client(first.admin_token) as http,
    ):
        watcher = Watcher(second, "shared")
        try:
            for i in range(3):
                http.put(f"/v1/stores/shared/records/k{i}", json={"value": i})
            assert [b.data["value"] for b in watcher.events(3)] == [0, 1, 2]
        finally:
            watcher.close()


WRITER = """
import sys, runstate
with runstate.open(sys.argv[1], purge_interval=None) as db:
    store = db.store("s")
    for i in range(5):
        store[f"k{i}"] = i
"""


def test_an_embedded_watcher_sees_another_process_write(tmp_path):
    path = tmp_path / "state.db"
    with runstate.open(path, purge_interval=None) as db:
        events = _watch_in_thread(db.store("s"), 5)
        subprocess.run([sys.executable, "-c", WRITER, str(path)], check=True, timeout=60)
        got = events.get(timeout=WAIT)
    assert [(e.type, e.key, e.value) for e in got] == [("set", f"k{i}", i) for i in range(5)]


# --- the library's iterators --------------------------------------------------------------------


def _watch_in_thread(store: Any, count: int, **options: Any) -> queue.Queue[Any]:
    """`count` events of `store.watch(**options)`, collected on a thread once it started."""
    found: queue.Queue[Any] = queue.Queue()
    started = threading.Event()

    def run() -> None:
        events = []
        iterator = store.watch(**options)
        started.set()
        for event in iterator:
            events.append(event)
            if len(events) == count:
                break
        found.put(events)

    threading.Thread(target=run, daemon=True).start()
    assert started.wait(WAIT)
    time.sleep(0.3)  # the iterator's first poll (or request) marks "now"
    return found


def test_store_watch_iterates_every_change(make_db):
    db = make_db()
    store = db.store("s")
    events = _watch_in_thread(store, 4, prefix="k")
    store["k1"] = 1
    store["other"] = 0
    store.increment("k2")
    del store["k1"]
    store.clear()
    got = events.get(timeout=WAIT)
    assert [(e.type, e.key, e.value) for e in got] == [
        ("set", "k1", 1), ("set", "k2", 1), ("delete", "k1", None), ("clear", None, None)
    ]  # fmt: skip
    assert all(isinstance(e, runstate.Event) for e in got)
    assert [e.version for e in got] == sorted({e.version for e in got})


def test_store_watch_resumes_after_a_version(make_db):
    db = make_db()
    store = db.store("s")
    versions = [store.set(f"k{i}", i).version for i in range(5)]
    events = _watch_in_thread(store, 3, after=versions[1])
    got = events.get(timeout=WAIT)
    assert [e.value for e in got] == [2, 3, 4]


def test_the_remote_iterator_reconnects_and_resumes_when_the_stream_ends(served):
    with runstate.connect(served.url, token=served.admin_token) as db:
        store = db.store("s")
        events = _watch_in_thread(store, 6)
        store["a"], store["b"] = 1, 2
        feed, loop = served.state.feed, served.state.feed._loop
        loop.call_soon_threadsafe(feed.close)  # the server ends every stream...
        time.sleep(0.3)
        store["c"], store["d"] = 3, 4
        loop.call_soon_threadsafe(setattr, feed, "closing", False)  # ...and serves again
        time.sleep(0.3)
        store["e"], store["f"] = 5, 6
        got = events.get(timeout=WAIT)
    assert [e.value for e in got] == [1, 2, 3, 4, 5, 6]


def test_an_event_cut_off_mid_way_is_read_again_on_reconnect():
    stream = _EventStream("s", None)
    assert stream.line(": hello") is None
    assert stream.line("id: 7") is None
    assert stream.line("") is None
    assert stream.position == 7
    stream.line("id: 9")
    stream.line('data: {"type":"set","store":"s","key":"k","version":9,"value":1}')
    assert stream.position == 7  # not dispatched: a reconnect asks for it again
    event = stream.line("")
    assert event == runstate.Event("set", "s", "k", 9, 1)
    assert stream.position == 9


def test_the_async_iterator(served):
    async def main() -> list[runstate.Event]:
        async with runstate.connect_async(served.url, token=served.admin_token) as db:
            store = await db.store("s")
            got: list[runstate.Event] = []

            async def collect() -> None:
                async for event in store.watch():
                    got.append(event)
                    if len(got) == 2:
                        return

            task = asyncio.create_task(collect())
            await asyncio.sleep(0.3)
            await store.set("a", 1)
            await store.append("l", "x")
            await asyncio.wait_for(task, WAIT)
            return got

    got = asyncio.run(main())
    assert [(e.type, e.key, e.value) for e in got] == [("set", "a", 1), ("set", "l", ["x"])]


def test_a_slow_watcher_never_slows_writers(served, http, watch):
    """A watcher that reads nothing while 5 MB of events are written: the writes go on at full
    speed (the event table is the buffer, not the server's memory); the events wait there."""
    with socket.create_connection(("127.0.0.1", served.port), timeout=WAIT) as slow:
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        slow.sendall(
            b"GET /v1/stores/s/watch HTTP/1.1\r\nHost: x\r\n"
            b"Authorization: Bearer %s\r\n\r\n" % served.admin_token.encode()
        )
        head = slow.recv(65536)  # the headers and the stream's first block
        found = re.search(rb"\nid: (\d+)\n", head)
        assert found, head
        started = time.monotonic()
        for i in range(100):
            http.put(f"/v1/stores/s/records/k{i}", json={"value": "x" * 50_000})
        assert time.monotonic() - started < 10
    resumed = watch("s", last_id=int(found[1]))
    assert [b.data["key"] for b in resumed.events(100)] == [f"k{i}" for i in range(100)]


# --- the command line and the engine ------------------------------------------------------------


def test_runstate_watch_prints_each_change(tmp_path):
    path = tmp_path / "state.db"
    command = [sys.executable, "-c", "import sys; from runstate.cli import main; sys.exit(main())",
               "watch", "s", "--db", str(path), "--json", "--prefix", "k"]  # fmt: skip
    watcher = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda: [lines.put(x) for x in watcher.stdout], daemon=True).start()
        with runstate.open(path, purge_interval=None) as db:
            store = db.store("s")
            deadline = time.monotonic() + WAIT
            written = 0
            while lines.empty():  # until the command has started and seen a write
                assert time.monotonic() < deadline, "runstate watch printed nothing"
                store[f"k{written}"] = written
                store["other"] = written
                written += 1
                time.sleep(0.1)
            first = orjson.loads(lines.get())
            assert (first["type"], first["store"]) == ("set", "s")
            assert first["key"].startswith("k")
            store.clear()
            while (event := orjson.loads(lines.get(timeout=WAIT)))["type"] == "set":
                assert event["key"].startswith("k")
            assert event == {"type": "clear", "store": "s", "key": None,
                             "version": event["version"], "value": None}  # fmt: skip
    finally:
        watcher.kill()
        watcher.wait(10)


def test_runstate_watch_lines_for_a_person():
    from runstate.cli import _show_event

    assert (
        _show_event(runstate.Event("set", "s", "k", 3, {"a": 1})) == 'set k = {"a":1} (version 3)'
    )
    assert _show_event(runstate.Event("expire", "s", "k", 4)) == "expire k (version 4)"
    assert _show_event(runstate.Event("clear", "s", None, 5)) == "clear (version 5)"


def test_the_names_of_deleted_stores_are_forgotten_with_their_events(tmp_path):
    from runstate import ops
    from runstate.engine.sqlite import SqliteEngine

    now = [1_800_000_000.0]
    engine = SqliteEngine(tmp_path / "state.db", clock=lambda: now[0], event_retention=1)
    try:
        engine.execute("default", "gone", ops.Set("k", 1))
        engine.delete_store("default", "gone")
        engine.execute("default", "kept", ops.Set("k", 1))

        def names() -> list[str]:
            rows = engine._reader().execute("SELECT name FROM store_names ORDER BY name")
            return [name for (name,) in rows]

        engine.purge_expired()
        assert names() == ["gone", "kept"]  # its events are still in the feed
        now[0] += 10
        engine.purge_expired()
        assert names() == ["kept"]
        assert engine.events_after("default", "gone", 0).gap is not None
    finally:
        engine.close()
