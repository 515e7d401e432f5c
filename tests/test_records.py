"""Single-record operations and versions (SPEC §1 record/version, §2 operations table)."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest

import runstate


def at(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


# --- set / get / get_record -------------------------------------------------------------------


def test_set_returns_the_record_with_its_metadata(store, clock):
    record = store.set("k", {"a": 1})
    assert record.key == "k"
    assert record.value == {"a": 1}
    assert type(record.version) is int
    assert record.version > 0
    assert record.created_at == record.updated_at == at(clock())
    assert record.created_at.tzinfo is not None
    assert record.created_at.utcoffset().total_seconds() == 0
    assert record.expires_at is None


def test_get_returns_the_stored_value(store):
    store.set("k", [1, "two", None])
    assert store.get("k") == [1, "two", None]


@pytest.mark.parametrize("default", [None, 0, "x", [1], {"a": None}])
def test_get_of_a_missing_key_returns_the_default(store, default):
    assert store.get("missing", default) == default
    assert store.get("missing", default=default) == default


def test_get_default_is_none(store):
    assert store.get("missing") is None


def test_get_returns_a_stored_null_not_the_default(store):
    store.set("k", None)
    assert store.get("k", default="d") is None


def test_get_record_of_a_missing_key_is_none(store):
    assert store.get_record("missing") is None


def test_get_record_matches_what_set_returned(store):
    written = store.set("k", "v")
    assert store.get_record("k") == written


def test_set_replaces_the_value_keeps_created_at_and_moves_updated_at(store, clock):
    start = clock()
    first = store.set("k", 1)
    clock.advance(5)
    second = store.set("k", 2)
    assert store.get("k") == 2
    assert second.created_at == first.created_at == at(start)
    assert second.updated_at == at(start + 5)
    assert second.version > first.version


# --- versions ---------------------------------------------------------------------------------


WRITES = {
    "set": lambda s: s.set("k", 0),
    "increment": lambda s: s.increment("k"),
    "decrement": lambda s: s.decrement("k"),
    "set_ttl": lambda s: s.set_ttl("k", 60),
    "set_ttl_none": lambda s: s.set_ttl("k", None),
    "set_many": lambda s: s.set_many({"k": []}),
    "append": lambda s: s.append("k", 1),
    "append_many": lambda s: s.append_many("k", [2, 3]),
    "add_to_set": lambda s: s.add_to_set("k", 4),
    "remove_from_list": lambda s: s.remove_from_list("k", 1),
    "remove_from_set": lambda s: s.remove_from_set("k", 4),
    "save_current_time": lambda s: s.save_current_time("k"),
    "item_assignment": lambda s: s.__setitem__("k", "v"),
}


def test_version_is_strictly_larger_after_every_write_of_the_record(store):
    versions = []
    for write in WRITES.values():
        write(store)
        versions.append(store.get_record("k").version)
    assert versions == sorted(set(versions))


def test_version_is_never_reused_after_delete_and_recreate(store):
    first = store.set("k", "a").version
    assert store.delete("k")
    second = store.set("k", "a").version
    assert second > first


def test_versions_keep_growing_after_old_history_is_purged(db, store, clock):
    first = store.set("k", 1).version
    store.set("gone", 1, ttl=1)
    store.delete("k")
    clock.advance(7 * 86400)  # past any change-feed retention
    db.purge_expired()
    assert store.set("k", 1).version > first
    assert db.store("other").set("x", 1).version > first


def test_versions_increase_across_keys_and_stores(db):
    """library-api.md: one version counter per database, strictly increasing across writes."""
    a, b = db.store("a"), db.store("b")
    versions = [a.set("x", 1).version, b.set("x", 1).version, a.set("y", 1).version]
    assert versions == sorted(set(versions))


def test_reading_does_not_change_the_version(store):
    version = store.set("k", 1).version
    store.get("k")
    store.get_record("k")
    store.has("k")
    store.ttl("k")
    list(store.keys())
    assert store.get_record("k").version == version


# --- compare-and-set: if_version --------------------------------------------------------------


def test_if_version_zero_creates_an_absent_record(store):
    assert store.set("k", 1, if_version=0).value == 1
    assert store.get("k") == 1


def test_if_version_zero_on_an_existing_record_is_a_conflict(store, unchanged):
    store.set("k", 1)
    with unchanged(), pytest.raises(runstate.Conflict):
        store.set("k", 2, if_version=0)


def test_if_version_matching_the_current_version_writes(store):
    version = store.set("k", 1).version
    record = store.set("k", 2, if_version=version)
    assert record.version > version
    assert store.get("k") == 2


def test_if_version_of_another_version_is_a_conflict(store, unchanged):
    old = store.set("k", 1).version
    store.set("k", 2)
    with unchanged(), pytest.raises(runstate.Conflict):
        store.set("k", 3, if_version=old)


def test_if_version_on_a_missing_record_is_not_found(store, unchanged):
    with unchanged(), pytest.raises(runstate.NotFound):
        store.set("k", 1, if_version=5)


def test_if_version_of_a_deleted_record_is_not_found(store, unchanged):
    version = store.set("k", 1).version
    store.delete("k")
    with unchanged(), pytest.raises(runstate.NotFound):
        store.set("k", 1, if_version=version)


@pytest.mark.parametrize("bad", [-1, 1.0, "1", True, [1]])
def test_if_version_must_be_a_non_negative_integer(store, unchanged, bad):
    with unchanged(), pytest.raises(runstate.InvalidRequest):
        store.set("k", 1, if_version=bad)


# --- get_or_create ----------------------------------------------------------------------------


def test_get_or_create_creates_a_missing_record(store):
    assert store.get_or_create("k", {"n": 1}) == {"n": 1}
    assert store.get("k") == {"n": 1}


def test_get_or_create_returns_the_stored_value_and_does_not_write(store):
    version = store.set("k", "old").version
    assert store.get_or_create("k", "new") == "old"
    assert store.get_record("k").version == version


def test_get_or_create_returns_a_stored_null(store):
    store.set("k", None)
    assert store.get_or_create("k", 5) is None


def test_setdefault_is_get_or_create(store):
    assert store.setdefault("k", [1]) == [1]
    assert store.setdefault("k", [2]) == [1]
    assert store.get("k") == [1]


# --- delete / delete_many / has / clear -------------------------------------------------------


def test_delete_returns_true_if_the_record_existed(store):
    store.set("k", 1)
    assert store.delete("k") is True
    assert store.get("k") is None
    assert store.has("k") is False


def test_delete_of_a_missing_record_returns_false(store):
    assert store.delete("missing") is False


def test_delete_with_the_current_version_deletes(store):
    version = store.set("k", 1).version
    assert store.delete("k", if_version=version) is True
    assert not store.has("k")


def test_delete_with_another_version_is_a_conflict(store, unchanged):
    version = store.set("k", 1).version
    store.set("k", 2)
    with unchanged(), pytest.raises(runstate.Conflict):
        store.delete("k", if_version=version)


def test_delete_with_if_version_of_a_missing_record_returns_false(store):
    assert store.delete("missing", if_version=3) is False


def test_delete_with_version_zero_of_an_existing_record_is_a_conflict(store, unchanged):
    store.set("k", 1)
    with unchanged(), pytest.raises(runstate.Conflict):
        store.delete("k", if_version=0)


def test_has_reports_presence(store):
    assert store.has("k") is False
    store.set("k", False)
    assert store.has("k") is True


def test_delete_many_counts_only_records_that_existed(store):
    store.set_many({"a": 1, "b": 2, "c": 3})
    assert store.delete_many(["a", "c", "missing"]) == 2
    assert list(store.keys()) == ["b"]


def test_delete_many_counts_a_repeated_key_once(store):
    store.set("a", 1)
    assert store.delete_many(["a", "a"]) == 1


def test_delete_many_of_nothing_is_zero(store):
    assert store.delete_many([]) == 0


def test_delete_many_with_an_invalid_key_deletes_nothing(store, unchanged):
    store.set("a", 1)
    with unchanged(), pytest.raises(runstate.InvalidKey):
        store.delete_many(["a", ""])


def test_clear_deletes_every_record_of_the_store_only(db):
    a, b = db.store("a"), db.store("b")
    a.set_many({"x": 1, "y": 2, "z": 3})
    b.set("x", 1)
    assert a.clear() == 3
    assert list(a.keys()) == []
    assert b.get("x") == 1
    assert a.clear() == 0


# --- set_many ---------------------------------------------------------------------------------


def test_set_many_writes_every_entry_and_returns_the_count(store):
    assert store.set_many({"a": 1, "b": [2], "c": {"d": None}}) == 3
    assert [(r.key, r.value) for r in store.records()] == [("a", 1), ("b", [2]), ("c", {"d": None})]


def test_set_many_of_nothing_is_zero(store):
    assert store.set_many({}) == 0


def test_set_many_replaces_existing_records(store):
    store.set("a", "old")
    store.set_many({"a": "new", "b": "new"})
    assert store.get("a") == "new"


def test_set_many_applies_the_ttl_to_every_entry(store):
    store.set_many({"a": 1, "b": 2}, ttl=30)
    assert store.ttl("a") == pytest.approx(30)
    assert store.ttl("b") == pytest.approx(30)


@pytest.mark.parametrize(
    ("entries", "error"),
    [
        ({"a": 1, "b": float("nan")}, runstate.InvalidValue),
        ({"a": 1, "b": 2**63}, runstate.InvalidValue),
        ({"a": 1, "": 2}, runstate.InvalidKey),
        ({"a": 1, "b\x00": 2}, runstate.InvalidKey),
        ({"a": 1, "b": "x" * (256 * 1024)}, runstate.ValueTooLarge),
    ],
    ids=["nan", "int65", "empty-key", "nul-key", "too-large"],
)
def test_set_many_is_all_or_nothing(store, unchanged, entries, error):
    store.set("a", "before")
    with unchanged(), pytest.raises(error):
        store.set_many(entries)


# --- save_current_time ------------------------------------------------------------------------

STAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")


def test_save_current_time_stores_the_clock_time_as_rfc3339_with_microseconds(store, clock):
    clock.advance(1.25)
    stamp = store.save_current_time("seen")
    assert stamp == "2026-01-01T00:00:01.250000Z"
    assert store.get("seen") == stamp


def test_now_is_utc_rfc3339_with_microseconds():
    stamp = runstate.now()
    assert STAMP.fullmatch(stamp)
    assert abs(datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
               - datetime.now(UTC)).total_seconds() < 60


# --- the store as a MutableMapping ------------------------------------------------------------


def test_item_assignment_sets_and_item_access_gets(store):
    store["k"] = {"a": 1}
    assert store["k"] == {"a": 1}
    assert store.get_record("k").value == {"a": 1}


def test_item_access_of_a_missing_key_raises_key_error(store):
    with pytest.raises(KeyError):
        store["missing"]


def test_item_access_of_a_stored_null_returns_none(store):
    store["k"] = None
    assert store["k"] is None


def test_del_removes_the_record(store):
    store["k"] = 1
    del store["k"]
    assert "k" not in store


def test_del_of_a_missing_key_raises_key_error(store):
    with pytest.raises(KeyError):
        del store["missing"]


def test_in_len_and_iteration(store):
    store.set_many({"b": 1, "a": 2, "c": 3})
    assert "a" in store
    assert "z" not in store
    assert len(store) == 3
    assert list(store) == ["a", "b", "c"]
    assert dict(store.items()) == {"a": 2, "b": 1, "c": 3}


def test_store_knows_its_name(db):
    assert db.store("orders").name == "orders"


def test_stores_are_independent(db):
    db.store("a")["k"] = 1
    db.store("b")["k"] = 2
    assert db.store("a")["k"] == 1
    assert db.store("b")["k"] == 2
