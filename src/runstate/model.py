"""Keys, values, records, limits and JSON equality: pure functions, no I/O.

Everything an interface accepts from a user passes through one of the `check_*` functions here,
which raise the error of SPEC §4 and never return a half-valid result. Values are encoded once,
to compact UTF-8 JSON (`encode_value`), and stored as those bytes on every backend, so a value
reads back as exactly the JSON it was encoded to.
"""

from __future__ import annotations

import base64
import json
import math
import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from .errors import InvalidKey, InvalidRequest, InvalidValue, OutOfRange, ValueTooLarge

__all__ = [
    "DEFAULT_QUOTA_BYTES",
    "EVENT_TYPES",
    "MAX_DEPTH",
    "MAX_KEY_BYTES",
    "MAX_VALUE_BYTES",
    "Event",
    "Page",
    "Record",
    "StoreInfo",
    "Usage",
    "check_int",
    "check_key",
    "check_store_name",
    "check_ttl",
    "check_workflow",
    "decode_cursor",
    "decode_json",
    "decode_value",
    "encode_cursor",
    "encode_value",
    "format_time",
    "json_equal",
    "now",
]

MAX_KEY_BYTES = 1024
MAX_VALUE_BYTES = 256 * 1024
MAX_DEPTH = 64
DEFAULT_QUOTA_BYTES = 64 * 1024 * 1024
MAX_STORE_NAME = 128
MAX_PAGE = 1000
DEFAULT_PAGE = 100
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

_STORE_NAME = re.compile(r"[A-Za-z0-9_.:\-]{1,128}")
# A run of 19+ digits may be an integer orjson would silently turn into a float.
_LONG_DIGITS = re.compile(rb"\d{19,}")


# --- keys and store names -------------------------------------------------------------------


def check_key(key: object) -> str:
    """Return `key` if it is a valid record key, else raise `InvalidKey`."""
    if type(key) is not str:
        raise InvalidKey(
            f"a key must be a string, not {type(key).__name__}",
            {"type": type(key).__name__},
        )
    if not key:
        raise InvalidKey("a key must not be empty")
    if "\x00" in key:
        raise InvalidKey("a key must not contain NUL characters")
    try:
        size = len(key.encode())
    except UnicodeEncodeError:
        raise InvalidKey("a key must be valid Unicode (no lone surrogates)") from None
    if size > MAX_KEY_BYTES:
        raise InvalidKey(
            f"a key is at most {MAX_KEY_BYTES} bytes of UTF-8; this one is {size}",
            {"bytes": size, "limit": MAX_KEY_BYTES},
        )
    return key


def check_store_name(name: object) -> str:
    """Return `name` if it is a valid store name (1-128 of ``A-Z a-z 0-9 _ . : -``)."""
    if type(name) is not str or not _STORE_NAME.fullmatch(name):
        raise InvalidRequest(
            "a store name is 1-128 characters of A-Z a-z 0-9 _ . : -",
            {"name": name if isinstance(name, str) else None},
        )
    return name


def check_workflow(workflow: object) -> str:
    """Return `workflow` if it is a valid dependent's id (a non-empty string, at most 256
    characters, no NUL), else raise `InvalidRequest`."""
    if type(workflow) is not str or not workflow or len(workflow) > 256 or "\x00" in workflow:
        raise InvalidRequest("a workflow id is a non-empty string of at most 256 characters")
    return workflow


def check_scope_id(what: str, value: object) -> str:
    """A scope id: store-name characters without ':' (so scope names cannot collide)."""
    if type(value) is not str or not value or ":" in value or not _STORE_NAME.fullmatch(value):
        raise InvalidRequest(
            f"{what} must be 1-128 characters of A-Z a-z 0-9 _ . - (no ':')",
            {"input": what},
        )
    return value


EXECUTION_TTL = 24 * 3600.0


def initial_default_ttl(name: str, default_ttl: float | None) -> float | None:
    """A new store's default ttl: execution scopes (``execution:{id}``) get 24 h unless told,
    however they are created (by name, by `execution_state`, or by a first write)."""
    if default_ttl is None and name.startswith("execution:"):
        return EXECUTION_TTL
    return default_ttl


