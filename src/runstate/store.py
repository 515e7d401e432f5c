"""The library API: `Database` and `Store` over any `Core` (the embedded engine or a client).

A `Store` is a `MutableMapping[str, Any]` whose methods each build one operation from
`runstate.ops` and hand it to the core, so the embedded library and the remote client share
every rule and every error. `Store.atomic()` collects operations and runs them as one batch.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping, MutableMapping, Sequence
from types import TracebackType
from typing import Any, Self

from . import ops
from .engine.base import Core
from .errors import Error, InvalidRequest, NotFound
from .model import (
    DEFAULT_PAGE,
    Event,
    Page,
    Record,
    StoreInfo,
    Usage,
    check_scope_id,
    check_store_name,
    scope_store,
)

__all__ = ["Atomic", "Database", "Store"]

_MISSING: Any = object()


# --- Prismatic's scopes: the reserved store names (shared by the sync and async APIs) ---------


def execution_store(execution_id: str) -> str:
    return scope_store("execution", check_scope_id("execution_id", execution_id))


def flow_store(instance_id: str, flow_id: str) -> str:
    ids = check_scope_id("instance_id", instance_id), check_scope_id("flow_id", flow_id)
    return scope_store("flow", *ids)


def cross_flow_store(instance_id: str) -> str:
    return scope_store("instance", check_scope_id("instance_id", instance_id))


def integration_store(integration_id: str) -> str:
    return scope_store("integration", check_scope_id("integration_id", integration_id))


class Database:
    """A runstate database: its stores, their dependents, and the workspace's usage.

    Open one with `runstate.open` (embedded) or `runstate.connect` (remote); it is a context
    manager that closes on exit. Safe to share between threads."""

    def __init__(
        self,
        core: Core,
        workspace: str = "default",
        *,
        purge: Callable[[], int] | None = None,
        purge_interval: float | None = None,
    ) -> None:
        self._core = core
        self.workspace = workspace
        self._purge = purge
        self._stop = threading.Event()
        self._purger: threading.Thread | None = None
        if purge is not None and purge_interval is not None:
            self._purger = threading.Thread(
                target=self._purge_loop, args=(purge_interval,), name="runstate-purge", daemon=True
            )
            self._purger.start()

    def _purge_loop(self, interval: float) -> None:
        assert self._purge is not None
        while not self._stop.wait(interval):
            try:
                self._purge()
            except Exception:  # noqa: S112 - the next round tries again; reads never see expired rows
                continue

    @property
    def core(self) -> Core:
        """The engine or client this database runs on."""
        return self._core

    def store(self, name: str, workflow: str | None = None) -> Store:
        """The store `name`, created if it does not exist; `workflow` is registered as a
        dependent (so the store cannot be deleted while it uses it)."""
        check_store_name(name)
        self._core.ensure_store(self.workspace, name)
        if workflow is not None:
            self._core.add_dependent(self.workspace, name, workflow)
        return Store(self, name)

    def stores(self) -> list[StoreInfo]:
        return self._core.list_stores(self.workspace)

    def store_info(self, name: str) -> StoreInfo:
        """Raises `NotFound` for a store that does not exist."""
        return self._core.store_info(self.workspace, name)

    def create_store(self, name: str, default_ttl: float | None = None) -> StoreInfo:
        """Raises `Conflict` if the store exists."""
        return self._core.create_store(self.workspace, name, default_ttl)

    def update_store(self, name: str, *, default_ttl: float | None) -> StoreInfo:
        return self._core.update_store(self.workspace, name, default_ttl)

    def delete_store(self, name: str) -> None:
        """Delete a store and its records; `HasDependents` while workflows use it."""
        self._core.delete_store(self.workspace, name)

    def add_dependent(self, name: str, workflow: str) -> StoreInfo:
        return self._core.add_dependent(self.workspace, name, workflow)

    def remove_dependent(self, name: str, workflow: str) -> StoreInfo:
        return self._core.remove_dependent(self.workspace, name, workflow)

    def usage(self) -> Usage:
        """Exact usage of the workspace: live records and bytes, against the quota."""
        return self._core.usage(self.workspace)

    # --- Prismatic's scopes ------------------------------------------------------------------

    def _scope(self, name: str) -> Store:
        self._core.ensure_store(self.workspace, name)
        return Store(self, name)

    def execution_state(self, execution_id: str) -> Store:
        """State of one execution (store ``execution:{id}``; records expire after 24 h)."""
        return self._scope(execution_store(execution_id))

    def flow_state(self, instance_id: str, flow_id: str) -> Store:
        """State of one flow of an instance (store ``flow:{instance_id}:{flow_id}``)."""
        return self._scope(flow_store(instance_id, flow_id))

    def cross_flow_state(self, instance_id: str) -> Store:
        """State shared by the flows of an instance (store ``instance:{instance_id}``)."""
        return self._scope(cross_flow_store(instance_id))

    def integration_state(self, integration_id: str) -> Store:
        """State shared by every instance of an integration (store ``integration:{id}``)."""
        return self._scope(integration_store(integration_id))

    # --- lifecycle ---------------------------------------------------------------------------

    def purge_expired(self) -> int:
        """Delete expired records now (the background purge does this on its own)."""
        if self._purge is None:
            raise InvalidRequest("this database purges on the server")
        return self._purge()

    def close(self) -> None:
        self._stop.set()
        if self._purger is not None and self._purger is not threading.current_thread():
            self._purger.join(timeout=5)
        self._core.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<runstate.Database workspace={self.workspace!r} core={self._core!r}>"


class Store(MutableMapping[str, Any]):
    """A named collection of records; every method is one atomic operation (SPEC §2)."""

    def __init__(self, db: Database, name: str) -> None:
        self._db = db
        self._core = db.core
        self._workspace = db.workspace
        self.name = name

    def _run(self, op: ops.Op) -> Any:
        return self._core.execute(self._workspace, self.name, op)

    def __repr__(self) -> str:
        return f"<runstate.Store {self.name!r}>"

    # --- mapping -----------------------------------------------------------------------------

    def __getitem__(self, key: str) -> Any:
        value = self._run(ops.Get(key, _MISSING))
        if value is _MISSING:
            raise KeyError(key)
        return value

    def __setitem__(self, key: str, value: Any) -> None:
        self._run(ops.Set(key, value))

    def __delitem__(self, key: str) -> None:
        if not self._run(ops.Delete(key)):
            raise KeyError(key)

    def __contains__(self, key: object) -> bool:
        return bool(self._run(ops.Has(key)))  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[str]:
        return self.keys()

    def __len__(self) -> int:
        try:
            return self._db.store_info(self.name).records
        except NotFound:
            return 0

    def setdefault(self, key: str, default: Any = None) -> Any:
        """`get_or_create`: atomic."""
        return self.get_or_create(key, default)

    def items(self) -> Iterator[tuple[str, Any]]:  # type: ignore[override]
        return ((r.key, r.value) for r in self.records())

    def values(self) -> Iterator[Any]:  # type: ignore[override]
        return (r.value for r in self.records())

    # --- reads -------------------------------------------------------------------------------

    def get(self, key: str, default: Any = None) -> Any:
        """The value of `key`, or `default` if it is missing or expired."""
        return self._run(ops.Get(key, default))

    def get_record(self, key: str) -> Record | None:
        """The record with its version and times, or None."""
        result: Record | None = self._run(ops.GetRecord(key))
        return result

    def has(self, key: str) -> bool:
        return bool(self._run(ops.Has(key)))

    def ttl(self, key: str) -> float | None:
        """Seconds until `key` expires; None if it has no expiry or does not exist."""
        result: float | None = self._run(ops.Ttl(key))
        return result

    def keys_page(
        self,
        prefix: str | None = None,
        start: str | None = None,
        limit: int = DEFAULT_PAGE,
        cursor: str | None = None,
        reverse: bool = False,
    ) -> Page:
        """One page of keys in UTF-8 byte order; pass `next_cursor` back as `cursor`."""
        page: Page = self._run(ops.Keys(prefix, start, limit, cursor, reverse))
        return page

    def records_page(
        self,
        prefix: str | None = None,
        start: str | None = None,
        limit: int = DEFAULT_PAGE,
        cursor: str | None = None,
        reverse: bool = False,
    ) -> Page:
        """One page of records in UTF-8 byte order of key."""
        page: Page = self._run(ops.Records(prefix, start, limit, cursor, reverse))
        return page

    def keys(  # type: ignore[override]
        self,
        prefix: str | None = None,
        start: str | None = None,
        limit: int = DEFAULT_PAGE,
        cursor: str | None = None,
        reverse: bool = False,
    ) -> Iterator[str]:
        """Every matching key, fetched `limit` at a time."""
        while True:
            page = self.keys_page(prefix, start, limit, cursor, reverse)
            yield from page.items
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    def records(
        self,
        prefix: str | None = None,
        start: str | None = None,
        limit: int = DEFAULT_PAGE,
        cursor: str | None = None,
        reverse: bool = False,
    ) -> Iterator[Record]:
        """Every matching record, fetched `limit` at a time."""
        while True:
            page = self.records_page(prefix, start, limit, cursor, reverse)
            yield from page.items
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    # --- writes ------------------------------------------------------------------------------

    def set(
        self, key: str, value: Any, ttl: float | None = None, if_version: int | None = None
    ) -> Record:
        """Write `value`. `if_version`: 0 = only if absent, n = only if at version n, else
        `Conflict` (`NotFound` if n > 0 and the record is missing). Without `ttl` the record
        gets the store's default_ttl, or none."""
        record: Record = self._run(ops.Set(key, value, ttl, if_version))
        return record

    def set_many(self, entries: Mapping[str, Any], ttl: float | None = None) -> int:
        """Write every entry, all or nothing."""
        return int(self._run(ops.SetMany(entries, ttl)))

    def get_or_create(self, key: str, value: Any) -> Any:
        """The stored value, created from `value` if absent, in one atomic step."""
        return self._run(ops.GetOrCreate(key, value))

    def delete(self, key: str, if_version: int | None = None) -> bool:
        """True if the record existed. With `if_version`, `Conflict` at another version."""
        return bool(self._run(ops.Delete(key, if_version)))

    def delete_many(self, keys: Sequence[str]) -> int:
        return int(self._run(ops.DeleteMany(keys)))

    def clear(self) -> int:  # type: ignore[override]
        """Delete every record; the number deleted."""
        return int(self._run(ops.Clear()))

    def increment(self, key: str, amount: int = 1) -> int:
        """Add `amount` (missing counts as 0): `TypeMismatch` on a non-integer, `OutOfRange`
        past signed 64-bit; the record keeps its ttl."""
        return int(self._run(ops.Increment(key, amount)))

    def decrement(self, key: str, amount: int = 1) -> int:
        return int(self._run(ops.Decrement(key, amount)))

    def append(self, key: str, value: Any) -> int:
        """Append to the list at `key` (created if missing); the new length."""
        return int(self._run(ops.Append(key, value)))

    def append_many(self, key: str, values: Sequence[Any], flatten: bool = False) -> int:
        """Append each of `values` (`flatten` unpacks array elements one level)."""
        return int(self._run(ops.AppendMany(key, values, flatten)))

    def remove_from_list(self, key: str, value: Any) -> int:
        """Remove every element JSON-equal to `value`; the number removed."""
        return int(self._run(ops.RemoveFromList(key, value)))

    def add_to_set(self, key: str, value: Any) -> bool:
        """Add `value` to the set (a list without duplicates) at `key`; True if added."""
        return bool(self._run(ops.AddToSet(key, value)))

    def remove_from_set(self, key: str, value: Any) -> bool:
        return bool(self._run(ops.RemoveFromSet(key, value)))

    def save_current_time(self, key: str) -> str:
        """Store the current UTC time (RFC 3339, microseconds, ``Z``) and return it."""
        return str(self._run(ops.SaveCurrentTime(key)))

    def set_ttl(self, key: str, ttl: float | None) -> bool:
        """Expire `key` after `ttl` seconds (None: never); True if the record exists."""
        return bool(self._run(ops.SetTtl(key, ttl)))

    def atomic(self) -> Atomic:
        """Collect checks and operations; they run as one transaction when the block exits."""
        return Atomic(self)

    # --- change feed -------------------------------------------------------------------------

    def watch(self, prefix: str | None = None, after: int | None = None) -> Iterator[Event]:
        """Every committed change of this store from now on (or past the `Event.version`
        `after`), in commit order, by any process: a blocking iterator of `Event`, to stop by
        leaving the loop. Keys filtered by `prefix` (``clear`` events always pass). Over HTTP
        a dropped connection is resumed where it stopped; a ``gap`` event reports changes
        older than the database's event retention (default 1 h) that could not be read."""
        return self._core.watch(self._workspace, self.name, prefix, after)


