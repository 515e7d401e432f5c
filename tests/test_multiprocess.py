"""QUALITY R2 on the embedded engine: OS processes sharing one SQLite file through `runstate.open`.

Each worker is a separate process started with the ``spawn`` method (a fresh interpreter, as two
workflows on one machine would be); they start together at a barrier and report what every call
returned through a queue. No update may be lost: an increment's result is the counter's new value,
so the results of all processes are exactly 1..total, each once; an append's result is the list's
new length, likewise; every appended element is in the list once, each process's in its order.
"""

from __future__ import annotations

import multiprocessing
import queue
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import runstate

SPAWN = multiprocessing.get_context("spawn")
TIMEOUT = 60.0  # seconds for a whole group of workers; the tests take a few


def _report(results: Any, barrier: Any, worker: int, fn: Callable[[], Any]) -> None:
    try:
        results.put((worker, "ok", fn()))
    except BaseException:
        barrier.abort()  # the others stop waiting for this one
        results.put((worker, "error", traceback.format_exc()))


def _run_workers(target: Callable[..., None], args: list[tuple[Any, ...]]) -> dict[int, Any]:
    """Start one spawned process per args tuple, `target(results, barrier, worker, *args)`;
    return each worker's result, failing the test with any worker's traceback."""
    results = SPAWN.Queue()
    barrier = SPAWN.Barrier(len(args))
    processes = [
        SPAWN.Process(target=target, args=(results, barrier, worker, *extra), daemon=True)
        for worker, extra in enumerate(args)
    ]
    for process in processes:
        process.start()
    found: dict[int, Any] = {}
    errors = []
    deadline = time.monotonic() + TIMEOUT
    try:
        while len(found) + len(errors) < len(processes):
            try:
                worker, status, value = results.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                break
            if status == "ok":
                found[worker] = value
            else:
                errors.append(f"worker {worker}:\n{value}")
    finally:
        for process in processes:
            process.join(timeout=max(0.1, deadline - time.monotonic()))
            if process.is_alive():
                process.kill()
                process.join()
    causes = [e for e in errors if "BrokenBarrierError" not in e]  # not those it stopped
    assert not errors, "\n".join(causes or errors)
    assert len(found) == len(processes), f"workers {sorted(found)} of {len(processes)} reported"
    assert all(p.exitcode == 0 for p in processes), [p.exitcode for p in processes]
    return found


# --- workers (module level, so that spawned processes can import them) --------------------------


def _contend(results: Any, barrier: Any, worker: int, path: str, count: int) -> None:
    def run() -> dict[str, list[Any]]:
        with runstate.open(path, purge_interval=None) as db:
            store = db.store("shared")
            barrier.wait(timeout=TIMEOUT)
            counts, lengths, added = [], [], []
            for i in range(count):
                counts.append(store.increment("counter"))
                lengths.append(store.append("log", [worker, i]))
                added.append(store.add_to_set("members", f"{worker}:{i}"))
            return {"counts": counts, "lengths": lengths, "added": added}

    _report(results, barrier, worker, run)


def _open_new(results: Any, barrier: Any, worker: int, paths: list[str]) -> None:
    def run() -> list[tuple[int, list[str]]]:
        found = []
        for path in paths:
            barrier.wait(timeout=TIMEOUT)
            with runstate.open(path, purge_interval=None) as db:  # all at once, on a new file
                store = db.store("fresh")
                value = store.increment("opened")
                store.add_to_set("workers", worker)
                found.append((value, [info.name for info in db.stores()]))
        return found

    _report(results, barrier, worker, run)


def _write(results: Any, barrier: Any, worker: int, path: str, count: int) -> None:
    def run() -> int:
        with runstate.open(path, purge_interval=None) as db:
            store = db.store("rw")
            barrier.wait(timeout=TIMEOUT)
            for i in range(1, count + 1):
                store.set_many({"x": i, "y": i})  # one transaction: a reader sees both or neither
                store.set("doc", {"i": i, "double": 2 * i, "pad": "p" * (i % 50)})
                store.increment("n")
                store.append("list", i)
                if i % 10 == 0:
                    store.delete("tmp")
                else:
                    store.set("tmp", i)
            store.set("done", True)
            return count

    _report(results, barrier, worker, run)


