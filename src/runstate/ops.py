"""Every operation of SPEC §2, defined once.

An operation is a small class: its constructor checks and normalises the inputs (raising the
spec's errors before anything is touched), and `run` applies it to a transaction (`Reader` or
`Txn` from `runstate.engine.base`). The library's methods, the HTTP batch ops, the pre-built
actions and the CLI all build these objects and hand them to a `Core`; no interface restates
an operation's rules.

`OPS` maps each operation's name to its class; `parse_op` builds one from a JSON object of inputs
(the HTTP batch form ``{"op": "increment", "key": "n", "amount": 2}``).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from .engine.base import Reader, Row, Txn
from .errors import Conflict, Error, InvalidRequest, NotFound, OutOfRange, TypeMismatch
from .model import (
    DEFAULT_PAGE,
    INT64_MAX,
    INT64_MIN,
    Page,
    Record,
    check_bool,
    check_int,
    check_key,
    check_limit,
    check_ttl,
    check_version,
    decode_cursor,
    decode_value,
    encode_cursor,
    encode_value,
    format_time,
    json_equal,
    json_key,
)

__all__ = [
    "MAX_BATCH",
    "OPS",
    "BatchWork",
    "Check",
    "Op",
    "parse_check",
    "parse_op",
    "run_batch",
]

MAX_BATCH = 1000
_UNLIMITED = 1 << 62  # size limits are enforced by the engine, which knows the configured one


def _encode(value: object) -> bytes:
    return encode_value(value, _UNLIMITED)


def _expiry(tx: Txn, ttl: float | None) -> int | None:
    """The expiry of a newly written record: its own ttl, else the store's default, else none."""
    if ttl is None:
        ttl = tx.default_ttl
        if ttl is None:
            return None
    return tx.now + round(ttl * 1_000_000)


def _mismatch(key: str, wanted: str, found: Any) -> TypeMismatch:
    kind = {
        bool: "boolean",
        int: "integer",
        float: "number",
        str: "string",
        list: "list",
        dict: "object",
        type(None): "null",
    }.get(type(found), type(found).__name__)
    return TypeMismatch(
        f"the value at {key!r} is {_article(kind)} {kind}, not {_article(wanted)} {wanted}",
        {"key": key, "expected": wanted, "found": kind},
    )


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _list_at(tx: Reader, key: str, wanted: str = "list") -> tuple[Row | None, list[Any]]:
    row = tx.get(key)
    if row is None:
        return None, []
    value = decode_value(row.value)
    if type(value) is not list:
        raise _mismatch(key, wanted, value)
    return row, value


def _keep_expiry(tx: Txn, row: Row | None) -> int | None:
    """Modifying ops keep a live record's expiry; a new record gets the store's default."""
    return row.expires_at if row is not None else _expiry(tx, None)


class Op:
    """One operation with checked inputs; `run` applies it inside a transaction."""

    name: ClassVar[str]
    writes: ClassVar[bool] = True
    _fields: ClassVar[tuple[str, ...]] = ()
    _required: ClassVar[frozenset[str]] = frozenset()
    _field_set: ClassVar[frozenset[str]] = frozenset()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        params = list(inspect.signature(cls.__init__).parameters.values())[1:]
        cls._fields = tuple(p.name for p in params)
        cls._field_set = frozenset(cls._fields)
        cls._required = frozenset(p.name for p in params if p.default is inspect.Parameter.empty)

    def run(self, tx: Any) -> Any:
        raise NotImplementedError

    def args(self) -> dict[str, Any]:
        """The inputs as JSON (the HTTP batch op form, without ``op``)."""
        return {f: getattr(self, f) for f in self._fields}

    @staticmethod
    def result_to_json(result: Any) -> Any:
        return result

    @staticmethod
    def result_from_json(data: Any) -> Any:
        return data

    def __repr__(self) -> str:
        inner = ", ".join(f"{f}={getattr(self, f)!r}" for f in self._fields)
        return f"{type(self).__name__}({inner})"


