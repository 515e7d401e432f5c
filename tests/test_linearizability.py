"""QUALITY R3: linearizability of get / set / compare-and-set / increment / delete over HTTP.

Two parts:

- the checker (`tests/linearizability.py`) on hand-made histories: it accepts linearizable
  ones and rejects broken ones (a stale read, a lost increment, two compare-and-sets winning on
  one version, a version going back, a value never written), and a Hypothesis test compares
  its answer with a brute-force search over every order, on thousands of small histories;
- histories recorded from concurrent clients (threads, each with its own `runstate.connect`)
  against one `runstate serve`, and against two serving the same database (the SQLite file;
  PostgreSQL through the `server_database` fixture once that backend is listed in conftest),
  each checked key by key.

`make soak` (``RUNSTATE_SOAK=1``) records longer histories, more clients and more rounds.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import runstate
from linearizability import INITIAL, Operation, _apply, by_key, check, is_linearizable
from served_process import ServerDatabase, ServerProcess, running_servers, soak
from served_process import server_database as server_database  # the fixture
from threads import in_threads_with

# --- the checker on hand-made histories ---------------------------------------------------------


def op(kind: str, arg: Any, output: Any, call: float, ret: float | None, key: str = "k") -> Any:
    return Operation(0, key, kind, arg, output, call, ret)


def test_a_sequential_history_of_every_kind_is_linearizable():
    history = [
        op("get", None, None, 0, 1),
        op("set", 1, 5, 2, 3),
        op("get", None, (1, 5), 4, 5),
        op("increment", 2, 3, 6, 7),
        op("get", None, (3, 9), 8, 9),  # the increment's version, unknown until read
        op("cas", (9, 7), ("ok", 12), 10, 11),
        op("cas", (9, 8), ("conflict", 12), 12, 13),
        op("cas", (0, 8), ("conflict", 12), 14, 15),
        op("get", None, (7, 12), 16, 17),
    ]
    assert is_linearizable(history)


def test_a_compare_and_set_on_a_missing_key_is_not_found_or_creates_it():
    assert is_linearizable([op("cas", (3, 1), ("not_found", 0), 0, 1)])
    assert is_linearizable([op("cas", (0, 1), ("ok", 4), 0, 1), op("get", None, (1, 4), 2, 3)])
    assert not is_linearizable([op("set", 1, 2, 0, 1), op("cas", (3, 1), ("not_found", 0), 2, 3)])


@pytest.mark.parametrize("seen", [(1, 1), (2, 2)])
def test_a_read_concurrent_with_a_write_may_see_either_value(seen):
    history = [
        op("set", 1, 1, 0, 1),
        op("set", 2, 2, 2, 6),
        op("get", None, seen, 3, 4),
    ]
    assert is_linearizable(history)


def test_a_stale_read_is_rejected():
    history = [
        op("set", 1, 1, 0, 1),
        op("set", 2, 2, 2, 3),
        op("get", None, (1, 1), 4, 5),  # after the second set returned
    ]
    assert not is_linearizable(history)


def test_a_read_of_a_missing_key_after_an_acknowledged_write_is_rejected():
    assert not is_linearizable([op("set", 1, 1, 0, 1), op("get", None, None, 2, 3)])


def test_a_lost_increment_is_rejected():
    both_one = [op("increment", 1, 1, 0, 3), op("increment", 1, 1, 1, 4)]
    assert not is_linearizable(both_one)
    lost_later = [
        op("increment", 1, 1, 0, 3),
        op("increment", 1, 2, 1, 4),
        op("get", None, (1, 9), 5, 6),  # the second increment vanished
    ]
    assert not is_linearizable(lost_later)
    fine = [op("increment", 1, 2, 0, 3), op("increment", 1, 1, 1, 4), op("get", None, (2, 9), 5, 6)]
    assert is_linearizable(fine)


def test_two_compare_and_sets_cannot_both_win_on_one_version():
    history = [
        op("set", 1, 5, 0, 1),
        op("cas", (5, 2), ("ok", 6), 2, 5),
        op("cas", (5, 3), ("ok", 7), 3, 6),
    ]
    assert not is_linearizable(history)
    history[2] = op("cas", (5, 3), ("conflict", 6), 3, 6)
    assert is_linearizable(history)


def test_a_conflict_must_report_the_current_version():
    history = [op("set", 1, 5, 0, 1), op("cas", (4, 2), ("conflict", 6), 2, 3)]
    assert not is_linearizable(history)


def test_versions_never_go_back():
    assert not is_linearizable([op("set", 1, 5, 0, 1), op("set", 2, 3, 2, 3)])
    assert not is_linearizable([op("set", 1, 5, 0, 1), op("get", None, (1, 4), 2, 3)])


def test_a_value_never_written_is_rejected():
    assert not is_linearizable([op("get", None, (42, 1), 0, 1)])
    assert not is_linearizable([op("set", 1, 1, 0, 1), op("get", None, (2, 1), 2, 3)])


@pytest.mark.parametrize(("seen", "ok"), [(None, True), ((1, 3), True), ((2, 3), False)])
def test_an_unanswered_write_may_or_may_not_have_happened(seen, ok):
    history = [op("increment", 1, None, 0, None), op("get", None, seen, 1, 2)]
    assert is_linearizable(history) is ok


def test_a_delete_removes_the_record_and_reports_whether_it_existed():
    history = [
        op("set", 1, 5, 0, 1),
        op("delete", None, True, 2, 3),
        op("get", None, None, 4, 5),
        op("delete", None, False, 6, 7),
        op("increment", 1, 1, 8, 9),  # counts from 0 again
        op("get", None, (1, 8), 10, 11),
    ]
    assert is_linearizable(history)
    assert not is_linearizable([op("set", 1, 5, 0, 1), op("delete", None, False, 2, 3)])
    assert not is_linearizable([op("delete", None, True, 0, 1)])
    resurrected = [
        op("set", 1, 5, 0, 1),
        op("delete", None, True, 2, 3),
        op("get", None, (1, 5), 4, 5),
    ]
    assert not is_linearizable(resurrected)


def test_keys_are_checked_one_by_one():
    history = [
        op("set", 1, 1, 0, 1, key="a"),
        op("set", 2, 2, 0, 1, key="b"),
        op("get", None, (2, 2), 2, 3, key="a"),  # b's value read from a
        op("get", None, (2, 2), 2, 3, key="b"),
    ]
    assert not check(history)
    assert {key: is_linearizable(part) for key, part in by_key(history).items()} == {
        "a": False,
        "b": True,
    }


def _brute_force(ops: list[Operation]) -> bool:
    """Every order that respects real time (a before b when a returned before b was called)."""

    def search(done: frozenset[int], states: Any) -> bool:
        if len(done) == len(ops):
            return True
        for i, candidate in enumerate(ops):
            if i in done:
                continue
            if any(
                j not in done and other.ret is not None and other.ret < candidate.call
                for j, other in enumerate(ops)
            ):
                continue
            after = _apply(states, candidate)
            if after and search(done | {i}, after):
                return True
        return False

    return search(frozenset(), frozenset({INITIAL}))


_VALUES = st.integers(0, 2)
_VERSIONS = st.integers(1, 4)


@st.composite
def _operations(draw: Any) -> Operation:
    kind = draw(st.sampled_from(["get", "set", "cas", "increment", "delete"]))
    if kind == "get":
        arg, output = None, draw(st.none() | st.tuples(_VALUES, _VERSIONS))
    elif kind == "set":
        arg, output = draw(_VALUES), draw(_VERSIONS)
    elif kind == "cas":
        arg = (draw(st.integers(0, 3)), draw(_VALUES))
        outcome = draw(st.sampled_from(["ok", "conflict", "not_found"]))
        output = (outcome, 0 if outcome == "not_found" else draw(_VERSIONS))
    elif kind == "increment":
        arg, output = draw(st.integers(1, 2)), draw(_VALUES)
    else:
        arg, output = None, draw(st.booleans())
    call = draw(st.integers(0, 8))
    ret = None if draw(st.integers(0, 9)) == 0 else call + draw(st.integers(0, 4))
    return Operation(0, "k", kind, arg, output, call, ret)


@settings(max_examples=soak(1500, 10000), deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(_operations(), max_size=6))
def test_the_checker_agrees_with_a_brute_force_search(history):
    assert is_linearizable(history) == _brute_force(history)


# --- histories recorded over HTTP ---------------------------------------------------------------

CLIENTS = soak(6, 8)
OPS_PER_CLIENT = soak(150, 1000)
ROUNDS = soak(1, 3)
KEYS = 3


class Recorder:
    """Runs operations and records each with its call and return times (`monotonic_ns`)."""

    def __init__(self) -> None:
        self.history: list[Operation] = []
        self._lock = threading.Lock()

    def run(self, client: int, key: str, kind: str, arg: Any, call: Callable[[], Any]) -> None:
        began = time.monotonic_ns()
        ended: int | None = None
        output: Any = None
        try:
            output = call()
            ended = time.monotonic_ns()
        except (runstate.Conflict, runstate.NotFound) as exc:
            if kind != "cas":
                raise
            ended = time.monotonic_ns()
            output = (exc.code, exc.details.get("actual", 0))
        except runstate.Unavailable:
            pass  # no answer: it may or may not have happened
        with self._lock:
            self.history.append(Operation(client, key, kind, arg, output, began, ended))


def _client_load(recorder: Recorder, client: int, store: Any, seed: int, prefix: str) -> None:
    """A random mix of get, set, compare-and-set (on the last version this client saw),
    increment and delete on a few keys; every value written is unique to this client and
    write."""
    rng = random.Random(seed)
    seen: dict[str, int] = {}
    for n in range(OPS_PER_CLIENT):
        key = f"{prefix}{rng.randrange(KEYS)}"
        roll = rng.random()
        if roll < 0.35:

            def get() -> Any:
                record = store.get_record(key)
                if record is None:
                    return None
                seen[key] = record.version
                return (record.value, record.version)

            recorder.run(client, key, "get", None, get)
        elif roll < 0.6:
            value = client * 1_000_000 + n

            def put() -> Any:
                version = store.set(key, value).version
                seen[key] = version
                return version

            recorder.run(client, key, "set", value, put)
        elif roll < 0.75:
            expected = seen.get(key, 0) if rng.random() < 0.9 else 0
            value = client * 1_000_000 + n

            def cas() -> Any:
                version = store.set(key, value, if_version=expected).version
                seen[key] = version
                return ("ok", version)

            recorder.run(client, key, "cas", (expected, value), cas)
        elif roll < 0.95:
            amount = rng.choice((1, 1, 2, -1))
            recorder.run(client, key, "increment", amount, lambda: store.increment(key, amount))
        else:
            recorder.run(client, key, "delete", None, lambda: store.delete(key))


def _record(servers: list[ServerProcess], prefix: str, seed: int) -> list[Operation]:
    """`CLIENTS` threads, client i on server i mod len(servers), released together."""
    recorder = Recorder()

    @contextlib.contextmanager
    def connected(number: int) -> Iterator[Any]:
        with servers[number % len(servers)].connect(timeout=30) as db:
            yield db.store("lin")

    in_threads_with(
        CLIENTS,
        connected,
        lambda number, store: _client_load(recorder, number, store, seed * 100 + number, prefix),
    )
    assert all(o.ret is not None for o in recorder.history), "a request went unanswered"
    return recorder.history


@pytest.fixture
def servers(
    request: pytest.FixtureRequest, server_database: ServerDatabase, tmp_path: Path
) -> Iterator[list[ServerProcess]]:
    """`request.param` servers of `runstate serve` on one database."""
    with running_servers(server_database, tmp_path, request.param) as started:
        yield started


@pytest.mark.slow
@pytest.mark.parametrize("servers", [1, 2], indirect=True, ids=["one-server", "two-servers"])
def test_recorded_histories_are_linearizable(servers):
    for round_ in range(ROUNDS):
        history = _record(servers, f"r{round_}/", seed=round_)
        assert len(history) == CLIENTS * OPS_PER_CLIENT
        kinds = {o.kind for o in history}
        assert kinds == {"get", "set", "cas", "increment", "delete"}
        outcomes = {o.output[0] for o in history if o.kind == "cas"}
        assert {"ok", "conflict"} <= outcomes, "the load raced too little to test anything"
        began = time.monotonic()
        bad = [key for key, part in by_key(history).items() if not is_linearizable(part)]
        assert bad == [], f"not linearizable: {bad}"
        print(f"{len(history)} ops on {KEYS} keys checked in {time.monotonic() - began:.2f} s")
        assert not check(_made_stale(history)), "the checker missed a stale read"


def _made_stale(history: list[Operation]) -> list[Operation]:
    """The history with one read answered by a write that a later write had replaced before
    the read began: the checker must reject it."""
    writes = sorted((o for o in history if o.kind == "set"), key=lambda o: o.call)
    for index, read in enumerate(history):
        if read.kind != "get" or read.ret is None:
            continue
        done = [w for w in writes if w.key == read.key and w.ret is not None and w.ret < read.call]
        for old in done:
            if any(old.ret is not None and old.ret < w.call for w in done):
                stale = Operation(read.client, read.key, "get", None, (old.arg, old.output),
                                  read.call, read.ret)  # fmt: skip
                return [*history[:index], stale, *history[index + 1 :]]
    raise AssertionError("no read followed two writes one after the other")
