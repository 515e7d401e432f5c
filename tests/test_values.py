"""Keys and values: what is accepted, what round-trips, what is refused (SPEC §1 key, value)."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from decimal import Decimal

import pytest

import runstate

MAX_VALUE = 256 * 1024

# --- keys -------------------------------------------------------------------------------------

WEIRD_KEYS = [
    "/", "a/b", "/leading", "trailing/", "a//b", "?", "#", "%", "%2F", "%%", "a?b=c&d#e",
    " ", " padded ", "key with spaces", "+", "ü", "é", "中文", "🔥", "a🔥b", ".", "..", "./..",
    "a\nb", "\t", "\r\n", "'\"", "\\", "<>{}|^`", "\u200b", "\ufeff", "\U0010ffff", "null",
    "x" * 1024, "é" * 512, "🔥" * 256, "中" * 341 + "a",
]


def test_weird_keys_are_within_the_limit():
    assert all(1 <= len(key.encode()) <= 1024 for key in WEIRD_KEYS)


def test_any_valid_key_round_trips(store, subtests):
    for key in WEIRD_KEYS:
        with subtests.test(key=key):
            store.set(key, key)
            assert store.get(key) == key
            assert store[key] == key
            assert store.has(key)
            assert store.get_record(key).key == key
            assert list(store.keys()) == [key]
            assert [r.key for r in store.records()] == [key]
            assert store.delete(key) is True


def test_weird_keys_coexist_and_list_exactly(store):
    store.set_many({key: i for i, key in enumerate(WEIRD_KEYS)})
    assert list(store.keys()) == sorted(WEIRD_KEYS, key=lambda k: k.encode())
    assert {key: store.get(key) for key in WEIRD_KEYS} == {k: i for i, k in enumerate(WEIRD_KEYS)}


INVALID_KEYS = {
    "int": 1,
    "none": None,
    "bytes": b"k",
    "float": 1.5,
    "bool": True,
    "tuple": ("a",),
    "empty": "",
    "nul": "a\x00b",
    "only-nul": "\x00",
    "1025-ascii": "x" * 1025,
    "1025-utf8": "é" * 512 + "x",
    "1028-emoji": "🔥" * 257,
    "lone-surrogate": "a\ud800",
    "low-surrogate": "\udc00",
}


# Every operation that takes a key, called with key `k`.
KEY_CALLS = {
    "get": lambda s, k: s.get(k),
    "get_record": lambda s, k: s.get_record(k),
    "get_or_create": lambda s, k: s.get_or_create(k, 1),
    "set": lambda s, k: s.set(k, 1),
    "set_many": lambda s, k: s.set_many({"ok": 1, k: 1}),
    "delete": lambda s, k: s.delete(k),
    "delete_many": lambda s, k: s.delete_many(["ok", k]),
    "has": lambda s, k: s.has(k),
    "increment": lambda s, k: s.increment(k),
    "decrement": lambda s, k: s.decrement(k),
    "append": lambda s, k: s.append(k, 1),
    "append_many": lambda s, k: s.append_many(k, [1]),
    "remove_from_list": lambda s, k: s.remove_from_list(k, 1),
    "add_to_set": lambda s, k: s.add_to_set(k, 1),
    "remove_from_set": lambda s, k: s.remove_from_set(k, 1),
    "save_current_time": lambda s, k: s.save_current_time(k),
    "set_ttl": lambda s, k: s.set_ttl(k, 10),
    "ttl": lambda s, k: s.ttl(k),
    "setitem": lambda s, k: s.__setitem__(k, 1),
}


def test_set_of_an_invalid_key_is_refused_and_stores_nothing(db, store, unchanged, subtests):
    for label, key in INVALID_KEYS.items():
        with subtests.test(key=label), unchanged(), pytest.raises(runstate.InvalidKey):
            store.set(key, "v")
    assert db.usage().records == 0


@pytest.mark.parametrize("call", KEY_CALLS.values(), ids=KEY_CALLS.keys())
def test_every_key_operation_refuses_an_invalid_key(store, unchanged, subtests, call):
    store.set("ok", "before")
    for key in ["", "a\x00", "x" * 1025, 7, "\ud800"]:
        with subtests.test(key=key), unchanged(), pytest.raises(runstate.InvalidKey):
            call(store, key)


def test_a_non_string_key_is_never_converted(store):
    with pytest.raises(runstate.InvalidKey):
        store.set(1, "v")
    assert not store.has("1")


def test_invalid_key_error_is_also_a_runstate_error(store):
    with pytest.raises(runstate.Error) as info:
        store.set("", 1)
    assert info.value.code == "invalid_key"


# --- values: what is refused ------------------------------------------------------------------


def nested(depth: int, leaf: object = 0) -> object:
    """`depth` levels of arrays and objects, alternating, around `leaf`."""
    value = leaf
    for level in range(depth):
        value = [value] if level % 2 else {"k": value}
    return value


def arrays(depth: int) -> list:
    """`depth` levels of arrays: arrays(1) == [], arrays(2) == [[]]."""
    value: list = []
    for _ in range(depth - 1):
        value = [value]
    return value


class Opaque:
    pass


INVALID_VALUES = {
    "nan": float("nan"),
    "inf": float("inf"),
    "-inf": float("-inf"),
    "nan-in-list": [1, float("nan")],
    "inf-in-object": {"a": {"b": float("inf")}},
    "2**63": 2**63,
    "-2**63-1": -(2**63) - 1,
    "2**64-in-list": [2**64],
    "huge-int": 10**30,
    "nesting-65": nested(65),
    "nesting-65-arrays": arrays(65),
    "set": {1, 2},
    "frozenset": frozenset(),
    "bytes": b"abc",
    "bytearray": bytearray(b"abc"),
    "object": Opaque(),
    "datetime": datetime(2026, 1, 1, tzinfo=UTC),
    "decimal-nan": Decimal("NaN"),
    "complex": 1j,
    "function": len,
    "int-object-key": {1: "a"},
    "none-object-key": {None: "a"},
    "lone-surrogate": "a\ud800b",
    "lone-surrogate-in-list": ["\udfff"],
    "surrogate-object-key": {"\ud83d": 1},
}


# Every operation that takes a value, called with value `v`.
VALUE_CALLS = {
    "set": lambda s, v: s.set("k", v),
    "setitem": lambda s, v: s.__setitem__("k", v),
    "set_many": lambda s, v: s.set_many({"a": 1, "k": v}),
    "get_or_create": lambda s, v: s.get_or_create("new", v),
    "append": lambda s, v: s.append("list", v),
    "append_many": lambda s, v: s.append_many("list", [1, v]),
    "append_many_flatten": lambda s, v: s.append_many("list", [[1, v]], flatten=True),
    "add_to_set": lambda s, v: s.add_to_set("list", v),
}


def test_set_of_an_invalid_value_is_refused_and_stores_nothing(db, store, unchanged, subtests):
    for label, value in INVALID_VALUES.items():
        with subtests.test(value=label), unchanged(), pytest.raises(runstate.InvalidValue):
            store.set("k", value)
    assert not store.has("k")
    assert db.usage().records == 0


@pytest.mark.parametrize("call", VALUE_CALLS.values(), ids=VALUE_CALLS.keys())
def test_every_value_operation_refuses_an_invalid_value(store, unchanged, subtests, call):
    store.set("list", [0])
    for name in ["nan", "2**63", "-2**63-1", "nesting-65", "set", "bytes", "object",
                 "lone-surrogate"]:
        with subtests.test(value=name), unchanged(), pytest.raises(runstate.InvalidValue):
            call(store, INVALID_VALUES[name])


@pytest.mark.parametrize("make", [nested, arrays], ids=["mixed", "arrays"])
def test_nesting_of_64_levels_is_accepted_and_65_refused(store, make):
    deep = make(64)
    store.set("deep", deep)
    assert store.get("deep") == deep
    with pytest.raises(runstate.InvalidValue):
        store.set("deeper", make(65))
    assert not store.has("deeper")


def test_appending_to_a_list_at_64_levels_counts_the_list_itself(store):
    """A list holding a 63-level value is 64 deep; appending one more level would make 65."""
    store.set("list", [])
    store.append("list", arrays(63))
    with pytest.raises(runstate.InvalidValue):
        store.append("list", arrays(64))
    assert store.get("list") == [arrays(63)]


@pytest.mark.parametrize("value", [2**63 - 1, -(2**63)], ids=["int64-max", "int64-min"])
def test_integers_at_the_64_bit_bounds_are_accepted_exactly(store, value):
    store.set("k", value)
    assert store.get("k") == value
    assert type(store.get("k")) is int


# --- values: size limit -----------------------------------------------------------------------


def test_a_value_of_exactly_the_limit_is_accepted(store):
    value = "x" * (MAX_VALUE - 2)  # two bytes for the quotes
    store.set("k", value)
    assert store.get("k") == value


def test_a_value_one_byte_over_the_limit_is_value_too_large(store, unchanged):
    with unchanged(), pytest.raises(runstate.ValueTooLarge):
        store.set("k", "x" * (MAX_VALUE - 1))


def test_the_limit_counts_utf8_bytes_not_characters(store, unchanged):
    store.set("k", "é" * ((MAX_VALUE - 2) // 2))
    with unchanged(), pytest.raises(runstate.ValueTooLarge):
        store.set("k", "é" * ((MAX_VALUE - 2) // 2) + "x")


def test_the_limit_counts_the_compact_encoding(store):
    """[1,1,...] compact: 2 brackets + n digits + (n-1) commas."""
    n = (MAX_VALUE - 1) // 2
    store.set("k", [1] * n)
    assert len(store.get("k")) == n
    with pytest.raises(runstate.ValueTooLarge):
        store.set("k", [1] * (n + 1))


def _in_batch(store, value):
    with store.atomic() as tx:
        tx.set("k", value)


# Each writes, at key "k", a value whose stored encoding is `size` bytes.
SIZED_WRITES = {
    "set": lambda s, size: s.set("k", "x" * (size - 2)),
    "set_if_absent": lambda s, size: s.set("k", "x" * (size - 2), if_version=0),
    "set_with_ttl": lambda s, size: s.set("k", "x" * (size - 2), ttl=60),
    "setitem": lambda s, size: s.__setitem__("k", "x" * (size - 2)),
    "set_many": lambda s, size: s.set_many({"a": 1, "k": "x" * (size - 2)}),
    "get_or_create": lambda s, size: s.get_or_create("k", "x" * (size - 2)),
    "append": lambda s, size: s.append("k", "x" * (size - 4)),
    "append_many": lambda s, size: s.append_many("k", ["x" * (size - 7), ""]),
    "add_to_set": lambda s, size: s.add_to_set("k", "x" * (size - 4)),
    "batch": lambda s, size: _in_batch(s, "x" * (size - 2)),
}


@pytest.mark.parametrize("write", SIZED_WRITES.values(), ids=SIZED_WRITES.keys())
def test_every_write_accepts_exactly_the_limit_and_refuses_one_byte_more(store, unchanged,
                                                                        write):
    with unchanged(), pytest.raises(runstate.ValueTooLarge):
        write(store, MAX_VALUE + 1)
    write(store, MAX_VALUE)
    assert len(json.dumps(store.get("k"), separators=(",", ":"))) == MAX_VALUE


def test_growing_a_list_past_the_limit_changes_nothing(store, unchanged):
    store.set("list", ["x" * (MAX_VALUE - 10)])
    with unchanged(), pytest.raises(runstate.ValueTooLarge):
        store.append("list", "more than ten bytes")


def test_the_value_limit_is_configurable(make_db):
    db = make_db(max_value_bytes=10)
    store = db.store("s")
    store.set("k", "12345678")  # 10 bytes encoded
    with pytest.raises(runstate.ValueTooLarge):
        store.set("k", "123456789")
    assert store.get("k") == "12345678"


# --- values: JSON round-trip ------------------------------------------------------------------

ROUND_TRIP = {
    "null": None,
    "true": True,
    "false": False,
    "zero": 0,
    "int": 42,
    "negative": -7,
    "2**53+1": 2**53 + 1,
    "float": 1.5,
    "float-whole": 1.0,
    "tenth": 0.1,
    "tiny": 1.5e-300,
    "huge-float": 1.7976931348623157e308,
    "negative-float": -2.25,
    "empty-string": "",
    "escapes": "\"\\/\b\f\n\r\t\u0001\u001f",
    "unicode": "ü中🔥\u2028\u2029\ufeff",
    "empty-list": [],
    "empty-object": {},
    "mixed": [1, 1.0, "1", True, None, {"a": [2.5, {}]}],
    "object-key-order": {"b": 1, "a": 2, "c": {"z": 0, "y": 1}},
    "unicode-object-keys": {"🔥": 1, "": 2, "a\u0000b": 3},
}


def test_a_value_reads_back_as_the_same_json(store, subtests):
    for label, value in ROUND_TRIP.items():
        with subtests.test(value=label):
            store.set(label, value)
            for read in (store.get(label), store[label], store.get_record(label).value,
                         next(store.records(start=label)).value):
                assert read == value
                assert _json_shape(read) == _json_shape(value)


def _json_shape(value):
    """The value with every type and every object's key order made visible."""
    if isinstance(value, dict):
        return ("object", [(k, _json_shape(v)) for k, v in value.items()])
    if isinstance(value, list):
        return ("array", [_json_shape(v) for v in value])
    return (type(value).__name__, repr(value))


def test_object_key_order_is_kept(store):
    store.set("k", {"zebra": 1, "apple": 2, "mango": 3})
    assert list(store.get("k")) == ["zebra", "apple", "mango"]


def test_a_float_that_is_whole_stays_a_float(store):
    store.set("k", [1.0, 1])
    assert [type(v) for v in store.get("k")] == [float, int]


def test_negative_zero_keeps_its_sign(store):
    store.set("k", -0.0)
    assert math.copysign(1, store.get("k")) == -1


def test_a_bool_stays_a_bool(store):
    store.set("k", [True, 1, False, 0])
    assert [type(v) for v in store.get("k")] == [bool, int, bool, int]


def test_a_tuple_is_stored_as_an_array(store):
    store.set("k", (1, 2))
    assert store.get("k") == [1, 2]
