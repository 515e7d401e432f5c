"""runstate: a key-value data store for workflow automations.

::

    import runstate
    db = runstate.open("state.db")          # embedded SQLite, no server
    orders = db.store("orders")
    orders.increment("runs")

See SPEC §3.1 and docs/library-api.md for the whole API.
"""

from __future__ import annotations

import os
import typing

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
from .model import Page, Record, StoreInfo, Usage, now
from .store import Atomic, Database, Store

if typing.TYPE_CHECKING:
    from collections.abc import Callable

__all__ = [
    "Atomic",
    "Conflict",
    "Database",
    "Error",
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
) -> Database:
    """Open an embedded database: a file path, ``sqlite:///rel.db`` or ``sqlite:////abs.db``.

    `durability` is ``"fast"`` (crash-safe, not power-safe; the default here) or ``"durable"``
    (fsync before each write returns). `clock` (epoch seconds) replaces the real clock, for
    tests. Expired records are purged every `purge_interval` seconds by a background thread
    (None: only by `Database.purge_expired`); they are invisible to reads either way. The change
    feed keeps events `event_retention` seconds (default one hour)."""
    text = os.fspath(url)
    if text.startswith(("postgresql://", "postgres://")):
        raise InvalidRequest("the PostgreSQL backend is not available in this version")
    from .engine.sqlite import SqliteEngine

    engine = SqliteEngine(
        text,
        durability=durability,
        quota_bytes=quota_bytes,
        max_value_bytes=max_value_bytes,
        clock=clock,
        event_retention=event_retention,
    )
    return Database(engine, workspace, purge=engine.purge_expired, purge_interval=purge_interval)
