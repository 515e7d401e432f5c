"""Several servers and engines on one PostgreSQL database (issue 5; QUALITY R2, R8, R9 across
processes): what `engine.postgres` promises when it is not alone.

- R2 on two real `runstate serve` processes (durable) sharing one schema: 32 clients x 300
  increments of one key spread over both return exactly 1..9600, each once; 32 x 50 appends
  keep every element once and each client's order; a compare-and-set race across the servers
  has exactly one winner per version, each winner building on the previous one.
- The change feed across servers: SSE watchers on both servers see every write made through
  either, in commit order, nothing lost, doubled or invented, per key in write order.
- Migrations: 8 engines opening one new schema at once all succeed and each migration is
  applied once.
- TTL purge by 3 engines at once while writes go on: every record expires exactly once in the
  feed; usage equals a recount; the integrity check is ok.
- The quota with two servers and many stores (the per-store allotments): the stored bytes,
  sampled straight from the database all along, never pass it; refused writes change nothing;
  usage equals a recount.
"""

from __future__ import annotations

import itertools
import queue
import random
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg
import pytest

import runstate
from conftest import _recount, fresh_schema, postgres_url
from http_server import Served, start_server
from runstate.engine.postgres import MIGRATIONS, PostgresEngine
from served_process import open_server_database, running_servers, soak
from threads import in_threads

pytestmark = pytest.mark.slow

CLIENTS = 32
INCREMENTS = 300
APPENDS = soak(50, 100)  # each append rewrites the whole list: O(n^2) bytes


# --- R2 on two server processes -------------------------------------------------------------------


def test_two_server_processes_lose_no_update(tmp_path: Path):
    with (
        open_server_database("postgres", tmp_path) as database,
        running_servers(database, tmp_path, 2) as servers,
    ):
        urls = [server.url for server in servers]
        token = servers[0].admin_token
        assert token is not None

        def connect(number: int) -> Any:
            return runstate.connect(urls[number % 2], token=token, timeout=30)

        with connect(0) as db:
            db.store("r2")

        def increments(number: int) -> list[int]:
            with connect(number) as db:
                store = db.store("r2")
                return [store.increment("counter") for _ in range(INCREMENTS)]

        returned = [v for values in in_threads(CLIENTS, increments) for v in values]
        assert sorted(returned) == list(range(1, CLIENTS * INCREMENTS + 1))

        def appends(number: int) -> list[int]:
            with connect(number) as db:
                store = db.store("r2")
                return [store.append("list", [number, i]) for i in range(APPENDS)]

        lengths = [n for values in in_threads(CLIENTS, appends) for n in values]
        assert sorted(lengths) == list(range(1, CLIENTS * APPENDS + 1))

        target = soak(100, 1000)

        def cas(number: int) -> list[tuple[int, int]]:
            """Add one to "cas" by compare-and-set until it reaches `target`; the wins as
            (version read, version written)."""
            wins = []
            with connect(number) as db:
                store = db.store("r2")
                while True:
                    record = store.get_record("cas")
                    value, version = (0, 0) if record is None else (record.value, record.version)
                    if value >= target:
                        return wins
                    try:
                        written = store.set("cas", value + 1, if_version=version)
                    except runstate.Conflict:
                        continue
                    wins.append((version, written.version))

        wins = sorted(w for found in in_threads(8, cas) for w in found)
        with connect(1) as db:
            store = db.store("r2")
            assert store.get("counter") == CLIENTS * INCREMENTS
            stored = store.get("list")
            final = store.get_record("cas")
        assert sorted(map(tuple, stored)) == [
            (n, i) for n in range(CLIENTS) for i in range(APPENDS)
        ]
        for number in range(CLIENTS):
            assert [i for n, i in stored if n == number] == list(range(APPENDS))
        assert final is not None
        assert final.value == target == len(wins)
        read = [version for version, _ in wins]
        assert len(set(read)) == len(read), "two winners for one version"
        assert read[0] == 0
        for (_, written), (next_read, _) in itertools.pairwise(wins):
            assert next_read == written, "a win that did not build on the previous one"
        assert wins[-1][1] == final.version
        assert database.integrity() == "ok"


# --- the change feed across servers ---------------------------------------------------------------


