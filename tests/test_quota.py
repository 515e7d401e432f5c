"""The workspace quota and usage (SPEC §1 quota, §2 usage): UTF-8 key bytes + encoded value bytes
over live records, reported exactly; a write that would pass the quota fails with
`quota_exceeded` and changes nothing; deletes are always allowed."""

from __future__ import annotations

import pytest

import runstate

QUOTA = 200


def commit(store, *steps):
    with store.atomic() as tx:
        for step in steps:
            step(tx)
    return tx.results


def test_the_default_quota_is_64_mib(db):
    assert db.usage().quota_bytes == 64 * 1024 * 1024


def test_the_quota_is_configurable(make_db):
    assert make_db(quota_bytes=12345).usage().quota_bytes == 12345


def test_a_new_database_uses_nothing(db):
    usage = db.usage()
    assert isinstance(usage, runstate.Usage)
    assert (usage.records, usage.bytes) == (0, 0)


def test_usage_counts_utf8_key_bytes_and_compact_json_bytes(db):
    db.store("a").set("é", {"x": [1, 2.5, "ü"]})  # 2 + len('{"x":[1,2.5,"ü"]}') = 2 + 18
    usage = db.usage()
    assert usage.records == 1
    assert usage.bytes == 20


def test_usage_equals_an_exact_recount_across_stores(db, recount, clock):
    a, b = db.store("a"), db.store("b")
    a.set_many({f"k{i}": {"i": i, "s": "é" * i} for i in range(50)})
    b.set_many({f"🔥{i}": [i] * i for i in range(30)})
    a.increment("n", 999)
    a.append("l", "x")
    a.append_many("l", ["y", "z"])
    a.add_to_set("set", {"b": 1, "a": 2})
    a.remove_from_list("l", "y")
    b.delete_many([f"🔥{i}" for i in range(10)])
    b.set("🔥15", "shorter")
    b.set("ttl", "t" * 40, ttl=5)
    a.save_current_time("now")
    db.store("c").set("x", None)
    db.store("c").clear()
    clock.advance(5)
    a.set("k3", {"much": "longer " * 20})
    counts = recount(db)
    usage = db.usage()
    assert usage.records == sum(records for records, _ in counts.values())
    assert usage.bytes == sum(size for _, size in counts.values())
    assert {s.name: (s.records, s.bytes) for s in usage.stores} == counts
    for name, (records, size) in counts.items():
        info = db.store_info(name)
        assert (info.records, info.bytes) == (records, size)


def test_deleting_a_store_frees_its_usage(db):
    db.store("a").set("k", "v")
    db.store("b").set("kk", "vv")
    db.delete_store("a")
    usage = db.usage()
    assert (usage.records, usage.bytes) == (1, 2 + 4)
    assert [s.name for s in usage.stores] == ["b"]


# --- the limit ----------------------------------------------------------------------------------


@pytest.fixture
def full(make_db):
    """A database exactly at its quota of 200 bytes: "n" 9 (2), "l" [] (3), "pad" (3 + 192)."""
    db = make_db(quota_bytes=QUOTA)
    store = db.store("s")
    store.set_many({"n": 9, "l": [], "pad": "x" * 190})
    assert db.usage().bytes == QUOTA
    return db


def test_a_write_up_to_exactly_the_quota_succeeds(make_db):
    db = make_db(quota_bytes=100)
    db.store("s").set("k", "x" * 97)  # 1 + 99
    assert db.usage().bytes == 100


GROWING_WRITES = {
    "set": lambda s: s.set("new", 1),
    "setitem": lambda s: s.__setitem__("new", 1),
    "set_bigger": lambda s: s.set("n", 10),
    "set_many": lambda s: s.set_many({"new": 1}),
    "get_or_create": lambda s: s.get_or_create("new", 1),
    "increment": lambda s: s.increment("n"),
    "decrement_to_negative": lambda s: s.decrement("n", 10),
    "append": lambda s: s.append("l", 1),
    "append_many": lambda s: s.append_many("l", [1]),
    "add_to_set": lambda s: s.add_to_set("l", 1),
    "save_current_time": lambda s: s.save_current_time("n"),
}


