"""Time to live (SPEC §1 default_ttl, §2 ttl/set_ttl; expired records are invisible to every
read the moment they expire, and purged). Time is the fake clock of conftest."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pytest

import runstate


def at(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def test_set_with_ttl_records_the_expiry(store, clock):
    record = store.set("k", 1, ttl=10)
    assert record.expires_at == at(clock() + 10)
    assert store.ttl("k") == pytest.approx(10)


def test_ttl_counts_down_with_the_clock(store, clock):
    store.set("k", 1, ttl=10)
    clock.advance(4)
    assert store.ttl("k") == pytest.approx(6)
    clock.advance(5.5)
    assert store.ttl("k") == pytest.approx(0.5)


def test_ttl_accepts_fractions_of_a_second(store, clock):
    store.set("k", 1, ttl=0.25)
    assert store.get_record("k").expires_at == at(clock() + 0.25)
    clock.advance(0.25)
    assert not store.has("k")


def test_ttl_of_a_record_without_expiry_or_a_missing_record_is_none(store):
    store.set("k", 1)
    assert store.ttl("k") is None
    assert store.ttl("missing") is None


def test_a_record_is_visible_until_just_before_it_expires(store, clock):
    store.set("k", "v", ttl=10)
    clock.advance(9.999)
    assert store.get("k") == "v"
    assert store.has("k")


def _reads(store):
    """Everything a user can read about key "k"."""
    return {
        "get": store.get("k", "default"),
        "get_record": store.get_record("k"),
        "has": store.has("k"),
        "in": "k" in store,
        "ttl": store.ttl("k"),
        "keys": list(store.keys()),
        "records": [r.key for r in store.records()],
        "keys_page": store.keys_page(prefix="k").items,
        "records_page": store.records_page(start="k").items,
        "reverse": list(store.keys(reverse=True)),
        "iter": list(store),
        "len": len(store),
        "get_or_create": store.get_or_create("k", "fresh"),
    }


def test_an_expired_record_is_invisible_to_every_read_at_the_exact_moment(store, clock):
    store.set("k", "v", ttl=10)
    clock.advance(10)
    assert _reads(store) == {
        "get": "default",
        "get_record": None,
        "has": False,
        "in": False,
        "ttl": None,
        "keys": [],
        "records": [],
        "keys_page": [],
        "records_page": [],
        "reverse": [],
        "iter": [],
        "len": 0,
        "get_or_create": "fresh",  # absent, so created anew
    }


def test_an_expired_record_raises_key_error(store, clock):
    store["k"] = "kept"
    store.set("k", "v", ttl=1)
    clock.advance(1)
    with pytest.raises(KeyError):
        store["k"]


def test_an_expired_record_leaves_other_records_listed(store, clock):
    store.set_many({"a": 1, "c": 3})
    store.set("b", 2, ttl=5)
    clock.advance(5)
    assert list(store.keys()) == ["a", "c"]
    assert len(store) == 2


def test_an_expired_record_is_absent_to_writes(store, clock):
    store.set_many({"n": 41, "l": [1], "s": ["a"], "v": "old"}, ttl=5)
    clock.advance(5)
    assert store.increment("n") == 1
    assert store.append("l", 2) == 1
    assert store.add_to_set("s", "a") is True
    assert store.set("v", "new", if_version=0).value == "new"
    assert store.delete("n") is True  # the new counter
    assert store.set_ttl("missing", 5) is False


def test_an_expired_record_cannot_be_deleted_or_retimed(store, clock):
    store.set("k", 1, ttl=5)
    clock.advance(5)
    assert store.delete("k") is False
    assert store.delete_many(["k"]) == 0
    assert store.set_ttl("k", 100) is False
    assert store.get("k") is None


def test_clear_counts_only_live_records(store, clock):
    store.set_many({"a": 1, "b": 2})
    store.set("gone", 3, ttl=1)
    clock.advance(1)
    assert store.clear() == 2


def test_a_record_recreated_after_expiry_is_new(store, clock):
    old = store.set("k", 1, ttl=5)
    clock.advance(5)
    new = store.set("k", 2)
    assert new.version > old.version
    assert new.created_at == at(clock())
    assert new.expires_at is None


# --- set without ttl; set_ttl -----------------------------------------------------------------


def test_set_without_ttl_removes_an_earlier_ttl(store):
    store.set("k", 1, ttl=10)
    store.set("k", 2)
    assert store.ttl("k") is None


def test_set_with_a_new_ttl_replaces_the_old(store):
    store.set("k", 1, ttl=10)
    store.set("k", 2, ttl=100)
    assert store.ttl("k") == pytest.approx(100)


def test_set_ttl_gives_an_existing_record_an_expiry(store, clock):
    store.set("k", 1)
    assert store.set_ttl("k", 30) is True
    assert store.ttl("k") == pytest.approx(30)
    clock.advance(30)
    assert not store.has("k")


def test_set_ttl_none_removes_the_expiry(store, clock):
    store.set("k", 1, ttl=10)
    assert store.set_ttl("k", None) is True
    assert store.ttl("k") is None
    assert store.get_record("k").expires_at is None
    clock.advance(1000)
    assert store.get("k") == 1


def test_set_ttl_of_a_missing_record_is_false_and_creates_nothing(store):
    assert store.set_ttl("missing", 10) is False
    assert not store.has("missing")


def test_set_ttl_keeps_the_value_and_is_a_write(store):
    version = store.set("k", {"a": [1.0]}).version
    store.set_ttl("k", 10)
    record = store.get_record("k")
    assert record.value == {"a": [1.0]}
    assert type(record.value["a"][0]) is float
    assert record.version > version


# --- invalid ttl ------------------------------------------------------------------------------

BAD_TTLS = {
    "0": 0,
    "-1": -1,
    "-0.5": -0.5,
    "str": "x",
    "numeric-str": "10",
    "true": True,
    "false": False,
    "nan": math.nan,
    "inf": math.inf,
    "list": [10],
}

TTL_CALLS = {
    "set": lambda db, s, ttl: s.set("k", 1, ttl=ttl),
    "set_many": lambda db, s, ttl: s.set_many({"k": 1}, ttl=ttl),
    "set_ttl": lambda db, s, ttl: s.set_ttl("existing", ttl),
    "create_store": lambda db, s, ttl: db.create_store("new", default_ttl=ttl),
    "update_store": lambda db, s, ttl: db.update_store("s", default_ttl=ttl),
}


@pytest.mark.parametrize("call", TTL_CALLS.values(), ids=TTL_CALLS.keys())
def test_an_invalid_ttl_is_invalid_request_and_changes_nothing(db, store, unchanged, subtests,
                                                               call):
    store.set("existing", 1, ttl=50)
    for label, ttl in BAD_TTLS.items():
        with subtests.test(ttl=label), unchanged(), pytest.raises(runstate.InvalidRequest):
            call(db, store, ttl)


# --- store default_ttl ------------------------------------------------------------------------


@pytest.fixture
def ttl_store(db):
    db.create_store("d", default_ttl=60)
    return db.store("d")


DEFAULT_TTL_WRITES = {
    "set": lambda s: s.set("k", 1),
    "setitem": lambda s: s.__setitem__("k", 1),
    "set_many": lambda s: s.set_many({"k": 1}),
    "get_or_create": lambda s: s.get_or_create("k", 1),
    "increment": lambda s: s.increment("k"),
    "decrement": lambda s: s.decrement("k"),
    "append": lambda s: s.append("k", 1),
    "append_many": lambda s: s.append_many("k", [1]),
    "add_to_set": lambda s: s.add_to_set("k", 1),
    "save_current_time": lambda s: s.save_current_time("k"),
}


@pytest.mark.parametrize("write", DEFAULT_TTL_WRITES.values(), ids=DEFAULT_TTL_WRITES.keys())
def test_a_record_created_without_a_ttl_gets_the_stores_default(ttl_store, clock, write):
    write(ttl_store)
    assert ttl_store.ttl("k") == pytest.approx(60)
    clock.advance(60)
    assert not ttl_store.has("k")


def test_an_explicit_ttl_overrides_the_stores_default(ttl_store):
    ttl_store.set("k", 1, ttl=5)
    assert ttl_store.ttl("k") == pytest.approx(5)
    ttl_store.set_many({"m": 1}, ttl=7)
    assert ttl_store.ttl("m") == pytest.approx(7)


def test_set_ttl_none_overrides_the_stores_default(ttl_store, clock):
    ttl_store.set("k", 1)
    ttl_store.set_ttl("k", None)
    clock.advance(120)
    assert ttl_store.get("k") == 1


def test_updating_the_default_ttl_applies_to_later_writes(db, store):
    store.set("before", 1)
    info = db.update_store("s", default_ttl=30)
    assert info.default_ttl == 30
    store.set("after", 1)
    assert store.ttl("before") is None
    assert store.ttl("after") == pytest.approx(30)
    db.update_store("s", default_ttl=None)
    store.set("later", 1)
    assert store.ttl("later") is None


# --- purge --------------------------------------------------------------------------------------


def test_purge_expired_removes_expired_records_and_frees_their_bytes(db, store, clock):
    store.set("live", "x")
    store.set_many({f"k{i}": "y" * 100 for i in range(5)}, ttl=10)
    live_bytes = len("live") + len('"x"')
    clock.advance(10)
    assert db.purge_expired() == 5
    assert db.purge_expired() == 0
    usage = db.usage()
    assert usage.records == 1
    assert usage.bytes == live_bytes
    assert db.store_info("s").bytes == live_bytes


def test_usage_counts_only_live_records(db, store, clock):
    store.set("live", "x")
    store.set("gone", "y" * 100, ttl=10)
    clock.advance(10)
    usage = db.usage()
    assert usage.records == 1
    assert usage.bytes == len("live") + len('"x"')


def test_purge_does_not_touch_live_records(db, store, clock):
    store.set("a", 1, ttl=100)
    store.set("b", 2)
    clock.advance(99)
    assert db.purge_expired() == 0
    assert store.get("a") == 1
    assert store.get("b") == 2