def _read(results: Any, barrier: Any, worker: int, path: str, count: int) -> None:
    def run() -> int:
        with runstate.open(path, purge_interval=None) as db:
            store = db.store("rw")
            barrier.wait(timeout=TIMEOUT)
            reads = 0
            last_n = last_x = last_length = 0
            while True:
                done = store.get("done", False)
                with store.atomic() as tx:  # one snapshot
                    tx.get("x", 0)
                    tx.get("y", 0)
                    tx.get("n", 0)
                    tx.get("list", [])
                x, y, n, items = tx.results
                assert x == y, (x, y)
                assert x >= last_x
                assert n >= last_n
                assert len(items) >= last_length
                assert items == list(range(1, len(items) + 1))
                last_x, last_n, last_length = x, n, len(items)
                doc = store.get("doc")
                assert doc is None or doc["double"] == 2 * doc["i"], doc
                record = store.get_record("n")
                assert record is None or record.value >= 1
                keys = list(store.keys())
                assert keys == sorted(keys, key=str.encode)
                assert set(keys) <= {"x", "y", "doc", "n", "list", "tmp", "done"}
                store.has("tmp")
                reads += 1
                if done:
                    break
            assert (last_x, last_n, last_length) == (count, count, count)
            return reads

    _report(results, barrier, worker, run)


# --- tests ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("processes", "count"), [(2, 500), (4, 300)])
def test_no_update_is_lost_between_processes(tmp_path: Path, processes: int, count: int) -> None:
    path = tmp_path / "shared.db"
    with runstate.open(path, purge_interval=None):
        pass  # the file exists; opening it at once is the next test's subject
    found = _run_workers(_contend, [(str(path), count)] * processes)
    total = processes * count

    counts = [c for worker in found.values() for c in worker["counts"]]
    assert sorted(counts) == list(range(1, total + 1)), "an increment was lost or duplicated"
    lengths = [n for worker in found.values() for n in worker["lengths"]]
    assert sorted(lengths) == list(range(1, total + 1)), "an append was lost or duplicated"
    for worker in found.values():  # each process sees its own writes in order
        assert worker["counts"] == sorted(worker["counts"])
        assert worker["lengths"] == sorted(worker["lengths"])
        assert all(added is True for added in worker["added"])

    with runstate.open(path, purge_interval=None) as db:
        store = db.store("shared")
        assert store.get("counter") == total
        log = store.get("log")
        assert len(log) == total
        assert sorted(map(tuple, log)) == [(w, i) for w in range(processes) for i in range(count)]
        for worker in range(processes):
            assert [i for w, i in log if w == worker] == list(range(count))
        # an append's result is the length the list had just after it: the element's position
        for worker, result in found.items():
            for i, length in enumerate(result["lengths"]):
                assert log[length - 1] == [worker, i]
        members = store.get("members")
        assert len(members) == total
        assert set(members) == {f"{w}:{i}" for w in range(processes) for i in range(count)}
        assert db.usage().records == 3


@pytest.mark.parametrize("processes", [2, 4])
def test_processes_opening_a_new_file_at_once_all_succeed(tmp_path: Path, processes: int) -> None:
    # The migrations race, several times: in each round every process opens the same
    # brand-new file at once (a barrier), creates a store and writes to it.
    paths = [str(tmp_path / f"new{round_}.db") for round_ in range(5)]
    found = _run_workers(_open_new, [(paths,)] * processes)
    for round_, path in enumerate(paths):
        values = sorted(found[worker][round_][0] for worker in found)
        assert values == list(range(1, processes + 1)), path
        assert all(found[worker][round_][1] == ["fresh"] for worker in found)
        with runstate.open(path, purge_interval=None) as db:
            store = db.store("fresh")
            assert store.get("opened") == processes
            assert sorted(store.get("workers")) == list(range(processes))
            assert [info.name for info in db.stores()] == ["fresh"]


def test_a_process_reads_while_another_writes(tmp_path: Path) -> None:
    path = tmp_path / "rw.db"
    count = 300
    with runstate.open(path, purge_interval=None):
        pass
    found = _run_workers(
        _reader_or_writer, [(str(path), count, "write"), (str(path), count, "read")]
    )
    assert found[0] == count
    assert found[1] >= 1  # reads until it has seen the writer's last write


def _reader_or_writer(
    results: Any, barrier: Any, worker: int, path: str, count: int, role: str
) -> None:
    (_write if role == "write" else _read)(results, barrier, worker, path, count)
