"""The PostgreSQL backend: any number of processes, on any number of machines, one database.

Storage discipline, and the guarantees it gives (the same promises as `engine.sqlite`, kept
with PostgreSQL's tools instead of a file lock):

- Every write transaction locks the rows of the stores it writes (``SELECT ... FOR UPDATE``,
  in id order, so two transactions never wait on each other in a circle). Writes to one store
  are therefore serialised across every process, while writes to different stores run in
  parallel. Read-modify-write operations (increment, append, add_to_set, version checks) read
  and write under that lock: nothing is lost between processes.
- Versions (and change-feed positions) come from one database-wide sequence (``versions``,
  ``CACHE 1``), as on SQLite: they only grow and are never reused, not even after a delete and
  re-create. A store row carries the store's counters: ``seq``, the last version given out in
  the store, and the store's ``records`` and ``bytes``, updated in the same transaction as the
  records, so they are exact. A deleted store keeps its row (``live = false``).
- Change-feed events carry ``(store_id, seq)``. A store's versions are taken under its lock,
  so a store's events commit in ``seq`` order: a watcher reading ``seq > position`` of its
  store (up to the store's committed ``seq``) never misses an event that commits later. A
  watch starts from its store's ``seq`` (not past other stores' events, as on SQLite, which
  needs no such care). Every commit that adds events sends a ``NOTIFY``; each process listens
  on one connection and wakes its watchers, so a watcher on server A sees writes made through
  server B at once.
- The quota is per workspace, and enforcing it must not make every write of a workspace wait
  on one row (SPEC §6). Each store holds an *allotment* (``allot``): bytes it may fill without
  asking. The allotments of a workspace never sum past its quota, and a store's ``bytes`` never
  pass its ``allot``; so the workspace's bytes never pass the quota. A write that needs more
  than its store's allotment locks the workspace row and takes free quota (a slice more than it
  needs, so the next writes do not ask again); when the free quota is not enough it reclaims
  the unused allotment of stores that are not being written at that moment (``SKIP LOCKED``:
  it never waits for them), purging their expired records first, and only then refuses with
  `QuotaExceeded`.
- Durability: ``durable`` runs with ``synchronous_commit = on`` (the commit is flushed to
  PostgreSQL's WAL before it is acknowledged); ``fast`` with ``synchronous_commit = off``
  (a crash of runstate loses nothing; a crash of PostgreSQL itself may lose the last few
  hundred milliseconds of commits).
- A failure before COMMIT was sent (connection reset, PostgreSQL restarting, a deadlock) is
  retried on a fresh connection; a failure during COMMIT is reported as `Unavailable` and never
  retried, so no write is applied twice. The pool replaces broken connections by itself.
- Schema changes are numbered migrations in `MIGRATIONS`, applied at start under an advisory
  lock, so servers starting at once apply each exactly once.

The database URL is libpq's (``postgresql://user@host:5432/db?...``) with one parameter of
runstate's own: ``schema`` (default ``runstate``), the schema holding runstate's tables, so that
several independent runstate databases can share one PostgreSQL database.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import re
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
import psycopg.errors
from psycopg_pool import ConnectionPool, PoolTimeout

from .. import ops
from ..errors import (
    Conflict,
    Error,
    HasDependents,
    InvalidRequest,
    NotFound,
    QuotaExceeded,
    Unavailable,
    ValueTooLarge,
)
from ..model import (
    DEFAULT_QUOTA_BYTES,
    INT64_MAX,
    INT64_MIN,
    MAX_PAGE,
    MAX_VALUE_BYTES,
    StoreInfo,
    Usage,
    check_store_name,
    check_ttl,
    check_workflow,
    decode_value,
    initial_default_ttl,
    to_datetime,
)
from .base import (
    Changes,
    EngineBase,
    EventRow,
    Reader,
    Row,
    Txn,
    check_durability,
    path_for_type,
)

__all__ = ["PostgresEngine", "is_postgres_url"]

T = TypeVar("T")
log = logging.getLogger("runstate.postgres")

Work = Callable[[Txn], Any] | ops.Op | ops.BatchWork

MIGRATIONS: list[tuple[str, str]] = [
    (
        "initial",
        """
        CREATE TABLE workspaces (
            id bigserial PRIMARY KEY,
            name text NOT NULL UNIQUE,
            quota bigint NOT NULL,
            created_at bigint NOT NULL
        );
        CREATE TABLE stores (
            id bigserial PRIMARY KEY,
            workspace_id bigint NOT NULL,
            name text COLLATE "C" NOT NULL,
            live boolean NOT NULL,
            default_ttl double precision,
            created_at bigint NOT NULL,
            seq bigint NOT NULL DEFAULT 0,
            records bigint NOT NULL DEFAULT 0,
            bytes bigint NOT NULL DEFAULT 0,
            allot bigint NOT NULL DEFAULT 0,
            trimmed bigint NOT NULL DEFAULT 0,
            UNIQUE (workspace_id, name)
        );
        CREATE TABLE dependents (
            store_id bigint NOT NULL,
            workflow text COLLATE "C" NOT NULL,
            PRIMARY KEY (store_id, workflow)
        );
        CREATE TABLE records (
            store_id bigint NOT NULL,
            key text COLLATE "C" NOT NULL,
            value bytea NOT NULL,
            version bigint NOT NULL,
            created_at bigint NOT NULL,
            updated_at bigint NOT NULL,
            expires_at bigint,
            PRIMARY KEY (store_id, key)
        ) WITH (fillfactor = 80);  -- room on each page for HOT updates (no index write)
        CREATE INDEX records_expiry ON records (expires_at) WHERE expires_at IS NOT NULL;
        CREATE TABLE events (
            store_id bigint NOT NULL,
            seq bigint NOT NULL,
            type text NOT NULL,
            key text COLLATE "C",
            value bytea,
            at bigint NOT NULL,
            PRIMARY KEY (store_id, seq)
        );
        -- events are appended in (nearly) time order: a BRIN index finds the old ones for
        -- trimming at a fraction of a b-tree's cost per insert
        CREATE INDEX events_at ON events USING brin (at);
        -- Versions and feed positions: one counter for the database, as on SQLite. Taken
        -- under the store's row lock, so a store's versions grow in commit order. CACHE 1:
        -- a per-session cache would hand out values out of order between sessions.
        CREATE SEQUENCE versions CACHE 1;
        CREATE TABLE tokens (
            id text PRIMARY KEY,
            hash text NOT NULL UNIQUE,
            role text NOT NULL,
            stores text,
            workspace_id bigint NOT NULL,
            created_at bigint NOT NULL,
            revoked_at bigint
        );
        CREATE TABLE token_changes (
            id int PRIMARY KEY CHECK (id = 1),
            counter bigint NOT NULL
        );
        INSERT INTO token_changes VALUES (1, 0);
        """,
    ),
]

_INT64 = f"BETWEEN {INT64_MIN} AND {INT64_MAX}"
_INTEGER_TEXT = "'^-?[0-9]+$'"

_STORE_COLUMNS = "id, workspace_id, name, live, default_ttl, seq, records, bytes, allot"
_ROW = "SELECT value, version, created_at, updated_at, expires_at FROM records "
_GET = _ROW + "WHERE store_id = %s AND key = %s AND (expires_at IS NULL OR expires_at > %s)"
_GET_BY_NAME = (
    _ROW + "WHERE store_id = (SELECT id FROM stores WHERE workspace_id = %s AND name = %s "
    "AND live) AND key = %s AND (expires_at IS NULL OR expires_at > %s)"
)
_STORE_ID = "SELECT id, default_ttl FROM stores WHERE workspace_id = %s AND name = %s AND live"

# A put: the old row's size and expiry (the statement's snapshot: before the write), the upsert,
# and the change-feed event, in one statement. Params: store, key, value, version, now, expiry.
_PUT = """
WITH ver AS (SELECT nextval('versions') AS n), old AS (
    SELECT octet_length(value) AS size, expires_at FROM records
    WHERE store_id = %(s)s AND key = %(k)s
), up AS (
    INSERT INTO records AS r (store_id, key, value, version, created_at, updated_at, expires_at)
    VALUES (%(s)s, %(k)s, %(v)s, (SELECT n FROM ver), %(t)s, %(t)s, %(e)s)
    ON CONFLICT (store_id, key) DO UPDATE SET
        value = excluded.value,
        version = excluded.version,
        updated_at = excluded.updated_at,
        expires_at = excluded.expires_at,
        created_at = CASE WHEN r.expires_at <= excluded.updated_at
                          THEN excluded.created_at ELSE r.created_at END
    RETURNING created_at
), ev AS (
    INSERT INTO events (store_id, seq, type, key, value, at)
    VALUES (%(s)s, (SELECT n FROM ver), 'set', %(k)s, %(v)s, %(t)s)
)
SELECT (SELECT n FROM ver), up.created_at, old.size FROM up LEFT JOIN old ON true
"""
# An increment in one statement: no row where the stored value is not an integer or the sum
# leaves 64 bits (the caller then runs the definition, which raises the exact error).
# Params: store, key, amount, version, now, expiry of a new record.
_AMOUNT = "convert_from(excluded.value, 'UTF8')::numeric"  # a new record's value: the amount
# Increments of distinct keys of one store in one statement, each with its own version and
# event: no row for a key whose stored value is not an integer or whose sum leaves 64 bits (the
# caller then runs the definition, which raises the exact error). Params: store, keys, amounts,
# now, expiry of a new record. Answers (position in the arrays, version, new value, old size).
_INCREMENTS = f"""
WITH input AS (
    SELECT k, a, o, nextval('versions') AS n
    FROM unnest(%(k)s::text[], %(a)s::bigint[]) WITH ORDINALITY AS i(k, a, o)
), old AS (
    SELECT r.key, octet_length(r.value) AS size FROM records r
    WHERE r.store_id = %(s)s AND r.key = ANY(%(k)s::text[])
), up AS (
    INSERT INTO records AS r (store_id, key, value, version, created_at, updated_at, expires_at)
    SELECT %(s)s, k, convert_to(a::text, 'UTF8'), n, %(t)s, %(t)s, %(e)s FROM input
    ON CONFLICT (store_id, key) DO UPDATE SET
        value = CASE WHEN r.expires_at <= %(t)s THEN excluded.value
                     ELSE convert_to((convert_from(r.value, 'UTF8')::numeric + {_AMOUNT})::text,
                                     'UTF8') END,
        version = excluded.version,
        updated_at = excluded.updated_at,
        expires_at = CASE WHEN r.expires_at <= %(t)s THEN excluded.expires_at
                          ELSE r.expires_at END,
        created_at = CASE WHEN r.expires_at <= %(t)s THEN excluded.created_at
                          ELSE r.created_at END
    WHERE CASE WHEN r.expires_at <= %(t)s THEN true
               WHEN octet_length(r.value) < 21 AND convert_from(r.value, 'UTF8') ~ {_INTEGER_TEXT}
               THEN convert_from(r.value, 'UTF8')::numeric + {_AMOUNT} {_INT64}
               ELSE false END
    RETURNING key, value, version
), ev AS (
    INSERT INTO events (store_id, seq, type, key, value, at)
    SELECT %(s)s, version, 'set', key, value, %(t)s FROM up
)
SELECT input.o, up.version, up.value, old.size
FROM input JOIN up ON up.key = input.k LEFT JOIN old ON old.key = input.k
"""
# A whole group of increments of distinct keys of one store, as ONE statement in its own
# (implicit) transaction: lock the store row (only if its unused allotment covers the group's
# largest growth and its default ttl is the one the caller assumed), increment, append the
# events, update the store's counters and notify, then commit: one round trip for the group.
# Records whose stored value is not an integer, whose sum leaves 64 bits, or that have expired
# are left alone (no row: the caller runs those units on the general path). A record's old size
# comes from its new value (old = new - amount), not from a read: a read would see the
# statement's snapshot, taken before the store's lock was granted. Params: workspace, store
# name, room needed, default ttl assumed, keys, amounts, now, expiry of a new record, channel.
_INCREMENT_GROUP = f"""
WITH st AS (
    SELECT id FROM stores
    WHERE workspace_id = %(w)s AND name = %(m)s AND live AND allot - bytes >= %(room)s
      AND default_ttl IS NOT DISTINCT FROM %(ttl)s::double precision
    FOR UPDATE
), input AS (
    SELECT st.id AS s, i.k, i.a, i.o, nextval('versions') AS n
    FROM st, unnest(%(k)s::text[], %(a)s::bigint[]) WITH ORDINALITY AS i(k, a, o)
), up AS (
    INSERT INTO records AS r (store_id, key, value, version, created_at, updated_at, expires_at)
    SELECT s, k, convert_to(a::text, 'UTF8'), n, %(t)s, %(t)s, %(e)s FROM input
    ON CONFLICT (store_id, key) DO UPDATE SET
        value = convert_to((convert_from(r.value, 'UTF8')::numeric + {_AMOUNT})::text, 'UTF8'),
        version = excluded.version,
        updated_at = excluded.updated_at
    WHERE CASE WHEN r.expires_at <= %(t)s THEN false
               WHEN octet_length(r.value) < 21 AND convert_from(r.value, 'UTF8') ~ {_INTEGER_TEXT}
               THEN convert_from(r.value, 'UTF8')::numeric + {_AMOUNT} {_INT64}
               ELSE false END
    RETURNING key, value, version, xmax = 0 AS inserted
), ev AS (
    INSERT INTO events (store_id, seq, type, key, value, at)
    SELECT s, version, 'set', key, value, %(t)s FROM up JOIN input ON input.k = up.key
), done AS (
    SELECT input.o, up.version, up.value, up.inserted, octet_length(up.value) - CASE
        WHEN up.inserted THEN -octet_length(up.key)
        ELSE octet_length((convert_from(up.value, 'UTF8')::numeric - input.a)::text) END AS grew
    FROM input JOIN up ON up.key = input.k
), saved AS (
    UPDATE stores AS t SET seq = greatest(t.seq, (SELECT max(version) FROM done)),
        records = t.records + (SELECT count(*) FROM done WHERE inserted),
        bytes = t.bytes + (SELECT sum(grew) FROM done)
    FROM st WHERE t.id = st.id AND EXISTS (SELECT 1 FROM done)
    RETURNING pg_notify(%(c)s, '')
)
SELECT o, value FROM done
"""
# Delete one record with its event (``expire`` if it had expired). Params: store, key, seq, now.
_DELETE = """
WITH ver AS (SELECT nextval('versions') AS n), d AS (
    DELETE FROM records WHERE store_id = %(s)s AND key = %(k)s
    RETURNING expires_at, octet_length(key) + octet_length(value) AS size
), ev AS (
    INSERT INTO events (store_id, seq, type, key, value, at)
    SELECT %(s)s, (SELECT n FROM ver),
           CASE WHEN expires_at IS NULL OR expires_at > %(t)s THEN 'delete' ELSE 'expire' END,
           %(k)s, NULL, %(t)s
    FROM d
)
SELECT (SELECT n FROM ver), expires_at, size FROM d
"""
# Purge up to %(l)s expired records of one store, an ``expire`` event each, numbered from
# taken in key order. Returns (count, bytes, last seq).
_PURGE_STORE = """
WITH d AS (
    DELETE FROM records WHERE store_id = %(s)s AND key IN (
        SELECT key FROM records WHERE store_id = %(s)s AND expires_at <= %(t)s
        ORDER BY key LIMIT %(l)s)
    RETURNING key, octet_length(key) + octet_length(value) AS size
), numbered AS (
    SELECT key, size, nextval('versions') AS seq FROM (SELECT * FROM d ORDER BY key) o
), ev AS (
    INSERT INTO events (store_id, seq, type, key, value, at)
    SELECT %(s)s, seq, 'expire', key, NULL, %(t)s FROM numbered
)
SELECT count(*), coalesce(sum(size), 0), coalesce(max(seq), 0) FROM numbered
"""
_EVENT = (
    "INSERT INTO events (store_id, seq, type, key, value, at) "
    "VALUES (%s, nextval('versions'), %s, %s, NULL, %s) RETURNING seq"
)
_SAVE_STORES = """
UPDATE stores AS s SET seq = v.seq, records = v.records, bytes = v.bytes, allot = v.allot
FROM unnest(%s::bigint[], %s::bigint[], %s::bigint[], %s::bigint[], %s::bigint[])
     AS v(id, seq, records, bytes, allot)
