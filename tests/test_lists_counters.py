"""Counters, lists and sets (SPEC §2: increment/decrement, append*, remove_from_list, *_set;
JSON equality: numbers by value, true != 1, objects in any key order)."""

from __future__ import annotations

import pytest

import runstate

INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)

# --- increment / decrement --------------------------------------------------------------------


def test_increment_of_a_missing_key_counts_from_zero(store):
    assert store.increment("n") == 1
    assert store.get("n") == 1


def test_decrement_of_a_missing_key_counts_from_zero(store):
    assert store.decrement("n") == -1
    assert store.get("n") == -1


COUNTS = [  # start, op, amount, result
    (41, "increment", 1, 42),
    (41, "increment", 10, 51),
    (41, "increment", -50, -9),
    (41, "increment", 0, 41),
    (41, "decrement", 1, 40),
    (41, "decrement", 100, -59),
    (41, "decrement", -9, 50),
    (INT64_MAX - 1, "increment", 1, INT64_MAX),
    (INT64_MIN + 1, "decrement", 1, INT64_MIN),
    (INT64_MAX, "increment", INT64_MIN, -1),
]


def test_increment_and_decrement_return_and_store_the_new_value(store, subtests):
    for start, op, amount, result in COUNTS:
        with subtests.test(start=start, op=op, amount=amount):
            store.set("n", start)
            assert getattr(store, op)("n", amount) == result
            assert store.get("n") == result
            assert type(store.get("n")) is int


def test_increment_bumps_the_version(store):
    version = store.set("n", 1).version
    store.increment("n")
    assert store.get_record("n").version > version


@pytest.mark.parametrize(
    ("start", "op", "amount"),
    [
        (INT64_MAX, "increment", 1),
        (INT64_MIN, "decrement", 1),
        (INT64_MIN, "increment", -1),
        (-1, "increment", INT64_MIN),
        (1, "decrement", INT64_MIN),
        (INT64_MAX, "increment", INT64_MAX),
    ],
)
def test_increment_overflow_changes_nothing(store, unchanged, start, op, amount):
    store.set("n", start)
    with unchanged(), pytest.raises(runstate.OutOfRange):
        getattr(store, op)("n", amount)
    assert store.get("n") == start


@pytest.mark.parametrize("amount", [2**63, -(2**63) - 1], ids=["2**63", "-2**63-1"])
def test_an_amount_outside_64_bits_is_out_of_range(store, unchanged, amount):
    with unchanged(), pytest.raises(runstate.OutOfRange):
        store.increment("n", amount)


@pytest.mark.parametrize("amount", [True, False, 1.0, 1.5, "1", None, [1]],
                         ids=["true", "false", "1.0", "1.5", "str", "none", "list"])
def test_an_amount_that_is_not_an_integer_is_invalid_request(store, unchanged, amount):
    with unchanged(), pytest.raises(runstate.InvalidRequest):
        store.increment("n", amount)
    with unchanged(), pytest.raises(runstate.InvalidRequest):
        store.decrement("n", amount)


@pytest.mark.parametrize("op", ["increment", "decrement"])
def test_increment_of_a_non_integer_is_a_type_mismatch(store, unchanged, subtests, op):
    for value in [True, False, 1.0, 2.5, "1", None, [1], {"n": 1}]:
        store.set("n", value)
        with subtests.test(value=value), unchanged(), pytest.raises(runstate.TypeMismatch):
            getattr(store, op)("n")


def test_increment_keeps_the_records_ttl(store, clock):
    store.set("n", 1, ttl=100)
    expires = store.get_record("n").expires_at
    clock.advance(10)
    store.increment("n")
    assert store.get_record("n").expires_at == expires
    assert store.ttl("n") == pytest.approx(90)


def test_increment_keeps_no_ttl_as_no_ttl(db):
    store = db.store("s")
    store.set("n", 1)
    db.update_store("s", default_ttl=60)
    store.increment("n")
    assert store.ttl("n") is None


# --- append / append_many ---------------------------------------------------------------------


def test_append_to_a_missing_key_creates_a_list(store):
    assert store.append("l", "a") == 1
    assert store.get("l") == ["a"]


def test_append_returns_the_new_length(store):
    store.set("l", [1, 2])
    assert store.append("l", 3) == 3
    assert store.get("l") == [1, 2, 3]


def test_append_of_a_list_adds_it_as_one_element(store):
    store.append("l", [1, 2])
    assert store.get("l") == [[1, 2]]


def test_append_allows_duplicates(store):
    store.append("l", 1)
    assert store.append("l", 1) == 2
    assert store.get("l") == [1, 1]


@pytest.mark.parametrize(
    ("values", "flatten", "result"),
    [
        ([1, 2], False, [0, 1, 2]),
        ([[1, 2], 3], False, [0, [1, 2], 3]),
        ([[1, 2], 3], True, [0, 1, 2, 3]),
        ([[1, [2, [3]]], [], 4], True, [0, 1, [2, [3]], 4]),
        ([{"a": [1]}], True, [0, {"a": [1]}]),
        ([], False, [0]),
        ([], True, [0]),
    ],
)
def test_append_many_appends_in_order_and_flatten_unpacks_one_level(
    store, values, flatten, result
):
    store.set("l", [0])
    assert store.append_many("l", values, flatten=flatten) == len(result)
    assert store.get("l") == result


def test_append_many_to_a_missing_key_creates_a_list(store):
    assert store.append_many("l", ["a", "b"]) == 2
    assert store.get("l") == ["a", "b"]


def test_append_many_flatten_defaults_to_false(store):
    store.append_many("l", [[1, 2]])
    assert store.get("l") == [[1, 2]]


