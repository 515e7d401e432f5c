"""The SQLite engine's read cache never serves a stale value: a point read after any commit, by
this connection, another connection or another process sharing the file, sees that commit, and
an expired record is never returned from it."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import runstate
from runstate import ops


def _open(path: Path, **options: object) -> runstate.Database:
    return runstate.open(path, purge_interval=None, **options)  # type: ignore[arg-type]


def test_a_cached_read_sees_a_write_of_another_database_object(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    with _open(path) as reader, _open(path) as writer:
        writer.store("s")["k"] = 1
        assert reader.store("s").get("k") == 1
        assert reader.store("s").get("k") == 1  # from the cache
        for value in range(2, 50):
            writer.store("s")["k"] = value
            assert reader.store("s").get("k") == value
        writer.store("s").delete("k")
        assert reader.store("s").get("k", "gone") == "gone"


def test_a_cached_miss_sees_a_later_write(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    with _open(path) as reader, _open(path) as writer:
        assert reader.store("s").get("k") is None
        assert reader.store("s").get("k") is None
        writer.store("s")["k"] = "now"
        assert reader.store("s").get("k") == "now"


def test_a_cached_read_sees_a_write_of_another_process(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    with _open(path) as db:
        store = db.store("s")
        store["k"] = 0
        for value in range(1, 6):
            assert store.get("k") == value - 1
            script = (
                "import runstate, sys\n"
                f"with runstate.open(sys.argv[1], purge_interval=None) as db:\n"
                f"    db.store('s')['k'] = {value}\n"
            )
            subprocess.run([sys.executable, "-c", script, str(path)], check=True, timeout=60)
            assert store.get("k") == value


def test_the_servers_row_read_sees_every_commit_of_the_group_writer(tmp_path: Path) -> None:
    with _open(tmp_path / "db.sqlite") as db:
        engine = db.core
        engine.write_many([("default", "s", ops.Set("k", 1))])
        assert engine.get_row("default", "s", "k").value == b"1"
        for value in range(2, 20):
            engine.write_many([("default", "s", ops.Increment("k"))])
            assert engine.get_row("default", "s", "k").value == str(value).encode()
        engine.write_many([("default", "s", ops.Clear())])
        assert engine.get_row("default", "s", "k") is None


def test_an_expired_record_is_never_read_from_the_cache(tmp_path: Path) -> None:
    now = [1_700_000_000.0]
    with _open(tmp_path / "db.sqlite", clock=lambda: now[0]) as db:
        store = db.store("s")
        store.set("k", "v", ttl=10)
        assert store.get("k") == "v"
        assert store.get("k") == "v"
        now[0] += 10
        assert store.get("k") is None


def test_reads_racing_writes_from_threads_never_go_back(tmp_path: Path) -> None:
    """Each reader's values only grow while a writer counts up: a read never returns a value
    older than one it already saw (the cache never serves a superseded generation)."""
    path = tmp_path / "db.sqlite"
    with _open(path) as db, _open(path) as other:
        db.store("s")["n"] = 0
        failures: list[str] = []

        def read() -> None:
            seen = 0
            for _ in range(3000):
                value = db.store("s").get("n")
                if value < seen:
                    failures.append(f"{value} after {seen}")
                    return
                seen = value

        readers = [threading.Thread(target=read) for _ in range(3)]
        for thread in readers:
            thread.start()
        for _ in range(300):
            other.store("s").increment("n")
        for thread in readers:
            thread.join()
        assert not failures
        assert db.store("s").get("n") == 300


def test_a_point_read_inside_a_write_of_the_same_thread_sees_committed_data(
    tmp_path: Path,
) -> None:
    """A read on the thread holding an open write transaction does not borrow the writer's
    connection (it would see the uncommitted write)."""
    with _open(tmp_path / "db.sqlite") as db:
        engine = db.core
        db.store("s")["k"] = "committed"

        def inside(conn: object, now: int) -> object:
            getattr(conn, "execute")(  # the writer lock is held by this thread now
                "UPDATE records SET value = ?, version = (SELECT max(seq) + 1 FROM events) "
                "WHERE key = ?",
                (b'"uncommitted"', b"k"),
            )
            return engine.get_row("default", "s", "k")

        row = engine._transact(inside)
        assert row is not None
        assert row.value == b'"committed"'
        assert db.store("s").get("k") == "uncommitted"