def scope_store(kind: str, *ids: str) -> str:
    """The reserved store name of a scope, e.g. ``flow:{instance_id}:{flow_id}``."""
    name = ":".join((kind, *ids))
    if len(name) > MAX_STORE_NAME:
        raise InvalidRequest(
            f"the scope's store name {name[:40]!r}... is longer than {MAX_STORE_NAME} characters",
            {"length": len(name), "limit": MAX_STORE_NAME},
        )
    return name


# --- scalar inputs --------------------------------------------------------------------------


def check_ttl(ttl: object, what: str = "ttl") -> float:
    """A ttl is a number of seconds > 0 (fractions allowed); a bool is not a number."""
    if (
        type(ttl) not in (int, float)
        or not math.isfinite(ttl)  # type: ignore[arg-type]
        or ttl <= 0  # type: ignore[operator]
    ):
        raise InvalidRequest(
            f"{what} must be a number of seconds greater than 0", {what: _show(ttl)}
        )
    if ttl > 100 * 365 * 86400:  # type: ignore[operator]
        raise InvalidRequest(f"{what} must be at most 100 years", {what: _show(ttl)})
    return float(ttl)  # type: ignore[arg-type]


def check_int(value: object, what: str) -> int:
    """An integer input (a bool is not an integer); outside signed 64-bit is `out_of_range`."""
    if type(value) is not int:
        raise InvalidRequest(f"{what} must be an integer", {what: _show(value)})
    if not INT64_MIN <= value <= INT64_MAX:
        raise OutOfRange(f"{what} is outside the signed 64-bit range", {what: str(value)})
    return value


def check_limit(limit: object) -> int:
    if type(limit) is not int or not 1 <= limit <= MAX_PAGE:
        raise InvalidRequest(
            f"limit must be an integer from 1 to {MAX_PAGE}", {"limit": _show(limit)}
        )
    return limit


def check_bool(value: object, what: str) -> bool:
    if type(value) is not bool:
        raise InvalidRequest(f"{what} must be true or false", {what: _show(value)})
    return value


def check_version(value: object, what: str = "if_version") -> int:
    if type(value) is not int or value < 0 or value > INT64_MAX:
        raise InvalidRequest(f"{what} must be an integer >= 0", {what: _show(value)})
    return value


def _show(value: object) -> Any:
    """A value safe to echo back in error details."""
    if value is None or type(value) in (bool, int, str):
        return value if not isinstance(value, str) else value[:100]
    if type(value) is float:
        return value if math.isfinite(value) else str(value)
    return type(value).__name__


# --- values -------------------------------------------------------------------------------------


def _check_tree(value: object, depth: int) -> None:
    """Reject what JSON cannot represent; `depth` counts enclosing arrays/objects."""
    t = type(value)
    if t is str or t is bool or value is None:
        return
    if t is int:
        if not INT64_MIN <= value <= INT64_MAX:  # type: ignore[operator]
            raise InvalidValue("integers must fit in signed 64 bits", {"integer": str(value)[:40]})
        return
    if t is float:
        if not math.isfinite(value):  # type: ignore[arg-type]
            raise InvalidValue("NaN and Infinity are not JSON", {"number": str(value)})
        return
    if t is list or t is tuple or t is dict:
        if depth >= MAX_DEPTH:
            raise InvalidValue(
                f"values nest at most {MAX_DEPTH} levels of arrays and objects",
                {"limit": MAX_DEPTH},
            )
        if t is dict:
            for k, v in value.items():  # type: ignore[attr-defined]
                if type(k) is not str:
                    raise InvalidValue("object keys must be strings", {"type": type(k).__name__})
                _check_tree(v, depth + 1)
        else:
            for v in value:  # type: ignore[attr-defined]
                _check_tree(v, depth + 1)
        return
    raise InvalidValue(
        f"a {t.__name__} is not a JSON value (use null, bool, number, string, list or dict)",
        {"type": t.__name__},
    )


def _reject(obj: object) -> Any:
    raise TypeError


