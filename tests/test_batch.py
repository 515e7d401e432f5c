"""Atomic batches (SPEC §2.2, library-api.md `atomic()`): checks and operations as one
transaction; all apply or nothing changes, and the error says which check or op failed."""

from __future__ import annotations

import pytest

import runstate


def commit(store, *steps):
    """Run one batch whose body calls each step on `tx`; the results of its operations."""
    with store.atomic() as tx:
        for step in steps:
            step(tx)
    return tx.results


@pytest.fixture
def filled(store):
    store.set_many({"n": 5, "l": [1, 2, 1], "s": ["a"], "old": "x"})
    return store


def test_every_operation_runs_in_a_batch_and_results_are_in_order(filled, clock):
    with filled.atomic() as tx:
        tx.get("n")
        tx.set("k", "v")
        tx.get_or_create("k", "other")
        tx.increment("n", 2)
        tx.decrement("n")
        tx.append("l", 3)
        tx.append_many("l", [[4, 5]], flatten=True)
        tx.remove_from_list("l", 1)
        tx.add_to_set("s", "b")
        tx.remove_from_set("s", "a")
        tx.set_many({"m1": 1, "m2": 2})
        tx.delete_many(["m1", "zz"])
        tx.delete("old")
        tx.has("old")
        tx.set_ttl("k", 30)
        tx.ttl("k")
        tx.save_current_time("t")
        tx.get_record("k")
        tx.keys(prefix="m")
        tx.records(prefix="m")
    r = tx.results
    assert len(r) == 20
    assert r[0] == 5
    assert isinstance(r[1], runstate.Record)
    assert (r[1].key, r[1].value) == ("k", "v")
    assert r[2:14] == ["v", 7, 6, 4, 6, 2, True, True, 2, 1, True, False]
    assert r[14] is True
    assert r[15] == pytest.approx(30)
    assert r[16] == "2026-01-01T00:00:00.000000Z"
    assert (r[17].key, r[17].value, r[17].version) == ("k", "v", filled.get_record("k").version)
    assert r[18].items == ["m2"]
    assert r[18].next_cursor is None
    assert [(rec.key, rec.value) for rec in r[19].items] == [("m2", 2)]
    assert dict(filled.items()) == {
        "k": "v", "l": [2, 3, 4, 5], "m2": 2, "n": 6, "s": ["b"],
        "t": "2026-01-01T00:00:00.000000Z",
    }


def test_a_batch_clears(filled):
    with filled.atomic() as tx:
        tx.clear()
        tx.set("after", 1)
    assert tx.results[0] == 4
    assert list(filled.keys()) == ["after"]


def test_later_operations_see_earlier_ones(store):
    with store.atomic() as tx:
        tx.set("n", 1)
        tx.increment("n")
        tx.get("n")
        tx.delete("n")
        tx.has("n")
    assert tx.results[1:] == [2, 2, True, False]


def test_an_empty_batch_changes_nothing(store, unchanged):
    with unchanged(), store.atomic() as tx:
        pass
    assert tx.results == []


def test_nothing_runs_until_the_block_exits(store):
    with store.atomic() as tx:
        tx.set("k", 1)
        assert not store.has("k")
    assert store.get("k") == 1


# --- checks -----------------------------------------------------------------------------------


def test_passing_checks_let_the_operations_apply(store):
    version = store.set("balance", 5).version
    with store.atomic() as tx:
        tx.check("balance", version=version)
        tx.check("absent", version=0)
        tx.set("balance", 10)
    assert store.get("balance") == 10


@pytest.mark.parametrize(
    ("checks", "failing"),
    [
        ([("a", "current"), ("b", "stale")], 1),
        ([("a", "stale"), ("b", "current")], 0),
        ([("a", "current"), ("b", "current"), ("a", 0)], 2),
        ([("missing", "current")], 0),
        ([("a", "current"), ("missing", 7)], 1),
    ],
    ids=["second-stale", "first-stale", "zero-on-present", "missing-at-a-version",
         "missing-at-7"],
)
def test_a_failed_check_is_a_conflict_naming_it_and_changes_nothing(store, unchanged, checks,
                                                                     failing):
    stale = store.set("a", "a0").version
    current = {"a": store.set("a", "a1").version, "b": store.set("b", "b1").version,
               "missing": 3}
    steps = [
        lambda tx, key=key, version=version: tx.check(
            key, version={"current": current[key], "stale": stale}.get(version, version)
        )
        for key, version in checks
    ]
    with unchanged(), pytest.raises(runstate.Conflict) as info:
        commit(store, *steps, lambda tx: tx.set("a", "changed"), lambda tx: tx.increment("c"))
    assert info.value.details["check"] == failing
    assert "op" not in info.value.details


def test_a_check_of_an_expired_record_sees_it_absent(store, clock):
    store.set("k", 1, ttl=5)
    clock.advance(5)
    with store.atomic() as tx:
        tx.check("k", version=0)
        tx.set("k", 2)
    assert store.get("k") == 2


