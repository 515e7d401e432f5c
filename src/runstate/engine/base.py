"""What a storage backend must do, and the part of it every backend shares.

A backend provides transactions over one store (`Reader` for reads, `Txn` for writes) made of a
handful of primitives: get a live row, put a row, delete a row, scan, clear. Every operation of the
spec is written once, in `runstate.ops`, on top of those primitives, so a backend never restates
what ``increment`` or ``add_to_set`` mean: it only promises that

- ``write`` runs its function in one serialisable transaction (all of it applies or none),
- a row's version is taken from a counter that only grows and is never reused,
- expired rows are invisible to ``get`` and ``scan`` from the moment they expire,
- usage accounting (records and bytes per store and workspace) changes in the same transaction
  as the rows, and a write that would pass the quota raises `QuotaExceeded` and changes nothing,
- every put, delete, expiry and clear is appended to the change feed in commit order.

`EngineBase` turns those promises into the `Core` interface the library, server and CLI call.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import orjson

from ..errors import InvalidRequest
from ..model import (
    MAX_PAGE,
    Event,
    Record,
    StoreInfo,
    Usage,
    check_store_name,
    check_version,
    decode_value,
    format_time,
    to_datetime,
)

if TYPE_CHECKING:
    from ..ops import Check, Op

__all__ = [
    "Changes",
    "Core",
    "EngineBase",
    "EventRow",
    "Reader",
    "Row",
    "Txn",
    "check_durability",
    "path_for_type",
]

T = TypeVar("T")
P = TypeVar("P")


def check_durability(durability: object) -> None:
    """An engine's durability mode is ``"fast"`` or ``"durable"``, else `InvalidRequest`."""
    if durability not in ("fast", "durable"):
        raise InvalidRequest("durability must be 'fast' or 'durable'", {"durability": durability})


def path_for_type(
    kind: type[Any], bases: Sequence[tuple[type[Any], P]], cache: dict[type[Any], P | None]
) -> P | None:
    """The entry of `bases` for the first class `kind` is (a subclass of), or None; remembered
    in `cache` (a fixed set of op types in practice; bounded regardless)."""
    try:
        return cache[kind]
    except KeyError:
        found = next((path for base, path in bases if issubclass(kind, base)), None)
        if len(cache) < 1000:
            cache[kind] = found
        return found


@dataclass(slots=True)
class Row:
    """A stored record as a backend holds it: encoded value and integer microsecond times."""

    key: str
    value: bytes
    version: int
    created_at: int
    updated_at: int
    expires_at: int | None
    # `to_json_bytes`, once made: a row in the read cache answers every GET of it unchanged.
    _json: bytes | None = field(default=None, compare=False, repr=False)

    def to_json_bytes(self) -> bytes:
        """The HTTP record object, with the stored JSON value spliced in as it is (no decode
        and re-encode: the value reads back exactly as it was encoded). Made once per row
        (rows are not changed once read: a write makes a new one)."""
        if self._json is None:
            self._json = self._encode()
        return self._json

    def _encode(self) -> bytes:
        expires = (
            b"null" if self.expires_at is None else b'"%s"' % format_time(self.expires_at).encode()
        )
        return (
            b'{"key":%s,"value":%s,"version":%d,"created_at":"%s","updated_at":"%s","expires_at":%s}'
            % (
                orjson.dumps(self.key),
                self.value,
                self.version,
                format_time(self.created_at).encode(),
                format_time(self.updated_at).encode(),
                expires,
            )
        )

    def record(self) -> Record:
        created = to_datetime(self.created_at)
        updated = created if self.updated_at == self.created_at else to_datetime(self.updated_at)
        assert created is not None
        assert updated is not None
        return Record(
            self.key,
            decode_value(self.value),
            self.version,
            created,
            updated,
            to_datetime(self.expires_at),
        )


