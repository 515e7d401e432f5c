"""QUALITY R1 at CI size: `kill -9` of `runstate serve` under a write load, restart, verify.

A real server runs as a subprocess (`runstate serve --durability durable` on a free loopback
port, on each backend of `served_process.SERVER_BACKENDS`: a temporary SQLite file, and a fresh
PostgreSQL database once that backend is listed in conftest); client threads write through
HTTP with `runstate.connect`, each on keys of its own (plus one counter they share), recording
what the server acknowledged and what was in flight when the connection broke. Each cycle kills
the server's whole process group with SIGKILL in the middle of the load, restarts it, and
checks through HTTP:

- no acknowledged write is lost, and no value appears that was never written;
- a counter is between its acknowledged increments and those plus the ones in flight;
- a list holds every acknowledged append once, in order, and nothing never appended;
- a set holds every acknowledged member and nothing never added;
- the usage equals a record-by-record recount, and a new write's version is above every
  version acknowledged before the kill (versions are never reused);
- the database's integrity check is ``ok`` (SQLite: ``PRAGMA integrity_check``) and every
  restart took < 5 s.

What the server did with an in-flight write is then known, so the model takes the observed
state as its new starting point for the next cycle.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import runstate
from conftest import encoded
from served_process import ServerDatabase, ServerProcess, soak
from served_process import server_database as server_database  # the fixture

pytestmark = pytest.mark.slow

# QUALITY R1: >= 20 cycles at CI size; `make soak` runs 80 (RUNSTATE_CRASH_CYCLES overrides).
CYCLES = int(os.environ.get("RUNSTATE_CRASH_CYCLES", soak(20, 80)))
THREADS = 6
LOAD_SECONDS = (0.3, 0.7)  # how long the load runs before each kill (uniform)
RESTART_LIMIT = 5.0
STORE = "crash"
PAD = "x" * 64


@dataclass
class Model:
    """What one thread knows of its own keys: acknowledged and in-flight writes."""

    thread: int
    next_n: int = 1
    set_acked: int = 0  # the n of the last acknowledged set (0: none yet)
    set_attempted: int = 0  # the n of the last set sent
    set_history: set[int] = field(default_factory=set)  # every n ever sent
    counter_acked: int = 0
    counter_in_flight: int = 0
    shared_acked: int = 0
    shared_in_flight: int = 0
    list_acked: list[int] = field(default_factory=list)
    list_sent: set[int] = field(default_factory=set)
    members_acked: set[int] = field(default_factory=set)
    members_sent: set[int] = field(default_factory=set)
    errors: list[str] = field(default_factory=list)
    top_version: int = 0  # the highest version an acknowledged set answered
    acknowledged: int = 0  # writes the server acknowledged, over all cycles
    cut_off: int = 0  # writes in flight when the server was killed

    @property
    def keys(self) -> dict[str, str]:
        t = self.thread
        return {
            "set": f"value/{t}",
            "counter": f"counter/{t}",
            "list": f"list/{t}",
            "set_members": f"members/{t}",
        }


def _one_write(store: Any, model: Model, kind: str) -> None:
    keys = model.keys
    n = model.next_n
    model.next_n += 1
    if kind == "set":
        model.set_attempted = n
        model.set_history.add(n)
        record = store.set(keys["set"], {"t": model.thread, "n": n, "pad": PAD})
        model.set_acked = n
        model.top_version = max(model.top_version, record.version)
    elif kind == "increment":
        model.counter_in_flight += 1
        store.increment(keys["counter"])
        model.counter_in_flight -= 1
        model.counter_acked += 1
    elif kind == "shared":
        model.shared_in_flight += 1
        store.increment("counter/shared")
        model.shared_in_flight -= 1
        model.shared_acked += 1
    elif kind == "append":
        model.list_sent.add(n)
        store.append(keys["list"], n)
        model.list_acked.append(n)
    else:
        model.members_sent.add(n)
        store.add_to_set(keys["set_members"], n)
        model.members_acked.add(n)


KINDS = ("set", "increment", "shared", "append", "add_to_set")


def _load(store: Any, model: Model, stop: threading.Event) -> None:
    """Write until `stop` or until the server goes away; an unanswered write stays in flight."""
    rng = random.Random(model.thread * 1000 + model.next_n)
    while not stop.is_set():
        try:
            _one_write(store, model, rng.choice(KINDS))
            model.acknowledged += 1
        except runstate.Unavailable:
            model.cut_off += 1
            return  # the server is gone: what was in flight stays in flight
        except runstate.Error as exc:
            model.errors.append(f"{exc.code}: {exc.message}")
            return


def _verify(db: Any, models: list[Model]) -> None:
    """Check every model against the stored state, then adopt the state as settled."""
    store = db.store(STORE)
    shared_low = sum(m.shared_acked for m in models)
    shared_high = shared_low + sum(m.shared_in_flight for m in models)
    shared = store.get("counter/shared", 0)
    assert shared_low <= shared <= shared_high, (shared_low, shared, shared_high)
    known = {"counter/shared", "probe"}
    for model in models:
        assert not model.errors, model.errors
        keys = model.keys
        known |= set(keys.values())

        value = store.get(keys["set"])
        if value is None:
            assert model.set_acked == 0, f"acknowledged set of {keys['set']} lost"
        else:
            assert value["t"] == model.thread, value
            assert value["pad"] == PAD, value
            assert value["n"] in model.set_history, f"{value} was never written"
            assert model.set_acked <= value["n"] <= model.set_attempted, (model, value)
            model.set_acked = model.set_attempted = value["n"]

        counter = store.get(keys["counter"], 0)
        low, high = model.counter_acked, model.counter_acked + model.counter_in_flight
        assert low <= counter <= high, (keys["counter"], low, counter, high)
        model.counter_acked, model.counter_in_flight = counter, 0

        items = store.get(keys["list"], [])
        assert items == sorted(set(items)), f"{keys['list']} has duplicates or is out of order"
        assert set(items) <= model.list_sent, f"{keys['list']} holds values never appended"
        assert set(model.list_acked) <= set(items), f"acknowledged appends lost: {keys['list']}"
        model.list_acked = list(items)

        members = set(store.get(keys["set_members"], []))
        assert members <= model.members_sent, f"{keys['set_members']} holds values never added"
        assert model.members_acked <= members, f"acknowledged members lost: {keys['set_members']}"
        model.members_acked = members
    assert set(store.keys()) <= known, "keys that were never written"
    usage = db.usage()
    records = list(store.records())
    size = sum(len(r.key.encode()) + len(encoded(r.value).encode()) for r in records)
    assert (usage.records, usage.bytes) == (len(records), size), "usage differs from a recount"
    # versions are never reused, not even after a crash: a new write goes past every one seen
    top = max(m.top_version for m in models)
    assert store.set("probe", top).version > top, "a version was reused after the restart"
    # the shared counter's in-flight increments are settled too
    for model in models:
        model.shared_in_flight = 0
    surplus = shared - shared_low
    if models:
        models[0].shared_acked += surplus


@pytest.fixture
def server(server_database: ServerDatabase, tmp_path: Path) -> Iterator[ServerProcess]:
    with ServerProcess(server_database.url, tmp_path / "serve.log") as served:
        yield served


def test_kill_9_under_write_load_loses_no_acknowledged_write(server, server_database):
    models = [Model(t) for t in range(THREADS)]
    restarts = [server.start()]
    rng = random.Random(1)
    for cycle in range(CYCLES):
        stop = threading.Event()
        clients = [server.connect() for _ in models]
        threads = [
            threading.Thread(target=_load, args=(db.store(STORE), m, stop), daemon=True)
            for db, m in zip(clients, models, strict=True)
        ]
        for thread in threads:
            thread.start()
        time.sleep(rng.uniform(*LOAD_SECONDS))
        server.kill()
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
            assert not thread.is_alive(), "a client thread hung after the kill"
        for db in clients:
            db.close()
        restarts.append(server.start())
        with server.connect() as db:
            _verify(db, models)
        assert server_database.integrity() == "ok", f"integrity check failed after cycle {cycle}"
    assert max(restarts) < RESTART_LIMIT, restarts
    acknowledged = sum(m.acknowledged for m in models)
    cut_off = sum(m.cut_off for m in models)
    print(f"{CYCLES} cycles: {acknowledged} writes acknowledged, {cut_off} cut off by a kill, "
          f"restart {min(restarts):.2f}-{max(restarts):.2f} s")  # fmt: skip
    assert acknowledged > 10 * CYCLES * THREADS, "the load wrote too little to prove anything"
    assert cut_off >= CYCLES, "the kills did not catch writes in flight"
