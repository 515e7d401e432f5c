"""QUALITY R8 and R9 under concurrency and across restarts, against real `runstate serve`
processes (one, or two on the same database) through HTTP.

R8, the quota:
- many clients writing near the quota at once (sets that grow and shrink, appends, deletes):
  the stored bytes never pass the quota, watched all along by a reader of /v1/usage; every
  refused write changed nothing (each client's keys end exactly as its acknowledged writes
  left them); the usage equals a record-by-record recount; the same with two servers;
- across `kill -9` and a restart without `--quota-bytes`: the quota the database was created
  with holds, usage is unchanged and still equals a recount.

R9, expiry:
- clients reading (single gets, listings, batch gets) while other clients write records with
  short TTLs and the server purges every 50 ms: no read that began after a record's
  ``expires_at`` returns it;
- across `kill -9` and a restart: a record that expired while the server was down is gone,
  the others keep their expiry; the quota its bytes took is free at once.

Each test takes the `server_database` fixture: SQLite here, PostgreSQL too once conftest lists
it. `make soak` (``RUNSTATE_SOAK=1``) runs longer loads.
"""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import runstate
from conftest import encoded
from runstate.model import datetime_micros
from served_process import ServerDatabase, ServerProcess, running_servers, soak
from served_process import server_database as server_database  # the fixture
from threads import in_threads

pytestmark = pytest.mark.slow

QUOTA = 40_000
WRITERS = soak(8, 16)
WRITES = soak(120, 1500)


def _recount(db: Any) -> tuple[int, int]:
    records = [r for info in db.stores() for r in db.store(info.name).records()]
    return len(records), sum(len(r.key.encode()) + len(encoded(r.value).encode()) for r in records)


def _quota_load(servers: list[ServerProcess], seed: int) -> dict[str, Any]:
    """`WRITERS` clients near the quota; returns what each key must hold (None: absent) and
    counts of acknowledged and refused writes. A watcher checks usage all along."""
    expected: dict[str, Any] = {}
    counts = {"ok": 0, "refused": 0, "peak": 0}
    lock = threading.Lock()
    done = threading.Event()
    over: list[int] = []

    def watch() -> None:
        with servers[-1].connect() as db:
            while not done.is_set():
                used = db.usage().bytes
                counts["peak"] = max(counts["peak"], used)
                if used > QUOTA:
                    over.append(used)

    def writer(number: int) -> None:
        rng = random.Random(seed * 1000 + number)
        mine: dict[str, Any] = {}
        with servers[number % len(servers)].connect(timeout=30) as db:
            store = db.store(f"q{number % 3}")
            for n in range(WRITES):
                key = f"w{number}/{rng.randrange(4)}"
                roll = rng.random()
                try:
                    if roll < 0.55:
                        value = "x" * rng.randrange(500, 6000)
                        store.set(key, value)
                        mine[key] = value
                    elif roll < 0.8:
                        if isinstance(mine.get(key), str):  # append needs a list
                            store.delete(key)
                            mine[key] = None
                        store.append(key, n)
                        mine[key] = [*(mine.get(key) or []), n]
                    else:
                        store.delete(key)
                        mine[key] = None
                    ok = True
                except runstate.QuotaExceeded:
                    ok = False
                with lock:
                    counts["ok" if ok else "refused"] += 1
        with lock:
            expected.update({f"{store.name}\0{k}": v for k, v in mine.items()})

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        in_threads(WRITERS, writer)
    finally:
        done.set()
        watcher.join()
    assert over == [], f"usage passed the quota of {QUOTA}: {over[:5]}"
    assert counts["peak"] > 0.8 * QUOTA, f"the watcher never saw usage near the quota: {counts}"
    assert counts["refused"] > 0, f"the load never reached the quota: {counts}"
    assert counts["ok"] > counts["refused"] / 10, f"the load hardly wrote: {counts}"
    return {"expected": expected, **counts}


def _check_quota_state(db: Any, expected: dict[str, Any]) -> None:
    usage = db.usage()
    assert usage.quota_bytes == QUOTA
    assert usage.bytes <= QUOTA
    assert (usage.records, usage.bytes) == _recount(db)
    for name_key, value in expected.items():
        name, key = name_key.split("\0")
        assert db.store(name).get(key) == value, f"{name}/{key}: a refused write applied"


