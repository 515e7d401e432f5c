"""The group-commit writer's fast paths (`SqliteEngine.write_many` given ops rather than
functions) do exactly what the ops' definitions do: the same results, the same errors, the same
rows, counters and change feed. Each script runs twice on identical databases at the same fake
times, once with op units (fast paths) and once with `op.run` units (the definitions)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from runstate import errors, ops
from runstate.engine.sqlite import SqliteEngine

T0 = 1_800_000_000.0


def _engine(path: Path, now: list[float]) -> SqliteEngine:
    engine = SqliteEngine(path, clock=lambda: now[0], quota_bytes=700, max_value_bytes=300)
    engine.create_store("default", "ttl", default_ttl=10)
    engine.execute("default", "s", ops.SetMany({"text": "x", "n": 5, "big": 2**63 - 1}))
    engine.execute("default", "s", ops.Set("old", 1, ttl=1))
    engine.execute("default", "s", ops.Set("oldtext", "y", ttl=1))
    return engine


def _state(engine: SqliteEngine) -> Any:
    conn = sqlite3.connect(engine.path)
    try:
        return [
            conn.execute(f"SELECT * FROM {table} ORDER BY 1, 2").fetchall()
            for table in ("records", "events", "usage", "stores")
        ]
    finally:
        conn.close()


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, errors.Error) or isinstance(b, errors.Error):
        return type(a) is type(b) and a.to_dict() == b.to_dict()
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


Unit = tuple[str, Any]  # store, op or BatchWork

SCRIPTS: dict[str, list[Unit]] = {
    "set": [
        ("s", ops.Set("a", {"v": [1, 2.5, None]})),
        ("s", ops.Set("a", "again")),
        ("s", ops.Set("t", 1, ttl=2.5)),
        ("ttl", ops.Set("d", True)),  # the store's default ttl
        ("ttl", ops.Set("e", 1, ttl=0.000_002_5)),
        ("new", ops.Set("first", 1)),  # no store yet: the definition creates it
        ("new", ops.Set("second", 2)),
        ("s", ops.Set("old", "back")),  # over an expired record: created_at starts again
        ("s", ops.Set("a", 3, if_version=1)),
        ("s", ops.Set("large", "x" * 400)),
        ("s", ops.Set("quota", "y" * 290)),
        ("s", ops.Set("quota2", "y" * 290)),
        ("s", ops.Set("quota3", "y" * 290)),
    ],
    "increment": [
        ("s", ops.Increment("n")),
        ("s", ops.Increment("n", -7)),
        ("s", ops.Decrement("n", 3)),
        ("s", ops.Increment("fresh", 4)),
        ("ttl", ops.Increment("c", 2)),  # a new record gets the store's default ttl
        ("ttl", ops.Increment("c", 2)),  # and keeps it
        ("s", ops.Increment("old", 10)),  # expired: counts from 0
        ("s", ops.Increment("oldtext", 1)),  # expired text: counts from 0
        ("s", ops.Increment("text")),  # not an integer
        ("s", ops.Increment("big")),  # overflow
        ("s", ops.Decrement("big", -1)),
        ("none", ops.Increment("k")),
    ],
    "delete": [
        ("s", ops.Delete("text")),
        ("s", ops.Delete("text")),
        ("s", ops.Delete("old")),  # expired: False, an expire event
        ("none", ops.Delete("k")),
        ("s", ops.Delete("n", if_version=1)),
        ("s", ops.Delete("missing", if_version=1)),
    ],
    "batch": [
        ("s", ops.BatchWork([], [ops.Increment("n")])),
        ("s", ops.BatchWork([], [ops.Increment("text")])),
        ("s", ops.BatchWork([], [ops.Set("b", 1)])),
        ("s", ops.BatchWork([ops.Check("b", 0)], [ops.Set("b", 2)])),
        ("s", ops.BatchWork([], [ops.Increment("n"), ops.Increment("text")])),
        ("s", ops.BatchWork([], [])),
        ("s", ops.BatchWork([], [ops.Delete("b")])),
    ],
}


def _definition(work: Any) -> Callable[[Any], Any]:
    return work.run  # type: ignore[no-any-return]


@pytest.mark.parametrize("name", sorted(SCRIPTS))
@pytest.mark.parametrize("grouped", [True, False], ids=["one-group", "one-by-one"])
def test_fast_paths_match_the_definitions(tmp_path: Path, name: str, grouped: bool) -> None:
    now = [T0]
    fast = _engine(tmp_path / "fast.db", now)
    slow = _engine(tmp_path / "slow.db", now)
    now[0] += 2  # "old" and "oldtext" have expired
    script = SCRIPTS[name]
    fast_units = [("default", store, work) for store, work in script]
    slow_units = [("default", store, _definition(work)) for store, work in script]
    if grouped:
        got, want = fast.write_many(fast_units), slow.write_many(slow_units)
    else:
        got, want = [], []
        for f, s in zip(fast_units, slow_units, strict=True):
            now[0] += 0.001
            got += fast.write_many([f])
            want += slow.write_many([s])
    assert _same(got, want), (got, want)
    assert _state(fast) == _state(slow)
    fast.close()
    slow.close()


def test_the_scripts_reach_every_outcome(tmp_path: Path) -> None:
    """The scripts above are worth comparing: they succeed, fall back and fail."""
    now = [T0]
    engine = _engine(tmp_path / "state.db", now)
    now[0] += 2
    results = engine.write_many([("default", s, w) for s, w in SCRIPTS["increment"]])
    assert {type(r).__name__ for r in results} >= {"int", "TypeMismatch", "OutOfRange"}
    results = engine.write_many([("default", s, w) for s, w in SCRIPTS["set"]])
    assert {type(r).__name__ for r in results} >= {
        "Record",
        "Conflict",
        "ValueTooLarge",
        "QuotaExceeded",
    }
    engine.close()