# --- failing operations -----------------------------------------------------------------------

FAILING_OPS = {
    "type_mismatch": (lambda tx: tx.increment("text"), runstate.TypeMismatch),
    "out_of_range": (lambda tx: tx.increment("max"), runstate.OutOfRange),
    "append_to_non_list": (lambda tx: tx.append("text", 1), runstate.TypeMismatch),
    "if_version_conflict": (lambda tx: tx.set("text", 1, if_version=10**9), runstate.Conflict),
    "if_version_absent": (lambda tx: tx.set("text", 1, if_version=0), runstate.Conflict),
    "if_version_missing": (lambda tx: tx.set("nope", 1, if_version=3), runstate.NotFound),
    "delete_conflict": (lambda tx: tx.delete("text", if_version=10**9), runstate.Conflict),
    "too_large": (lambda tx: tx.set("big", "x" * (256 * 1024)), runstate.ValueTooLarge),
}


@pytest.mark.parametrize(("fail", "error"), FAILING_OPS.values(), ids=FAILING_OPS.keys())
def test_a_failed_operation_raises_its_own_error_naming_it_and_changes_nothing(
    store, unchanged, fail, error
):
    store.set_many({"text": "abc", "max": 2**63 - 1, "n": 1})
    with unchanged(), pytest.raises(error) as info:
        commit(store, lambda tx: tx.set("new", 1), lambda tx: tx.increment("n"), fail,
               lambda tx: tx.set("after", 1))
    assert info.value.details["op"] == 2


INVALID_INPUTS = {
    "invalid_key": (lambda tx: tx.set("", 1), runstate.InvalidKey),
    "invalid_value": (lambda tx: tx.set("k", float("nan")), runstate.InvalidValue),
    "invalid_ttl": (lambda tx: tx.set("k", 1, ttl=0), runstate.InvalidRequest),
    "invalid_amount": (lambda tx: tx.increment("k", 1.5), runstate.InvalidRequest),
}


@pytest.mark.parametrize(("fail", "error"), INVALID_INPUTS.values(), ids=INVALID_INPUTS.keys())
def test_an_operation_with_invalid_inputs_fails_the_whole_batch(store, unchanged, fail, error):
    store.set("n", 1)
    with unchanged(), pytest.raises(error):
        commit(store, lambda tx: tx.increment("n"), fail)


@pytest.mark.parametrize(("fail", "error"), INVALID_INPUTS.values(), ids=INVALID_INPUTS.keys())
def test_an_operation_with_invalid_inputs_is_named_by_its_index(store, fail, error):
    """SPEC §2.2: a failed operation is its own error with details.op = its index; the same
    inputs give the same errors on every interface (the HTTP batch names the op)."""
    with pytest.raises(error) as info:
        commit(store, lambda tx: tx.increment("n"), fail)
    assert info.value.details.get("op") == 1


def test_an_invalid_check_fails_the_whole_batch(store, unchanged):
    with unchanged(), pytest.raises((runstate.InvalidKey, runstate.InvalidRequest)):
        commit(store, lambda tx: tx.check("", version=0), lambda tx: tx.set("k", 1))


def test_an_unknown_operation_is_an_attribute_error(store):
    with pytest.raises(AttributeError), store.atomic() as tx:
        tx.frobnicate("k")
    assert not store.has("k")


# --- exceptions and limits --------------------------------------------------------------------


def test_an_exception_inside_the_block_discards_the_batch(store, unchanged):
    store.set("n", 1)

    class Boom(Exception):
        pass

    def boom(tx):
        raise Boom

    with unchanged(), pytest.raises(Boom):
        commit(store, lambda tx: tx.increment("n"), lambda tx: tx.set("k", 1), boom)


def test_a_batch_of_1000_operations_and_1000_checks_is_allowed(store):
    with store.atomic() as tx:
        for i in range(1000):
            tx.check(f"c{i}", version=0)
        for _ in range(1000):
            tx.increment("n")
    assert tx.results[-1] == 1000
    assert store.get("n") == 1000


def test_more_than_1000_operations_is_invalid_request(store, unchanged):
    with unchanged(), pytest.raises(runstate.InvalidRequest):
        commit(store, *[lambda tx: tx.increment("n")] * 1001)


def test_more_than_1000_checks_is_invalid_request(store, unchanged):
    checks = [lambda tx, i=i: tx.check(f"c{i}", version=0) for i in range(1001)]
    with unchanged(), pytest.raises(runstate.InvalidRequest):
        commit(store, *checks, lambda tx: tx.set("k", 1))


def test_a_batch_creates_its_store_implicitly(db, clock):
    store = db.store("t")
    db.delete_store("t")
    with store.atomic() as tx:
        tx.set("k", 1)
    assert db.store_info("t").records == 1


def test_a_batch_writes_with_one_version_each(store):
    with store.atomic() as tx:
        tx.set("a", 1)
        tx.set("b", 1)
        tx.set("a", 2)
    first, _, last = tx.results
    assert last.version > first.version
    assert store.get_record("a").version == last.version