@dataclass(slots=True)
class EventRow:
    """A change-feed event as a backend holds it: `seq` is its place in commit order (for a
    ``set``, the record's new version), `value` the encoded JSON written by a ``set``."""

    seq: int
    type: str
    key: str | None
    value: bytes | None

    def to_json_bytes(self, store: str) -> bytes:
        """The HTTP event object, with the stored JSON value spliced in as it is."""
        return b'{"type":"%s","store":%s,"key":%s,"version":%d,"value":%s}' % (
            self.type.encode(),
            orjson.dumps(store),
            orjson.dumps(self.key),
            self.seq,
            b"null" if self.value is None else self.value,
        )

    def event(self, store: str) -> Event:
        value = None if self.value is None else decode_value(self.value)
        return Event(self.type, store, self.key, self.seq, value)


@dataclass(slots=True)
class Changes:
    """What `events_after` found: the store's `events` in commit order; `position`, where the
    next call continues (past events of other stores too); `gap`, None unless events past the
    position asked for were trimmed (older than the retention) before they were read: then
    the position the events continue from, and the store may have changed in ways no event
    reports."""

    events: list[EventRow]
    position: int
    gap: int | None


class Reader(Protocol):
    """Reads of one store, all at one snapshot and one clock reading `now` (microseconds)."""

    @property
    def now(self) -> int: ...

    def get(self, key: str) -> Row | None:
        """The live row for `key`, or None (missing or expired)."""

    def scan(
        self,
        *,
        prefix: str | None,
        start: str | None,
        after: str | None,
        reverse: bool,
        limit: int,
    ) -> list[Row]:
        """Live rows in UTF-8 byte order of key (descending if `reverse`): keys starting with
        `prefix`, from `start` inclusive, strictly past `after` (a cursor), at most `limit`."""


class Txn(Reader, Protocol):
    """A write transaction on one store. The store is created by the first `put`."""

    @property
    def default_ttl(self) -> float | None:
        """The store's default ttl in seconds, or None; for a store not yet created, the one
        its creation will give it (24 h for an ``execution:`` scope)."""

    def put(self, key: str, value: bytes, expires_at: int | None) -> Row:
        """Write `key` with a new version; `created_at` is kept if a live row existed.
        Raises `ValueTooLarge` over the value limit, `QuotaExceeded` over the quota."""

    def delete(self, key: str) -> bool:
        """Delete the live row for `key`; False if there was none."""

    def clear(self) -> int:
        """Delete every live row of the store; the number deleted."""


class Core(Protocol):
    """What the library's `Database` needs: the embedded engine and the HTTP client both are one.

    `workspace` is the tenant; the embedded library always uses ``default``."""

    def execute(self, workspace: str, store: str, op: Op) -> Any: ...

    def batch(
        self, workspace: str, store: str, checks: Sequence[Check], ops: Sequence[Op]
    ) -> list[Any]: ...

    def list_stores(self, workspace: str) -> list[StoreInfo]: ...

    def store_info(self, workspace: str, name: str) -> StoreInfo: ...

    def create_store(
        self, workspace: str, name: str, default_ttl: float | None = None
    ) -> StoreInfo: ...

    def ensure_store(self, workspace: str, name: str, default_ttl: float | None = None) -> None: ...

    def update_store(self, workspace: str, name: str, default_ttl: float | None) -> StoreInfo: ...

    def delete_store(self, workspace: str, name: str) -> None: ...

    def add_dependent(self, workspace: str, name: str, workflow: str) -> StoreInfo: ...

    def remove_dependent(self, workspace: str, name: str, workflow: str) -> StoreInfo: ...

    def usage(self, workspace: str) -> Usage: ...

    def watch(
        self, workspace: str, store: str, prefix: str | None = None, after: int | None = None
    ) -> Iterator[Event]: ...

    def close(self) -> None: ...