WHERE s.id = v.id
"""

_PURGE_BATCH = 1000
_TCP_DEFAULTS = {
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 3,
    "keepalives_count": 3,
    "tcp_user_timeout": 5000,
}
_RETRIES = 4
_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,47}")


def is_postgres_url(url: object) -> bool:
    return isinstance(url, str) and url.startswith(("postgresql://", "postgres://"))


def _split_url(url: str) -> tuple[str, str, dict[str, str]]:
    """libpq's URL without runstate's own parameters; the schema; runstate's parameters."""
    parts = urlsplit(url)
    ours: dict[str, str] = {}
    theirs: list[tuple[str, str]] = []
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name in ("schema", "pool_size"):
            ours[name] = value
        else:
            theirs.append((name, value))
    schema = ours.pop("schema", "runstate")
    if not _SCHEMA_NAME.fullmatch(schema):
        raise InvalidRequest(
            "the schema must be 1-48 characters of a-z, 0-9 and _, not starting with a digit",
            {"schema": schema[:64]},
        )
    conninfo = urlunsplit(parts._replace(query=urlencode(theirs)))
    return conninfo, schema, ours


def _successor(prefix: str) -> str | None:
    """The smallest string greater than every string starting with `prefix` (code point order,
    which is UTF-8 byte order and the "C" collation's order)."""
    chars = list(prefix)
    while chars:
        point = ord(chars[-1]) + 1
        if point > 0x10FFFF:
            chars.pop()
            continue
        if 0xD800 <= point <= 0xDFFF:
            point = 0xE000
        chars[-1] = chr(point)
        return "".join(chars)
    return None


def _prefix_sql(prefix: str | None, column: str = "key") -> tuple[str, list[Any]]:
    if not prefix:
        return "", []
    high = _successor(prefix)
    if high is None:
        return f" AND {column} >= %s", [prefix]
    return f" AND {column} >= %s AND {column} < %s", [prefix, high]