class _RecordResult(Op):
    @staticmethod
    def result_to_json(result: Any) -> Any:
        return result.to_json() if isinstance(result, Record) else result

    @staticmethod
    def result_from_json(data: Any) -> Any:
        return Record.from_json(data) if isinstance(data, dict) else data


# --- reads ------------------------------------------------------------------------------------


class Get(Op):
    name = "get"
    writes = False

    def __init__(self, key: str, default: Any = None) -> None:
        self.key = check_key(key)
        self.default = default  # returned as given, never stored

    def run(self, tx: Reader) -> Any:
        row = tx.get(self.key)
        return self.default if row is None else decode_value(row.value)


class GetRecord(_RecordResult):
    name = "get_record"
    writes = False

    def __init__(self, key: str) -> None:
        self.key = check_key(key)

    def run(self, tx: Reader) -> Record | None:
        row = tx.get(self.key)
        return None if row is None else row.record()


class Has(Op):
    name = "has"
    writes = False

    def __init__(self, key: str) -> None:
        self.key = check_key(key)

    def run(self, tx: Reader) -> bool:
        return tx.get(self.key) is not None


class Ttl(Op):
    name = "ttl"
    writes = False

    def __init__(self, key: str) -> None:
        self.key = check_key(key)

    def run(self, tx: Reader) -> float | None:
        row = tx.get(self.key)
        if row is None or row.expires_at is None:
            return None
        return (row.expires_at - tx.now) / 1_000_000


class Keys(Op):
    """A page of keys in UTF-8 byte order; `next_cursor` is None on the last page."""

    name = "keys"
    writes = False

    def __init__(
        self,
        prefix: str | None = None,
        start: str | None = None,
        limit: int = DEFAULT_PAGE,
        cursor: str | None = None,
        reverse: bool = False,
    ) -> None:
        if prefix is not None and (type(prefix) is not str or "\x00" in prefix):
            raise InvalidRequest("prefix must be a string without NUL", {"prefix": None})
        self.prefix = prefix
        self.start = check_key(start) if start is not None else None
        self.limit = check_limit(limit)
        self.cursor = cursor
        self._after = decode_cursor(cursor) if cursor is not None else None
        self.reverse = check_bool(reverse, "reverse")

    def _page(self, tx: Reader) -> tuple[list[Row], str | None]:
        rows = tx.scan(
            prefix=self.prefix or None,
            start=self.start,
            after=self._after,
            reverse=self.reverse,
            limit=self.limit + 1,
        )
        if len(rows) > self.limit:
            rows = rows[: self.limit]
            return rows, encode_cursor(rows[-1].key)
        return rows, None

    def run(self, tx: Reader) -> Page:
        rows, cursor = self._page(tx)
        return Page([r.key for r in rows], cursor)

    @staticmethod
    def result_to_json(result: Any) -> Any:
        return {"keys": result.items, "next_cursor": result.next_cursor}

    @staticmethod
    def result_from_json(data: Any) -> Any:
        return Page(list(data["keys"]), data["next_cursor"])


class Records(Keys):
    name = "records"

    def run(self, tx: Reader) -> Page:
        rows, cursor = self._page(tx)
        return Page([r.record() for r in rows], cursor)

    @staticmethod
    def result_to_json(result: Any) -> Any:
        return {"records": [r.to_json() for r in result.items], "next_cursor": result.next_cursor}

    @staticmethod
    def result_from_json(data: Any) -> Any:
        return Page([Record.from_json(r) for r in data["records"]], data["next_cursor"])


# --- writes -----------------------------------------------------------------------------------