@pytest.mark.parametrize("values", ["abc", 5, None, {"a": 1}],
                         ids=["str", "int", "none", "object"])
def test_append_many_needs_a_list_of_values(store, unchanged, values):
    with unchanged(), pytest.raises(runstate.InvalidRequest):
        store.append_many("l", values)


LIST_OPS = {
    "append": lambda s: s.append("k", 1),
    "append_many": lambda s: s.append_many("k", [1]),
    "append_many_flatten": lambda s: s.append_many("k", [[1]], flatten=True),
    "remove_from_list": lambda s: s.remove_from_list("k", 1),
    "add_to_set": lambda s: s.add_to_set("k", 1),
    "remove_from_set": lambda s: s.remove_from_set("k", 1),
}


@pytest.mark.parametrize("call", LIST_OPS.values(), ids=LIST_OPS.keys())
def test_list_operations_on_a_non_list_are_a_type_mismatch(store, unchanged, subtests, call):
    for value in [1, "abc", {"a": 1}, None, True, 1.5]:
        store.set("k", value)
        with subtests.test(value=value), unchanged(), pytest.raises(runstate.TypeMismatch):
            call(store)


@pytest.mark.parametrize("call", LIST_OPS.values(), ids=LIST_OPS.keys())
def test_list_operations_keep_the_records_ttl(store, clock, call):
    store.set("k", [1, 2], ttl=100)
    expires = store.get_record("k").expires_at
    clock.advance(1)
    call(store)
    assert store.get_record("k").expires_at == expires


# --- remove_from_list -------------------------------------------------------------------------


def test_remove_from_list_removes_every_equal_element(store):
    store.set("l", [1, 2, 1, 3, 1])
    assert store.remove_from_list("l", 1) == 3
    assert store.get("l") == [2, 3]


def test_remove_from_list_of_an_absent_element_removes_nothing_and_does_not_write(store):
    version = store.set("l", [1, 2]).version
    assert store.remove_from_list("l", 5) == 0
    assert store.get_record("l").version == version


def test_remove_from_list_of_a_missing_key_is_zero_and_creates_nothing(store):
    assert store.remove_from_list("l", 1) == 0
    assert not store.has("l")


def test_remove_from_list_uses_json_equality(store):
    store.set("l", [1, 1.0, True, "1", {"a": 1, "b": [2]}, {"b": [2.0], "a": 1}, [1], None, 0])
    assert store.remove_from_list("l", 1) == 2  # 1 and 1.0, not true nor "1"
    assert store.remove_from_list("l", {"b": [2], "a": 1.0}) == 2
    assert store.remove_from_list("l", False) == 0  # false != 0
    assert store.get("l") == [True, "1", [1], None, 0]


# --- add_to_set / remove_from_set -------------------------------------------------------------


def test_add_to_set_to_a_missing_key_creates_the_set(store):
    assert store.add_to_set("s", "a@b.c") is True
    assert store.get("s") == ["a@b.c"]


def test_add_to_set_of_a_present_element_is_false_and_does_not_write(store):
    version = store.set("s", ["a"]).version
    assert store.add_to_set("s", "a") is False
    assert store.get("s") == ["a"]
    assert store.get_record("s").version == version


def test_add_to_set_keeps_insertion_order(store):
    for item in ["c", "a", "b", "a"]:
        store.add_to_set("s", item)
    assert store.get("s") == ["c", "a", "b"]


ADDS = [  # present, candidate, added
    (1, 1.0, False),
    (1.0, 1, False),
    (0, -0.0, False),
    (1, True, True),
    (True, 1, True),
    (0, False, True),
    (None, False, True),
    ("1", 1, True),
    ({"a": 1, "b": 2}, {"b": 2, "a": 1}, False),
    ({"a": 1, "b": [1, {"c": 2}]}, {"b": [1.0, {"c": 2.0}], "a": 1.0}, False),
    ({"a": 1}, {"a": 1, "b": None}, True),
    ({"a": True}, {"a": 1}, True),
    ([1, 2], [2, 1], True),
    ([1, 2], [1.0, 2.0], False),
    ([], {}, True),
    ("a", "A", True),
    ("é", "e\u0301", True),  # no Unicode normalisation: different code points
]


def test_add_to_set_uses_json_equality(store, subtests):
    for present, candidate, added in ADDS:
        with subtests.test(present=present, candidate=candidate):
            store.set("s", [present])
            assert store.add_to_set("s", candidate) is added
            assert len(store.get("s")) == (2 if added else 1)


def test_remove_from_set_removes_the_element(store):
    store.set("s", ["a", "b", "c"])
    assert store.remove_from_set("s", "b") is True
    assert store.get("s") == ["a", "c"]


def test_remove_from_set_of_an_absent_element_is_false_and_does_not_write(store):
    version = store.set("s", ["a"]).version
    assert store.remove_from_set("s", "z") is False
    assert store.get_record("s").version == version


def test_remove_from_set_of_a_missing_key_is_false_and_creates_nothing(store):
    assert store.remove_from_set("s", "a") is False
    assert not store.has("s")


REMOVES = [  # present, candidate, removed
    (1, 1.0, True),
    (2.0, 2, True),
    (1, True, False),
    (False, 0, False),
    ({"x": 1, "y": 2}, {"y": 2.0, "x": 1}, True),
    ([1, [2]], [1, [2.0]], True),
    ([1, 2], [2, 1], False),
]


def test_remove_from_set_uses_json_equality(store, subtests):
    for present, candidate, removed in REMOVES:
        with subtests.test(present=present, candidate=candidate):
            store.set("s", ["other", present])
            assert store.remove_from_set("s", candidate) is removed
            assert store.get("s") == (["other"] if removed else ["other", present])