def _unavailable(exc: BaseException) -> Unavailable:
    """Translate a database failure (unreachable, restarting, out of space, timed out)."""
    if isinstance(exc, PoolTimeout):
        return Unavailable(
            "the database is unreachable; try again", {"reason": "database_unreachable"}
        )
    if isinstance(exc, psycopg.errors.DiskFull):
        return Unavailable(
            "the database is out of space; writes resume once space is freed",
            {"reason": "disk_full"},
        )
    if isinstance(exc, psycopg.errors.SerializationFailure | psycopg.errors.DeadlockDetected):
        return Unavailable("the database is busy; try again", {"reason": "busy"})
    if isinstance(exc, psycopg.errors.QueryCanceled):
        return Unavailable("the database did not answer in time", {"reason": "timeout"})
    return Unavailable("the database is unavailable; try again", {"reason": "database_error"})


def _retryable(exc: BaseException) -> bool:
    return isinstance(
        exc,
        psycopg.errors.SerializationFailure
        | psycopg.errors.DeadlockDetected
        | psycopg.OperationalError,
    ) and not isinstance(exc, psycopg.errors.DiskFull | psycopg.errors.QueryCanceled)


# A workspace counter summed over its stores but those given (see `_Work._workspace_sum`).
_SUM_OF_OTHER_STORES = {
    counter: f"SELECT coalesce(sum({counter}), 0) FROM stores WHERE workspace_id = %s "
    "AND NOT (id = ANY(%s::bigint[]))"
    for counter in ("allot", "bytes")
}


class _Store:
    """The locked row of one store in a write transaction: its counters as they will be
    written back at commit (`_Work.save`)."""

    __slots__ = (
        "allot",
        "bytes",
        "default_ttl",
        "dirty",
        "id",
        "live",
        "name",
        "records",
        "seq",
        "workspace_id",
    )

    def __init__(self, found: Sequence[Any]) -> None:
        (
            self.id,
            self.workspace_id,
            self.name,
            self.live,
            self.default_ttl,
            self.seq,
            self.records,
            self.bytes,
            self.allot,
        ) = found
        self.dirty = False

    def state(self) -> tuple[Any, ...]:
        return (self.live, self.default_ttl, self.seq, self.records, self.bytes, self.allot)

    def restore(self, state: tuple[Any, ...]) -> None:
        self.live, self.default_ttl, self.seq, self.records, self.bytes, self.allot = state


