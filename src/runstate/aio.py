"""The library API for asyncio: `AsyncDatabase`, `AsyncStore`, `AsyncAtomic`.

The same API as `Database`, `Store` and `Atomic` (SPEC §3.1) with every method that does I/O a
coroutine, ``keys()``, ``records()`` and ``watch()`` async iterators and ``atomic()`` an
``async with`` block; the mapping syntax (``store[key]``, ``in``, ``len``) is sync-only. Each
`AsyncStore` method is made from its operation in `runstate.ops` (its parameters are the
operation's), the same operation its sync twin builds, so both APIs share every rule and every
error. Open one with `runstate.connect_async`::

    async with runstate.connect_async("http://127.0.0.1:8765", token=...) as db:
        orders = await db.store("orders")
        await orders.increment("runs")
        async for key in orders.keys(prefix="user:"):
            ...
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from typing import Any, Concatenate, ParamSpec, Protocol, Self, TypeVar, cast

from . import ops
from .model import Event, Page, Record, StoreInfo, Usage, check_store_name
from .store import Batch, Store, cross_flow_store, execution_store, flow_store, integration_store

__all__ = ["AsyncAtomic", "AsyncCore", "AsyncDatabase", "AsyncStore"]

_P = ParamSpec("_P")
_T = TypeVar("_T")
_F = TypeVar("_F", bound=Callable[..., Any])


class AsyncCore(Protocol):
    """`engine.base.Core` with every method returning an awaitable (`client.AsyncHttpCore`)."""

    def execute(self, workspace: str, store: str, op: ops.Op) -> Awaitable[Any]: ...

    def batch(
        self, workspace: str, store: str, checks: Sequence[ops.Check], ops: Sequence[ops.Op]
    ) -> Awaitable[list[Any]]: ...

    def list_stores(self, workspace: str) -> Awaitable[list[StoreInfo]]: ...

    def store_info(self, workspace: str, name: str) -> Awaitable[StoreInfo]: ...

    def create_store(
        self, workspace: str, name: str, default_ttl: float | None = None
    ) -> Awaitable[StoreInfo]: ...

    def ensure_store(
        self, workspace: str, name: str, default_ttl: float | None = None
    ) -> Awaitable[None]: ...

    def update_store(
        self, workspace: str, name: str, default_ttl: float | None
    ) -> Awaitable[StoreInfo]: ...

    def delete_store(self, workspace: str, name: str) -> Awaitable[None]: ...

    def add_dependent(self, workspace: str, name: str, workflow: str) -> Awaitable[StoreInfo]: ...

    def remove_dependent(
        self, workspace: str, name: str, workflow: str
    ) -> Awaitable[StoreInfo]: ...

    def usage(self, workspace: str) -> Awaitable[Usage]: ...

    def watch(
        self, workspace: str, store: str, prefix: str | None = None, after: int | None = None
    ) -> AsyncIterator[Event]: ...

    def close(self) -> Awaitable[None]: ...


class AsyncDatabase:
    """A runstate database for asyncio (see `Database`); ``async with`` closes it on exit."""

    def __init__(self, core: AsyncCore, workspace: str = "default") -> None:
        self._core = core
        self.workspace = workspace

    @property
    def core(self) -> AsyncCore:
        return self._core

    async def store(self, name: str, workflow: str | None = None) -> AsyncStore:
        """The store `name`, created if it does not exist; `workflow` becomes a dependent."""
        check_store_name(name)
        await self._core.ensure_store(self.workspace, name)
        if workflow is not None:
            await self._core.add_dependent(self.workspace, name, workflow)
        return AsyncStore(self, name)

    async def stores(self) -> list[StoreInfo]:
        return await self._core.list_stores(self.workspace)

    async def store_info(self, name: str) -> StoreInfo:
        """Raises `NotFound` for a store that does not exist."""
        return await self._core.store_info(self.workspace, name)

    async def create_store(self, name: str, default_ttl: float | None = None) -> StoreInfo:
        """Raises `Conflict` if the store exists."""
        return await self._core.create_store(self.workspace, name, default_ttl)

    async def update_store(self, name: str, *, default_ttl: float | None) -> StoreInfo:
        return await self._core.update_store(self.workspace, name, default_ttl)

    async def delete_store(self, name: str) -> None:
        """Delete a store and its records; `HasDependents` while workflows use it."""
        await self._core.delete_store(self.workspace, name)

    async def add_dependent(self, name: str, workflow: str) -> StoreInfo:
        return await self._core.add_dependent(self.workspace, name, workflow)

    async def remove_dependent(self, name: str, workflow: str) -> StoreInfo:
        return await self._core.remove_dependent(self.workspace, name, workflow)

    async def usage(self) -> Usage:
        """Exact usage of the workspace: live records and bytes, against the quota."""
        return await self._core.usage(self.workspace)

    # --- Prismatic's scopes ------------------------------------------------------------------

    async def _scope(self, name: str) -> AsyncStore:
        await self._core.ensure_store(self.workspace, name)
        return AsyncStore(self, name)

    async def execution_state(self, execution_id: str) -> AsyncStore:
        """State of one execution (store ``execution:{id}``; records expire after 24 h)."""
        return await self._scope(execution_store(execution_id))

    async def flow_state(self, instance_id: str, flow_id: str) -> AsyncStore:
        """State of one flow of an instance (store ``flow:{instance_id}:{flow_id}``)."""
        return await self._scope(flow_store(instance_id, flow_id))

    async def cross_flow_state(self, instance_id: str) -> AsyncStore:
        """State shared by the flows of an instance (store ``instance:{instance_id}``)."""
        return await self._scope(cross_flow_store(instance_id))

    async def integration_state(self, integration_id: str) -> AsyncStore:
        """State shared by every instance of an integration (store ``integration:{id}``)."""
        return await self._scope(integration_store(integration_id))

    # --- lifecycle ---------------------------------------------------------------------------

    async def close(self) -> None:
        await self._core.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"<runstate.AsyncDatabase workspace={self.workspace!r} core={self._core!r}>"


def _operation(
    build: Callable[_P, ops.Op], result: Callable[[Any], _T]
) -> Callable[Concatenate[AsyncStore, _P], Coroutine[Any, Any, _T]]:
    """The `AsyncStore` method of an operation: its parameters are the operation's (checked
    when it is built, before anything is sent), its result `result` of what the core returns."""

    async def method(self: AsyncStore, /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
        return result(await self._run(build(*args, **kwargs)))

    return _described(method, build)


def _listing(
    build: Callable[_P, ops.Keys], item: type[_T]
) -> Callable[Concatenate[AsyncStore, _P], AsyncIterator[_T]]:
    """The `AsyncStore` iterator over every page of a listing (items of type `item`)."""

    def method(self: AsyncStore, /, *args: _P.args, **kwargs: _P.kwargs) -> AsyncIterator[_T]:
        return self._every(build(*args, **kwargs))

    return _described(method, build)


def _described(method: _F, build: Callable[..., Any]) -> _F:
    """Show the operation's parameters to `help` and `inspect` (they are the ones checked)."""
    parameters = inspect.signature(build).parameters.values()
    self = inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)
    method.__signature__ = inspect.Signature([self, *parameters])  # type: ignore[attr-defined]
    return method