class Batch:
    """The queue of an atomic batch, shared by `Atomic` and `runstate.aio.AsyncAtomic`: every
    operation of `Store` is a method that queues it, `check` queues a precondition. Invalid
    inputs are kept and raised when the batch would run, with their index."""

    def __init__(self) -> None:
        self._checks: list[ops.Check] = []
        self._ops: list[ops.Op] = []
        self._invalid: Error | None = None  # the first invalid input, raised at commit
        self.results: list[Any] = []

    def check(self, key: str, version: int) -> None:
        """Require `key` to be at `version` (0: absent) when the batch runs."""
        try:
            self._checks.append(ops.Check(key, version))
        except Error as exc:
            self._invalid = self._invalid or exc.with_details(check=len(self._checks))

    def __getattr__(self, name: str) -> Callable[..., None]:
        cls = ops.OPS.get(name)
        if cls is None:
            raise AttributeError(f"{name!r} is not an operation")

        def queue(*args: Any, **kwargs: Any) -> None:
            try:
                self._ops.append(cls(*args, **kwargs))
            except Error as exc:
                self._invalid = self._invalid or exc.with_details(op=len(self._ops))
                self._ops.append(ops.Clear())  # a placeholder keeps later indexes right

        return queue

    def _queued(self) -> tuple[list[ops.Check], list[ops.Op]]:
        """The checks and operations to run; raises the first invalid input instead."""
        if self._invalid is not None:
            raise self._invalid
        return self._checks, self._ops


class Atomic(Batch):
    """An atomic batch on one store (SPEC §2.2).

    Inside ``with store.atomic() as tx:`` every operation of `Store` is a method of `tx` that
    queues it; ``tx.check(key, version=n)`` queues a precondition. On a clean exit the batch
    runs in one transaction and `results` holds each operation's result; a failed check or
    operation raises there and nothing changes. An exception in the block discards the batch."""

    def __init__(self, store: Store) -> None:
        super().__init__()
        self._store = store

    def commit(self) -> list[Any]:
        """Run the batch: raises its first error (invalid input, failed check or op)."""
        store = self._store
        self.results = store._core.batch(store._workspace, store.name, *self._queued())
        return self.results

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.commit()