class Set(_RecordResult):
    """Write a value; `if_version` 0 = only if absent, n = only if the current version is n."""

    name = "set"

    def __init__(
        self, key: str, value: Any, ttl: float | None = None, if_version: int | None = None
    ) -> None:
        self.key = check_key(key)
        self.data = _encode(value)
        self.value = value
        self.ttl = check_ttl(ttl) if ttl is not None else None
        self.if_version = check_version(if_version) if if_version is not None else None

    def args(self) -> dict[str, Any]:
        out: dict[str, Any] = {"key": self.key, "value": self.value}
        if self.ttl is not None:
            out["ttl"] = self.ttl
        if self.if_version is not None:
            out["if_version"] = self.if_version
        return out

    def run(self, tx: Txn) -> Any:
        if self.if_version is not None:
            check_version_of(tx, self.key, self.if_version)
        return self.answer_row(tx.put(self.key, self.data, _expiry(tx, self.ttl)))

    @staticmethod
    def answer_row(row: Row) -> Any:
        """The result for the row written (a backend's fast path answers through it too): the
        `Record`. An interface that answers the stored row itself overrides this."""
        return row.record()


def check_version_of(tx: Reader, key: str, expected: int, missing: type[Error] = NotFound) -> None:
    """Raise unless the live version of `key` is `expected` (0: must be absent)."""
    row = tx.get(key)
    actual = row.version if row is not None else 0
    if actual == expected:
        return
    details = {"key": key, "expected": expected, "actual": actual}
    if row is None:
        raise missing(f"no record {key!r} (expected version {expected})", details)
    if expected == 0:
        raise Conflict(f"{key!r} already exists (version {actual})", details)
    raise Conflict(f"{key!r} is at version {actual}, not {expected}", details)


class SetMany(Op):
    name = "set_many"

    def __init__(self, entries: Mapping[str, Any], ttl: float | None = None) -> None:
        if not isinstance(entries, Mapping):
            raise InvalidRequest("entries must be an object of key -> value")
        if len(entries) > 100_000:
            raise InvalidRequest("set_many takes at most 100000 entries")
        self.entries = {check_key(k): v for k, v in entries.items()}
        self._data = [(k, _encode(v)) for k, v in self.entries.items()]
        self.ttl = check_ttl(ttl) if ttl is not None else None

    def args(self) -> dict[str, Any]:
        out: dict[str, Any] = {"entries": self.entries}
        if self.ttl is not None:
            out["ttl"] = self.ttl
        return out

    def run(self, tx: Txn) -> int:
        expires = _expiry(tx, self.ttl)
        for key, data in self._data:
            tx.put(key, data, expires)
        return len(self._data)


class GetOrCreate(Op):
    name = "get_or_create"

    def __init__(self, key: str, value: Any) -> None:
        self.key = check_key(key)
        self.data = _encode(value)
        self.value = value

    def run(self, tx: Txn) -> Any:
        row = tx.get(self.key)
        if row is None:
            row = tx.put(self.key, self.data, _expiry(tx, None))
        return decode_value(row.value)


class Delete(Op):
    """Delete a record: True if it existed. With `if_version`, only at that version."""

    name = "delete"

    def __init__(self, key: str, if_version: int | None = None) -> None:
        self.key = check_key(key)
        self.if_version = check_version(if_version) if if_version is not None else None

    def args(self) -> dict[str, Any]:
        out: dict[str, Any] = {"key": self.key}
        if self.if_version is not None:
            out["if_version"] = self.if_version
        return out

    def run(self, tx: Txn) -> bool:
        if self.if_version is not None:
            row = tx.get(self.key)
            if row is None:
                return False
            if row.version != self.if_version:
                check_version_of(tx, self.key, self.if_version)
        return tx.delete(self.key)


class DeleteMany(Op):
    name = "delete_many"

    def __init__(self, keys: Sequence[str]) -> None:
        if isinstance(keys, str | bytes) or not isinstance(keys, Sequence):
            raise InvalidRequest("keys must be a list of keys")
        self.keys = list(dict.fromkeys(check_key(k) for k in keys))

    def run(self, tx: Txn) -> int:
        return sum(1 for key in self.keys if tx.delete(key))


class Clear(Op):
    name = "clear"

    def __init__(self) -> None:
        pass

    def run(self, tx: Txn) -> int:
        return tx.clear()