class Watcher:
    """``GET /v1/stores/{store}/watch`` on a thread: the events (SSE blocks with data)."""

    def __init__(self, served: Served, store: str) -> None:
        self.events: list[dict[str, Any]] = []
        self.ids: list[int] = []
        self.failure: BaseException | None = None
        self._started = threading.Event()
        self._client = httpx.Client(
            base_url=served.url,
            headers={"Authorization": f"Bearer {served.admin_token}"},
            timeout=httpx.Timeout(10, read=60),
        )
        self._thread = threading.Thread(target=self._read, args=(store,), daemon=True)
        self._thread.start()
        assert self._started.wait(10), "the watch did not start"

    def _read(self, store: str) -> None:
        try:
            with self._client.stream("GET", f"/v1/stores/{store}/watch") as answer:
                assert answer.status_code == 200
                fields: dict[str, str] = {}
                for line in answer.iter_lines():
                    if line == "":
                        self._started.set()
                        if "data" in fields:
                            self.ids.append(int(fields["id"]))
                            self.events.append(orjson.loads(fields["data"]))
                        fields = {}
                    elif not line.startswith(":"):
                        name, _, value = line.partition(": ")
                        fields[name] = value
        except BaseException as exc:
            if not self._client.is_closed:
                self.failure = exc
            self._started.set()

    def wait_for(self, count: int, seconds: float = 20) -> None:
        deadline = time.monotonic() + seconds
        while len(self.events) < count and time.monotonic() < deadline:
            assert self.failure is None, self.failure
            time.sleep(0.02)
        time.sleep(0.3)  # anything past `count` (doubled or invented events) shows too

    def close(self) -> None:
        self._client.close()


@pytest.fixture
def two_servers(tmp_path: Path) -> Iterator[tuple[Served, Served]]:
    """Two in-process servers (each its engine, pool and listener) on one fresh schema."""
    with fresh_schema() as url:
        first = start_server(tmp_path / "a", db=url, durability="fast", watch_heartbeat=0.5)
        try:
            second = start_server(tmp_path / "b", db=url, durability="fast", watch_heartbeat=0.5)
            try:
                yield first, second
            finally:
                second.close()
        finally:
            first.close()


def test_watchers_on_either_server_see_every_write_through_both(two_servers):
    a, b = two_servers
    with runstate.connect(b.url, token=b.admin_token) as db:
        db.store("feed")
    watchers = [Watcher(a, "feed"), Watcher(b, "feed")]
    written: list[tuple[str, str, int, Any]] = []  # type, key, version, value
    lock = threading.Lock()

    def writer(number: int, served: Served, count: int) -> None:
        rng = random.Random(number)
        with runstate.connect(served.url, token=a.admin_token, timeout=30) as db:
            store = db.store("feed")
            for n in range(count):
                key = f"w{number}/k{rng.randrange(4)}"
                if rng.random() < 0.15:
                    if store.delete(key):  # a key of this writer's only: no race
                        with lock:
                            written.append(("delete", key, -1, None))
                    continue
                value = {"w": number, "n": n}
                version = store.set(key, value).version
                with lock:
                    written.append(("set", key, version, value))

    try:
        # through B only, then through both at once
        in_threads(3, lambda n: writer(n, b, 60))
        in_threads(6, lambda n: writer(10 + n, (a, b)[n % 2], 60))
        for watcher in watchers:
            watcher.wait_for(len(written))
    finally:
        for watcher in watchers:
            watcher.close()
    for watcher in watchers:
        assert watcher.failure is None, watcher.failure
        events = watcher.events
        assert len(events) == len(written), "events lost or doubled"
        assert watcher.ids == sorted(set(watcher.ids)), "ids not increasing: not commit order"
        sets = [e for e in events if e["type"] == "set"]
        assert all(e["version"] == i for e, i in zip(events, watcher.ids, strict=True))
        assert sorted((e["key"], e["version"]) for e in sets) == sorted(
            (key, version) for kind, key, version, _ in written if kind == "set"
        )
        deletes = sorted(e["key"] for e in events if e["type"] == "delete")
        assert deletes == sorted(key for kind, key, _, _ in written if kind == "delete")
        # per key: the feed gives that key's writes in the order they were made
        for key in {key for _, key, _, _ in written}:
            mine = [(kind, value) for kind, k, _, value in written if k == key]
            seen = [(e["type"], e["value"]) for e in events if e["key"] == key]
            assert seen == mine, key
    assert watchers[0].events == watchers[1].events


# --- migrations -----------------------------------------------------------------------------------


