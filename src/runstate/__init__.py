"""runstate: a key-value data store for workflow automations.

::

    import runstate
    db = runstate.open("state.db")          # embedded SQLite, no server
    db = runstate.connect("http://127.0.0.1:8765", token="rs_...")  # a server, same API
    orders = db.store("orders")
    orders.increment("runs")

`runstate.connect_async` is the same API for asyncio (`runstate.aio`).

See SPEC §3.1 and docs/library-api.md for the whole API.
"""

from __future__ import annotations

import os
import typing

from .aio import AsyncAtomic, AsyncDatabase, AsyncStore
from .errors import (
    Conflict,
    Error,
    Forbidden,
    HasDependents,
    InvalidKey,
    InvalidRequest,
    InvalidValue,
    NotFound,
    OutOfRange,
    QuotaExceeded,
    RateLimited,
    TypeMismatch,
    Unauthorized,
    Unavailable,
    ValueTooLarge,
)
from .model import Event, Page, Record, StoreInfo, Usage, now
from .store import Atomic, Database, Store

if typing.TYPE_CHECKING:
    from collections.abc import Callable

__all__ = [
    "AsyncAtomic",
    "AsyncDatabase",
    "AsyncStore",
    "Atomic",
    "Conflict",
    "Database",
    "Error",
    "Event",
    "Forbidden",
    "HasDependents",
    "InvalidKey",
    "InvalidRequest",
    "InvalidValue",
    "NotFound",
    "OutOfRange",
    "Page",
    "QuotaExceeded",
    "RateLimited",
    "Record",
    "Store",
    "StoreInfo",
    "TypeMismatch",
    "Unauthorized",
    "Unavailable",
    "Usage",
    "ValueTooLarge",
    "__version__",
    "connect",
    "connect_async",
    "now",
    "open",
]

__version__ = "0.1.0"


def open(
    url: str | os.PathLike[str],
    *,
    durability: str = "fast",
    quota_bytes: int | None = None,
    max_value_bytes: int | None = None,
    clock: Callable[[], float] | None = None,
    purge_interval: float | None = 1.0,
    event_retention: float = 3600.0,
    workspace: str = "default",
    pool_size: int | None = None,
) -> Database:
    """Open a database directly (no server): a SQLite file (a path, ``sqlite:///rel.db`` or
    ``sqlite:////abs.db``), or PostgreSQL (``postgresql://user@host/db``, optionally with
    ``?schema=name``; needs ``runstate[postgres]``).

    `durability` is ``"fast"`` (crash-safe, not power-safe; the default here) or ``"durable"``
    (fsync before each write returns). `clock` (epoch seconds) replaces the real clock, for
    tests. Expired records are purged every `purge_interval` seconds by a background thread
    (None: only by `Database.purge_expired`); they are invisible to reads either way. The change
    feed keeps events `event_retention` seconds (default one hour). `pool_size` bounds the
    PostgreSQL connections this process opens (default 8; ignored for SQLite)."""
    from .engine import open_engine

    engine = open_engine(
        url,
        durability=durability,
        quota_bytes=quota_bytes,
        max_value_bytes=max_value_bytes,
        clock=clock,
        event_retention=event_retention,
        pool_size=pool_size,
    )
    return Database(engine, workspace, purge=engine.purge_expired, purge_interval=purge_interval)


def connect(url: str, token: str | None = None, *, timeout: float = 30.0) -> Database:
    """Connect to a runstate server (``runstate serve``): the same `Database` API as `open`,
    over HTTP with one kept-alive connection pool. The workspace is the token's. A network
    failure raises `Unavailable`; every other error is the one the embedded library raises.
    `timeout` (seconds) bounds connecting and each read or write of a request."""
    from .client import HttpCore  # httpx is imported only by those who connect

    return Database(HttpCore(url, token, timeout=timeout))


def connect_async(url: str, token: str | None = None, *, timeout: float = 30.0) -> AsyncDatabase:
    """`connect` for asyncio: ``async with runstate.connect_async(url, token=...) as db:``,
    then ``await db.store(...)``, ``await store.increment(...)``, ``async for`` over
    ``store.keys()``; see `runstate.aio`."""
    from .client import AsyncHttpCore

    return AsyncDatabase(AsyncHttpCore(url, token, timeout=timeout))