@pytest.mark.parametrize("count", [1, 2], ids=["one-server", "two-servers"])
def test_the_quota_holds_under_concurrent_writers_and_across_a_kill(
    server_database: ServerDatabase, tmp_path: Path, count: int
):
    args = ("--quota-bytes", str(QUOTA))
    with running_servers(server_database, tmp_path, count, args) as servers:
        result = _quota_load(servers, seed=count)
        with servers[0].connect() as db:
            _check_quota_state(db, result["expected"])
        token = servers[0].admin_token
        for server in servers:
            server.kill()
    # Restarted without --quota-bytes: the database keeps the quota it was given.
    with ServerProcess(server_database.url, tmp_path / "again.log", token=token) as server:
        server.start()
        with server.connect() as db:
            _check_quota_state(db, result["expected"])
            for info in db.stores():  # deletes are always allowed: make some room
                for key in db.store(info.name).keys():
                    if QUOTA - db.usage().bytes < 100:
                        db.store(info.name).delete(key)
            room = QUOTA - db.usage().bytes
            with pytest.raises(runstate.QuotaExceeded):
                db.store("q0").set("big", "x" * room)  # the quotes and the key pass it
            db.store("q0").set("fits", "x" * (room - len("fits") - 2))
            assert db.usage().bytes == QUOTA
    assert server_database.integrity() == "ok"


# --- R9: expiry ---------------------------------------------------------------------------------

READERS = soak(4, 6)
TTL_SECONDS = soak(2.0, 20.0)


def _micros(record: Any) -> int:
    assert record.expires_at is not None
    return datetime_micros(record.expires_at)


def _now_us() -> int:
    return time.time_ns() // 1000


def test_no_expired_record_is_ever_read_while_records_expire(
    server_database: ServerDatabase, tmp_path: Path
):
    """A read that began (client clock, the server's own) at or after a record's expires_at
    must not return it: the server reads its clock after the request began."""
    expiry: dict[int, int] = {}  # write number -> expires_at (µs)
    reads: list[tuple[int, int]] = []  # (began µs, write number seen)
    lock = threading.Lock()
    stop = threading.Event()
    purging = {"RUNSTATE_PURGE_INTERVAL": "0.05"}
    with running_servers(server_database, tmp_path, 1, env=purging) as (server,):

        def writer(number: int) -> None:
            rng = random.Random(number)
            with server.connect() as db:
                store = db.store("ttl")
                n = number
                deadline = time.monotonic() + TTL_SECONDS
                while time.monotonic() < deadline:
                    record = store.set(f"k{rng.randrange(6)}", n, ttl=rng.uniform(0.01, 0.25))
                    with lock:
                        expiry[n] = _micros(record)
                    n += 2
                stop.set()

        def reader(number: int) -> None:
            with server.connect() as db:
                store = db.store("ttl")
                kind = number % 3
                while not stop.is_set():
                    if kind == 0:  # one request per key, each with its own start
                        for i in range(6):
                            began = _now_us()
                            record = store.get_record(f"k{i}")
                            if record is not None:
                                with lock:
                                    reads.append((began, record.value))
                        continue
                    began = _now_us()
                    if kind == 1:
                        seen = [r.value for r in store.records()]
                    else:
                        with store.atomic() as tx:
                            for i in range(6):
                                tx.get(f"k{i}")
                        seen = [v for v in tx.results if v is not None]
                    with lock:
                        reads.extend((began, n) for n in seen)

        in_threads(2 + READERS, lambda i: writer(i) if i < 2 else reader(i))
    late = [(began, n, expiry[n]) for began, n in reads if began >= expiry[n]]
    assert late == [], f"expired records returned (began, write, expires_at): {late[:5]}"
    assert len(reads) > 50, "the readers saw too little to prove anything"


def test_expiry_survives_a_kill_and_frees_the_quota(
    server_database: ServerDatabase, tmp_path: Path
):
    quota = 20_000
    args = ("--quota-bytes", str(quota))
    with ServerProcess(server_database.url, tmp_path / "serve.log", args=args) as server:
        server.start()
        with server.connect() as db:
            store = db.store("ttl")
            short = store.set("short", "s" * 15_000, ttl=1.0)
            long = store.set("long", "l" * 1000, ttl=600)
            store.set("forever", "f" * 1000)
            with pytest.raises(runstate.QuotaExceeded):
                store.set("new", "n" * 5000)
        server.kill()
        time.sleep(max(0.0, (_micros(short) - _now_us()) / 1e6) + 0.05)
        server.start()
        with server.connect() as db:
            store = db.store("ttl")
            assert store.get("short") is None
            assert sorted(store.keys()) == ["forever", "long"]
            assert store.get_record("long").expires_at == long.expires_at
            assert 590 < store.ttl("long") <= 600
            assert store.ttl("forever") is None
            usage = db.usage()
            assert (
                (usage.records, usage.bytes)
                == _recount(db)
                == (2, len("long") + len("forever") + 2 * 1002)
            )
            store.set("new", "n" * 15_000)  # the expired record's bytes are free
            assert store.get("new") == "n" * 15_000
    assert server_database.integrity() == "ok"