def test_engines_opening_one_new_schema_at_once_apply_each_migration_once():
    base = postgres_url()
    schema = f"m_{uuid.uuid4().hex[:16]}"
    url = f"{base}{'&' if '?' in base else '?'}schema={schema}"
    engines: list[PostgresEngine] = []
    try:
        engines = in_threads(8, lambda _: PostgresEngine(url, pool_size=1))
        # and processes, which start whenever their interpreter is ready
        code = (
            "import sys; from runstate.engine.postgres import PostgresEngine; "
            "PostgresEngine(sys.argv[1], pool_size=1).close()"
        )
        processes = [
            subprocess.Popen([sys.executable, "-c", code, url], stderr=subprocess.PIPE)
            for _ in range(4)
        ]
        for process in processes:
            _, err = process.communicate(timeout=60)
            assert process.returncode == 0, err.decode()
        with psycopg.connect(base) as conn:
            applied = conn.execute(
                f'SELECT version, name FROM "{schema}".schema_migrations ORDER BY version'
            ).fetchall()
            workspaces = conn.execute(
                f'SELECT name FROM "{schema}".workspaces ORDER BY name'
            ).fetchall()
        assert applied == [(n, name) for n, (name, _) in enumerate(MIGRATIONS, start=1)]
        assert workspaces == [("default",)]
        with runstate.open(url, purge_interval=None, pool_size=1) as db:
            assert db.store("after").increment("n") == 1
        assert all(engine.integrity_check() == "ok" for engine in engines)
    finally:
        for engine in engines:
            engine.close()
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


# --- TTL purge and usage by several engines -------------------------------------------------------


def test_concurrent_purges_expire_each_record_once_and_keep_usage_exact():
    stores = ("p0", "p1", "p2")
    with fresh_schema() as url:
        dbs = [runstate.open(url, purge_interval=None, pool_size=3) for _ in range(3)]
        try:
            stop = threading.Event()
            temporary: list[tuple[str, str]] = []
            lock = threading.Lock()

            def writer(number: int) -> int:
                db = dbs[number % 3]
                n = 0
                deadline = time.monotonic() + soak(2.0, 10.0)
                while time.monotonic() < deadline:
                    name = stores[n % 3]
                    key = f"w{number}/{n}"
                    if n % 5 == 0:
                        db.store(name).set(f"keep/{key}", {"n": n})
                    else:
                        db.store(name).set(key, "x" * (n % 40), ttl=random.uniform(0.05, 0.3))
                        with lock:
                            temporary.append((name, key))
                    n += 1
                return n

            def purger(number: int) -> int:
                purged = 0
                while not stop.is_set():
                    purged += dbs[number].purge_expired()
                    time.sleep(0.01)
                return purged

            purgers = [threading.Thread(target=purger, args=(n,)) for n in range(3)]
            for thread in purgers:
                thread.start()
            try:
                in_threads(4, writer)
                time.sleep(0.35)  # every temporary record has expired
            finally:
                stop.set()
                for thread in purgers:
                    thread.join()
            leftover = sum(db.purge_expired() for db in dbs)
            db = dbs[0]
            schema = url.rsplit("schema=", 1)[1]
            with psycopg.connect(postgres_url()) as conn:
                events = conn.execute(
                    f'SELECT s.name, e.type, e.key FROM "{schema}".events e '
                    f'JOIN "{schema}".stores s ON s.id = e.store_id ORDER BY e.seq'
                ).fetchall()
            expired: dict[tuple[str, str], int] = {}
            for name, kind, key in events:
                if kind == "expire":
                    expired[name, key] = expired.get((name, key), 0) + 1
            doubled = {k: c for k, c in expired.items() if c > 1}
            assert doubled == {}, f"records expired more than once: {list(doubled)[:5]}"
            assert sorted(expired) == sorted(temporary), "expire events missing or invented"
            assert not any(kind == "delete" for _, kind, _ in events)
            for name in stores:
                assert all(key.startswith("keep/") for key in db.store(name).keys())
            usage = db.usage()
            counts = _recount(db)
            assert (usage.records, usage.bytes) == (
                sum(r for r, _ in counts.values()),
                sum(b for _, b in counts.values()),
            )
            assert {s.name: (s.records, s.bytes) for s in usage.stores} == counts
            assert db.core.recount("default") == (usage.records, usage.bytes)
            assert db.core.integrity_check() == "ok"
            assert len(temporary) > 100, "the load wrote too little to prove anything"
            print(f"{len(temporary)} records expired, {leftover} by the last purge")
        finally:
            for opened in dbs:
                opened.close()


# --- the quota across servers and stores ----------------------------------------------------------

QUOTA = 60_000