def encode_value(value: object, limit: int = MAX_VALUE_BYTES) -> bytes:
    """Encode a value to compact UTF-8 JSON, or raise `InvalidValue` / `ValueTooLarge`."""
    t = type(value)
    if t is str or t is bool or value is None or (t is float and math.isfinite(value)):  # type: ignore[arg-type]
        try:
            data = orjson.dumps(value)
        except TypeError:
            raise InvalidValue("strings must be valid Unicode (no lone surrogates)") from None
    else:
        _check_tree(value, 0)
        try:
            data = orjson.dumps(value, default=_reject)
        except TypeError as exc:
            reason = str(exc)
            if "surrogate" in reason or "UTF-8" in reason:
                raise InvalidValue("strings must be valid Unicode (no lone surrogates)") from None
            raise InvalidValue("the value cannot be encoded as JSON", {"reason": reason}) from None
    if len(data) > limit:
        raise ValueTooLarge(
            f"the value is {len(data)} bytes encoded; the limit is {limit}",
            {"bytes": len(data), "limit": limit},
        )
    return data


def decode_value(data: bytes | str) -> Any:
    """Decode stored JSON (always produced by `encode_value`)."""
    return orjson.loads(data)


def _reject_constant(name: str) -> Any:
    raise InvalidValue(f"{name} is not JSON", {"number": name})


def decode_json(data: bytes | str) -> Any:
    """Parse JSON from the outside world exactly: big integers stay integers (so they are refused
    as out of range rather than silently becoming floats). Malformed text is `InvalidRequest`."""
    raw = data.encode() if isinstance(data, str) else data
    try:
        if _LONG_DIGITS.search(raw) is None:
            return orjson.loads(raw)
        return json.loads(raw, parse_constant=_reject_constant)
    except InvalidValue:
        raise
    except (ValueError, RecursionError) as exc:
        raise InvalidRequest("the body is not valid JSON", {"reason": str(exc)[:200]}) from None


def _canon(value: Any) -> Any:
    """A form in which Python equality is JSON equality: bools tagged apart from numbers."""
    t = type(value)
    if t is bool:
        return ("bool", value)
    if t is int or t is float:
        return ("num", value)
    if t is list or t is tuple:
        return ("list", tuple(_canon(v) for v in value))
    if t is dict:
        return ("obj", frozenset((k, _canon(v)) for k, v in value.items()))
    return ("v", value)


def json_equal(a: Any, b: Any) -> bool:
    """JSON equality: numbers by value (``1 == 1.0``), ``true != 1``, objects in any key order."""
    if type(a) is type(b) and type(a) in (str, int):
        return bool(a == b)
    return bool(_canon(a) == _canon(b))


def json_key(value: Any) -> Any:
    """A hashable key with JSON equality, for set membership."""
    return _canon(value)


# --- time ---------------------------------------------------------------------------------------


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_TIME_FORMAT = "%04d-%02d-%02dT%02d:%02d:%02d.%06dZ"


def to_datetime(micros: int | None) -> datetime | None:
    """Integer microseconds since the epoch as an aware UTC datetime (exact, no float)."""
    if micros is None:
        return None
    return _EPOCH + timedelta(microseconds=micros)


# Formatted whole seconds, by epoch second: the records a server answers were mostly written
# within a few seconds of each other. Bounded; a race between threads only recomputes.
_SECONDS: dict[int, str] = {}
_SECONDS_CACHED = 4096
_SECONDS_FORMAT = "%04d-%02d-%02dT%02d:%02d:%02d"


def format_time(micros: int) -> str:
    """RFC 3339 UTC with microseconds and ``Z``: ``2026-11-24T08:06:46.123456Z``."""
    seconds, fraction = divmod(micros, 1_000_000)
    whole = _SECONDS.get(seconds)
    if whole is None:
        t = time.gmtime(seconds)
        whole = _SECONDS_FORMAT % t[:6]
        if len(_SECONDS) >= _SECONDS_CACHED:
            _SECONDS.clear()
        _SECONDS[seconds] = whole
    return f"{whole}.{fraction:06d}Z"


def format_datetime(value: datetime | None) -> str | None:
    if value is None:
        return None
    v = value.astimezone(UTC) if value.tzinfo is not UTC else value
    return _TIME_FORMAT % (v.year, v.month, v.day, v.hour, v.minute, v.second, v.microsecond)


def parse_time(text: str) -> datetime:
    """Parse the JSON time form (``...Z`` or any RFC 3339 offset) into an aware UTC datetime."""
    try:
        dt = datetime.fromisoformat(text)
    except (TypeError, ValueError):
        raise InvalidRequest("a time must be RFC 3339, e.g. 2026-01-31T12:00:00.000000Z") from None
    if dt.tzinfo is None:
        raise InvalidRequest("a time must carry a timezone (Z)")
    return dt.astimezone(UTC)