class Increment(Op):
    """Add `amount` to an integer (missing counts as 0); keeps the record's ttl."""

    name = "increment"
    _sign = 1

    def __init__(self, key: str, amount: int = 1) -> None:
        self.key = check_key(key)
        self.amount = check_int(amount, "amount")

    def run(self, tx: Txn) -> int:
        row = tx.get(self.key)
        current = 0
        if row is not None:
            current = decode_value(row.value)
            if type(current) is not int:
                raise _mismatch(self.key, "integer", current)
        result = current + self._sign * self.amount
        if not INT64_MIN <= result <= INT64_MAX:
            raise OutOfRange(
                f"{self.name} of {self.key!r} would leave the signed 64-bit range",
                {"key": self.key, "value": current, "amount": self.amount},
            )
        tx.put(self.key, b"%d" % result, _keep_expiry(tx, row))
        return result


class Decrement(Increment):
    name = "decrement"
    _sign = -1


class Append(Op):
    name = "append"

    def __init__(self, key: str, value: Any) -> None:
        self.key = check_key(key)
        _encode(value)
        self.value = value

    def run(self, tx: Txn) -> int:
        row, items = _list_at(tx, self.key)
        items.append(self.value)
        tx.put(self.key, _encode(items), _keep_expiry(tx, row))
        return len(items)


class AppendMany(Op):
    name = "append_many"

    def __init__(self, key: str, values: Sequence[Any], flatten: bool = False) -> None:
        self.key = check_key(key)
        if isinstance(values, str | bytes | Mapping) or not isinstance(values, Sequence):
            raise InvalidRequest("values must be a list", {"key": self.key})
        self.values = list(values)
        _encode(self.values)
        self.flatten = check_bool(flatten, "flatten")

    def run(self, tx: Txn) -> int:
        row, items = _list_at(tx, self.key)
        for value in self.values:
            if self.flatten and type(value) in (list, tuple):
                items.extend(value)
            else:
                items.append(value)
        tx.put(self.key, _encode(items), _keep_expiry(tx, row))
        return len(items)


class RemoveFromList(Op):
    name = "remove_from_list"

    def __init__(self, key: str, value: Any) -> None:
        self.key = check_key(key)
        _encode(value)
        self.value = value

    def run(self, tx: Txn) -> int:
        row, items = _list_at(tx, self.key)
        kept = [v for v in items if not json_equal(v, self.value)]
        removed = len(items) - len(kept)
        if removed and row is not None:
            tx.put(self.key, _encode(kept), row.expires_at)
        return removed


class AddToSet(Op):
    name = "add_to_set"

    def __init__(self, key: str, value: Any) -> None:
        self.key = check_key(key)
        _encode(value)
        self.value = value

    def run(self, tx: Txn) -> bool:
        row, items = _list_at(tx, self.key, "set (list)")
        if any(json_equal(v, self.value) for v in items):
            return False
        items.append(self.value)
        tx.put(self.key, _encode(items), _keep_expiry(tx, row))
        return True


class RemoveFromSet(Op):
    name = "remove_from_set"

    def __init__(self, key: str, value: Any) -> None:
        self.key = check_key(key)
        _encode(value)
        self.value = value

    def run(self, tx: Txn) -> bool:
        row, items = _list_at(tx, self.key, "set (list)")
        target = json_key(self.value)
        kept = [v for v in items if json_key(v) != target]
        if len(kept) == len(items) or row is None:
            return False
        tx.put(self.key, _encode(kept), row.expires_at)
        return True


class SaveCurrentTime(Op):
    name = "save_current_time"

    def __init__(self, key: str) -> None:
        self.key = check_key(key)

    def run(self, tx: Txn) -> str:
        stamp = format_time(tx.now)
        tx.put(self.key, _encode(stamp), _expiry(tx, None))
        return stamp