def test_quota_holds_across_two_servers_and_many_stores(tmp_path: Path):
    with fresh_schema() as url:
        schema = url.rsplit("schema=", 1)[1]
        servers = [
            start_server(tmp_path / name, db=url, durability="fast", quota_bytes=QUOTA)
            for name in ("a", "b")
        ]
        try:
            stop = threading.Event()
            samples: queue.SimpleQueue[tuple[int, int]] = queue.SimpleQueue()

            def sampler() -> None:
                """The committed bytes, recounted from the records and from the counters."""
                with psycopg.connect(postgres_url(), autocommit=True) as conn:
                    while not stop.is_set():
                        with conn.transaction():
                            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                            (records,) = conn.execute(
                                "SELECT coalesce(sum(octet_length(key) + octet_length(value)), 0)"
                                f' FROM "{schema}".records'
                            ).fetchone() or (0,)
                            (counted,) = conn.execute(
                                f'SELECT coalesce(sum(bytes), 0) FROM "{schema}".stores'
                            ).fetchone() or (0,)
                        samples.put((int(records), int(counted)))
                        time.sleep(0.005)

            watching = threading.Thread(target=sampler)
            watching.start()

            def writer(number: int) -> dict[str, Any]:
                rng = random.Random(number)
                served = servers[number % 2]
                expected: dict[str, Any] = {}
                refused = 0
                with runstate.connect(served.url, token=servers[0].admin_token) as db:
                    store = db.store(f"q{number}")
                    for n in range(soak(120, 1000)):
                        key = f"k{rng.randrange(5)}"
                        if rng.random() < 0.2:
                            store.delete(key)
                            expected.pop(key, None)
                            continue
                        value = "v" * rng.randrange(100, 4000)
                        try:
                            store.set(key, value)
                        except runstate.QuotaExceeded:
                            refused += 1
                            continue
                        expected[key] = value
                    return {"expected": expected, "refused": refused}

            try:
                results = in_threads(8, writer)
            finally:
                stop.set()
                watching.join()
            seen = []
            while not samples.empty():
                seen.append(samples.get())
            assert seen
            over = [s for s in seen if max(s) > QUOTA]
            assert over == [], f"stored bytes past the quota of {QUOTA}: {over[:5]}"
            with runstate.connect(servers[1].url, token=servers[0].admin_token) as db:
                for number, result in enumerate(results):
                    store = db.store(f"q{number}")
                    assert dict(store.items()) == result["expected"], "a refused write applied"
                usage = db.usage()
                counts = _recount(db)
                assert usage.quota_bytes == QUOTA
                assert usage.bytes <= QUOTA
                assert usage.bytes == sum(b for _, b in counts.values())
                assert {s.name: (s.records, s.bytes) for s in usage.stores} == counts
            assert servers[0].engine.integrity_check() == "ok"
            refused = sum(r["refused"] for r in results)
            assert refused > 0, "the load never reached the quota"
            print(f"{len(seen)} samples, max {max(max(s) for s in seen)} bytes; {refused} refused")
        finally:
            for served in servers:
                served.close()


def test_a_refused_write_does_not_leave_its_group_without_the_quota_lock():
    """A unit of a group commit that takes the workspace's quota lock and is then refused
    (`QuotaExceeded`) rolls back to its savepoint, which releases that row lock. A later unit
    of the same group that needs more quota must lock the workspace again, or another server
    can hand out the same free bytes at the same time and together they pass the quota."""
    quota = 100_000

    def value(size: int) -> bytes:
        return b'"' + b"x" * size + b'"'

    with fresh_schema() as url:
        first = PostgresEngine(url, quota_bytes=quota, pool_size=2)
        second = PostgresEngine(url, pool_size=2)
        try:
            waiting, holding, release = threading.Event(), threading.Event(), threading.Event()
            results: dict[str, list[Any]] = {}

            def refused(txn: Any) -> None:
                txn.put("huge", value(150_000), None)  # past the quota: refused

            def then_fits(txn: Any) -> int:
                waiting.set()
                holding.wait(10)  # the other server is handing out quota right now
                return int(txn.put("big", value(60_000), None).version)

            def hold(txn: Any) -> int:
                row = txn.put("big", value(60_000), None)
                holding.set()
                release.wait(10)
                return int(row.version)

            group = [("default", "a", refused), ("default", "c", then_fits)]
            one = threading.Thread(target=lambda: results.update(a=first.write_many(group)))
            one.start()
            assert waiting.wait(10)
            other = threading.Thread(
                target=lambda: results.update(b=second.write_many([("default", "b", hold)]))
            )
            other.start()
            one.join(1.5)  # it must wait for the other's quota lock: give it the chance not to
            release.set()
            one.join(30)
            other.join(30)
            assert isinstance(results["a"][0], runstate.QuotaExceeded)
            fitted = [r for r in (results["a"][1], results["b"][0]) if isinstance(r, int)]
            assert len(fitted) == 1, f"both 60 kB writes fitted in {quota} bytes: {results}"
            assert first.usage("default").bytes <= quota
            assert first.integrity_check() == "ok"
        finally:
            release.set()
            first.close()
            second.close()