def _any(value: Any) -> Any:
    return value


def _record(value: Any) -> Record:
    return cast(Record, value)


def _record_or_none(value: Any) -> Record | None:
    return cast("Record | None", value)


def _seconds_or_none(value: Any) -> float | None:
    return cast("float | None", value)


def _page(value: Any) -> Page:
    return cast(Page, value)


class AsyncStore:
    """A named collection of records (see `Store`): every method is one atomic operation, a
    coroutine taking the same arguments as the `Store` method of the same name, and raising
    the same errors. `keys()` and `records()` are async iterators over every page."""

    def __init__(self, db: AsyncDatabase, name: str) -> None:
        self._db = db
        self._core = db.core
        self._workspace = db.workspace
        self.name = name

    async def _run(self, op: ops.Op) -> Any:
        return await self._core.execute(self._workspace, self.name, op)

    async def _every(self, op: ops.Keys) -> AsyncIterator[Any]:
        while True:
            page: Page = await self._run(op)
            for item in page.items:
                yield item
            if page.next_cursor is None:
                return
            op = type(op)(op.prefix, op.start, op.limit, page.next_cursor, op.reverse)

    def __repr__(self) -> str:
        return f"<runstate.AsyncStore {self.name!r}>"

    def atomic(self) -> AsyncAtomic:
        """Collect checks and operations: ``async with store.atomic() as tx:``."""
        return AsyncAtomic(self)

    def watch(self, prefix: str | None = None, after: int | None = None) -> AsyncIterator[Event]:
        """Every committed change of this store, an async iterator of `Event` (see
        `Store.watch`): ``async for event in store.watch(): ...``."""
        return self._core.watch(self._workspace, self.name, prefix, after)

    # reads
    get = _operation(ops.Get, _any)
    get_record = _operation(ops.GetRecord, _record_or_none)
    has = _operation(ops.Has, bool)
    ttl = _operation(ops.Ttl, _seconds_or_none)
    keys_page = _operation(ops.Keys, _page)
    records_page = _operation(ops.Records, _page)
    keys = _listing(ops.Keys, str)
    records = _listing(ops.Records, Record)
    # writes
    set = _operation(ops.Set, _record)
    set_many = _operation(ops.SetMany, int)
    get_or_create = _operation(ops.GetOrCreate, _any)
    delete = _operation(ops.Delete, bool)
    delete_many = _operation(ops.DeleteMany, int)
    clear = _operation(ops.Clear, int)
    increment = _operation(ops.Increment, int)
    decrement = _operation(ops.Decrement, int)
    append = _operation(ops.Append, int)
    append_many = _operation(ops.AppendMany, int)
    remove_from_list = _operation(ops.RemoveFromList, int)
    add_to_set = _operation(ops.AddToSet, bool)
    remove_from_set = _operation(ops.RemoveFromSet, bool)
    save_current_time = _operation(ops.SaveCurrentTime, str)
    set_ttl = _operation(ops.SetTtl, bool)


def _name_after(twin: type, cls: type) -> None:
    """Give each generated method of `cls` its name and the documentation of its sync twin."""
    for name, member in vars(cls).items():
        if callable(member) and hasattr(member, "__signature__"):
            member.__name__ = name
            member.__qualname__ = f"{cls.__name__}.{name}"
            member.__doc__ = getattr(twin, name).__doc__


_name_after(Store, AsyncStore)


class AsyncAtomic(Batch):
    """An atomic batch on one store (see `Atomic`); it runs when ``async with`` exits."""

    def __init__(self, store: AsyncStore) -> None:
        super().__init__()
        self._store = store

    async def commit(self) -> list[Any]:
        """Run the batch: raises its first error (invalid input, failed check or op)."""
        store = self._store
        self.results = await store._core.batch(store._workspace, store.name, *self._queued())
        return self.results

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        if exc_type is None:
            await self.commit()
