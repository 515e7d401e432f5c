"""QUALITY R4: a model-based test of every operation of SPEC §2 (Hypothesis stateful testing).

`RunstateMachine` drives a real database (opened by a backend's opener from conftest's `OPENERS`,
so a new backend is one more entry in `BACKENDS`) and, side by side, `Model`: an in-memory
workspace written here from SPEC §1-2 and docs/library-api.md alone -- per store a dict of
key -> `Entry` (value, version, times, expiry), with the fake clock of conftest that the rules
advance. Every rule runs one operation (or one atomic batch) on both and requires the same
result, or the same error class with nothing changed. After every step the invariants compare
every record of every store (listed, and read key by key through every read path) and the usage
figures (a recount of UTF-8 key bytes + compact JSON value bytes of live records) and the stores'
default_ttl -- usage only while no expired record may linger unpurged, because reading usage
purges and the rules must also meet expired records that are not purged yet.

What the model cannot know exactly it checks as the spec states it:
- versions: one counter per database, so every write's version is larger than every version seen
  before it (never reused, even after delete and re-create, purges and clears), and the live
  records' versions are all different;
- a write that changes nothing (increment by 0, append_many of no values) may skip the write,
  as library-api.md says such operations do; either outcome is accepted;
- the quota in a multi-write operation (set_many, a batch) may be enforced at every write or at
  the end: SPEC only says a write that would pass it fails and changes nothing.

CI size by default; `RUNSTATE_MODEL_EXAMPLES` / `RUNSTATE_MODEL_STEPS` raise it for a soak.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

import runstate
from conftest import BACKENDS, OPENERS, FakeClock
from runstate import (
    Conflict,
    InvalidKey,
    InvalidRequest,
    InvalidValue,
    NotFound,
    OutOfRange,
    QuotaExceeded,
    TypeMismatch,
    ValueTooLarge,
)

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
QUOTA = 200  # small, so that writes pass it now and then
MAX_VALUE = 100  # small, so that growing lists reach it
UNIX_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# --- the inputs: few keys and values, so that operations collide ------------------------------

STORE_NAMES = ["s", "t"]
KEY_LIST = ["a", "ab", "a/ü 🔥", "ü"]  # prefixes of each other; multi-byte UTF-8; / and space
PREFIX_LIST = [None, "", "a", "a/", "ab", "ü", "c"]
SCALARS: list[Any] = [
    None, True, False, 0, 1, -1, 7, 1.0, -0.0, 2.5, "", "x", "1", "ü🔥", "m" * 80,
    INT64_MAX, INT64_MAX - 1, INT64_MIN, INT64_MIN + 1, 2**53 + 1,
]  # fmt: skip
CONTAINERS: list[Any] = [
    [], [1], [1.0], [True], [1, 2], [1, 1], ["x", None], [[1], "x"], (1, "x"),
    {}, {"a": 1}, {"a": 1, "b": 2}, {"b": 2, "a": 1}, {"a": [1.0]}, {"a": [1]},
    [{"a": 1, "b": 2}], [{"b": 2, "a": 1.0}],
]  # fmt: skip
TOO_BIG = "x" * (MAX_VALUE + 1)

stores = st.sampled_from(["s", "s", "s", "t"])  # mostly one store, so that keys collide
keys = st.sampled_from(KEY_LIST)
values = st.one_of(
    st.sampled_from([*SCALARS, TOO_BIG]),
    st.sampled_from(CONTAINERS),
    st.lists(st.sampled_from(SCALARS[:10]), max_size=3),
)
# List and set elements: the cases JSON equality must get right (1 == 1.0, 0 == -0.0, true != 1,
# objects in any key order, [1] == [1.0]), so that they meet in the same list.
ELEMENTS: list[Any] = [
    1, 1.0, True, 0, -0.0, False, "1", None, [1], [1.0], [True], {"a": 1, "b": 2},
    {"b": 2, "a": 1.0}, {"a": 1},
]  # fmt: skip
elements = st.one_of(st.sampled_from(ELEMENTS), st.sampled_from(ELEMENTS), values)


@dataclass(frozen=True)
class Pick:
    """An element chosen when the rule runs: the `index`-th of the list at the key, as it is
    or as a JSON-equal `variant` (1 <-> 1.0, objects' keys reversed), if there is such a list."""

    index: int
    variant: bool


# The value of remove_from_set / remove_from_list / add_to_set: often one the list holds.
picks = st.builds(Pick, st.integers(0, 7), st.booleans())
members = st.one_of(picks, picks, elements)
ttls = st.sampled_from([None, 0.25, 0.5, 1, 2.5, 10])
positive_ttls = st.sampled_from([0.25, 0.5, 1, 2.5, 10])
# Quarter seconds keep the fake clock exact in floating point; 3700 s passes the change feed's
# retention, whose purge must not let a version be reused.
advances = st.sampled_from([0.25, 0.5, 1, 2.5, 10, 3700])
big_amounts = [1, 2, -1, 2**62, INT64_MAX, INT64_MIN, INT64_MAX - 1, -INT64_MAX]
amounts = st.one_of(st.sampled_from(big_amounts), st.integers(-50, 50).filter(bool))
amounts_or_zero = st.one_of(amounts, st.just(0))
defaults = st.sampled_from([None, 0, "default", [1]])
# How an if_version / check version is chosen from the model when the rule runs.
version_choices = st.sampled_from(["current", "current", "absent", "stale", "future"])
maybe_versions = st.one_of(st.none(), version_choices)
FUTURE = 2**62  # a version no test run reaches


# --- the model ---------------------------------------------------------------------------------


def micros_to_datetime(micros: int | None) -> datetime | None:
    return None if micros is None else UNIX_EPOCH + timedelta(microseconds=micros)


def json_equal(a: Any, b: Any) -> bool:
    """SPEC §2 equality: numbers by value (1 == 1.0), true != 1, objects in any key order."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


def json_variant(value: Any) -> Any:
    """A different Python value, JSON-equal to `value`."""
    if type(value) is int and abs(value) < 2**53:
        return float(value)
    if type(value) is float and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if type(value) is list:
        return [json_variant(v) for v in value]
    if type(value) is dict:
        return {k: json_variant(value[k]) for k in reversed(value)}
    return value


def same_json(a: Any, b: Any) -> bool:
    """The same JSON text: type, number form and object key order included."""
    return orjson.dumps(a) == orjson.dumps(b)


class Fail(Exception):
    """The error the model predicts: its class and the details it must carry."""

    def __init__(self, cls: type[runstate.Error], **details: Any) -> None:
        super().__init__(cls.__name__, details)
        self.cls = cls
        self.details = details


@dataclass(frozen=True)
class Entry:
    value: Any
    data: bytes  # compact JSON, as SPEC §1 counts it
    version: int | None  # None: written by the step under way, not observed yet
    created: int  # microseconds
    updated: int
    expires: int | None
    # A write that changed nothing may be skipped by the store: the entry as it was before.
    before: Entry | None = None

    def alive(self, now: int) -> bool:
        return self.expires is None or self.expires > now


@dataclass(frozen=True)
class RecordSpec:
    """The record an operation must return."""

    key: str
    entry: Entry


@dataclass(frozen=True)
class PageSpec:
    items: list[Any]
    more: bool


@dataclass
class Model:
    now: int
    data: dict[str, dict[str, Entry]] = field(
        default_factory=lambda: {name: {} for name in STORE_NAMES}
    )
    default_ttl: dict[str, float | None] = field(default_factory=lambda: dict.fromkeys(STORE_NAMES))
    max_version: int = 0  # the largest version observed so far

    def live(self, store: str) -> list[tuple[str, Entry]]:
        """The live records of `store` in UTF-8 byte order of key."""
        found = [(k, e) for k, e in self.data[store].items() if e.alive(self.now)]
        return sorted(found, key=lambda item: item[0].encode())

    def prune(self) -> None:
        """Forget expired records: they are invisible, whether or not purged yet."""
        for entries in self.data.values():
            for key in [k for k, e in entries.items() if not e.alive(self.now)]:
                del entries[key]

    def version_for(self, store: str, key: str, choice: str) -> int:
        entry = self.data[store].get(key)
        current = entry.version if entry is not None and entry.alive(self.now) else 0
        assert current is not None
        if choice == "current":
            return current
        if choice == "absent":
            return 0
        if choice == "stale":  # a version the record does not have
            return current - 1 if current > 1 else FUTURE - 1
        return FUTURE


class Work:
    """One step's changes on a copy of the model's records; `op_<name>` is each operation."""

    def __init__(self, model: Model, store: str, quota_each_write: bool) -> None:
        self.model = model
        self.now = model.now
        self.store = store
        self.quota_each_write = quota_each_write
        self.data = {name: dict(entries) for name, entries in model.data.items()}

    @property
    def entries(self) -> dict[str, Entry]:
        return self.data[self.store]

    def live(self, key: str) -> Entry | None:
        entry = self.entries.get(key)
        return entry if entry is not None and entry.alive(self.now) else None

    def used(self) -> int:
        return sum(
            len(key.encode()) + len(entry.data)
            for entries in self.data.values()
            for key, entry in entries.items()
            if entry.alive(self.now)
        )

    def expiry(self, ttl: float | None) -> int | None:
        if ttl is None:
            ttl = self.model.default_ttl[self.store]
            if ttl is None:
                return None
        return self.now + round(ttl * 1_000_000)

    def put(self, key: str, value: Any, expires: int | None, may_skip: bool = False) -> Entry:
        data = orjson.dumps(value)
        if len(data) > MAX_VALUE:
            raise Fail(ValueTooLarge)
        old = self.live(key)
        before = None
        if may_skip and old is not None and old.data == data and old.expires == expires:
            before = old if old.version is not None else old.before
        entry = Entry(
            value=orjson.loads(data),
            data=data,
            version=None,
            created=old.created if old is not None else self.now,
            updated=self.now,
            expires=expires,
            before=before,
        )
        self.entries[key] = entry
        if self.quota_each_write and self.used() > QUOTA:
            raise Fail(QuotaExceeded)
        return entry

    def check_version(self, key: str, expected: int, missing: type[runstate.Error]) -> None:
        entry = self.live(key)
        if entry is None:
            if expected != 0:
                raise Fail(missing)
        elif entry.version != expected:  # a version written in this step is new: never equal
            raise Fail(Conflict)

    def listing(self, prefix: str | None, start: str | None, reverse: bool) -> list[str]:
        found = sorted((k for k in self.entries if self.live(k)), key=str.encode, reverse=reverse)
        if prefix:
            found = [k for k in found if k.startswith(prefix)]
        if start is not None:
            low = start.encode()
            found = [k for k in found if (k.encode() <= low if reverse else k.encode() >= low)]
        return found

    # reads

    def op_get(self, key: str, default: Any = None) -> Any:
        entry = self.live(key)
        return default if entry is None else entry.value

    def op_get_record(self, key: str) -> RecordSpec | None:
        entry = self.live(key)
        return None if entry is None else RecordSpec(key, entry)

    def op_has(self, key: str) -> bool:
        return self.live(key) is not None

    def op_ttl(self, key: str) -> float | None:
        entry = self.live(key)
        if entry is None or entry.expires is None:
            return None
        return (entry.expires - self.now) / 1_000_000

    def op_keys(
        self, prefix: str | None = None, start: str | None = None, limit: int = 100,
        reverse: bool = False,
    ) -> PageSpec:  # fmt: skip
        found = self.listing(prefix, start, reverse)
        return PageSpec(found[:limit], len(found) > limit)

    def op_records(
        self, prefix: str | None = None, start: str | None = None, limit: int = 100,
        reverse: bool = False,
    ) -> PageSpec:  # fmt: skip
        page = self.op_keys(prefix, start, limit, reverse)
        return PageSpec([RecordSpec(k, self.entries[k]) for k in page.items], page.more)

    # writes

    def op_get_or_create(self, key: str, value: Any) -> Any:
        entry = self.live(key)
        if entry is None:
            entry = self.put(key, value, self.expiry(None))
        return entry.value

    def op_set(
        self, key: str, value: Any, ttl: float | None = None, if_version: int | None = None
    ) -> RecordSpec:
        if if_version is not None:
            self.check_version(key, if_version, NotFound)
        return RecordSpec(key, self.put(key, value, self.expiry(ttl)))

    def op_set_many(self, entries: dict[str, Any], ttl: float | None = None) -> int:
        expires = self.expiry(ttl)
        for key, value in entries.items():
            self.put(key, value, expires)
        return len(entries)

    def op_delete(self, key: str, if_version: int | None = None) -> bool:
        entry = self.live(key)
        if entry is None:
            return False
        if if_version is not None and entry.version != if_version:
            raise Fail(Conflict)
        del self.entries[key]
        return True

    def op_delete_many(self, keys: list[str]) -> int:
        return sum(self.op_delete(key) for key in dict.fromkeys(keys))

    def op_clear(self) -> int:
        count = sum(1 for key in self.entries if self.live(key))
        self.entries.clear()
        return count

    def _integer(self, key: str, delta: int) -> int:
        entry = self.live(key)
        current = 0 if entry is None else entry.value
        if type(current) is not int:  # 1.0 and true are not integers
            raise Fail(TypeMismatch)
        result = current + delta
        if not INT64_MIN <= result <= INT64_MAX:
            raise Fail(OutOfRange)
        expires = entry.expires if entry is not None else self.expiry(None)
        self.put(key, result, expires, may_skip=True)
        return result

    def op_increment(self, key: str, amount: int = 1) -> int:
        return self._integer(key, amount)

    def op_decrement(self, key: str, amount: int = 1) -> int:
        return self._integer(key, -amount)

    def _list(self, key: str) -> tuple[Entry | None, list[Any]]:
        entry = self.live(key)
        if entry is None:
            return None, []
        if type(entry.value) is not list:
            raise Fail(TypeMismatch)
        return entry, list(entry.value)

    def _keep(self, entry: Entry | None) -> int | None:
        """Modifying operations keep a record's expiry; a record they create gets the default."""
        return entry.expires if entry is not None else self.expiry(None)

    def op_append(self, key: str, value: Any) -> int:
        entry, items = self._list(key)
        items.append(value)
        self.put(key, items, self._keep(entry))
        return len(items)

    def op_append_many(self, key: str, values: list[Any], flatten: bool = False) -> int:
        entry, items = self._list(key)
        for value in values:
            if flatten and isinstance(value, list | tuple):
                items.extend(value)
            else:
                items.append(value)
        self.put(key, items, self._keep(entry), may_skip=True)
        return len(items)

    def op_remove_from_list(self, key: str, value: Any) -> int:
        entry, items = self._list(key)
        kept = [v for v in items if not json_equal(v, value)]
        if entry is not None and len(kept) < len(items):
            self.put(key, kept, entry.expires)
        return len(items) - len(kept)

    def op_add_to_set(self, key: str, value: Any) -> bool:
        entry, items = self._list(key)
        if any(json_equal(v, value) for v in items):
            return False
        self.put(key, [*items, value], self._keep(entry))
        return True

    def op_remove_from_set(self, key: str, value: Any) -> bool:
        entry, items = self._list(key)
        kept = [v for v in items if not json_equal(v, value)]
        if entry is None or len(kept) == len(items):
            return False
        self.put(key, kept, entry.expires)
        return True

    def op_save_current_time(self, key: str) -> str:
        stamp = micros_to_datetime(self.now).strftime("%Y-%m-%dT%H:%M:%S.%fZ")  # type: ignore[union-attr]
        self.put(key, stamp, self.expiry(None))
        return stamp

    def op_set_ttl(self, key: str, ttl: float | None) -> bool:
        entry = self.live(key)
        if entry is None:
            return False
        self.put(key, entry.value, None if ttl is None else self.now + round(ttl * 1_000_000))
        return True


@dataclass
class Outcome:
    result: Any = None
    error: Fail | None = None
    data: dict[str, dict[str, Entry]] | None = None


def predict(model: Model, store: str, fn: Callable[[Work], Any]) -> list[Outcome]:
    """What `fn` does to the model, with the quota checked at each write and at the end only
    (both are within SPEC for an operation of several writes; for one write they agree)."""
    outcomes = []
    for each_write in (True, False):
        work = Work(model, store, each_write)
        try:
            result = fn(work)
            if work.used() > QUOTA:
                raise Fail(QuotaExceeded)
            outcomes.append(Outcome(result=result, data=work.data))
        except Fail as fail:
            outcomes.append(Outcome(error=fail))
    return outcomes


# --- comparing the store's answers with the model's ---------------------------------------------


def check_record(real: Any, spec: RecordSpec, max_before: int) -> None:
    entry = spec.entry
    assert isinstance(real, runstate.Record), real
    assert real.key == spec.key
    assert orjson.dumps(real.value) == entry.data, (spec.key, real.value, entry.value)
    if entry.version is not None:
        assert real.version == entry.version, (spec.key, real.version, entry.version)
    elif entry.before is not None and real.version == entry.before.version:
        entry = entry.before  # a write that changed nothing, skipped
    else:
        assert real.version > max_before, (spec.key, real.version, max_before)
    assert real.created_at == micros_to_datetime(entry.created), spec.key
    assert real.updated_at == micros_to_datetime(entry.updated), spec.key
    assert real.expires_at == micros_to_datetime(entry.expires), spec.key


def check_result(real: Any, expected: Any, max_before: int) -> None:
    if isinstance(expected, RecordSpec):
        check_record(real, expected, max_before)
    elif isinstance(expected, PageSpec):
        assert isinstance(real, runstate.Page), real
        assert len(real.items) == len(expected.items), (real.items, expected.items)
        for item, want in zip(real.items, expected.items, strict=True):
            check_result(item, want, max_before)
        assert (real.next_cursor is not None) == expected.more, real.next_cursor
    elif isinstance(expected, list) and isinstance(real, list):  # batch results
        assert len(real) == len(expected), (real, expected)
        for item, want in zip(real, expected, strict=True):
            check_result(item, want, max_before)
    else:
        assert same_json(real, expected), (real, expected)


def check_outcome(
    outcome: Outcome, result: Any, error: runstate.Error | None, max_before: int
) -> None:
    if outcome.error is not None:
        assert error is not None, f"expected {outcome.error.cls.__name__}, got {result!r}"
        assert type(error) is outcome.error.cls, f"expected {outcome.error.cls.__name__}: {error!r}"
        for name, value in outcome.error.details.items():
            assert error.details.get(name) == value, (name, error.details, outcome.error.details)
    else:
        assert error is None, f"expected {outcome.result!r}, got {error!r}"
        check_result(result, outcome.result, max_before)


# --- malformed inputs: the error class SPEC names, and nothing changes ---------------------------


def _nested(depth: int) -> Any:
    value: Any = 0
    for _ in range(depth):
        value = [value]
    return value


def _bad_batch(db: Any, s: Any) -> None:
    with s.atomic() as tx:
        tx.set("a", "written?")
        tx.set("", 1)  # raises here: the batch is discarded


def _huge_batch(db: Any, s: Any) -> None:
    with s.atomic() as tx:
        for _ in range(1001):
            tx.has("a")


INVALID_INPUTS: dict[str, tuple[Callable[[Any, Any], Any], type[runstate.Error]]] = {
    "empty key": (lambda db, s: s.get(""), InvalidKey),
    "int key": (lambda db, s: s.set(1, 1), InvalidKey),
    "NUL in key": (lambda db, s: s.set("a\x00", 1), InvalidKey),
    "key over 1024 bytes": (lambda db, s: s.set("ü" * 513, 1), InvalidKey),
    "surrogate key": (lambda db, s: s.increment("\ud800"), InvalidKey),
    "NaN": (lambda db, s: s.set("a", float("nan")), InvalidValue),
    "Infinity in a list": (lambda db, s: s.append("a", [float("inf")]), InvalidValue),
    "integer past 64 bits": (lambda db, s: s.set("a", 2**63), InvalidValue),
    "python set": (lambda db, s: s.add_to_set("a", {1, 2}), InvalidValue),
    "bytes": (lambda db, s: s.get_or_create("a", b"x"), InvalidValue),
    "non-string object key": (lambda db, s: s.set("a", {1: 2}), InvalidValue),
    "65 levels": (lambda db, s: s.set("a", _nested(65)), InvalidValue),
    "lone surrogate": (lambda db, s: s.set("a", "\ud800"), InvalidValue),
    "ttl 0": (lambda db, s: s.set("a", 1, ttl=0), InvalidRequest),
    "negative ttl": (lambda db, s: s.set_ttl("a", -1), InvalidRequest),
    "string ttl": (lambda db, s: s.set_many({"a": 1}, ttl="5"), InvalidRequest),
    "bool ttl": (lambda db, s: s.set("a", 1, ttl=True), InvalidRequest),
    "NaN ttl": (lambda db, s: s.set("a", 1, ttl=float("nan")), InvalidRequest),
    "negative if_version": (lambda db, s: s.set("a", 1, if_version=-1), InvalidRequest),
    "float amount": (lambda db, s: s.increment("a", 1.5), InvalidRequest),
    "bool amount": (lambda db, s: s.decrement("a", True), InvalidRequest),
    "amount past 64 bits": (lambda db, s: s.increment("a", 2**63), OutOfRange),
    "append_many of a string": (lambda db, s: s.append_many("a", "abc"), InvalidRequest),
    "limit 0": (lambda db, s: list(s.keys(limit=0)), InvalidRequest),
    "limit 1001": (lambda db, s: s.keys_page(limit=1001), InvalidRequest),
    "empty cursor": (lambda db, s: s.records_page(cursor=""), InvalidRequest),
    "set_many of pairs": (lambda db, s: s.set_many([("a", 1)]), InvalidRequest),
    "set_many with a bad key": (lambda db, s: s.set_many({"a": 1, "": 2}), InvalidKey),
    "set_many with a bad value": (lambda db, s: s.set_many({"a": 1, "b": {3}}), InvalidValue),
    "delete_many of a string": (lambda db, s: s.delete_many("ab"), InvalidRequest),
    "batch with a bad op": (_bad_batch, InvalidKey),
    "batch of 1001 ops": (_huge_batch, InvalidRequest),
    "default_ttl 0": (lambda db, s: db.update_store("s", default_ttl=0), InvalidRequest),
    "update of a missing store": (lambda db, s: db.update_store("nope", default_ttl=1), NotFound),
}


# --- the state machine -------------------------------------------------------------------------


class Aborted(Exception):
    """Raised inside an atomic block: the batch must be discarded."""


class RunstateMachine(RuleBasedStateMachine):
    def __init__(self, backend: str = "sqlite") -> None:
        super().__init__()
        self.directory = Path(tempfile.mkdtemp(prefix="runstate-model-"))
        self.clock = FakeClock()
        self.opened = ExitStack()
        opener = OPENERS[backend](
            self.directory, self.clock, quota_bytes=QUOTA, max_value_bytes=MAX_VALUE
        )
        self.db = self.opened.enter_context(opener)
        self.stores = {name: self.db.store(name) for name in STORE_NAMES}
        self.model = Model(now=self.now())
        self.expired_may_linger = False  # records expired but perhaps not purged

    def teardown(self) -> None:
        self.opened.close()
        shutil.rmtree(self.directory, ignore_errors=True)

    def now(self) -> int:
        return round(self.clock() * 1_000_000)

    # the engine of every rule

    def run(self, store: str, real: Callable[[], Any], fn: Callable[[Work], Any]) -> Any:
        """Run `real` on the store and `fn` on the model; they must agree. Returns `real`'s
        result (or None if it raised the predicted error)."""
        max_before = self.model.max_version
        outcomes = predict(self.model, store, fn)
        result: Any = None
        error: runstate.Error | None = None
        try:
            result = real()
        except runstate.Error as exc:
            error = exc
        failures = []
        for outcome in outcomes:
            try:
                check_outcome(outcome, result, error, max_before)
            except AssertionError as exc:
                failures.append(exc)
                continue
            if outcome.data is not None:
                self.model.data = outcome.data
                self.reconcile(max_before)
            return result
        raise failures[0]

    def do(self, store: str, name: str, **kwargs: Any) -> Any:
        target = self.stores[store]
        return self.run(
            store,
            lambda: getattr(target, name)(**kwargs),
            lambda work: getattr(work, "op_" + name)(**kwargs),
        )

    def reconcile(self, max_before: int) -> None:
        """Learn the versions of the records this step wrote: each larger than any seen before
        (or, for a write that changed nothing, possibly the old one), all different."""
        new = []
        for name, entries in self.model.data.items():
            for key, entry in list(entries.items()):
                if entry.version is not None:
                    continue
                record = self.stores[name].get_record(key)
                assert record is not None, (name, key)
                if entry.before is not None and record.version == entry.before.version:
                    entries[key] = entry.before
                    continue
                assert record.version > max_before, (name, key, record.version, max_before)
                entries[key] = replace(entry, version=record.version, before=None)
                new.append(record.version)
        assert len(set(new)) == len(new), new
        self.model.max_version = max([max_before, *new])

    def version(self, store: str, key: str, choice: str | None) -> int | None:
        return None if choice is None else self.model.version_for(store, key, choice)

    def member(self, store: str, key: str, value: Any) -> Any:
        if not isinstance(value, Pick):
            return value
        entry = self.model.data[store].get(key)
        if entry is None or not entry.alive(self.model.now) or type(entry.value) is not list:
            return 1
        if not entry.value:
            return []
        found = entry.value[value.index % len(entry.value)]
        return json_variant(found) if value.variant else found

    # reads

    @rule(store=stores, key=keys, default=defaults)
    def get(self, store: str, key: str, default: Any) -> None:
        self.do(store, "get", key=key, default=default)

    @rule(store=stores, key=keys)
    def get_record(self, store: str, key: str) -> None:
        self.do(store, "get_record", key=key)

    @rule(store=stores, key=keys)
    def has(self, store: str, key: str) -> None:
        self.do(store, "has", key=key)

    @rule(store=stores, key=keys)
    def ttl(self, store: str, key: str) -> None:
        self.do(store, "ttl", key=key)

    @rule(
        store=stores,
        prefix=st.sampled_from(PREFIX_LIST),
        start=st.none() | keys | st.just("aa"),
        limit=st.sampled_from([1, 2, 3, 100]),
        reverse=st.booleans(),
        records=st.booleans(),
    )
    def listing(
        self, store: str, prefix: str | None, start: str | None, limit: int, reverse: bool,
        records: bool,
    ) -> None:  # fmt: skip
        target = self.stores[store]
        work = Work(self.model, store, True)
        expected = work.listing(prefix, start, reverse)
        options = {"prefix": prefix, "start": start, "limit": limit, "reverse": reverse}
        # the iterator pages transparently
        if records:
            found = list(target.records(**options))
            assert [r.key for r in found] == expected
            for record in found:
                check_record(record, RecordSpec(record.key, work.entries[record.key]), 0)
        else:
            assert list(target.keys(**options)) == expected
        # one page at a time through the cursor: full pages, next_cursor null on the last one
        pages, cursor = [], None
        while True:
            page = (target.records_page if records else target.keys_page)(cursor=cursor, **options)
            pages.append([r.key for r in page.items] if records else page.items)
            if page.next_cursor is None:
                break
            assert len(pages) <= len(expected), "a page too many"
            cursor = page.next_cursor
        wanted = [expected[i : i + limit] for i in range(0, len(expected), limit)] or [[]]
        assert pages == wanted

    @rule(store=stores, key=keys)
    def mapping(self, store: str, key: str) -> None:
        target = self.stores[store]
        live = dict(self.model.live(store))
        assert (key in target) == (key in live)
        assert len(target) == len(live)
        assert list(target) == list(live)
        if key in live:
            assert same_json(target[key], live[key].value)
        else:
            with pytest.raises(KeyError):
                target[key]

    # writes

    @rule(store=stores, key=keys, value=values)
    def get_or_create(self, store: str, key: str, value: Any) -> None:
        self.do(store, "get_or_create", key=key, value=value)

    @rule(store=stores, key=keys, value=values, ttl=ttls, choice=maybe_versions)
    def set(self, store: str, key: str, value: Any, ttl: float | None, choice: str | None) -> None:
        if_version = self.version(store, key, choice)
        record = self.do(store, "set", key=key, value=value, ttl=ttl, if_version=if_version)
        if record is not None:
            assert record.version == self.model.data[store][key].version

    @rule(store=stores, entries=st.dictionaries(keys, values, max_size=4), ttl=ttls)
    def set_many(self, store: str, entries: dict[str, Any], ttl: float | None) -> None:
        self.do(store, "set_many", entries=entries, ttl=ttl)

    @rule(store=stores, key=keys, choice=maybe_versions)
    def delete(self, store: str, key: str, choice: str | None) -> None:
        self.do(store, "delete", key=key, if_version=self.version(store, key, choice))

    @rule(store=stores, keys=st.lists(keys, max_size=4))
    def delete_many(self, store: str, keys: list[str]) -> None:
        self.do(store, "delete_many", keys=keys)

    @rule(store=stores)
    def clear(self, store: str) -> None:
        self.do(store, "clear")

    @rule(store=stores, key=keys, amount=amounts_or_zero, down=st.booleans())
    def increment(self, store: str, key: str, amount: int, down: bool) -> None:
        self.do(store, "decrement" if down else "increment", key=key, amount=amount)

    @rule(store=stores, key=keys, elements=st.lists(elements, min_size=1, max_size=3))
    def append(self, store: str, key: str, elements: list[Any]) -> None:
        for value in elements:
            self.do(store, "append", key=key, value=value)

    @rule(store=stores, key=keys, values=st.lists(elements, max_size=3), flatten=st.booleans())
    def append_many(self, store: str, key: str, values: list[Any], flatten: bool) -> None:
        self.do(store, "append_many", key=key, values=values, flatten=flatten)

    @rule(store=stores, key=keys, value=members)
    def remove_from_list(self, store: str, key: str, value: Any) -> None:
        self.do(store, "remove_from_list", key=key, value=self.member(store, key, value))

    @rule(store=stores, key=keys, elements=st.lists(members, min_size=1, max_size=4))
    def add_to_set(self, store: str, key: str, elements: list[Any]) -> None:
        for value in elements:  # several, so that equal elements meet
            self.do(store, "add_to_set", key=key, value=self.member(store, key, value))

    @rule(store=stores, key=keys, value=members)
    def remove_from_set(self, store: str, key: str, value: Any) -> None:
        self.do(store, "remove_from_set", key=key, value=self.member(store, key, value))

    @rule(store=stores, key=keys)
    def save_current_time(self, store: str, key: str) -> None:
        self.do(store, "save_current_time", key=key)

    @rule(store=stores, key=keys, ttl=ttls)
    def set_ttl(self, store: str, key: str, ttl: float | None) -> None:
        self.do(store, "set_ttl", key=key, ttl=ttl)

    # atomic batches

    @rule(
        store=stores,
        checks=st.lists(st.tuples(keys, version_choices), max_size=3),
        ops=st.lists(
            st.one_of(
                st.tuples(st.just("set"), st.fixed_dictionaries(
                    {"key": keys, "value": values},
                    optional={"ttl": positive_ttls, "if_version": version_choices},
                )),
                st.tuples(st.sampled_from(["increment", "decrement"]), st.fixed_dictionaries(
                    {"key": keys, "amount": amounts}
                )),
                st.tuples(
                    st.sampled_from(
                        ["append", "add_to_set", "remove_from_set", "remove_from_list"]
                    ),
                    st.fixed_dictionaries({"key": keys, "value": elements}),
                ),
                st.tuples(
                    st.just("get_or_create"), st.fixed_dictionaries({"key": keys, "value": values}),
                ),
                st.tuples(
                    st.sampled_from(["get", "get_record", "has", "ttl", "save_current_time"]),
                    st.fixed_dictionaries({"key": keys}),
                ),
                st.tuples(st.just("delete"), st.fixed_dictionaries(
                    {"key": keys}, optional={"if_version": version_choices}
                )),
                st.tuples(st.just("set_ttl"), st.fixed_dictionaries({"key": keys, "ttl": ttls})),
                st.tuples(st.just("set_many"), st.fixed_dictionaries(
                    {"entries": st.dictionaries(keys, values, max_size=3)}
                )),
                st.tuples(st.just("append_many"), st.fixed_dictionaries(
                    {"key": keys, "values": st.lists(values, min_size=1, max_size=3),
                     "flatten": st.booleans()}
                )),
                st.tuples(st.just("delete_many"), st.fixed_dictionaries(
                    {"keys": st.lists(keys, max_size=3)}
                )),
                st.tuples(st.sampled_from(["keys", "records"]), st.fixed_dictionaries(
                    {"prefix": st.sampled_from(PREFIX_LIST), "reverse": st.booleans()}
                )),
                st.tuples(st.just("clear"), st.just({})),
            ),
            min_size=1,
            max_size=5,
        ),
        abort=st.sampled_from([False, False, False, False, True]),
    )  # fmt: skip
    def atomic(
        self, store: str, checks: list[tuple[str, str]], ops: list[tuple[str, dict[str, Any]]],
        abort: bool,
    ) -> None:  # fmt: skip
        checks = [(key, self.model.version_for(store, key, c)) for key, c in checks]
        resolved = []
        for name, kwargs in ops:
            kwargs = dict(kwargs)
            if "if_version" in kwargs:
                kwargs["if_version"] = self.model.version_for(
                    store, kwargs["key"], kwargs["if_version"]
                )
            resolved.append((name, kwargs))

        def real() -> list[Any]:
            with self.stores[store].atomic() as tx:
                for key, version in checks:
                    tx.check(key, version=version)
                for name, kwargs in resolved:
                    getattr(tx, name)(**kwargs)
                if abort:
                    raise Aborted
            return tx.results

        if abort:
            with pytest.raises(Aborted):
                real()
            return  # the invariants find nothing changed

        def model(work: Work) -> list[Any]:
            for index, (key, version) in enumerate(checks):
                try:
                    work.check_version(key, version, Conflict)
                except Fail as fail:
                    fail.details["check"] = index
                    raise
            results = []
            for index, (name, kwargs) in enumerate(resolved):
                try:
                    results.append(getattr(work, "op_" + name)(**kwargs))
                except Fail as fail:
                    fail.details["op"] = index
                    raise
            return results

        self.run(store, real, model)

    # the store, the clock and the purge

    @rule(store=stores, ttl=ttls)
    def default_ttl(self, store: str, ttl: float | None) -> None:
        info = self.db.update_store(store, default_ttl=ttl)
        self.model.default_ttl[store] = None if ttl is None else float(ttl)
        assert info.name == store
        assert info.default_ttl == self.model.default_ttl[store]

    @rule(seconds=advances)
    def advance_clock(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self.model.now = self.now()
        self.expired_may_linger = True
        self.model.prune()

    @rule()
    def purge_expired(self) -> None:
        purged = self.db.purge_expired()
        self.expired_may_linger = False
        assert type(purged) is int
        assert purged >= 0
        recount = getattr(self.db.core, "recount", None)  # live + expired rows, if the engine can
        if recount is not None:
            live = [entry for name in STORE_NAMES for _, entry in self.model.live(name)]
            size = sum(
                len(k.encode()) + len(e.data) for n in STORE_NAMES for k, e in self.model.live(n)
            )
            assert tuple(recount(self.db.workspace)) == (len(live), size)

    # errors of malformed inputs: the class SPEC names, and nothing changes

    @rule(case=st.sampled_from(sorted(INVALID_INPUTS)))
    def invalid_input(self, case: str) -> None:
        call, error = INVALID_INPUTS[case]
        with pytest.raises(error) as info:
            call(self.db, self.stores["s"])
        assert type(info.value) is error

    # invariants

    @rule()
    def usage(self) -> None:
        self.check_usage()

    @invariant()
    def usage_matches_the_model(self) -> None:
        """Reading usage may purge expired records (the SQLite engine does, to count exactly),
        and the rules must also meet expired records that are not purged yet: so after the
        clock moves, usage is checked again only once a rule has read it or purged."""
        if not self.expired_may_linger:
            self.check_usage()

    def check_usage(self) -> None:
        """Usage is exact: the model's recount of live records' UTF-8 key bytes + compact JSON
        value bytes, per store and in all."""
        self.expired_may_linger = False
        usage = self.db.usage()
        infos = {info.name: info for info in usage.stores}
        assert sorted(infos) == STORE_NAMES
        total_records = total_bytes = 0
        for name in STORE_NAMES:
            live = self.model.live(name)
            size = sum(len(key.encode()) + len(entry.data) for key, entry in live)
            assert (infos[name].records, infos[name].bytes) == (len(live), size), name
            assert infos[name].default_ttl == self.model.default_ttl[name], name
            total_records += len(live)
            total_bytes += size
        assert (usage.records, usage.bytes) == (total_records, total_bytes)
        assert usage.quota_bytes == QUOTA

    # invariants: reads only, so that they change nothing (not even what is purged)

    @invariant()
    def every_record_is_as_the_model_says(self) -> None:
        """Every store lists exactly the model's live records; every key reads as the model says
        through `get` alone (the hot path) and `get`, `get_record`, `has` and `ttl` in one
        read-only batch; live records all have different versions."""
        versions = []
        missing = ["missing"]
        for name in STORE_NAMES:
            target = self.stores[name]
            live = self.model.live(name)
            page = target.records_page(limit=1000)
            assert page.next_cursor is None
            assert [r.key for r in page.items] == [key for key, _ in live], name
            for record, (key, entry) in zip(page.items, live, strict=True):
                check_record(record, RecordSpec(key, entry), self.model.max_version)
                versions.append(record.version)
            work = Work(self.model, name, True)
            with target.atomic() as tx:
                for key in KEY_LIST:
                    tx.get(key, missing)
                    tx.get_record(key)
                    tx.has(key)
                    tx.ttl(key)
            expected = []
            for key in KEY_LIST:
                expected += [
                    work.op_get(key, missing), work.op_get_record(key), work.op_has(key),
                    work.op_ttl(key),
                ]  # fmt: skip
                assert same_json(target.get(key, missing), work.op_get(key, missing)), key
            check_result(tx.results, expected, self.model.max_version)
        assert len(set(versions)) == len(versions), "two live records share a version"


# Examples per backend at CI size: the embedded engine is the reference; through HTTP every
# step is several requests and every example starts a server, so fewer.
EXAMPLES = {"sqlite": 150, "remote": 20, "postgres": 30, "remote-postgres": 8}


def machine_settings(backend: str) -> settings:
    return settings(
        max_examples=int(os.environ.get("RUNSTATE_MODEL_EXAMPLES", EXAMPLES.get(backend, 100))),
        stateful_step_count=int(os.environ.get("RUNSTATE_MODEL_STEPS", "50")),
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_operation_agrees_with_the_model(backend: str) -> None:
    run_state_machine_as_test(partial(RunstateMachine, backend), settings=machine_settings(backend))