@pytest.mark.parametrize("write", GROWING_WRITES.values(), ids=GROWING_WRITES.keys())
def test_a_write_that_would_exceed_the_quota_fails_and_changes_nothing(full, unchanged, write):
    with unchanged(full), pytest.raises(runstate.QuotaExceeded) as info:
        write(full.store("s"))
    assert info.value.code == "quota_exceeded"


def test_the_quota_covers_every_store_of_the_workspace(full, unchanged):
    other = full.store("other")
    with unchanged(full), pytest.raises(runstate.QuotaExceeded):
        other.set("k", 1)


def test_set_many_over_the_quota_is_all_or_nothing(make_db, unchanged):
    db = make_db(quota_bytes=100)
    store = db.store("s")
    entries = {f"k{i}": "x" * 20 for i in range(5)}  # 5 * 24 = 120 > 100, each fits alone
    with unchanged(db), pytest.raises(runstate.QuotaExceeded):
        store.set_many(entries)
    assert list(store.keys()) == []


def test_a_batch_over_the_quota_changes_nothing_and_names_the_op(full, unchanged):
    store = full.store("s")
    with unchanged(full), pytest.raises(runstate.QuotaExceeded) as info:
        commit(
            store,
            lambda tx: tx.delete("pad"),  # frees 195
            lambda tx: tx.set("a", "y" * 100),  # 103: fits
            lambda tx: tx.set("b", "y" * 100),  # 103 more: passes the quota
        )
    assert info.value.details["op"] == 2


def test_a_batch_may_free_space_before_using_it(full):
    store = full.store("s")
    with store.atomic() as tx:
        tx.delete("pad")
        tx.set("a", "y" * 150)
    assert full.usage().bytes == 2 + 3 + 1 + 152


SHRINKING_WRITES = {
    "delete": lambda db, s: s.delete("pad"),
    "delitem": lambda db, s: s.__delitem__("pad"),
    "delete_many": lambda db, s: s.delete_many(["pad", "n"]),
    "clear": lambda db, s: s.clear(),
    "delete_store": lambda db, s: db.delete_store("s"),
    "set_smaller": lambda db, s: s.set("pad", "short"),
    "set_same_size": lambda db, s: s.set("pad", "y" * 130),
    "decrement_same_size": lambda db, s: s.decrement("n"),
    "set_ttl": lambda db, s: s.set_ttl("pad", 60),
    "remove_from_list": lambda db, s: s.remove_from_list("pad2", "x"),
    "remove_from_set": lambda db, s: s.remove_from_set("pad2", "x"),
}


@pytest.mark.parametrize("write", SHRINKING_WRITES.values(), ids=SHRINKING_WRITES.keys())
def test_writes_that_do_not_grow_are_allowed_at_the_quota(make_db, write):
    db = make_db(quota_bytes=QUOTA)
    store = db.store("s")
    store.set_many({"n": 9, "pad": "x" * 130, "pad2": ["x", "x", "y"]})  # 2 + 135 + 4 + 13
    store.set("fill", "z" * (QUOTA - db.usage().bytes - 6))
    assert db.usage().bytes == QUOTA
    write(db, store)
    assert db.usage().bytes <= QUOTA


def test_space_freed_by_a_delete_can_be_used_again(full):
    store = full.store("s")
    store.delete("pad")
    store.set("new", "x" * 190)
    assert full.usage().bytes == QUOTA


def test_expired_records_do_not_count_against_the_quota(make_db, clock):
    db = make_db(quota_bytes=100)
    store = db.store("s")
    store.set("old", "x" * 90, ttl=5)
    clock.advance(5)
    store.set("new", "y" * 90)
    assert store.get("new") == "y" * 90
    assert db.usage().bytes == 3 + 92


def test_a_quota_of_zero_refuses_every_write(make_db):
    db = make_db(quota_bytes=0)
    with pytest.raises(runstate.QuotaExceeded):
        db.store("s").set("k", 1)
    assert db.usage().records == 0
