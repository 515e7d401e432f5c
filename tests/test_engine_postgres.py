"""What is particular to the PostgreSQL engine: its URL, the quota's allotments, the change
feed's positions and notifications, and failing clearly when the database cannot be reached.
(Every semantic test runs on PostgreSQL too, through the ``postgres`` and ``remote-postgres``
backends of conftest.py.)"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

import runstate
from conftest import FakeClock, fresh_schema
from runstate import ops

pytest.importorskip("psycopg")

from runstate.engine.postgres import PostgresEngine, _split_url, _successor


@pytest.fixture
def url() -> Iterator[str]:
    with fresh_schema() as found:
        yield found


def test_the_schema_and_pool_size_are_runstates_own_url_parameters():
    conninfo, schema, extra = _split_url(
        "postgresql://u@h:5432/db?sslmode=disable&schema=team_a&pool_size=3"
    )
    assert schema == "team_a"
    assert extra == {"pool_size": "3"}
    assert conninfo == "postgresql://u@h:5432/db?sslmode=disable"
    assert _split_url("postgresql://u@h/db")[1] == "runstate"


@pytest.mark.parametrize("schema", ["", "Upper", "1abc", "a-b", "x" * 49, 'a";drop'])
def test_an_invalid_schema_name_is_refused(schema: str):
    with pytest.raises(runstate.InvalidRequest):
        _split_url(f"postgresql://u@h/db?schema={schema}")


def test_prefix_bounds_follow_code_point_order():
    assert _successor("ab") == "ac"
    assert _successor("a\U0010ffff") == "b"
    assert _successor("\U0010ffff") is None
    assert _successor("a\ud7ff") == "a\ue000"


def test_an_unreachable_database_is_unavailable_quickly():
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    started = time.monotonic()
    with pytest.raises(runstate.Unavailable):
        runstate.open(f"postgresql://postgres@127.0.0.1:{port}/test?schema=nowhere")
    assert time.monotonic() - started < 5


def test_a_second_engine_opens_a_migrated_schema_without_changing_it(url: str):
    with runstate.open(url) as first:
        first.store("s").set("k", 1)
    with runstate.open(url) as second:
        assert second.store("s").get("k") == 1


def test_versions_are_database_wide_and_survive_a_store_deleted_and_made_again(url: str):
    with runstate.open(url) as db:
        first = db.store("a").set("k", 1).version
        other = db.store("b").set("k", 1).version
        assert other > first
        db.delete_store("a")
        assert db.store("a").set("k", 2).version > other


def test_quota_left_unused_by_one_store_is_taken_back_for_another(url: str):
    """Allotments: store a fills most of the quota, then empties; store b can then use it."""
    with runstate.open(url, quota_bytes=2000) as db:
        a, b = db.store("a"), db.store("b")
        for i in range(9):
            a.set(f"k{i}", "x" * 190)
        with pytest.raises(runstate.QuotaExceeded):
            b.set("big", "y" * 400)
        a.clear()
        b.set("big", "y" * 1500)  # only fits if a's allotment was handed back
        assert db.usage().bytes == len("big") + 1502
        with pytest.raises(runstate.QuotaExceeded):
            a.set("more", "z" * 600)
        assert db._core.integrity_check() == "ok"


def test_expired_records_are_purged_to_make_room(url: str):
    clock = FakeClock()
    with runstate.open(url, quota_bytes=1000, clock=clock, purge_interval=None) as db:
        a, b = db.store("a"), db.store("b")
        a.set("old", "x" * 800, ttl=10)
        clock.advance(11)
        b.set("new", "y" * 800)  # the expired record of another store makes room
        assert a.get("old") is None
        assert db._core.integrity_check() == "ok"


def test_concurrent_writers_of_two_stores_never_pass_the_quota(url: str):
    quota = 20_000
    with runstate.open(url, quota_bytes=quota, pool_size=8) as db:
        refused = []

        def fill(name: str) -> None:
            store = db.store(name)
            for i in range(200):
                try:
                    store.set(f"k{i}", "v" * 200)
                except runstate.QuotaExceeded:
                    refused.append(name)

        threads = [threading.Thread(target=fill, args=(n,)) for n in ("a", "b", "c")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        usage = db.usage()
        assert refused
        assert usage.bytes <= quota
        assert db._core.integrity_check() == "ok"
        assert usage.bytes == sum(s.bytes for s in usage.stores)


def test_a_watch_sees_changes_committed_by_another_engine(url: str):
    with runstate.open(url) as first, runstate.open(url) as second:
        seen: list[Any] = []
        watch = first.store("s").watch()

        def follow() -> None:
            for event in watch:
                seen.append((event.type, event.key, event.value))
                if len(seen) == 3:
                    return

        thread = threading.Thread(target=follow, daemon=True)
        thread.start()
        time.sleep(0.2)
        other = second.store("s")
        other.set("a", 1)
        other.increment("n")
        other.delete("a")
        thread.join(10)
        assert seen == [("set", "a", 1), ("set", "n", 1), ("delete", "a", None)]


def test_trimmed_events_are_reported_as_a_gap(url: str):
    clock = FakeClock()
    engine = PostgresEngine(url, clock=clock, event_retention=60)
    try:
        for i in range(3):
            engine.write_many([("default", "s", ops.Set(f"k{i}", i))])
        clock.advance(120)
        engine.write_many([("default", "s", ops.Set("late", 1))])
        engine.purge_expired()
        changes = engine.events_after("default", "s", 0)
        assert changes.gap is not None
        assert [e.key for e in changes.events] == ["late"]
        latest = engine.latest_seq("default", "s")
        assert changes.position == latest
        assert engine.events_after("default", "s", latest).events == []
    finally:
        engine.close()


def test_a_group_of_increments_of_one_store_is_one_statement_with_exact_accounting(url: str):
    """`_increment_group`: increments of distinct keys, some of which it must leave to the
    general path (a string, an expired record, an overflow), answer exactly what one by one
    would, keep the counters exact and give each write its own version and event."""
    clock = FakeClock()
    engine = PostgresEngine(url, clock=clock)
    general: list[Any] = []
    write_group = engine._write_group

    def spy(resolved: Any) -> Any:
        general.extend(unit for _, _, unit in resolved)
        return write_group(resolved)

    engine._write_group = spy  # type: ignore[method-assign]
    try:
        setup = [("default", "s", ops.Set(f"k{i}", 10**i)) for i in range(12)]
        setup += [
            ("default", "s", ops.Set("text", "abc")),
            ("default", "s", ops.Set("old", 5, ttl=1)),
            ("default", "s", ops.Set("top", 2**63 - 1)),
            ("default", "s", ops.Set("neg", -10)),
        ]
        engine.write_many(setup)  # also tells the engine the store's default ttl
        clock.advance(2)
        before = engine.latest_seq("default", "s")
        general.clear()
        keys = [f"k{i}" for i in range(12)] + ["new1", "text", "old", "top"]
        units: list[Any] = [("default", "s", ops.Increment(k, 7)) for k in keys]
        units.append(("default", "s", ops.BatchWork([], [ops.Decrement("neg", 991)])))
        units.append(("default", "s", ops.Decrement("new2", 3)))
        units.append(("default", "s", ops.Increment("k1", 1000)))  # a key's second increment
        results = engine.write_many(units)
        assert [u.key for u in general] == ["text", "old", "top", "k1"]  # the rest: one statement
        assert results[:12] == [10**i + 7 for i in range(12)]
        assert results[12] == 7
        assert isinstance(results[13], runstate.TypeMismatch)
        assert results[14] == 7  # the expired record counts as missing
        assert isinstance(results[15], runstate.OutOfRange)
        assert results[16:] == [[-1001], -3, 1017]
        assert engine.integrity_check() == "ok"
        changes = engine.events_after("default", "s", before)
        assert {e.type for e in changes.events} == {"set"}
        sets = changes.events
        assert sorted(e.key for e in sets) == sorted([*keys[:13], "old", "neg", "new2", "k1"])
        assert len({e.seq for e in changes.events}) == len(changes.events)
        assert changes.position == engine.latest_seq("default", "s")
        last = {e.key: e.value for e in sets}  # in commit order: a key's last event wins
        for key, value in last.items():  # each event carries the value its write left
            assert engine.get_row("default", "s", key).value == value  # type: ignore[union-attr]
        assert [e.value for e in sets if e.key == "k1"] == [b"17", b"1017"]
    finally:
        engine.close()


def test_an_unknown_durability_is_invalid_request_before_any_connection() -> None:
    with pytest.raises(runstate.InvalidRequest) as raised:
        PostgresEngine("postgresql://nobody@127.0.0.1:1/none", durability="nope")
    assert raised.value.details == {"durability": "nope"}