def datetime_micros(value: datetime) -> int:
    delta = value - _EPOCH
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds


def now() -> str:
    """The current UTC time as the string `save_current_time` stores."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# --- paging cursors -------------------------------------------------------------------------


def encode_cursor(last_key: str) -> str:
    """An opaque cursor that continues after `last_key` (in the listing's direction)."""
    return base64.urlsafe_b64encode(last_key.encode()).decode().rstrip("=")


def decode_cursor(cursor: object) -> str:
    if type(cursor) is not str or not cursor:
        raise InvalidRequest("cursor must be a next_cursor value from a previous page")
    try:
        key = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        return check_key(key)
    except (ValueError, InvalidKey):
        raise InvalidRequest(
            "cursor must be a next_cursor value from a previous page", {"cursor": cursor[:100]}
        ) from None


# --- public result types ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Record:
    """One record: its key, decoded value and metadata (aware UTC datetimes)."""

    key: str
    value: Any
    version: int
    created_at: datetime
    updated_at: datetime
    expires_at: datetime | None

    def to_json(self) -> dict[str, Any]:
        """The record object of the HTTP API."""
        return {
            "key": self.key,
            "value": self.value,
            "version": self.version,
            "created_at": format_datetime(self.created_at),
            "updated_at": format_datetime(self.updated_at),
            "expires_at": format_datetime(self.expires_at),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Record:
        expires = data.get("expires_at")
        return cls(
            key=data["key"],
            value=data["value"],
            version=data["version"],
            created_at=parse_time(data["created_at"]),
            updated_at=parse_time(data["updated_at"]),
            expires_at=parse_time(expires) if expires else None,
        )


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a listing: `items` (keys or records) and the cursor of the next page."""

    items: list[Any]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class StoreInfo:
    """A store's description (SPEC §2.1)."""

    name: str
    records: int
    bytes: int
    dependents: list[str]
    created_at: datetime
    default_ttl: float | None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "records": self.records,
            "bytes": self.bytes,
            "dependents": list(self.dependents),
            "created_at": format_datetime(self.created_at),
            "default_ttl": self.default_ttl,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StoreInfo:
        return cls(
            name=data["name"],
            records=data["records"],
            bytes=data["bytes"],
            dependents=list(data["dependents"]),
            created_at=parse_time(data["created_at"]),
            default_ttl=data.get("default_ttl"),
        )


@dataclass(frozen=True, slots=True)
class Usage:
    """A workspace's usage: live records, bytes (keys + encoded values) and the quota."""

    records: int
    bytes: int
    quota_bytes: int
    stores: list[StoreInfo] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "records": self.records,
            "bytes": self.bytes,
            "quota_bytes": self.quota_bytes,
            "stores": [s.to_json() for s in self.stores],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Usage:
        return cls(
            records=data["records"],
            bytes=data["bytes"],
            quota_bytes=data["quota_bytes"],
            stores=[StoreInfo.from_json(s) for s in data["stores"]],
        )


# Change-feed event types (SPEC §2.3), and `gap`: events this watcher had not read yet were
# trimmed (older than the database's event retention); what changed meanwhile is unknown.
EVENT_TYPES = ("set", "delete", "expire", "clear", "gap")


@dataclass(frozen=True, slots=True)
class Event:
    """One committed change of a store, from `Store.watch` (SPEC §2.3).

    `type` is ``set``, ``delete``, ``expire`` (purged after its ttl), ``clear`` (every record;
    `key` None) or ``gap`` (events were trimmed before this watcher read them: re-read the
    store). `version` is the record's new version for a ``set``, else the event's place in the
    feed; it is the position to resume from (`watch(after=version)`, SSE ``Last-Event-ID``).
    `value` is the value written by a ``set``, else None."""

    type: str
    store: str
    key: str | None
    version: int
    value: Any = None

    def to_json(self) -> dict[str, Any]:
        """The ``data`` object of the HTTP API's Server-Sent Event."""
        return {
            "type": self.type,
            "store": self.store,
            "key": self.key,
            "version": self.version,
            "value": self.value,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Event:
        return cls(data["type"], data["store"], data["key"], data["version"], data["value"])
