"""Export and import of a store as NDJSON: the format defined once (SPEC §3.2).

One record a line: ``{"key": ..., "value": ..., "expires_at": "...Z" or null}``. An import is
read and checked whole before anything is written (`parse_line` checks each line like a `set`
and names it in its error), then applied by `importer` inside ONE write transaction, so it is all
or nothing: existing keys are overwritten, a record keeps its absolute ``expires_at`` (one whose
time has passed is skipped), a record without one gets the store's default ttl, like a `set`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import orjson

from . import ops
from .engine.base import Txn
from .errors import Error, InvalidRequest
from .model import Record, datetime_micros, decode_json, format_datetime, parse_time

__all__ = ["ImportLine", "export_line", "importer", "numbered_lines", "parse_line"]

_FIELDS = frozenset({"key", "value", "expires_at"})


def export_line(record: Record) -> bytes:
    """One line of an export, newline included."""
    line = {
        "key": record.key,
        "value": record.value,
        "expires_at": format_datetime(record.expires_at),
    }
    return orjson.dumps(line) + b"\n"


@dataclass(frozen=True, slots=True)
class ImportLine:
    """A checked line: its number, the `set` it stands for, and its expiry (epoch µs)."""

    line: int
    op: ops.Set
    expires_at: int | None


def numbered_lines(lines: Iterable[bytes]) -> Iterator[tuple[int, bytes]]:
    """(line number from 1, text) of each line that is not blank."""
    for number, text in enumerate(lines, start=1):
        if text.strip():
            yield number, text


def parse_line(number: int, text: bytes, max_value_bytes: int | None = None) -> ImportLine:
    """Check one line like a `set`; any fault is `InvalidRequest` ``line N: ...`` with
    ``details`` ``{"line": N, "reason": <the underlying error code>}``."""
    try:
        data = decode_json(text)
        if not isinstance(data, dict):
            raise InvalidRequest('a line must be an object {"key", "value", "expires_at"}')
        unknown = sorted(set(data) - _FIELDS)
        if unknown:
            raise InvalidRequest(f"unknown field {unknown[0][:100]!r}")
        if "key" not in data or "value" not in data:
            raise InvalidRequest('a line needs "key" and "value"')
        op = ops.Set(data["key"], data["value"])
        if max_value_bytes is not None and len(op.data) > max_value_bytes:
            raise InvalidRequest(
                f"the value is {len(op.data)} bytes encoded; the limit is {max_value_bytes}"
            )
        expires = data.get("expires_at")
        if expires is not None and type(expires) is not str:
            raise InvalidRequest("expires_at must be an RFC 3339 time or null")
        micros = datetime_micros(parse_time(expires)) if expires is not None else None
    except Error as exc:
        raise InvalidRequest(
            f"line {number}: {exc.message}", {"line": number, "reason": exc.code}
        ) from None
    return ImportLine(number, op, micros)


def importer(entries: Iterable[ImportLine]) -> Callable[[Txn], int]:
    """The write that applies checked lines in one transaction; it returns how many records it
    wrote. An error of a write (the quota, the value limit) names its line: ``details.line``."""
    items = list(entries)

    def apply(tx: Txn) -> int:
        imported = 0
        for entry in items:
            try:
                if entry.expires_at is None:
                    entry.op.run(tx)
                elif entry.expires_at > tx.now:
                    tx.put(entry.op.key, entry.op.data, entry.expires_at)
                else:
                    continue  # already expired: nothing to import
            except Error as exc:
                exc.message = f"line {entry.line}: {exc.message}"
                raise exc.with_details(line=entry.line) from None
            imported += 1
        return imported

    return apply