class EngineBase:
    """Runs ops and batches on a backend's `read`/`write` transactions, and what else every
    backend does the same way: the change feed's watch loop, token rows."""

    _closed = False

    # A token's row with its workspace's name: the columns of `_token_info`.
    _GRANT_SQL = (
        "SELECT t.id, t.role, t.stores, w.name, t.created_at "
        "FROM tokens t JOIN workspaces w ON w.id = t.workspace_id "
    )

    def read(self, workspace: str, store: str, fn: Callable[[Reader], T]) -> T:
        raise NotImplementedError

    def write(self, workspace: str, store: str, fn: Callable[[Txn], T]) -> T:
        raise NotImplementedError

    def execute(self, workspace: str, store: str, op: Op) -> Any:
        """Run one operation atomically; raises the operation's `Error`."""
        if op.writes:
            return self.write(workspace, store, op.run)
        return self.read(workspace, store, op.run)

    def batch(
        self, workspace: str, store: str, checks: Sequence[Check], ops: Sequence[Op]
    ) -> list[Any]:
        """Run checks and ops as one transaction (SPEC §2.2): all apply or nothing does."""
        from ..ops import MAX_BATCH, run_batch

        if len(ops) > MAX_BATCH or len(checks) > MAX_BATCH:
            raise InvalidRequest(
                f"a batch holds at most {MAX_BATCH} operations and {MAX_BATCH} checks",
                {"ops": len(ops), "checks": len(checks)},
            )
        if not any(op.writes for op in ops):
            return self.read(workspace, store, lambda tx: run_batch(tx, checks, ops))
        return self.write(workspace, store, lambda tx: run_batch(tx, checks, ops))

    # --- change feed: a backend provides `latest_seq`, `events_after` and `_changed_since`

    def latest_seq(self, workspace: str | None = None, store: str | None = None) -> int:
        raise NotImplementedError

    def events_after(
        self,
        workspace: str,
        store: str,
        after: int,
        prefix: str | None = None,
        limit: int = MAX_PAGE,
    ) -> Changes:
        raise NotImplementedError

    def _changed_since(self, seen: int | None, poll: float) -> int | None:
        """The database's change marker if it differs from `seen`, else None after waiting
        up to `poll` seconds for a change."""
        raise NotImplementedError

    def watch(
        self,
        workspace: str,
        store: str,
        prefix: str | None = None,
        after: int | None = None,
        *,
        poll: float = 0.05,
    ) -> Iterator[Event]:
        """Every change of `store` from now (or past position `after`), in commit order, as
        the feed records it, made by this process or any other; blocks between changes
        (waiting at most `poll` seconds at a time). Ends when the database closes. A ``gap``
        event reports events trimmed before they were read. "Now" is the moment of this
        call."""
        check_store_name(store)
        if prefix is not None and (type(prefix) is not str or "\x00" in prefix):
            raise InvalidRequest("prefix must be a string without NUL", {"prefix": None})
        position = (
            self.latest_seq(workspace, store) if after is None else check_version(after, "after")
        )
        return self._follow(workspace, store, prefix, position, poll)

    def _follow(
        self, workspace: str, store: str, prefix: str | None, position: int, poll: float
    ) -> Iterator[Event]:
        seen: int | None = None
        while not self._closed:
            changed = self._changed_since(seen, poll)
            if changed is None:
                continue
            seen = changed
            while True:
                changes = self.events_after(workspace, store, position, prefix)
                if changes.gap is not None:
                    yield Event("gap", store, None, changes.gap)
                for row in changes.events:
                    yield row.event(store)
                position = changes.position
                if len(changes.events) < MAX_PAGE:
                    break

    # --- tokens: only hashes are stored (`runstate.tokens` makes and checks tokens)

    @staticmethod
    def _token_info(found: Sequence[Any]) -> Any:
        """The `TokenInfo` of a row of `_GRANT_SQL`."""
        import json

        from ..tokens import TokenInfo

        token_id, role, stores, workspace, created = found
        created_at = to_datetime(created)
        assert created_at is not None
        return TokenInfo(
            token_id, role, None if stores is None else json.loads(stores), workspace, created_at
        )

    @staticmethod
    def _token_fields(workspace: str, role: str, stores: list[str] | None) -> str | None:
        """Check a new token's workspace, role and store list; the list as stored (JSON)."""
        import json

        from ..tokens import check_role, check_token_stores, check_workspace_name

        check_workspace_name(workspace)
        check_role(role)
        checked = check_token_stores(stores)
        return None if checked is None else json.dumps(checked)
