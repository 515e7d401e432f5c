"""Behaviour specific to the SQLite engine that the public-API suite cannot reach."""

from __future__ import annotations

from pathlib import Path

import pytest

from runstate import errors, ops
from runstate.engine.sqlite import SqliteEngine


def test_a_workspace_created_by_a_rolled_back_write_is_not_remembered(tmp_path: Path) -> None:
    engine = SqliteEngine(tmp_path / "state.db", quota_bytes=100)

    def fail(tx: object) -> None:
        raise errors.Conflict("no")

    assert isinstance(engine.write_many([("new", "s", fail)])[0], errors.Conflict)
    with pytest.raises(errors.QuotaExceeded):
        engine.write("new", "s", ops.Set("k", "x" * 500).run)
    assert engine.usage("new").bytes == 0
    engine.close()


def test_versions_never_go_back_after_the_feed_is_trimmed(tmp_path: Path) -> None:
    now = [1_800_000_000.0]
    engine = SqliteEngine(tmp_path / "state.db", clock=lambda: now[0], event_retention=1)
    first = engine.execute("default", "s", ops.Set("k", 1)).version
    engine.execute("default", "s", ops.Delete("k"))
    now[0] += 10
    engine.purge_expired()  # every event is past retention; the newest must stay
    assert engine.execute("default", "s", ops.Set("k", 2)).version > first + 1
    engine.close()