class SetTtl(Op):
    """Set (a number of seconds) or remove (None) a record's expiry: True if it exists."""

    name = "set_ttl"

    def __init__(self, key: str, ttl: float | None) -> None:
        self.key = check_key(key)
        self.ttl = check_ttl(ttl) if ttl is not None else None

    def run(self, tx: Txn) -> bool:
        row = tx.get(self.key)
        if row is None:
            return False
        expires = None if self.ttl is None else tx.now + round(self.ttl * 1_000_000)
        tx.put(self.key, row.value, expires)
        return True


OPS: dict[str, type[Op]] = {
    cls.name: cls
    for cls in (
        Get,
        GetRecord,
        GetOrCreate,
        Set,
        SetMany,
        Delete,
        DeleteMany,
        Has,
        Keys,
        Records,
        Clear,
        Increment,
        Decrement,
        Append,
        AppendMany,
        RemoveFromList,
        AddToSet,
        RemoveFromSet,
        SaveCurrentTime,
        SetTtl,
        Ttl,
    )
}


def build(cls: type[Op], inputs: Mapping[str, Any], where: str = "") -> Op:
    """Construct `cls` from a JSON object of inputs: unknown or missing inputs are
    `invalid_request` naming them; the constructor checks the rest."""
    keys = inputs.keys()
    if keys <= cls._field_set and cls._required <= keys:
        return cls(**inputs)
    unknown = sorted(set(inputs) - set(cls._fields))
    if unknown:
        raise InvalidRequest(
            f"{cls.name}{where} does not take {', '.join(map(repr, unknown))}",
            {"op": cls.name, "unknown": unknown},
        )
    missing = sorted(cls._required - set(inputs))
    if missing:
        raise InvalidRequest(
            f"{cls.name}{where} needs {', '.join(map(repr, missing))}",
            {"op": cls.name, "missing": missing},
        )
    return cls(**inputs)


def parse_op(data: object) -> Op:
    """An op from its batch form ``{"op": name, ...inputs}``."""
    if not isinstance(data, Mapping):
        raise InvalidRequest('each op must be an object like {"op": "set", "key": ...}')
    name = data.get("op")
    cls = OPS.get(name) if isinstance(name, str) else None
    if cls is None:
        raise InvalidRequest(
            f"unknown op {name!r}",
            {"op": name if isinstance(name, str) else None, "known": sorted(OPS)},
        )
    return build(cls, {k: v for k, v in data.items() if k != "op"})


class Check:
    """A batch precondition: `key` is at `version` (0: `key` is absent)."""

    __slots__ = ("key", "version")

    def __init__(self, key: str, version: int) -> None:
        self.key = check_key(key)
        self.version = check_version(version, "version")

    def args(self) -> dict[str, Any]:
        return {"key": self.key, "version": self.version}


def parse_check(data: object) -> Check:
    if not isinstance(data, Mapping) or set(data) != {"key", "version"}:
        raise InvalidRequest('each check must be an object {"key": ..., "version": n}')
    return Check(data["key"], data["version"])


class BatchWork:
    """Checks and ops as one unit of work (`run` is `run_batch`), for a backend's group commit:
    it may run a batch of one op and no checks by its fast path for that op."""

    __slots__ = ("checks", "ops")

    def __init__(self, checks: Sequence[Check], ops: Sequence[Op]) -> None:
        self.checks = checks
        self.ops = ops

    def run(self, tx: Any) -> list[Any]:
        return run_batch(tx, self.checks, self.ops)


def run_batch(tx: Any, checks: Sequence[Check], ops: Sequence[Op]) -> list[Any]:
    """Checks then ops, in order, in the caller's transaction. A failed check is `Conflict` with
    ``details.check``; a failed op raises its own error with ``details.op``."""
    for index, check in enumerate(checks):
        try:
            check_version_of(tx, check.key, check.version, missing=Conflict)
        except Error as exc:
            raise exc.with_details(check=index) from None
    results = []
    for index, op in enumerate(ops):
        try:
            results.append(op.run(tx))
        except Error as exc:
            raise exc.with_details(op=index) from None
    return results