class _Work:
    """One write transaction: the stores it has locked, the workspace rows it holds, and the
    quota bookkeeping."""

    def __init__(self, engine: PostgresEngine, conn: psycopg.Connection[Any], now: int) -> None:
        self.engine = engine
        self.conn = conn
        self.now = now
        self.stores: dict[tuple[int, str], _Store] = {}
        self.quotas: dict[int, int] = {}  # workspace id -> quota, for workspaces locked
        self.events = False

    # --- stores ---

    def lock(self, wanted: Sequence[tuple[int, str]]) -> None:
        """Lock the rows of these stores that exist (live or not), in id order."""
        missing = sorted({w for w in wanted if w not in self.stores})
        if not missing:
            return
        found = self.conn.execute(
            f"SELECT {_STORE_COLUMNS} FROM stores WHERE (workspace_id, name) IN "
            f"(SELECT * FROM unnest(%s::bigint[], %s::text[])) ORDER BY id FOR UPDATE",
            ([w for w, _ in missing], [n for _, n in missing]),
        ).fetchall()
        for row in found:
            store = _Store(row)
            self.stores[store.workspace_id, store.name] = store
            if store.live:
                self.engine._default_ttls[store.workspace_id, store.name] = store.default_ttl

    def store(self, workspace_id: int, name: str) -> _Store | None:
        """The locked store, live or not; None if it never existed."""
        key = (workspace_id, name)
        if key not in self.stores:
            self.lock([key])
        return self.stores.get(key)

    def create(self, workspace_id: int, name: str, default_ttl: float | None) -> _Store:
        """Make the store live (create it, or bring a deleted one back with its counters)."""
        check_store_name(name)
        ttl = initial_default_ttl(name, default_ttl)
        store = self.store(workspace_id, name)
        if store is None:
            found = self.conn.execute(
                "INSERT INTO stores (workspace_id, name, live, default_ttl, created_at) "
                "VALUES (%s, %s, true, %s, %s) ON CONFLICT (workspace_id, name) DO NOTHING "
                f"RETURNING {_STORE_COLUMNS}",
                (workspace_id, name, ttl, self.now),
            ).fetchone()
            if found is None:  # another process created it meanwhile (committed): lock it
                store = self.store(workspace_id, name)
                assert store is not None
            else:
                store = _Store(found)
                self.stores[workspace_id, name] = store
                self.engine._default_ttls[workspace_id, name] = ttl
                return store
        if not store.live:
            self.conn.execute(
                "UPDATE stores SET live = true, default_ttl = %s, created_at = %s WHERE id = %s",
                (ttl, self.now, store.id),
            )
            store.live, store.default_ttl = True, ttl
            self.engine._default_ttls[workspace_id, name] = ttl
        return store

    def noted(self, store: _Store, seq: int) -> int:
        """Record that `store` gave out version / feed position `seq` (its rows' `seq` is
        the last one given out, written back at commit)."""
        if seq > store.seq:
            store.seq = seq
        store.dirty = True
        self.events = True
        return seq

    def put(self, store: _Store, key: str, value: bytes, expires_at: int | None) -> Row:
        """Write a record of the locked, live `store` (size already checked), with its event
        and accounting; `QuotaExceeded` past the quota (the caller rolls back)."""
        params = {"s": store.id, "k": key, "v": value, "t": self.now, "e": expires_at}
        version, created, old_size = _one(self.conn.execute(_PUT, params))
        self.written(store, key, len(value), version, old_size)
        return Row(key, value, version, created, self.now, expires_at)

    def written(
        self, store: _Store, key: str, size: int, version: int, old_size: int | None
    ) -> None:
        """Account a record written (value of `size` bytes; `old_size`: the value it
        replaced, None for a new record)."""
        self.noted(store, version)
        if old_size is None:
            store.records += 1
            self.grow(store, len(key.encode()) + size, key)
        else:
            self.grow(store, size - int(old_size), key)

    def delete(self, store: _Store, key: str) -> bool:
        """Delete a record of the locked `store`, with its event; False if there was none
        (an expired record is deleted too, as an ``expire``, and answers False)."""
        found = self.conn.execute(_DELETE, {"s": store.id, "k": key, "t": self.now}).fetchone()
        return self.deleted(store, found)

    def deleted(self, store: _Store, found: Sequence[Any] | None) -> bool:
        """Account what `_DELETE` answered."""
        if found is None:
            return False
        seq, expires_at, size = found
        self.noted(store, seq)
        store.records -= 1
        self.grow(store, -int(size))
        return expires_at is None or expires_at > self.now

    def event(self, store: _Store, kind: str, key: str | None) -> None:
        (seq,) = _one(self.conn.execute(_EVENT, (store.id, kind, key, self.now)))
        self.noted(store, seq)

    # --- quota ---

    def grow(self, store: _Store, added: int, key: str | None = None) -> None:
        """Account `added` bytes (may be negative) to `store`; past its allotment, take more
        of the workspace's quota or raise `QuotaExceeded` (the caller undoes the write: a
        savepoint or the whole transaction rolls back, with this bookkeeping)."""
        store.bytes += added
        store.dirty = True
        if added <= 0 or store.bytes <= store.allot:
            return
        quota = self._lock_workspace(store.workspace_id)
        free = self._free(store.workspace_id, quota)
        if free < store.bytes - store.allot:
            free += self._reclaim(store.workspace_id)  # may purge this store too
        need = store.bytes - store.allot
        if need <= 0:
            return
        if free < need:
            used = self._used(store.workspace_id) - added
            what = "the write" if key is None else f"writing {key!r}"
            raise QuotaExceeded(
                f"{what} would pass the workspace quota of {quota} bytes ({used} used)",
                {"used_bytes": used, "quota_bytes": quota}
                if key is None
                else {"key": key, "used_bytes": used, "quota_bytes": quota},
            )
        slice_ = min(max(quota // 64, 4096), 1 << 20)
        store.allot += min(free, need + slice_)

    def _lock_workspace(self, workspace_id: int) -> int:
        quota = self.quotas.get(workspace_id)
        if quota is None:
            (quota,) = self.conn.execute(
                "SELECT quota FROM workspaces WHERE id = %s FOR UPDATE", (workspace_id,)
            ).fetchone() or (0,)
            self.quotas[workspace_id] = int(quota)
        return int(quota)

    def _mine(self, workspace_id: int) -> list[_Store]:
        return [s for (w, _), s in self.stores.items() if w == workspace_id]

    def _free(self, workspace_id: int, quota: int) -> int:
        return quota - self._workspace_sum(workspace_id, "allot")

    def _used(self, workspace_id: int) -> int:
        return self._workspace_sum(workspace_id, "bytes")

    def _workspace_sum(self, workspace_id: int, counter: str) -> int:
        """Σ `counter` (``allot`` or ``bytes``) over the workspace's stores: this transaction's
        own stores as it will write them back, the others as committed."""
        mine = self._mine(workspace_id)
        (others,) = _one(
            self.conn.execute(_SUM_OF_OTHER_STORES[counter], (workspace_id, [s.id for s in mine]))
        )
        return int(others) + sum(int(getattr(s, counter)) for s in mine)

    def _reclaim(self, workspace_id: int) -> int:
        """Purge expired records of this transaction's stores and of every store of the
        workspace nobody is writing, and hand back the unused allotment of the latter;
        the bytes freed for this transaction."""
        freed = 0
        for store in self._mine(workspace_id):
            self.purge(store)
        others = self.conn.execute(
            f"SELECT {_STORE_COLUMNS} FROM stores WHERE workspace_id = %s "
            "AND NOT (id = ANY(%s::bigint[])) ORDER BY id FOR UPDATE SKIP LOCKED",
            (workspace_id, [s.id for s in self._mine(workspace_id)]),
        ).fetchall()
        for row in others:
            other = _Store(row)
            self.stores[other.workspace_id, other.name] = other
            self.purge(other)
            if other.allot > other.bytes:
                freed += other.allot - other.bytes
                other.allot = other.bytes
                other.dirty = True
        return freed

    def purge(self, store: _Store, limit: int | None = None) -> int:
        """Delete expired records of a locked store (at most `limit`), an event each."""
        total = 0
        while True:
            batch = _PURGE_BATCH if limit is None else min(_PURGE_BATCH, limit - total)
            count, size, seq = _one(
                self.conn.execute(_PURGE_STORE, {"s": store.id, "t": self.now, "l": batch})
            )
            if count:
                self.noted(store, int(seq))
                store.records -= int(count)
                store.bytes -= int(size)
            total += int(count)
            if count < batch or (limit is not None and total >= limit):
                return total

    # --- commit ---

    def save(self) -> None:
        """Write the counters of the stores this transaction changed back to their rows, and
        tell every listening process that the feed moved (delivered at commit)."""
        dirty = [s for s in self.stores.values() if s.dirty]
        if dirty:
            # the NOTIFY rides on the same statement (one per row; PostgreSQL folds repeats)
            self.conn.execute(
                _SAVE_STORES + (" RETURNING pg_notify(%s, '')" if self.events else ""),
                (
                    [s.id for s in dirty],
                    [s.seq for s in dirty],
                    [s.records for s in dirty],
                    [s.bytes for s in dirty],
                    [s.allot for s in dirty],
                    *([self.engine.channel] if self.events else []),
                ),
            )
        elif self.events:
            self.conn.execute("SELECT pg_notify(%s, '')", (self.engine.channel,))

    def snapshot(self) -> dict[tuple[int, str], tuple[Any, ...]]:
        return {key: store.state() for key, store in self.stores.items()}

    def rollback_to(self, saved: dict[tuple[int, str], tuple[Any, ...]]) -> None:
        """Undo the bookkeeping of a unit whose savepoint was rolled back."""
        for key in list(self.stores):
            if key in saved:
                self.stores[key].restore(saved[key])
            else:  # created (or first locked) by the unit: its row lock may be gone too
                del self.stores[key]
        # A workspace row locked by the unit was released with its savepoint: forget every
        # lock taken (taking again one still held costs a round trip, never a wait), or a
        # later unit would hand out quota unlocked, racing another process for the same bytes.
        self.quotas.clear()


class _PgReader:
    """Reads of one store on one connection, at one clock reading."""

    __slots__ = ("_conn", "_now", "_store_id")

    def __init__(self, conn: psycopg.Connection[Any], store_id: int | None, now: int) -> None:
        self._conn = conn
        self._store_id = store_id
        self._now = now

    @property
    def now(self) -> int:
        return self._now

    def get(self, key: str) -> Row | None:
        if self._store_id is None:
            return None
        found = self._conn.execute(_GET, (self._store_id, key, self._now), binary=True).fetchone()
        return None if found is None else Row(key, *found)

    def scan(
        self,
        *,
        prefix: str | None,
        start: str | None,
        after: str | None,
        reverse: bool,
        limit: int,
    ) -> list[Row]:
        if self._store_id is None:
            return []
        where, params = _prefix_sql(prefix)
        if start is not None:
            where += " AND key <= %s" if reverse else " AND key >= %s"
            params.append(start)
        if after is not None:
            where += " AND key < %s" if reverse else " AND key > %s"
            params.append(after)
        order = "DESC" if reverse else "ASC"
        rows = self._conn.execute(
            "SELECT key, value, version, created_at, updated_at, expires_at FROM records "
            f"WHERE store_id = %s AND (expires_at IS NULL OR expires_at > %s){where} "
            f"ORDER BY key {order} LIMIT %s",
            [self._store_id, self._now, *params, limit],
            binary=True,
        ).fetchall()
        return [Row(*row) for row in rows]


class _PgTxn(_PgReader):
    """A write transaction on one store (its row locked, or locked when first created)."""

    __slots__ = ("_name", "_store", "_work", "_workspace_id")

    def __init__(self, work: _Work, workspace_id: int, name: str) -> None:
        store = work.store(workspace_id, name)
        live = store if store is not None and store.live else None
        super().__init__(work.conn, None if live is None else live.id, work.now)
        self._work = work
        self._store = live
        self._workspace_id = workspace_id
        self._name = name

    @property
    def default_ttl(self) -> float | None:
        if self._store is None:
            return initial_default_ttl(self._name, None)
        return self._store.default_ttl  # type: ignore[no-any-return]

    def put(self, key: str, value: bytes, expires_at: int | None) -> Row:
        engine = self._work.engine
        if len(value) > engine.max_value_bytes:
            raise ValueTooLarge(
                f"the value is {len(value)} bytes encoded; the limit is {engine.max_value_bytes}",
                {"key": key, "bytes": len(value), "limit": engine.max_value_bytes},
            )
        store = self._store
        if store is None:
            store = self._store = self._work.create(self._workspace_id, self._name, None)
            self._store_id = store.id
        return self._work.put(store, key, value, expires_at)

    def delete(self, key: str) -> bool:
        store = self._store
        if store is None:
            return False
        return self._work.delete(store, key)

    def clear(self) -> int:
        store = self._store
        if store is None:
            return 0
        live, count, size = _one(
            self._conn.execute(
                "WITH d AS (DELETE FROM records WHERE store_id = %s "
                "RETURNING expires_at, octet_length(key) + octet_length(value) AS size) "
                "SELECT count(*) FILTER (WHERE expires_at IS NULL OR expires_at > %s), count(*), "
                "coalesce(sum(size), 0) FROM d",
                (store.id, self._now),
            )
        )
        self._work.event(store, "clear", None)
        store.records -= int(count)
        self._work.grow(store, -int(size))
        return int(live)


class PostgresEngine(EngineBase):
    """The PostgreSQL backend (see the module docstring for its guarantees)."""

    # The server runs reads of this engine on worker threads: each is a network round trip.
    blocking = True

    def __init__(
        self,
        url: str,
        *,
        durability: str = "fast",
        quota_bytes: int | None = None,
        max_value_bytes: int | None = None,
        clock: Callable[[], float] | None = None,
        event_retention: float = 3600.0,
        pool_size: int | None = None,
        connect_timeout: float = 3.0,
    ) -> None:
        check_durability(durability)
        if quota_bytes is not None and (type(quota_bytes) is not int or quota_bytes < 0):
            raise InvalidRequest("quota_bytes must be an integer >= 0")
        conninfo, self.schema, extra = _split_url(url)
        if pool_size is None:
            pool_size = int(extra.get("pool_size", "8"))
        if not 1 <= pool_size <= 1000:
            raise InvalidRequest("the pool size must be between 1 and 1000")
        self.durability = durability
        self.max_value_bytes = max_value_bytes if max_value_bytes is not None else MAX_VALUE_BYTES
        self.event_retention = event_retention
        self.channel = f"runstate_{self.schema}"
        self._clock = clock or time.time
        self._conninfo = conninfo
        self._connect_timeout = connect_timeout
        self._workspaces: dict[str, int] = {}
        # (workspace id, store) -> default ttl as last seen locked: what `_increment_group`
        # assumes (and checks in its statement)
        self._default_ttls: dict[tuple[int, str], float | None] = {}
        self._closed = False
        self._unreachable = False  # the last call found the database unreachable
        self._changes = 0  # bumped by every NOTIFY this process hears (or might have missed)
        self._token_changes = 0
        self._changed = threading.Condition()
        sync = "off" if durability == "fast" else "on"
        self._kwargs: dict[str, Any] = {
            "autocommit": True,
            "prepare_threshold": 2,
            "connect_timeout": max(1, round(connect_timeout)),
            "options": f"-c search_path={self.schema} -c synchronous_commit={sync}",
            "application_name": "runstate",
        }
        # A network that drops packets (a partition) is noticed by TCP, not waited on: data
        # unacknowledged for 5 s, or an idle connection unanswered, fails the connection.
        # Parameters given in the URL win.
        for name, value in _TCP_DEFAULTS.items():
            if name not in conninfo:
                self._kwargs[name] = value
        self._prepare_schema()
        self._pool: ConnectionPool[Any] = ConnectionPool(
            conninfo,
            min_size=1,
            max_size=pool_size,
            kwargs=self._kwargs,
            timeout=connect_timeout,
            # A failed connection is retried with a doubling delay (1, 2, 4 ... s) until this
            # runs out; then the next request starts afresh at once. Without a short bound,
            # after an outage of T s the next attempt could come up to T s after PostgreSQL
            # is back, answering 503 all that while.
            reconnect_timeout=max(1.0, connect_timeout),
            open=False,
            name="runstate",
        )
        self._pool.open(wait=False)
        try:
            self._migrate(quota_bytes)
        except BaseException:
            self._pool.close()
            raise
        self._listener = threading.Thread(target=self._listen, name="runstate-listen", daemon=True)
        self._listener.start()

    # --- connections -----------------------------------------------------------------------

    def _connect(self, **extra: Any) -> psycopg.Connection[Any]:
        try:
            return psycopg.connect(self._conninfo, **{**self._kwargs, **extra})
        except psycopg.Error as exc:
            raise Unavailable(
                f"cannot connect to PostgreSQL: {_one_line(exc)}",
                {"reason": "database_unreachable"},
            ) from None

    def _prepare_schema(self) -> None:
        with self._connect(options="") as conn:
            encoding = conn.execute("SHOW server_encoding").fetchone()
            if encoding is None or encoding[0] != "UTF8":
                raise InvalidRequest("runstate needs a PostgreSQL database in UTF8 encoding")
            with contextlib.suppress(psycopg.errors.UniqueViolation):
                conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')

    def _now(self) -> int:
        if self._clock is time.time:
            return time.time_ns() // 1000
        return round(self._clock() * 1_000_000)

    def _check_open(self) -> None:
        if self._closed:
            raise InvalidRequest("the database is closed")

    def _run(
        self,
        fn: Callable[[psycopg.Connection[Any]], T],
        *,
        transaction: bool,
        idempotent: bool = True,
    ) -> T:
        """`fn(conn)` on a pooled connection, in a transaction or not. A failure before the
        commit was sent is retried on another connection; during the commit, it is reported
        (`Unavailable`) and never retried: the write may or may not have applied. A call outside
        a transaction that writes (`idempotent=False`: its statement commits by itself) is never
        retried once sent.

        While the database is unreachable, a call waits for a connection only briefly (a
        quarter second instead of the connect timeout), so that requests queued behind one
        another still answer promptly with `Unavailable`; the pool keeps reconnecting."""
        self._check_open()
        delay = 0.01
        for attempt in range(_RETRIES + 1):
            committing = False
            wait = 0.25 if self._unreachable else self._connect_timeout
            try:
                with self._pool.connection(timeout=wait) as conn:
                    if not transaction:
                        committing = not idempotent
                        result = fn(conn)
                    else:
                        # (pipeline mode was measured here: more waits per write, not fewer)
                        with conn.transaction():
                            result = fn(conn)
                            committing = True
                self._unreachable = False
                return result
            except PoolTimeout as exc:
                self._unreachable = True
                raise _unavailable(exc) from None
            except psycopg.Error as exc:
                if isinstance(exc, psycopg.OperationalError) and not self._closed:
                    with contextlib.suppress(Exception):
                        self._pool.check()  # drop the other broken connections too
                if committing or attempt == _RETRIES or not _retryable(exc):
                    if isinstance(exc, psycopg.OperationalError):
                        self._unreachable = True
                    elif not isinstance(exc, psycopg.errors.DiskFull):
                        log.warning("database error: %s", _one_line(exc))
                    raise _unavailable(exc) from None
                time.sleep(delay)
                delay = min(delay * 4, 0.5)
        raise AssertionError("unreachable")

    def _transact(self, fn: Callable[[_Work], T]) -> T:
        return self._run(lambda conn: fn(self._work(conn)), transaction=True)

    def _work(self, conn: psycopg.Connection[Any]) -> _Work:
        return _Work(self, conn, self._now())

    def _finish(self, work: _Work, result: T) -> T:
        work.save()
        return result

    def _workspace_id(self, name: str, create: bool) -> int | None:
        """A workspace's id; created (its own committed statement) if `create`."""
        cached = self._workspaces.get(name)
        if cached is not None:
            return cached

        def run(conn: psycopg.Connection[Any]) -> int | None:
            found = conn.execute("SELECT id FROM workspaces WHERE name = %s", (name,)).fetchone()
            if found is None and create:
                found = (
                    conn.execute(
                        "INSERT INTO workspaces (name, quota, created_at) VALUES (%s, "
                        "(SELECT quota FROM workspaces WHERE name = 'default'), %s) "
                        "ON CONFLICT (name) DO NOTHING RETURNING id",
                        (name, self._now()),
                    ).fetchone()
                    or conn.execute("SELECT id FROM workspaces WHERE name = %s", (name,)).fetchone()
                )
            return None if found is None else int(found[0])

        found = self._run(run, transaction=False)
        if found is not None:
            self._workspaces[name] = found
        return found

    # --- reads -----------------------------------------------------------------------------

    def read(self, workspace: str, store: str, fn: Callable[[Reader], T]) -> T:
        ws = self._workspace_id(workspace, create=False)
        if ws is None:
            return fn(_PgReader(None, None, self._now()))  # type: ignore[arg-type]

        def run(conn: psycopg.Connection[Any]) -> T:
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            found = conn.execute(_STORE_ID, (ws, store)).fetchone()
            return fn(_PgReader(conn, None if found is None else found[0], self._now()))

        return self._run(run, transaction=True)

    def get_row(self, workspace: str, store: str, key: str) -> Row | None:
        """The hot read path: one statement, no transaction."""
        ws = self._workspace_id(workspace, create=False)
        if ws is None:
            return None
        now = self._now()
        found = self._run(
            lambda conn: conn.execute(_GET_BY_NAME, (ws, store, key, now), binary=True).fetchone(),
            transaction=False,
        )
        return None if found is None else Row(key, *found)

    def execute(self, workspace: str, store: str, op: Any) -> Any:
        if type(op) is ops.Get:
            row = self.get_row(workspace, store, op.key)
            return op.default if row is None else decode_value(row.value)
        if op.writes:
            result = self.write_many([(workspace, store, op)])[0]
            if isinstance(result, Error):
                raise result
            return result
        return super().execute(workspace, store, op)

    # --- writes ----------------------------------------------------------------------------

    def write(self, workspace: str, store: str, fn: Callable[[Txn], T]) -> T:
        ws = self._workspace_id(workspace, create=True)
        assert ws is not None

        def run(work: _Work) -> T:
            return self._finish(work, fn(_PgTxn(work, ws, store)))

        return self._transact(run)

    def write_many(self, units: Sequence[tuple[str, str, Work]]) -> list[Any]:
        """Group commit: each unit atomic on its own (a savepoint, or one statement on a fast
        path), all in one transaction and one commit. A unit's `Error` is returned in its
        place and undoes only that unit. The stores of the group are locked up front, in id
        order."""
        resolved: list[tuple[int, str, Work]] = []
        for workspace, store, work in units:
            ws = self._workspace_id(workspace, create=True)
            assert ws is not None
            resolved.append((ws, store, work))
        answered = self._increment_group(resolved)
        if answered is not None:
            if all(r is not _UNDECIDED for r in answered):
                return answered
            rest = [i for i, r in enumerate(answered) if r is _UNDECIDED]
            for index, result in zip(
                rest, self._write_group([resolved[i] for i in rest]), strict=True
            ):
                answered[index] = result
            return answered
        return self._write_group(resolved)

    def _increment_group(self, resolved: list[tuple[int, str, Work]]) -> list[Any] | None:
        """A group made only of increments of one store this process has seen: the first
        increment of each key by `_INCREMENT_GROUP`, one round trip (the others, concurrent
        requests like every unit of a group, follow on the general path). None where it does
        not apply; else each unit's answer, `_UNDECIDED` for the units it left alone."""
        if len(resolved) < 2:
            return None
        ws, name = resolved[0][0], resolved[0][1]
        ttl = self._default_ttls.get((ws, name), _UNKNOWN)
        if ttl is _UNKNOWN:
            return None
        keys: list[str] = []
        amounts: list[int] = []
        listed: list[bool] = []
        seen: set[str] = set()
        indexes: list[int] = []  # the unit of each key sent (a key's first increment)
        for index, (unit_ws, unit_name, unit) in enumerate(resolved):
            if unit_ws != ws or unit_name != name:
                return None
            op: Any = unit
            if type(unit) is ops.BatchWork:
                if unit.checks or len(unit.ops) != 1:
                    return None
                op = unit.ops[0]
            if not isinstance(op, ops.Increment):
                return None
            amount = op.amount * op._sign
            if not INT64_MIN <= amount <= INT64_MAX:
                return None
            listed.append(op is not unit)
            if op.key in seen:  # a second increment of a key: the general path, after
                continue
            seen.add(op.key)
            keys.append(op.key)
            amounts.append(amount)
            indexes.append(index)
        now = self._now()
        params = {
            "w": ws,
            "m": name,
            "room": sum(len(k) * 4 + 21 for k in keys),
            "ttl": ttl,
            "k": keys,
            "a": amounts,
            "t": now,
            "e": None if ttl is None else now + round(ttl * 1_000_000),
            "c": self.channel,
        }
        rows = self._run(
            lambda conn: conn.execute(_INCREMENT_GROUP, params, binary=True).fetchall(),
            transaction=False,
            idempotent=False,
        )
        answers: list[Any] = [_UNDECIDED] * len(resolved)
        for position, value in rows:
            index = indexes[position - 1]
            answers[index] = [int(value)] if listed[index] else int(value)
        return answers

    def _write_group(self, resolved: list[tuple[int, str, Work]]) -> list[Any]:
        def run(work: _Work) -> list[Any]:
            work.lock([(ws, store) for ws, store, _ in resolved])
            results: list[Any] = [_UNDECIDED] * len(resolved)
            # 1. Every unit that has a fast path: its statement is sent without waiting for
            #    the one before (pipeline mode: one round trip for all of them). The units of
            #    a group are concurrent requests, so any order among them is a valid one; the
            #    statements still run in the order sent, each seeing the ones before.
            room = {id(s): s.allot - s.bytes for s in work.stores.values()}
            finishers: list[tuple[int, Callable[[], Any]]] = []
            increments = _Increments()
            with work.conn.pipeline() if len(resolved) > 1 else contextlib.nullcontext():
                for index, (ws, name, unit) in enumerate(resolved):
                    send = _fast_unit(type(unit))
                    store = work.stores.get((ws, name))
                    if send is None or store is None or not store.live:
                        continue
                    if send is PostgresEngine._unit_increment:
                        increments.add(index, store, unit, room)
                        continue
                    if (
                        send is PostgresEngine._unit_batch
                        and not unit.checks  # type: ignore[union-attr]
                        and len(unit.ops) == 1  # type: ignore[union-attr]
                        and isinstance(unit.ops[0], ops.Increment)  # type: ignore[union-attr]
                    ):  # a batch of one increment (the HTTP API's increment): listed answer
                        increments.add(index, store, unit.ops[0], room, listed=True)  # type: ignore[union-attr]
                        continue
                    finish = send(self, work, store, unit, room)
                    if finish is not _UNDECIDED:
                        finishers.append((index, finish))
                increments.send(work, results)
                for index, finish in finishers:
                    results[index] = finish()
                increments.finish(work, results)
            # 2. The rest (and fast units that could not decide alone, having written
            #    nothing): the operation's definition, each in a savepoint.
            for index, (ws, name, unit) in enumerate(resolved):
                if results[index] is not _UNDECIDED:
                    continue
                saved = work.snapshot()
                events = work.events
                try:
                    with work.conn.transaction():  # a savepoint
                        txn = _PgTxn(work, ws, name)
                        results[index] = unit(txn) if callable(unit) else unit.run(txn)
                except Error as exc:
                    work.rollback_to(saved)
                    work.events = events
                    results[index] = exc
            work.save()
            return results

        return self._transact(run)

    # Fast paths of write_many's units on a live, locked store: each sends one statement
    # doing exactly what the op's definition does and returns the function that reads its
    # answer (which may be `_UNDECIDED`: the statement wrote nothing), or is `_UNDECIDED` at
    # once. A fast path runs only where the store's unused allotment (`room`, shared by the
    # group's statements in flight) covers the largest growth the write could need, so the
    # quota cannot refuse it after the statement ran.

    def _unit_set(self, work: _Work, store: _Store, op: Any, room: dict[int, int]) -> Any:
        size = len(op.data)
        if op.if_version is not None or size > self.max_value_bytes:
            return _UNDECIDED
        if not _reserve(room, store, len(op.key) * 4 + size):
            return _UNDECIDED
        ttl = op.ttl if op.ttl is not None else store.default_ttl
        now = work.now
        expires = None if ttl is None else now + round(ttl * 1_000_000)
        params = {"s": store.id, "k": op.key, "v": op.data, "t": now, "e": expires}
        cursor = work.conn.execute(_PUT, params)

        def finish() -> Any:
            version, created, old_size = _one(cursor)
            work.written(store, op.key, len(op.data), version, old_size)
            return op.answer_row(Row(op.key, op.data, version, created, now, expires))

        return finish

    def _unit_increment(self, work: _Work, store: _Store, op: Any, room: dict[int, int]) -> Any:
        """One increment (in a batch of one); a group's increments go through `_Increments`."""
        increments = _Increments()
        increments.add(0, store, op, room)
        if not increments.rounds:
            return _UNDECIDED
        answer: list[Any] = [_UNDECIDED]
        increments.send(work, answer)

        def finish() -> Any:
            increments.finish(work, answer)
            return answer[0]

        return finish

    def _unit_delete(self, work: _Work, store: _Store, op: Any, room: dict[int, int]) -> Any:
        if op.if_version is not None:
            return _UNDECIDED
        cursor = work.conn.execute(_DELETE, {"s": store.id, "k": op.key, "t": work.now})
        return lambda: work.deleted(store, cursor.fetchone())

    def _unit_batch(self, work: _Work, store: _Store, batch: Any, room: dict[int, int]) -> Any:
        if batch.checks or len(batch.ops) != 1:
            return _UNDECIDED
        op = batch.ops[0]
        send = _fast_unit(type(op))
        if send is None or send is PostgresEngine._unit_batch:
            return _UNDECIDED
        finish = send(self, work, store, op, room)
        if finish is _UNDECIDED:
            return _UNDECIDED

        def listed() -> Any:
            result = finish()
            return _UNDECIDED if result is _UNDECIDED else [result]

        return listed

    # --- migrations ------------------------------------------------------------------------

    def _migrate(self, quota_bytes: int | None) -> None:
        def run(conn: psycopg.Connection[Any]) -> None:
            conn.execute("SELECT pg_advisory_xact_lock(7201, hashtext(%s))", (self.schema,))
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations "
                "(version int PRIMARY KEY, name text NOT NULL, applied_at bigint NOT NULL)"
            )
            done = {v for (v,) in conn.execute("SELECT version FROM schema_migrations")}
            now = self._now()
            for version, (name, script) in enumerate(MIGRATIONS, start=1):
                if version in done:
                    continue
                conn.execute(script.encode())
                conn.execute(
                    "INSERT INTO schema_migrations VALUES (%s, %s, %s)", (version, name, now)
                )
            conn.execute(
                "INSERT INTO workspaces (name, quota, created_at) VALUES ('default', %s, %s) "
                "ON CONFLICT (name) DO NOTHING",
                (DEFAULT_QUOTA_BYTES, now),
            )
            if quota_bytes is not None:
                conn.execute("UPDATE workspaces SET quota = %s", (quota_bytes,))
                # allotments were handed out against the old quota: give back what is unused
                conn.execute("UPDATE stores SET allot = bytes WHERE allot <> bytes")

        self._run(run, transaction=True)

    # --- stores ----------------------------------------------------------------------------

    def _info_rows(
        self, conn: psycopg.Connection[Any], workspace_id: int, name: str | None
    ) -> list[StoreInfo]:
        """Stores (one, or all of the workspace) with live counts: the counters less the
        expired records not yet purged, at one snapshot."""
        where = "s.workspace_id = %s AND s.live" + ("" if name is None else " AND s.name = %s")
        params: list[Any] = [self._now(), workspace_id] + ([] if name is None else [name])
        rows = conn.execute(
            "SELECT s.id, s.name, s.records - coalesce(x.n, 0), s.bytes - coalesce(x.b, 0), "
            "s.created_at, s.default_ttl, "
            "ARRAY(SELECT workflow FROM dependents d WHERE d.store_id = s.id ORDER BY workflow) "
            "FROM stores s LEFT JOIN LATERAL (SELECT count(*) AS n, "
            "sum(octet_length(key) + octet_length(value)) AS b FROM records r "
            "WHERE r.store_id = s.id AND r.expires_at <= %s) x ON true "
            f"WHERE {where} ORDER BY s.name",
            params,
        ).fetchall()
        infos = []
        for _, store_name, records, size, created, default_ttl, dependents in rows:
            created_at = to_datetime(created)
            assert created_at is not None
            infos.append(
                StoreInfo(
                    store_name, int(records), int(size), list(dependents), created_at, default_ttl
                )
            )
        return infos

    def _snapshot_read(self, fn: Callable[[psycopg.Connection[Any]], T]) -> T:
        def run(conn: psycopg.Connection[Any]) -> T:
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            return fn(conn)

        return self._run(run, transaction=True)

    def list_stores(self, workspace: str) -> list[StoreInfo]:
        ws = self._workspace_id(workspace, create=True)
        assert ws is not None
        return self._snapshot_read(lambda conn: self._info_rows(conn, ws, None))

    def _one_info(self, conn: psycopg.Connection[Any], ws: int, name: str) -> StoreInfo:
        found = self._info_rows(conn, ws, name)
        if not found:
            raise NotFound(f"no store named {name!r}", {"store": name})
        return found[0]

    def store_info(self, workspace: str, name: str) -> StoreInfo:
        check_store_name(name)
        ws = self._workspace_id(workspace, create=True)
        assert ws is not None
        return self._snapshot_read(lambda conn: self._one_info(conn, ws, name))

    def _live_store(self, work: _Work, ws: int, name: str) -> _Store:
        check_store_name(name)
        store = work.store(ws, name)
        if store is None or not store.live:
            raise NotFound(f"no store named {name!r}", {"store": name})
        return store

    def create_store(
        self, workspace: str, name: str, default_ttl: float | None = None
    ) -> StoreInfo:
        check_store_name(name)
        ttl = check_ttl(default_ttl, "default_ttl") if default_ttl is not None else None
        ws = self._workspace_id(workspace, create=True)
        assert ws is not None

        def run(work: _Work) -> StoreInfo:
            store = work.store(ws, name)
            if store is not None and store.live:
                raise Conflict(f"a store named {name!r} already exists", {"store": name})
            work.create(ws, name, ttl)
            work.save()
            return self._one_info(work.conn, ws, name)

        return self._transact(run)

    def ensure_store(self, workspace: str, name: str, default_ttl: float | None = None) -> None:
        """Create the store if it does not exist (select or create)."""
        check_store_name(name)
        ws = self._workspace_id(workspace, create=True)
        assert ws is not None

        def run(work: _Work) -> None:
            store = work.store(ws, name)
            if store is None or not store.live:
                work.create(ws, name, default_ttl)
            work.save()

        self._transact(run)

    def update_store(self, workspace: str, name: str, default_ttl: float | None) -> StoreInfo:
        ttl = check_ttl(default_ttl, "default_ttl") if default_ttl is not None else None
        ws = self._workspace_id(workspace, create=True)
        assert ws is not None

        def run(work: _Work) -> StoreInfo:
            store = self._live_store(work, ws, name)
            work.conn.execute("UPDATE stores SET default_ttl = %s WHERE id = %s", (ttl, store.id))
            store.default_ttl = ttl
            return self._one_info(work.conn, ws, name)

        return self._transact(run)

    def delete_store(self, workspace: str, name: str) -> None:
        ws = self._workspace_id(workspace, create=True)
        assert ws is not None

        def run(work: _Work) -> None:
            store = self._live_store(work, ws, name)
            dependents = [
                w
                for (w,) in work.conn.execute(
                    "SELECT workflow FROM dependents WHERE store_id = %s ORDER BY workflow",
                    (store.id,),
                )
            ]
            if dependents:
                raise HasDependents(
                    f"store {name!r} is used by {', '.join(dependents)}; remove them first",
                    {"store": name, "dependents": dependents},
                )
            work.conn.execute("DELETE FROM records WHERE store_id = %s", (store.id,))
            work.event(store, "clear", None)
            work.conn.execute(
                "UPDATE stores SET live = false, default_ttl = NULL WHERE id = %s", (store.id,)
            )
            store.live, store.records, store.bytes, store.allot = False, 0, 0, 0
            work.save()

        self._transact(run)

    def add_dependent(self, workspace: str, name: str, workflow: str) -> StoreInfo:
        workflow = check_workflow(workflow)
        return self._dependent(
            workspace,
            name,
            "INSERT INTO dependents VALUES (%s, %s) ON CONFLICT DO NOTHING",
            workflow,
        )

    def remove_dependent(self, workspace: str, name: str, workflow: str) -> StoreInfo:
        workflow = check_workflow(workflow)
        return self._dependent(
            workspace,
            name,
            "DELETE FROM dependents WHERE store_id = %s AND workflow = %s",
            workflow,
        )

    def _dependent(self, workspace: str, name: str, sql: str, workflow: str) -> StoreInfo:
        ws = self._workspace_id(workspace, create=True)
        assert ws is not None

        def run(work: _Work) -> StoreInfo:
            store = self._live_store(work, ws, name)
            work.conn.execute(sql, (store.id, workflow))
            return self._one_info(work.conn, ws, name)

        return self._transact(run)

    def usage(self, workspace: str) -> Usage:
        ws = self._workspace_id(workspace, create=True)
        assert ws is not None

        def run(conn: psycopg.Connection[Any]) -> Usage:
            (quota,) = conn.execute(
                "SELECT quota FROM workspaces WHERE id = %s", (ws,)
            ).fetchone() or (0,)
            stores = self._info_rows(conn, ws, None)
            return Usage(
                sum(s.records for s in stores), sum(s.bytes for s in stores), int(quota), stores
            )

        return self._snapshot_read(run)

    # --- maintenance -----------------------------------------------------------------------

    def purge_expired(self) -> int:
        """Delete every expired record now (an ``expire`` event each), store by store in
        bounded transactions, skipping stores another process is writing or purging (it will
        be their turn next time); then trim change-feed events past their retention."""
        total = 0
        due_sql = (
            "SELECT DISTINCT store_id FROM (SELECT store_id FROM records "
            "WHERE expires_at <= %s LIMIT 10000) x"
        )

        def due_stores(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
            return conn.execute(due_sql, (self._now(),)).fetchall()

        while True:
            due = self._run(due_stores, transaction=False)
            if not due:
                break
            purged = 0
            for (store_id,) in due:
                purged += self._transact(functools.partial(self._purge_one, store_id=store_id))
            total += purged
            if purged == 0:
                break
        while self._transact(self._trim_events) == _PURGE_BATCH:
            pass
        return total

    def _purge_one(self, work: _Work, store_id: int) -> int:
        found = work.conn.execute(
            f"SELECT {_STORE_COLUMNS} FROM stores WHERE id = %s FOR UPDATE SKIP LOCKED",
            (store_id,),
        ).fetchone()
        if found is None:
            return 0
        store = _Store(found)
        work.stores[store.workspace_id, store.name] = store
        purged = work.purge(store, _PURGE_BATCH)
        work.save()
        return purged

    def _trim_events(self, work: _Work) -> int:
        cutoff = work.now - round(self.event_retention * 1_000_000)
        rows = work.conn.execute(
            "WITH d AS (DELETE FROM events WHERE (store_id, seq) IN "
            "(SELECT store_id, seq FROM events WHERE at < %s LIMIT %s) RETURNING store_id, seq) "
            "SELECT store_id, max(seq), count(*) FROM d GROUP BY store_id ORDER BY store_id",
            (cutoff, _PURGE_BATCH),
        ).fetchall()
        for store_id, seq, _ in rows:
            work.conn.execute(
                "UPDATE stores SET trimmed = greatest(trimmed, %s) WHERE id = %s", (seq, store_id)
            )
        return sum(int(count) for _, _, count in rows)

    def recount(self, workspace: str) -> tuple[int, int]:
        """Records and bytes of live and expired rows counted from scratch (for checks)."""
        ws = self._workspace_id(workspace, create=False)
        found = self._run(
            lambda conn: _one(
                conn.execute(
                    "SELECT count(*), coalesce(sum(octet_length(key) + octet_length(value)), 0) "
                    "FROM records WHERE store_id IN "
                    "(SELECT id FROM stores WHERE workspace_id = %s)",
                    (ws,),
                )
            ),
            transaction=False,
        )
        return int(found[0]), int(found[1])

    def integrity_check(self) -> str:
        """The word ok, or what is inconsistent: every store's counters against a recount, and the
        allotments against the bytes and the quota."""

        def run(conn: psycopg.Connection[Any]) -> str:
            problems = conn.execute(
                "SELECT s.name, s.records, s.bytes, s.allot, coalesce(c.n, 0), coalesce(c.b, 0) "
                "FROM stores s LEFT JOIN (SELECT store_id, count(*) AS n, "
                "sum(octet_length(key) + octet_length(value)) AS b FROM records "
                "GROUP BY store_id) c ON c.store_id = s.id "
                "WHERE s.records <> coalesce(c.n, 0) OR s.bytes <> coalesce(c.b, 0) "
                "OR s.bytes > s.allot"
            ).fetchall()
            over = conn.execute(
                "SELECT w.name FROM workspaces w JOIN stores s ON s.workspace_id = w.id "
                "GROUP BY w.id HAVING sum(s.allot) > max(w.quota) AND sum(s.bytes) > max(w.quota)"
            ).fetchall()
            if not problems and not over:
                return "ok"
            return "; ".join(
                [f"store {p[0]}: counters {p[1:4]} recount {p[4:]}" for p in problems]
                + [f"workspace {o[0]} over its quota" for o in over]
            )

        return self._snapshot_read(run)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with self._changed:
            self._changed.notify_all()
        with contextlib.suppress(Exception):
            self._pool.close(timeout=5)
        # the listener notices within one poll (0.25 s) and closes its connection; nobody
        # needs to wait for that

    # --- tokens and workspaces -------------------------------------------------------------

    def _read_one(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self._run(lambda conn: conn.execute(sql, params).fetchone(), transaction=False)

    def create_workspace(self, name: str) -> None:
        from ..tokens import check_workspace_name

        check_workspace_name(name)
        self._workspace_id(name, create=True)

    def create_token(
        self,
        workspace: str,
        role: str,
        stores: list[str] | None,
        token_id: str,
        token_hash: str,
    ) -> Any:
        encoded = self._token_fields(workspace, role, stores)
        ws = self._workspace_id(workspace, create=True)

        def run(conn: psycopg.Connection[Any]) -> Any:
            now = self._now()
            conn.execute(
                "INSERT INTO tokens (id, hash, role, stores, workspace_id, created_at) "
                "VALUES (%s, %s, %s, %s, %s, %s)",
                (token_id, token_hash, role, encoded, ws, now),
            )
            self._tokens_touched(conn)
            return self._token_info((token_id, role, encoded, workspace, now))

        return self._run(run, transaction=True)

    def _tokens_touched(self, conn: psycopg.Connection[Any]) -> None:
        conn.execute("UPDATE token_changes SET counter = counter + 1")
        conn.execute("SELECT pg_notify(%s, 'tokens')", (self.channel,))
        self._token_changes += 1

    def list_tokens(self, workspace: str | None = None) -> list[Any]:
        where = "WHERE t.revoked_at IS NULL" + ("" if workspace is None else " AND w.name = %s")
        rows = self._run(
            lambda conn: conn.execute(
                self._GRANT_SQL + where + " ORDER BY t.created_at, t.id",
                () if workspace is None else (workspace,),
            ).fetchall(),
            transaction=False,
        )
        return [self._token_info(row) for row in rows]

    def revoke_token(self, token_id: str, workspace: str | None = None) -> bool:
        def run(conn: psycopg.Connection[Any]) -> bool:
            sql = "UPDATE tokens SET revoked_at = %s WHERE id = %s AND revoked_at IS NULL"
            params: list[Any] = [self._now(), token_id]
            if workspace is not None:
                sql += " AND workspace_id = (SELECT id FROM workspaces WHERE name = %s)"
                params.append(workspace)
            if conn.execute(sql, params).rowcount == 0:
                return False
            self._tokens_touched(conn)
            return True

        return self._run(run, transaction=True)

    def token_by_hash(self, token_hash: str) -> Any:
        found = self._read_one(
            self._GRANT_SQL + "WHERE t.hash = %s AND t.revoked_at IS NULL", (token_hash,)
        )
        return None if found is None else self._token_info(found)

    def tokens_changed(self) -> int:
        """A marker that changes whenever a token is created or revoked, by any process: kept
        by the listener (no round trip)."""
        self._check_open()
        return self._token_changes

    def has_tokens(self) -> bool:
        return bool(self._read_one("SELECT EXISTS (SELECT 1 FROM tokens)")[0])

    def workspace_totals(self) -> dict[str, tuple[int, int, int]]:
        rows = self._run(
            lambda conn: conn.execute(
                "SELECT w.name, coalesce(sum(s.records), 0), coalesce(sum(s.bytes), 0), w.quota "
                "FROM workspaces w LEFT JOIN stores s ON s.workspace_id = w.id AND s.live "
                "GROUP BY w.id ORDER BY w.name"
            ).fetchall(),
            transaction=False,
        )
        return {name: (int(r), int(b), int(q)) for name, r, b, q in rows}

    # --- change feed -----------------------------------------------------------------------

    def _listen(self) -> None:
        """Hear every commit's NOTIFY (from any process) and wake the watchers. While the
        connection is down, nothing is heard: every reconnect counts as a change, so watchers
        re-read the feed (a missed notification loses no event, only a wake-up)."""
        delay = 0.05
        while not self._closed:
            try:
                with psycopg.connect(
                    self._conninfo,
                    autocommit=True,
                    connect_timeout=self._kwargs["connect_timeout"],
                    options=self._kwargs["options"],
                    application_name="runstate-listen",
                    **{name: self._kwargs[name] for name in _TCP_DEFAULTS if name in self._kwargs},
                ) as conn:
                    conn.execute(f"LISTEN {self.channel}")
                    self._bump(tokens=True)
                    delay = 0.05
                    while not self._closed:
                        for note in conn.notifies(timeout=0.25, stop_after=256):
                            self._bump(tokens=note.payload == "tokens")
            except psycopg.Error:
                if self._closed:
                    return
                self._bump(tokens=True)
                time.sleep(delay)
                delay = min(delay * 2, 1.0)

    def _bump(self, tokens: bool) -> None:
        with self._changed:
            self._changes += 1
            if tokens:
                self._token_changes += 1
            self._changed.notify_all()

    def latest_seq(self, workspace: str | None = None, store: str | None = None) -> int:
        """The feed position of `store` now: a watch from here sees only later changes.
        Positions are per store on this backend (0 without a store)."""
        if workspace is None or store is None:
            return 0
        ws = self._workspace_id(workspace, create=False)
        if ws is None:
            return 0
        found = self._read_one(
            "SELECT seq FROM stores WHERE workspace_id = %s AND name = %s", (ws, store)
        )
        return 0 if found is None else int(found[0])

    def data_version(self) -> int:
        """A number that changes whenever any process commits a change: kept by the listener
        (no round trip), so an idle watcher costs nothing."""
        self._check_open()
        return self._changes

    def events_after(
        self,
        workspace: str,
        store: str,
        after: int,
        prefix: str | None = None,
        limit: int = MAX_PAGE,
    ) -> Changes:
        """The events of `store` past position `after` (at most `limit`, in commit order);
        ``clear`` events match any `prefix`. One statement: one snapshot."""
        ws = self._workspace_id(workspace, create=False)
        if ws is None:
            return Changes([], 0, None if after == 0 else 0)
        where, params = _prefix_sql(prefix, "e.key")
        if where:
            where = f" AND (e.key IS NULL OR ({where[5:]}))"
        rows = self._run(
            lambda conn: conn.execute(
                "SELECT s.seq, s.trimmed, e.seq, e.type, e.key, e.value FROM stores s "
                "LEFT JOIN LATERAL (SELECT seq, type, key, value FROM events e "
                f"WHERE e.store_id = s.id AND e.seq > %s AND e.seq <= s.seq{where} "
                "ORDER BY e.seq LIMIT %s) e ON true WHERE s.workspace_id = %s AND s.name = %s",
                [max(after, 0), *params, limit, ws, store],
                binary=True,
            ).fetchall(),
            transaction=False,
        )
        if not rows:
            return Changes([], 0, None if after == 0 else 0)
        latest, trimmed = int(rows[0][0]), int(rows[0][1])
        gap = None
        if after > latest:  # a position from another database, or one restored from backup
            return Changes([], latest, latest)
        if after < trimmed:
            gap = trimmed
            rows = [row for row in rows if row[2] is None or row[2] > trimmed]
        events = [EventRow(int(r[2]), r[3], r[4], r[5]) for r in rows if r[2] is not None]
        position = events[-1].seq if len(events) == limit else latest
        return Changes(events, position, gap)

    def _changed_since(self, seen: int | None, poll: float) -> int | None:
        """Woken by the listener (no round trip while nothing changes)."""
        with self._changed:
            if self._changes == seen:
                self._changed.wait(poll)
                if self._changes == seen:
                    return None
            return self._changes


class _Increments:
    """A group's increments on fast paths, as few statements as possible: one per store and
    round, a round holding distinct keys (`_INCREMENTS` cannot change a row twice); the second
    increment of a key in the group goes to the second round, and so on. Rounds of a store run
    in order."""

    def __init__(self) -> None:
        # (store, round) -> [(index in the group, key, amount)]
        self.rounds: dict[tuple[int, int], list[tuple[int, str, int]]] = {}
        self.listed: set[int] = set()  # indexes whose answer is a list (a batch of one)
        self.stores: dict[int, _Store] = {}
        self.seen: dict[tuple[int, str], int] = {}
        self.cursors: list[tuple[_Store, list[tuple[int, str, int]], Any]] = []

    def add(
        self, index: int, store: _Store, op: Any, room: dict[int, int], listed: bool = False
    ) -> None:
        amount = op.amount * op._sign
        if not INT64_MIN <= amount <= INT64_MAX:
            return
        if not _reserve(room, store, len(op.key) * 4 + 21):
            return
        round_ = self.seen.get((id(store), op.key), 0)
        self.seen[id(store), op.key] = round_ + 1
        self.rounds.setdefault((id(store), round_), []).append((index, op.key, amount))
        self.stores[id(store)] = store
        if listed:
            self.listed.add(index)

    def send(self, work: _Work, results: list[Any]) -> None:
        for (store_key, _), units in sorted(self.rounds.items(), key=lambda item: item[0][1]):
            store = self.stores[store_key]
            ttl = store.default_ttl
            expires = None if ttl is None else work.now + round(ttl * 1_000_000)
            params = {
                "s": store.id,
                "k": [key for _, key, _ in units],
                "a": [amount for _, _, amount in units],
                "t": work.now,
                "e": expires,
            }
            cursor = work.conn.execute(_INCREMENTS, params, binary=True)
            self.cursors.append((store, units, cursor))

    def finish(self, work: _Work, results: list[Any]) -> None:
        """Each increment's new value into `results` (those without a row stay undecided)."""
        for store, units, cursor in self.cursors:
            for position, version, value, old_size in cursor.fetchall():
                index, key, _ = units[position - 1]
                work.written(store, key, len(value), version, old_size)
                results[index] = [int(value)] if index in self.listed else int(value)


def _reserve(room: dict[int, int], store: _Store, most: int) -> bool:
    """Take `most` bytes of the store's unused allotment for a statement in flight."""
    left = room.get(id(store), 0)
    if left < most:
        return False
    room[id(store)] = left - most
    return True


def _one(cursor: psycopg.Cursor[Any]) -> Any:
    """The one row a statement always returns."""
    row = cursor.fetchone()
    assert row is not None
    return row


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300]


_UNDECIDED: Any = object()
_UNKNOWN: Any = object()

_UnitPath = Callable[[PostgresEngine, _Work, _Store, Any, dict[int, int]], Any]
_UNIT_BASES: tuple[tuple[type[Any], _UnitPath], ...] = (
    (ops.Set, PostgresEngine._unit_set),
    (ops.Increment, PostgresEngine._unit_increment),  # and Decrement
    (ops.Delete, PostgresEngine._unit_delete),
    (ops.BatchWork, PostgresEngine._unit_batch),
)
_UNIT_PATHS: dict[type[Any], _UnitPath | None] = {}


def _fast_unit(kind: type[Any]) -> _UnitPath | None:
    """The fast path of a unit's type in `write_many` (subclasses too), or None."""
    return path_for_type(kind, _UNIT_BASES, _UNIT_PATHS)
