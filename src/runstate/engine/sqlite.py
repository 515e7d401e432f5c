"""The embedded backend: one SQLite file.

Storage discipline, and the guarantees it gives:

- WAL journal; every connection gets the same pragmas in `_connect`. ``fast`` durability runs
  ``synchronous=NORMAL`` (a commit survives a crash of the process, not a power cut); ``durable``
  runs ``synchronous=FULL`` (the WAL is fsynced before a commit returns).
- One writer per process (a lock around one connection) and ``BEGIN IMMEDIATE`` for every write,
  so a write transaction holds SQLite's write lock from its first read: read-modify-write
  operations (increment, append, add_to_set) cannot race with another thread or another process
  sharing the file. A busy database is waited on (``busy_timeout``), then `Unavailable`.
- Readers use one connection per thread and never wait for the writer (WAL snapshots).
- Versions come from the change feed: a write's version is ``max(events.seq) + 1`` and its event
  is appended with that seq. The newest event is never purged, so versions only grow and are
  never reused, not even after a delete and re-create.
- Usage accounting lives in triggers on ``records``: every insert, update and delete adjusts the
  store's and the workspace's records/bytes (one row each in the small ``usage`` table, so the
  accounting of a write dirties one page) in the same statement, and an insert or growth past
  the workspace quota aborts that statement (`QuotaExceeded`, nothing changed). Any process
  writing the file keeps the counters exact without cooperating.
- Sets are appended to ``events`` by the same triggers; deletes, expiries and clears by
  `_SqliteTxn`. ``events.seq`` is commit order: the change feed reads it.
- Expired rows are filtered out of every read by ``expires_at > now`` and deleted by
  `purge_expired` (an ``expire`` event each).
- Schema changes are numbered migrations in `MIGRATIONS`, applied at open inside a write
  transaction, so processes opening a new file at once apply each exactly once.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

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

__all__ = ["SqliteEngine", "sqlite_path"]

T = TypeVar("T")

# A unit of `write_many`: a function of a `Txn`, an op, or a batch (`ops.BatchWork`).
Work = Callable[[Txn], Any] | ops.Op | ops.BatchWork

MIGRATIONS: list[tuple[str, str]] = [
    (
        "initial",
        """
        CREATE TABLE workspaces (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL UNIQUE,
            created_at INTEGER NOT NULL
        );
        CREATE TABLE stores (
            id INTEGER PRIMARY KEY,
            workspace_id INTEGER NOT NULL,
            name TEXT NOT NULL,
            default_ttl REAL,
            created_at INTEGER NOT NULL,
            UNIQUE (workspace_id, name)
        );
        -- The hot counters of every store (id = store id) and workspace (id = -workspace id)
        -- in one small table, so a write dirties one page for all of its accounting.
        CREATE TABLE usage (
            id INTEGER PRIMARY KEY,
            records INTEGER NOT NULL DEFAULT 0,
            bytes INTEGER NOT NULL DEFAULT 0,
            quota INTEGER
        );
        CREATE TABLE dependents (
            store_id INTEGER NOT NULL,
            workflow TEXT NOT NULL,
            PRIMARY KEY (store_id, workflow)
        ) WITHOUT ROWID;
        CREATE TABLE records (
            store_id INTEGER NOT NULL,
            key BLOB NOT NULL,
            value BLOB NOT NULL,
            version INTEGER NOT NULL,
            created_at INTEGER NOT NULL,
            updated_at INTEGER NOT NULL,
            expires_at INTEGER,
            PRIMARY KEY (store_id, key)
        ) WITHOUT ROWID;
        CREATE INDEX records_expiry ON records (expires_at) WHERE expires_at IS NOT NULL;
        -- The change feed, and the version counter: the next version is max(seq) + 1. The
        -- newest event is never purged, so a version is never reused.
        CREATE TABLE events (
            seq INTEGER PRIMARY KEY,
            store_id INTEGER NOT NULL,
            type TEXT NOT NULL,
            key BLOB,
            value BLOB,
            at INTEGER NOT NULL
        );
        INSERT INTO events VALUES (0, 0, 'init', NULL, NULL, 0);
        CREATE TRIGGER records_insert AFTER INSERT ON records BEGIN
            UPDATE usage SET records = records + 1,
                bytes = bytes + length(NEW.key) + length(NEW.value)
                WHERE id IN (NEW.store_id,
                             -(SELECT workspace_id FROM stores WHERE id = NEW.store_id));
            SELECT RAISE(ABORT, 'runstate:quota_exceeded') FROM usage
                WHERE id = -(SELECT workspace_id FROM stores WHERE id = NEW.store_id)
                AND bytes > quota;
            INSERT INTO events VALUES
                (NEW.version, NEW.store_id, 'set', NEW.key, NEW.value, NEW.updated_at);
        END;
        CREATE TRIGGER records_update AFTER UPDATE ON records BEGIN
            INSERT INTO events VALUES
                (NEW.version, NEW.store_id, 'set', NEW.key, NEW.value, NEW.updated_at);
        END;
        CREATE TRIGGER records_resize AFTER UPDATE ON records
            WHEN length(NEW.value) != length(OLD.value) BEGIN
            UPDATE usage SET bytes = bytes + length(NEW.value) - length(OLD.value)
                WHERE id IN (NEW.store_id,
                             -(SELECT workspace_id FROM stores WHERE id = NEW.store_id));
            SELECT RAISE(ABORT, 'runstate:quota_exceeded') FROM usage
                WHERE id = -(SELECT workspace_id FROM stores WHERE id = NEW.store_id)
                AND bytes > quota AND length(NEW.value) > length(OLD.value);
        END;
        CREATE TRIGGER records_delete AFTER DELETE ON records BEGIN
            UPDATE usage SET records = records - 1,
                bytes = bytes - length(OLD.key) - length(OLD.value)
                WHERE id IN (OLD.store_id,
                             -(SELECT workspace_id FROM stores WHERE id = OLD.store_id));
        END;
        """,
    ),
    (
        "tokens",
        """
        -- API tokens: only the SHA-256 of a token is stored. A revoked token keeps its row
        -- (revoked_at set) so that "no token was ever made" stays answerable.
        CREATE TABLE tokens (
            id TEXT PRIMARY KEY,
            hash TEXT NOT NULL UNIQUE,
            role TEXT NOT NULL,
            stores TEXT,
            workspace_id INTEGER NOT NULL,
            created_at INTEGER NOT NULL,
            revoked_at INTEGER
        );
        -- Bumped by every token change, so servers (other processes too) refresh their token
        -- caches by reading one row.
        CREATE TABLE token_changes (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            counter INTEGER NOT NULL
        );
        INSERT INTO token_changes VALUES (1, 0);
        """,
    ),
    (
        "store_names",
        """
        -- Events name their store by id, and a deleted store's id may be reused. Every name an
        -- id held, with the span of the feed it held it for (since < seq <= until; until NULL
        -- while the store exists), so a watch follows a workspace's store by name, across a
        -- delete and re-create, and never sees another store's events.
        CREATE TABLE store_names (
            workspace_id INTEGER NOT NULL,
            name TEXT NOT NULL,
            since INTEGER NOT NULL,
            store_id INTEGER NOT NULL,
            until INTEGER,
            PRIMARY KEY (workspace_id, name, since)
        ) WITHOUT ROWID;
        CREATE INDEX store_names_until ON store_names (until) WHERE until IS NOT NULL;
        INSERT INTO store_names SELECT workspace_id, name, 0, id, NULL FROM stores;
        CREATE TRIGGER stores_named AFTER INSERT ON stores BEGIN
            INSERT OR IGNORE INTO store_names VALUES
                (NEW.workspace_id, NEW.name, (SELECT max(seq) FROM events), NEW.id, NULL);
        END;
        CREATE TRIGGER stores_unnamed AFTER DELETE ON stores BEGIN
            UPDATE store_names SET until = (SELECT max(seq) FROM events)
                WHERE workspace_id = OLD.workspace_id AND name = OLD.name AND until IS NULL;
        END;
        """,
    ),
]

# A set replaces value, version and expiry; created_at is kept unless the old row had expired.
_SET_CONFLICT = """
ON CONFLICT (store_id, key) DO UPDATE SET
    value = excluded.value,
    version = excluded.version,
    updated_at = excluded.updated_at,
    expires_at = excluded.expires_at,
    created_at = CASE WHEN records.expires_at <= excluded.updated_at
                      THEN excluded.created_at ELSE records.created_at END
"""
_PUT = f"""
INSERT INTO records (store_id, key, value, version, created_at, updated_at, expires_at)
VALUES (?1, ?2, ?3, (SELECT max(seq) + 1 FROM events), ?4, ?4, ?5)
{_SET_CONFLICT}RETURNING version, created_at
"""
# Fast paths: one statement each, run in autocommit (its own transaction). Each returns no row
# where it cannot decide on its own (store missing, not an integer, overflow), and the caller
# then runs the operation's one definition in `runstate.ops` in a full transaction.
_DEFAULT_EXPIRY = (
    "CASE WHEN default_ttl IS NULL THEN NULL "
    "ELSE ?4 + CAST(round(default_ttl * 1e6) AS INTEGER) END"
)
_FAST_SET = f"""
INSERT INTO records (store_id, key, value, version, created_at, updated_at, expires_at)
SELECT id, ?2, ?3, (SELECT max(seq) + 1 FROM events), ?4, ?4,
       CASE WHEN ?5 IS NOT NULL THEN ?5 ELSE {_DEFAULT_EXPIRY} END
FROM stores WHERE workspace_id = ?1 AND name = ?6
{_SET_CONFLICT}RETURNING version, created_at, expires_at
"""
# A stored JSON text made only of digits and '-' is an integer; SQLite turns an integer sum that
# overflows 64 bits into a REAL, which the typeof() test refuses.
_INCREMENT_CONFLICT = """
ON CONFLICT (store_id, key) DO UPDATE SET
    value = CASE WHEN records.expires_at <= ?4 THEN excluded.value
                 ELSE CAST(CAST(CAST(records.value AS INTEGER) + ?3 AS TEXT) AS BLOB) END,
    version = excluded.version,
    updated_at = excluded.updated_at,
    expires_at = CASE WHEN records.expires_at <= ?4 THEN excluded.expires_at
                      ELSE records.expires_at END,
    created_at = CASE WHEN records.expires_at <= ?4 THEN excluded.created_at
                      ELSE records.created_at END
WHERE records.expires_at <= ?4
   OR (CAST(records.value AS TEXT) NOT GLOB '*[^0-9-]*'
       AND typeof(CAST(records.value AS INTEGER) + ?3) = 'integer')
RETURNING value
"""
_FAST_INCREMENT = f"""
INSERT INTO records (store_id, key, value, version, created_at, updated_at, expires_at)
SELECT id, ?2, CAST(CAST(?3 AS TEXT) AS BLOB), (SELECT max(seq) + 1 FROM events), ?4, ?4,
       {_DEFAULT_EXPIRY}
FROM stores WHERE workspace_id = ?1 AND name = ?5
{_INCREMENT_CONFLICT}"""
_DELETE_IN_STORE = "DELETE FROM records WHERE store_id = ? AND key = ? RETURNING expires_at"
# `_FAST_INCREMENT` in a store whose id (?1) the caller knows; ?5: a new record's expiry.
_INCREMENT_IN_STORE = f"""
INSERT INTO records (store_id, key, value, version, created_at, updated_at, expires_at)
VALUES (?1, ?2, CAST(CAST(?3 AS TEXT) AS BLOB), (SELECT max(seq) + 1 FROM events), ?4, ?4, ?5)
{_INCREMENT_CONFLICT}"""
_ROW = "SELECT value, version, created_at, updated_at, expires_at FROM records "
_GET = _ROW + "WHERE store_id = ? AND key = ? AND (expires_at IS NULL OR expires_at > ?)"
_GET_BY_NAME = (
    _ROW + "WHERE store_id = (SELECT id FROM stores WHERE workspace_id = ? AND name = ?) "
    "AND key = ? AND (expires_at IS NULL OR expires_at > ?)"
)
_STORE = "SELECT id, default_ttl FROM stores WHERE workspace_id = ? AND name = ?"
_INFO = (
    "SELECT s.id, s.name, u.records, u.bytes, s.created_at, s.default_ttl "
    "FROM stores s JOIN usage u ON u.id = s.id "
)
_EVENT = "INSERT INTO events (store_id, type, key, value, at) VALUES (?, ?, ?, NULL, ?)"

_QUOTA_MARK = "runstate:quota_exceeded"
_PURGE_BATCH = 1000


def sqlite_path(url: str | os.PathLike[str]) -> str:
    """``sqlite:///rel.db`` (relative), ``sqlite:////abs.db`` (absolute), or a plain path."""
    text = os.fspath(url)
    if text.startswith("sqlite://"):
        rest = text[len("sqlite://") :]
        if not rest.startswith("/"):
            raise InvalidRequest("a SQLite URL is sqlite:///relative.db or sqlite:////abs/path.db")
        text = rest[1:]
        if not text:
            raise InvalidRequest("the SQLite URL names no file")
    if text == ":memory:":
        raise InvalidRequest("runstate needs a file (several connections share it), not :memory:")
    return text


def _successor(prefix: bytes) -> bytes | None:
    """The smallest byte string greater than every string starting with `prefix`."""
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        return None
    return stripped[:-1] + bytes([stripped[-1] + 1])


def _scan_sql(
    prefix: str | None, start: str | None, after: str | None, reverse: bool, limit: int
) -> tuple[str, list[Any]]:
    where = ["store_id = ?", "(expires_at IS NULL OR expires_at > ?)"]
    params: list[Any] = []
    if prefix:
        low = prefix.encode()
        where.append("key >= ?")
        params.append(low)
        high = _successor(low)
        if high is not None:
            where.append("key < ?")
            params.append(high)
    if start is not None:
        where.append("key <= ?" if reverse else "key >= ?")
        params.append(start.encode())
    if after is not None:
        where.append("key < ?" if reverse else "key > ?")
        params.append(after.encode())
    order = "DESC" if reverse else "ASC"
    sql = f"SELECT key, {_ROW[7:]} WHERE {' AND '.join(where)} ORDER BY key {order} LIMIT ?"
    params.append(limit)
    return sql, params


def _row(key: str, found: tuple[Any, ...]) -> Row:
    return Row(key, found[0], found[1], found[2], found[3], found[4])


# The WAL index (the ``-shm`` file) starts with two copies of its 48-byte header, which every
# commit of every connection, in any process, rewrites (its change counter, frame count and
# checksums) before the commit returns.
_WAL_HEADER = 48
_CACHE_MAX_BYTES = 32 * 1024 * 1024
_CACHE_MAX_VALUE = 16 * 1024
_MISS = Row("", b"", 0, 0, 0, None)  # not in the cache (None is a cached miss)


class _ReadCache:
    """Point reads of this process, served only while the database is unchanged since they
    were read: never stale, across threads and processes.

    Every read first compares the WAL-index header (mapped read-only from the ``-shm`` file)
    with the one the cached rows were read under; any commit since, by this process or any
    other sharing the file, changed it, and the cache starts empty again. A header being
    rewritten (its two copies differ) bypasses the cache. A row read from SQLite after the
    header was taken is at least as new as that header, and is cached only if the generation
    it was read in is still current (a thread that read before another thread's invalidation
    adds to a dropped generation). Expiry is checked on every hit. Misses are cached too.
    Bounded by value size and total bytes: once full, nothing more is added until the next
    commit starts a new generation (no eviction: a working set larger than the cache still
    hits in proportion, where evicting the oldest would miss on every pass)."""

    __slots__ = ("_bytes", "_gen", "_map", "_path")

    def __init__(self, path: str) -> None:
        self._path = path + "-shm"
        self._map: Any = None
        self._gen: tuple[bytes, dict[tuple[str, str, str], Row | None]] = (b"", {})
        self._bytes = 0

    def _open(self) -> Any:
        import mmap

        try:
            fd = os.open(self._path, os.O_RDONLY)
        except OSError:
            return None
        try:
            if os.fstat(fd).st_size < 2 * _WAL_HEADER:
                return None
            self._map = mmap.mmap(fd, 2 * _WAL_HEADER, access=mmap.ACCESS_READ)
        except (OSError, ValueError):
            return None
        finally:
            os.close(fd)
        return self._map

    def generation(self) -> tuple[bytes, dict[tuple[str, str, str], Row | None]] | None:
        """The current generation (header, rows), or None when the cache cannot be trusted
        right now."""
        shm = self._map or self._open()
        if shm is None:
            return None
        head = shm[:_WAL_HEADER]
        if head != shm[_WAL_HEADER : 2 * _WAL_HEADER]:
            return None
        gen = self._gen
        if head != gen[0]:
            gen = self._gen = (head, {})
            self._bytes = 0
        return gen

    def add(
        self,
        gen: tuple[bytes, dict[tuple[str, str, str], Row | None]],
        key: tuple[str, str, str],
        row: Row | None,
    ) -> None:
        size = 64 if row is None else len(row.value) + 64
        if size > _CACHE_MAX_VALUE or self._gen is not gen or self._bytes + size > _CACHE_MAX_BYTES:
            return
        self._bytes += size
        gen[1][key] = row

    def close(self) -> None:
        self._path = ""  # no mapping again
        shm, self._map = self._map, None
        if shm is not None:
            shm.close()


class _SqliteReader:
    """Reads of one store on one connection, at one clock reading."""

    __slots__ = ("_conn", "_now", "_store_id")

    def __init__(self, conn: sqlite3.Connection, store_id: int | None, now: int) -> None:
        self._conn = conn
        self._store_id = store_id
        self._now = now

    @property
    def now(self) -> int:
        return self._now

    def get(self, key: str) -> Row | None:
        if self._store_id is None:
            return None
        found = self._conn.execute(_GET, (self._store_id, key.encode(), self._now)).fetchone()
        return None if found is None else _row(key, found)

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
        sql, params = _scan_sql(prefix, start, after, reverse, limit)
        cursor = self._conn.execute(sql, [self._store_id, self._now, *params])
        return [Row(k.decode(), *rest) for k, *rest in cursor]


class _PointReader:
    """The `Reader` of an op that reads one key, outside any transaction: `get` is
    `SqliteEngine.get_row`. `now` is read first, so a ttl computed from it is never below
    the one `get_row` judged the row live by."""

    __slots__ = ("_engine", "_store", "_workspace", "now")

    def __init__(self, engine: SqliteEngine, workspace: str, store: str) -> None:
        self.now = engine._now()
        self._engine = engine
        self._workspace = workspace
        self._store = store

    def get(self, key: str) -> Row | None:
        return self._engine.get_row(self._workspace, self._store, key)

    def scan(
        self,
        *,
        prefix: str | None,
        start: str | None,
        after: str | None,
        reverse: bool,
        limit: int,
    ) -> list[Row]:
        raise NotImplementedError("a point reader reads one key")


class _SqliteTxn(_SqliteReader):
    """A write transaction on one store (the caller holds ``BEGIN IMMEDIATE``)."""

    __slots__ = ("_default_ttl", "_engine", "_name", "_workspace_id")

    def __init__(
        self,
        engine: SqliteEngine,
        conn: sqlite3.Connection,
        workspace_id: int,
        name: str,
        now: int,
        found: tuple[Any, ...] | None = None,
    ) -> None:
        """`found`: the store's (id, default_ttl) when the caller looked it up already."""
        if found is None:
            found = conn.execute(_STORE, (workspace_id, name)).fetchone()
        super().__init__(conn, found[0] if found else None, now)
        # a store its first write creates gets its initial default (24 h for an execution)
        self._default_ttl = found[1] if found else initial_default_ttl(name, None)
        self._engine = engine
        self._workspace_id = workspace_id
        self._name = name

    @property
    def default_ttl(self) -> float | None:
        return self._default_ttl

    def _event(self, kind: str, key: bytes | None) -> None:
        self._conn.execute(_EVENT, (self._store_id, kind, key, self._now))

    def put(self, key: str, value: bytes, expires_at: int | None) -> Row:
        limit = self._engine.max_value_bytes
        if len(value) > limit:
            raise ValueTooLarge(
                f"the value is {len(value)} bytes encoded; the limit is {limit}",
                {"key": key, "bytes": len(value), "limit": limit},
            )
        if self._store_id is None:
            self._store_id = _create_store(
                self._conn, self._workspace_id, self._name, None, self._now
            )
        params = (self._store_id, key.encode(), value, self._now, expires_at)
        try:
            version, created = self._conn.execute(_PUT, params).fetchone()
        except sqlite3.IntegrityError as exc:
            if _QUOTA_MARK not in str(exc):
                raise
            # Expired rows still count until purged: purge this workspace's, then try once more.
            if not _purge(self._conn, self._now, self._workspace_id):
                raise self._engine.quota_error(self._conn, self._workspace_id, key, value) from None
            try:
                version, created = self._conn.execute(_PUT, params).fetchone()
            except sqlite3.IntegrityError as again:
                if _QUOTA_MARK not in str(again):
                    raise
                raise self._engine.quota_error(self._conn, self._workspace_id, key, value) from None
        return Row(key, value, version, created, self._now, expires_at)

    def delete(self, key: str) -> bool:
        if self._store_id is None:
            return False
        raw = key.encode()
        found = self._conn.execute(
            "DELETE FROM records WHERE store_id = ? AND key = ? RETURNING expires_at",
            (self._store_id, raw),
        ).fetchone()
        if found is None:
            return False
        live = found[0] is None or found[0] > self._now
        self._event("delete" if live else "expire", raw)
        return live

    def clear(self) -> int:
        if self._store_id is None:
            return 0
        (live,) = self._conn.execute(
            "SELECT count(*) FROM records WHERE store_id = ? "
            "AND (expires_at IS NULL OR expires_at > ?)",
            (self._store_id, self._now),
        ).fetchone()
        self._conn.execute("DELETE FROM records WHERE store_id = ?", (self._store_id,))
        self._event("clear", None)
        return int(live)


def _create_store(
    conn: sqlite3.Connection, workspace_id: int, name: str, default_ttl: float | None, now: int
) -> int:
    check_store_name(name)
    (store_id,) = conn.execute(
        "INSERT INTO stores (workspace_id, name, default_ttl, created_at) VALUES (?, ?, ?, ?) "
        "RETURNING id",
        (workspace_id, name, initial_default_ttl(name, default_ttl), now),
    ).fetchone()
    conn.execute("INSERT INTO usage (id) VALUES (?)", (store_id,))
    return int(store_id)


def _create_workspace(conn: sqlite3.Connection, name: str, quota: int, now: int) -> int:
    (workspace_id,) = conn.execute(
        "INSERT INTO workspaces (name, created_at) VALUES (?, ?) RETURNING id", (name, now)
    ).fetchone()
    conn.execute("INSERT INTO usage (id, quota) VALUES (?, ?)", (-workspace_id, quota))
    return int(workspace_id)


def _purge(
    conn: sqlite3.Connection, now: int, workspace_id: int | None = None, limit: int | None = None
) -> int:
    """Delete expired rows (of one workspace, or all; at most `limit`), each with an
    ``expire`` event."""
    scope = (
        ""
        if workspace_id is None
        else (f" AND store_id IN (SELECT id FROM stores WHERE workspace_id = {int(workspace_id)})")
    )
    total = 0
    while True:
        batch = _PURGE_BATCH if limit is None else min(_PURGE_BATCH, limit - total)
        expired = conn.execute(
            "SELECT store_id, key FROM records WHERE expires_at <= ?" + scope + " LIMIT ?",
            (now, batch),
        ).fetchall()
        for store_id, key in expired:
            conn.execute("DELETE FROM records WHERE store_id = ? AND key = ?", (store_id, key))
            conn.execute(_EVENT, (store_id, "expire", key, now))
        total += len(expired)
        if len(expired) < batch or (limit is not None and total >= limit):
            return total


class SqliteEngine(EngineBase):
    """The embedded SQLite backend (see the module docstring for its guarantees)."""

    # Reads are local and fast: the server runs them on its event loop (no thread hop).
    blocking = False

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        durability: str = "fast",
        quota_bytes: int | None = None,
        max_value_bytes: int | None = None,
        clock: Callable[[], float] | None = None,
        event_retention: float = 3600.0,
        busy_timeout: float = 30.0,
    ) -> None:
        check_durability(durability)
        self.path = sqlite_path(path)
        self.durability = durability
        self.max_value_bytes = max_value_bytes if max_value_bytes is not None else MAX_VALUE_BYTES
        self.event_retention = event_retention
        self._busy_timeout = busy_timeout
        self._clock = clock or time.time
        self._lock = threading.RLock()
        self._local = threading.local()
        self._pid = os.getpid()
        self._writer: sqlite3.Connection | None = None
        self._readers: list[sqlite3.Connection] = []
        self._workspaces: dict[str, int] = {}
        self._fresh: set[str] = set()  # workspaces created by the open write transaction
        self._closed = False
        self._cache = _ReadCache(self.path)
        directory = Path(self.path).parent
        if not directory.is_dir():
            raise InvalidRequest(f"the directory {str(directory)!r} does not exist")
        self._migrate(quota_bytes)

    # --- connections -----------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        """A connection with this engine's pragmas. Switching a new file to WAL can fail with
        "database is locked" at once (SQLite does not wait where waiting could deadlock) while
        another process does the same: retried with backoff up to the busy timeout."""
        deadline = time.monotonic() + self._busy_timeout
        delay = 0.001
        while True:
            try:
                return self._configure(
                    sqlite3.connect(
                        self.path,
                        timeout=self._busy_timeout,
                        isolation_level=None,
                        check_same_thread=False,
                        cached_statements=256,
                    )
                )
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise Unavailable(
                        f"cannot open the database: {exc}", {"path": self.path}
                    ) from None
                time.sleep(delay)
                delay = min(delay * 2, 0.05)
            except sqlite3.Error as exc:
                raise Unavailable(f"cannot open the database: {exc}", {"path": self.path}) from None

    def _configure(self, conn: sqlite3.Connection) -> sqlite3.Connection:
        try:
            sync = "NORMAL" if self.durability == "fast" else "FULL"
            # Small pages: a write's WAL frames are most of its cost (measured: 2 KiB pages
            # commit ~1.4x faster than 4 KiB here). Only takes effect on a new file.
            conn.execute("PRAGMA page_size = 2048")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute(f"PRAGMA synchronous = {sync}")
            conn.execute("PRAGMA cache_size = -32000")
            # Reads of multi-page values through mmap avoid a copy per page (measured 2x for
            # 4 KiB values); writes still go through the WAL.
            conn.execute("PRAGMA mmap_size = 268435456")
            conn.execute("PRAGMA temp_store = MEMORY")
            conn.execute("PRAGMA foreign_keys = OFF")
        except BaseException:
            conn.close()
            raise
        return conn

    def _check_process(self) -> None:
        """After a fork, the parent's connections must not be used: open new ones."""
        if self._closed:
            raise InvalidRequest("the database is closed")
        if os.getpid() != self._pid:
            self._pid = os.getpid()
            self._cache = _ReadCache(self.path)  # the parent's mapping may outlive its file
            self._writer = None
            self._readers = []
            self._local = threading.local()
            self._lock = threading.RLock()

    def _reader(self) -> sqlite3.Connection:
        self._check_process()
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
            with self._lock:
                self._readers.append(conn)
        return conn

    def _now(self) -> int:
        if self._clock is time.time:
            return time.time_ns() // 1000
        return round(self._clock() * 1_000_000)

    # --- transactions ----------------------------------------------------------------------

    def _transact(self, fn: Callable[[sqlite3.Connection, int], T]) -> T:
        """Run `fn(conn, now)` inside BEGIN IMMEDIATE ... COMMIT on the writer connection."""
        self._check_process()
        with self._lock:
            if self._writer is None:
                self._writer = self._connect()
            conn = self._writer
            self._fresh.clear()
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise _unavailable(exc) from None
            try:
                result = fn(conn, self._now())
                conn.execute("COMMIT")
                return result
            except BaseException as exc:
                _rollback(conn)
                if isinstance(exc, sqlite3.Error):
                    raise _unavailable(exc) from None
                raise

    def _workspace_id(self, conn: sqlite3.Connection, name: str, create: bool) -> int | None:
        cached = self._workspaces.get(name)
        if cached is not None:
            return cached
        found = conn.execute("SELECT id FROM workspaces WHERE name = ?", (name,)).fetchone()
        if found is not None:
            # Cache only what is committed (workspaces are never deleted): not one this
            # transaction created, which may still roll back.
            if name not in self._fresh:
                self._workspaces[name] = int(found[0])
            return int(found[0])
        if not create:
            return None
        (quota,) = conn.execute(
            "SELECT quota FROM usage WHERE id = -(SELECT id FROM workspaces WHERE name = 'default')"
        ).fetchone()
        self._fresh.add(name)
        return _create_workspace(conn, name, quota, self._now())

    def read(self, workspace: str, store: str, fn: Callable[[Reader], T]) -> T:
        conn = self._reader()
        try:
            ws = self._workspace_id(conn, workspace, create=False)
            if ws is None:
                return fn(_SqliteReader(conn, None, self._now()))
            conn.execute("BEGIN")
            try:
                found = conn.execute(_STORE, (ws, store)).fetchone()
                return fn(_SqliteReader(conn, found[0] if found else None, self._now()))
            finally:
                conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise _unavailable(exc) from None

    def get_row(self, workspace: str, store: str, key: str) -> Row | None:
        """The hot read path: from the read cache (`_ReadCache`: never stale), else one
        statement, no transaction. (The connection comes first: while it is open this
        process holds the WAL index, which therefore stays the one the cache watches.)"""
        conn = self._reader()
        gen = self._cache.generation()
        if gen is not None:
            row = gen[1].get((workspace, store, key), _MISS)
            if row is not _MISS and (
                row is None or row.expires_at is None or row.expires_at > self._now()
            ):
                return row
        try:
            ws = self._workspace_id(conn, workspace, create=False)
            params = (ws, store, key.encode(), self._now())
            found = self._point_read(conn, _GET_BY_NAME, params)
        except sqlite3.Error as exc:
            raise _unavailable(exc) from None
        row = None if found is None else _row(key, found)
        if gen is not None:
            self._cache.add(gen, (workspace, store, key), row)
        return row

    def _point_read(self, reader: sqlite3.Connection, sql: str, params: tuple[Any, ...]) -> Any:
        """One statement's first row, on the writer's connection when it is free at once (no
        transaction open, the lock not held by another thread), else on `reader`. The writer's
        page cache stays valid across this process's own writes, where a reader's is dropped
        whenever the database changed since its last read: a 90/10 read/write mix ran 1.7x
        faster with 100 B values, 2.8x with 4 KiB ones (raw SQLite, same file). Autocommit
        either way: each read is its own snapshot of committed data."""
        writer = self._writer
        if writer is not None and self._lock.acquire(blocking=False):
            try:
                if not writer.in_transaction:
                    return writer.execute(sql, params).fetchone()
            finally:
                self._lock.release()
        return reader.execute(sql, params).fetchone()

    def write(self, workspace: str, store: str, fn: Callable[[Txn], T]) -> T:
        def run(conn: sqlite3.Connection, now: int) -> T:
            ws = self._workspace_id(conn, workspace, create=True)
            assert ws is not None
            return fn(_SqliteTxn(self, conn, ws, store, now))

        return self._transact(run)

    def write_many(self, units: Sequence[tuple[str, str, Work]]) -> list[Any]:
        """Group commit: each unit atomic on its own, all in one commit. A unit's `Error` is
        returned in its place and undoes only that unit.

        A unit is a function of a `Txn`, an op or an `ops.BatchWork`. A set or an increment
        (or a batch of just one of them) and a delete without `if_version` on an existing store
        first run as one statement (atomic on its own: no savepoint) that does what the op's
        definition would. Where that statement cannot decide alone (a value that is not an
        integer, an overflow, the quota, ...) it wrote nothing, and the unit runs its one
        definition in `runstate.ops` in a savepoint, which raises the exact error. The group's
        units share their store lookups (no unit deletes a store)."""

        def run(conn: sqlite3.Connection, now: int) -> list[Any]:
            results: list[Any] = []
            stores: dict[tuple[int, str], tuple[Any, ...]] = {}
            workspaces = self._workspaces
            for workspace, store, work in units:
                fast = _fast_unit(type(work))
                if fast is not None:
                    ws = workspaces.get(workspace)  # committed workspaces only
                    if ws is not None:
                        found = stores.get((ws, store))
                        if found is None:
                            found = conn.execute(_STORE, (ws, store)).fetchone()
                            if found is not None:
                                stores[ws, store] = found
                        if found is not None:
                            result = fast(self, conn, found, work, now)
                            if result is not _UNDECIDED:
                                results.append(result)
                                continue
                conn.execute("SAVEPOINT unit")
                try:
                    ws = self._workspace_id(conn, workspace, create=True)
                    assert ws is not None
                    found = stores.get((ws, store))
                    if found is None:
                        found = conn.execute(_STORE, (ws, store)).fetchone()
                        if found is not None:
                            stores[ws, store] = found
                    txn = _SqliteTxn(self, conn, ws, store, now, found)
                    results.append(work(txn) if callable(work) else work.run(txn))
                except Error as exc:
                    conn.execute("ROLLBACK TO unit")
                    results.append(exc)
                conn.execute("RELEASE unit")
            return results

        return self._transact(run)

    # The fast paths of write_many's units, on a store that exists (`store`: its id and
    # default_ttl): one statement each, doing exactly what the op's definition does (expiries
    # computed as in `runstate.ops`), or `_UNDECIDED` having written nothing.

    def _unit_set(self, conn: sqlite3.Connection, store: Any, op: Any, now: int) -> Any:
        if op.if_version is not None or len(op.data) > self.max_value_bytes:
            return _UNDECIDED
        ttl = op.ttl if op.ttl is not None else store[1]
        expires = None if ttl is None else now + round(ttl * 1_000_000)
        try:
            rows = conn.execute(_PUT, (store[0], op.key.encode(), op.data, now, expires)).fetchall()
        except sqlite3.IntegrityError:  # the quota: the definition purges and reports it
            return _UNDECIDED
        version, created = rows[0]
        return op.answer_row(Row(op.key, op.data, version, created, now, expires))

    def _unit_increment(self, conn: sqlite3.Connection, store: Any, op: Any, now: int) -> Any:
        amount = op.amount * op._sign
        if not INT64_MIN <= amount <= INT64_MAX:
            return _UNDECIDED
        ttl = store[1]  # a new (or expired) record's expiry: the store's default
        expires = None if ttl is None else now + round(ttl * 1_000_000)
        params = (store[0], op.key.encode(), amount, now, expires)
        try:
            rows = conn.execute(_INCREMENT_IN_STORE, params).fetchall()
        except sqlite3.IntegrityError:
            return _UNDECIDED
        return int(rows[0][0]) if rows else _UNDECIDED

    def _unit_delete(self, conn: sqlite3.Connection, store: Any, op: Any, now: int) -> Any:
        if op.if_version is not None:
            return _UNDECIDED
        raw = op.key.encode()
        rows = conn.execute(_DELETE_IN_STORE, (store[0], raw)).fetchall()
        if not rows:
            return False
        live = rows[0][0] is None or rows[0][0] > now
        conn.execute(_EVENT, (store[0], "delete" if live else "expire", raw, now))
        return live

    def _unit_batch(self, conn: sqlite3.Connection, store: Any, work: Any, now: int) -> Any:
        if work.checks or len(work.ops) != 1:
            return _UNDECIDED
        op = work.ops[0]
        fast = _fast_unit(type(op))
        if fast is None or fast is SqliteEngine._unit_batch:
            return _UNDECIDED
        result = fast(self, conn, store, op, now)
        return _UNDECIDED if result is _UNDECIDED else [result]

    def execute(self, workspace: str, store: str, op: Any) -> Any:
        fast = _FAST.get(type(op))
        if fast is not None:
            result = fast(self, workspace, store, op)
            if result is not _UNDECIDED:
                return result
        return super().execute(workspace, store, op)

    def _point_op(self, workspace: str, store: str, op: Any) -> Any:
        """An op that reads one key (get, get_record, has, ttl): its own definition, on a
        reader whose `get` is `get_row` (the read cache; the writer's connection when free)."""
        return op.run(_PointReader(self, workspace, store))

    def _autocommit(self, workspace: str, sql: str, params: tuple[Any, ...]) -> Any:
        """One statement as its own transaction on the writer; None where it wrote nothing
        (or hit the quota, which the full path reports exactly)."""
        self._check_process()
        with self._lock:
            conn = self._writer
            if conn is None:
                conn = self._writer = self._connect()
            ws = self._workspaces.get(workspace) or self._workspace_id(conn, workspace, True)
            try:
                rows = conn.execute(sql, (ws, *params)).fetchall()
            except sqlite3.IntegrityError:
                return None
            except sqlite3.Error as exc:
                raise _unavailable(exc) from None
        return rows[0] if rows else None

    def _fast_set(self, workspace: str, store: str, op: Any) -> Any:
        if op.if_version is not None or len(op.data) > self.max_value_bytes:
            return _UNDECIDED
        now = self._now()
        expires = None if op.ttl is None else now + round(op.ttl * 1_000_000)
        found = self._autocommit(
            workspace, _FAST_SET, (op.key.encode(), op.data, now, expires, store)
        )
        if found is None:
            return _UNDECIDED
        return op.answer_row(Row(op.key, op.data, found[0], found[1], now, found[2]))

    def _fast_increment(self, workspace: str, store: str, op: Any) -> Any:
        amount = op.amount * op._sign
        if not INT64_MIN <= amount <= INT64_MAX:
            return _UNDECIDED
        found = self._autocommit(
            workspace, _FAST_INCREMENT, (op.key.encode(), amount, self._now(), store)
        )
        return _UNDECIDED if found is None else int(found[0])

    def quota_error(
        self, conn: sqlite3.Connection, workspace_id: int, key: str, value: bytes
    ) -> QuotaExceeded:
        used, quota = conn.execute(
            "SELECT bytes, quota FROM usage WHERE id = ?", (-workspace_id,)
        ).fetchone()
        return QuotaExceeded(
            f"writing {key!r} would pass the workspace quota of {quota} bytes ({used} used)",
            {"key": key, "used_bytes": used, "quota_bytes": quota},
        )

    # --- migrations ------------------------------------------------------------------------

    def _migrate(self, quota_bytes: int | None) -> None:
        def run(conn: sqlite3.Connection, now: int) -> None:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations "
                "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)"
            )
            done = {v for (v,) in conn.execute("SELECT version FROM schema_migrations")}
            for version, (name, sql) in enumerate(MIGRATIONS, start=1):
                if version in done:
                    continue
                for statement in _split_sql(sql):
                    conn.execute(statement)
                conn.execute("INSERT INTO schema_migrations VALUES (?, ?, ?)", (version, name, now))
            if conn.execute("SELECT 1 FROM workspaces WHERE name = 'default'").fetchone() is None:
                _create_workspace(conn, "default", DEFAULT_QUOTA_BYTES, now)
            if quota_bytes is not None:
                conn.execute("UPDATE usage SET quota = ? WHERE id < 0", (quota_bytes,))

        if quota_bytes is not None and (type(quota_bytes) is not int or quota_bytes < 0):
            raise InvalidRequest("quota_bytes must be an integer >= 0")
        self._transact(run)

    # --- stores ------------------------------------------------------------------------------

    def _store_row(
        self, conn: sqlite3.Connection, workspace: str, name: str
    ) -> tuple[int, int, tuple[Any, ...]]:
        check_store_name(name)
        ws = self._workspace_id(conn, workspace, create=True)
        assert ws is not None
        found = conn.execute(
            _INFO + "WHERE s.workspace_id = ? AND s.name = ?",
            (ws, name),
        ).fetchone()
        if found is None:
            raise NotFound(f"no store named {name!r}", {"store": name})
        return ws, int(found[0]), found

    def _info(self, conn: sqlite3.Connection, found: tuple[Any, ...]) -> StoreInfo:
        store_id, name, records, size, created, default_ttl = found
        dependents = [
            w
            for (w,) in conn.execute(
                "SELECT workflow FROM dependents WHERE store_id = ? ORDER BY workflow", (store_id,)
            )
        ]
        created_at = to_datetime(created)
        assert created_at is not None
        return StoreInfo(name, records, size, dependents, created_at, default_ttl)

    def _admin(self, fn: Callable[[sqlite3.Connection, int], T]) -> T:
        """A store-level change: expired rows are purged first so counts are exact."""

        def run(conn: sqlite3.Connection, now: int) -> T:
            _purge(conn, now)
            return fn(conn, now)

        return self._transact(run)

    def list_stores(self, workspace: str) -> list[StoreInfo]:
        def run(conn: sqlite3.Connection, now: int) -> list[StoreInfo]:
            ws = self._workspace_id(conn, workspace, create=True)
            rows = conn.execute(
                _INFO + "WHERE s.workspace_id = ? ORDER BY s.name",
                (ws,),
            ).fetchall()
            return [self._info(conn, row) for row in rows]

        return self._admin(run)

    def store_info(self, workspace: str, name: str) -> StoreInfo:
        return self._admin(
            lambda conn, now: self._info(conn, self._store_row(conn, workspace, name)[2])
        )

    def create_store(
        self, workspace: str, name: str, default_ttl: float | None = None
    ) -> StoreInfo:
        check_store_name(name)
        ttl = check_ttl(default_ttl, "default_ttl") if default_ttl is not None else None

        def run(conn: sqlite3.Connection, now: int) -> StoreInfo:
            ws = self._workspace_id(conn, workspace, create=True)
            assert ws is not None
            if conn.execute(_STORE, (ws, name)).fetchone() is not None:
                raise Conflict(f"a store named {name!r} already exists", {"store": name})
            _create_store(conn, ws, name, ttl, now)
            return self._info(conn, self._store_row(conn, workspace, name)[2])

        return self._transact(run)

    def ensure_store(self, workspace: str, name: str, default_ttl: float | None = None) -> None:
        """Create the store if it does not exist (select or create)."""
        check_store_name(name)

        def run(conn: sqlite3.Connection, now: int) -> None:
            ws = self._workspace_id(conn, workspace, create=True)
            assert ws is not None
            if conn.execute(_STORE, (ws, name)).fetchone() is None:
                _create_store(conn, ws, name, default_ttl, now)

        self._transact(run)

    def update_store(self, workspace: str, name: str, default_ttl: float | None) -> StoreInfo:
        ttl = check_ttl(default_ttl, "default_ttl") if default_ttl is not None else None

        def run(conn: sqlite3.Connection, now: int) -> StoreInfo:
            _, store_id, _ = self._store_row(conn, workspace, name)
            conn.execute("UPDATE stores SET default_ttl = ? WHERE id = ?", (ttl, store_id))
            return self._info(conn, self._store_row(conn, workspace, name)[2])

        return self._admin(run)

    def delete_store(self, workspace: str, name: str) -> None:
        def run(conn: sqlite3.Connection, now: int) -> None:
            _, store_id, _ = self._store_row(conn, workspace, name)
            dependents = [
                w
                for (w,) in conn.execute(
                    "SELECT workflow FROM dependents WHERE store_id = ? ORDER BY workflow",
                    (store_id,),
                )
            ]
            if dependents:
                raise HasDependents(
                    f"store {name!r} is used by {', '.join(dependents)}; remove them first",
                    {"store": name, "dependents": dependents},
                )
            conn.execute("DELETE FROM records WHERE store_id = ?", (store_id,))
            conn.execute(_EVENT, (store_id, "clear", None, now))
            conn.execute("DELETE FROM stores WHERE id = ?", (store_id,))
            conn.execute("DELETE FROM usage WHERE id = ?", (store_id,))

        self._transact(run)

    def add_dependent(self, workspace: str, name: str, workflow: str) -> StoreInfo:
        workflow = check_workflow(workflow)

        def run(conn: sqlite3.Connection, now: int) -> StoreInfo:
            _, store_id, _ = self._store_row(conn, workspace, name)
            conn.execute("INSERT OR IGNORE INTO dependents VALUES (?, ?)", (store_id, workflow))
            return self._info(conn, self._store_row(conn, workspace, name)[2])

        return self._transact(run)

    def remove_dependent(self, workspace: str, name: str, workflow: str) -> StoreInfo:
        workflow = check_workflow(workflow)

        def run(conn: sqlite3.Connection, now: int) -> StoreInfo:
            _, store_id, _ = self._store_row(conn, workspace, name)
            conn.execute(
                "DELETE FROM dependents WHERE store_id = ? AND workflow = ?", (store_id, workflow)
            )
            return self._info(conn, self._store_row(conn, workspace, name)[2])

        return self._transact(run)

    def usage(self, workspace: str) -> Usage:
        def run(conn: sqlite3.Connection, now: int) -> Usage:
            ws = self._workspace_id(conn, workspace, create=True)
            assert ws is not None
            size, quota = conn.execute(
                "SELECT bytes, quota FROM usage WHERE id = ?", (-ws,)
            ).fetchone()
            stores = [
                self._info(conn, row)
                for row in conn.execute(
                    _INFO + "WHERE s.workspace_id = ? ORDER BY s.name",
                    (ws,),
                ).fetchall()
            ]
            return Usage(sum(s.records for s in stores), size, quota, stores)

        return self._admin(run)

    # --- maintenance ---------------------------------------------------------------------------

    def purge_expired(self) -> int:
        """Delete every expired record now (an ``expire`` event each) and change-feed events
        past their retention; in bounded transactions, so writers never wait long."""
        total = 0
        while True:
            purged = self._transact(lambda conn, now: _purge(conn, now, limit=_PURGE_BATCH))
            total += purged
            if purged < _PURGE_BATCH:
                break
        while self._transact(self._trim_events) == _PURGE_BATCH:
            pass
        if self._read_one(_FORGOTTEN) is not None:  # rare: no write lock taken until then
            self._transact(_forget_store_names)
        return total

    def _trim_events(self, conn: sqlite3.Connection, now: int) -> int:
        cutoff = now - round(self.event_retention * 1_000_000)
        # events are in seq order and (nearly) in time order: keep from the first recent one,
        # and always the newest (the next version is max(seq) + 1)
        first = conn.execute(
            "SELECT seq FROM events WHERE at >= ? ORDER BY seq LIMIT 1", (cutoff,)
        ).fetchone()
        (newest,) = conn.execute("SELECT max(seq) FROM events").fetchone()
        keep = newest if first is None else min(first[0], newest)
        return conn.execute(
            "DELETE FROM events WHERE seq IN "
            "(SELECT seq FROM events WHERE seq < ? ORDER BY seq LIMIT ?)",
            (keep, _PURGE_BATCH),
        ).rowcount

    def recount(self, workspace: str) -> tuple[int, int]:
        """Records and bytes of live and expired rows counted from scratch (for checks)."""
        conn = self._reader()
        ws = self._workspace_id(conn, workspace, create=False)
        found = conn.execute(
            "SELECT count(*), coalesce(sum(length(key) + length(value)), 0) FROM records "
            "WHERE store_id IN (SELECT id FROM stores WHERE workspace_id = ?)",
            (ws,),
        ).fetchone()
        return int(found[0]), int(found[1])

    def integrity_check(self) -> str:
        conn = self._reader()
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])

    def close(self) -> None:
        if self._closed:
            return
        with self._lock:
            self._closed = True
            self._cache.close()
            for conn in [self._writer, *self._readers]:
                if conn is not None:
                    with contextlib.suppress(sqlite3.Error):
                        conn.close()
            self._writer = None

    # --- tokens and workspaces ---
    # Only hashes are stored (`runstate.tokens` makes and checks tokens). Reads use the
    # calling thread's reader connection: the server looks tokens up on its event loop.

    def _read_one(self, sql: str, params: Sequence[Any] = ()) -> Any:
        conn = self._reader()
        try:
            return conn.execute(sql, params).fetchone()
        except sqlite3.Error as exc:
            raise _unavailable(exc) from None

    def create_workspace(self, name: str) -> None:
        """Create workspace `name` (with the default workspace's quota) unless it exists."""
        from ..tokens import check_workspace_name

        check_workspace_name(name)
        self._transact(lambda conn, now: self._workspace_id(conn, name, create=True))

    def create_token(
        self,
        workspace: str,
        role: str,
        stores: list[str] | None,
        token_id: str,
        token_hash: str,
    ) -> Any:
        """Store a token's hash (creating its workspace if new); returns its `TokenInfo`."""
        encoded = self._token_fields(workspace, role, stores)

        def run(conn: sqlite3.Connection, now: int) -> Any:
            ws = self._workspace_id(conn, workspace, create=True)
            conn.execute(
                "INSERT INTO tokens (id, hash, role, stores, workspace_id, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (token_id, token_hash, role, encoded, ws, now),
            )
            conn.execute("UPDATE token_changes SET counter = counter + 1")
            return self._token_info((token_id, role, encoded, workspace, now))

        return self._transact(run)

    def list_tokens(self, workspace: str | None = None) -> list[Any]:
        """Live (unrevoked) tokens of one workspace, or of all, oldest first."""
        conn = self._reader()
        where = "WHERE t.revoked_at IS NULL" + ("" if workspace is None else " AND w.name = ?")
        try:
            rows = conn.execute(
                self._GRANT_SQL + where + " ORDER BY t.created_at, t.id",
                () if workspace is None else (workspace,),
            ).fetchall()
        except sqlite3.Error as exc:
            raise _unavailable(exc) from None
        return [self._token_info(row) for row in rows]

    def revoke_token(self, token_id: str, workspace: str | None = None) -> bool:
        """Revoke a live token (only within `workspace`, if given); False if there is none."""

        def run(conn: sqlite3.Connection, now: int) -> bool:
            sql = "UPDATE tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL"
            params: list[Any] = [now, token_id]
            if workspace is not None:
                sql += " AND workspace_id = (SELECT id FROM workspaces WHERE name = ?)"
                params.append(workspace)
            if conn.execute(sql, params).rowcount == 0:
                return False
            conn.execute("UPDATE token_changes SET counter = counter + 1")
            return True

        return self._transact(run)

    def token_by_hash(self, token_hash: str) -> Any:
        """The `TokenInfo` of a live token with this hash, or None."""
        found = self._read_one(
            self._GRANT_SQL + "WHERE t.hash = ? AND t.revoked_at IS NULL", (token_hash,)
        )
        return None if found is None else self._token_info(found)

    def tokens_changed(self) -> int:
        """A marker that changes whenever a token is created or revoked, by any process."""
        return int(self._read_one("SELECT counter FROM token_changes")[0])

    def has_tokens(self) -> bool:
        """True once any token was ever created (revoked ones count)."""
        return bool(self._read_one("SELECT EXISTS (SELECT 1 FROM tokens)")[0])

    def workspace_totals(self) -> dict[str, tuple[int, int, int]]:
        """Per workspace: (records, bytes, quota_bytes) from the usage counters (expired rows
        not yet purged included): cheap, for metrics."""
        conn = self._reader()
        try:
            rows = conn.execute(
                "SELECT w.name, u.records, u.bytes, u.quota FROM workspaces w "
                "JOIN usage u ON u.id = -w.id ORDER BY w.name"
            ).fetchall()
        except sqlite3.Error as exc:
            raise _unavailable(exc) from None
        return {name: (int(r), int(b), int(q)) for name, r, b, q in rows}

    # --- change feed ---
    # Reads only, on the calling thread's reader connection: the server polls the feed on its
    # event loop. The `events` table is the buffer between writers and watchers: a watcher
    # reads at its own pace and a writer never waits for one.

    def latest_seq(self, workspace: str | None = None, store: str | None = None) -> int:
        """The feed's position now: a watch from here sees only later changes (one position
        for every store of the file; `workspace` and `store` are not needed here)."""
        return int(self._read_one("SELECT max(seq) FROM events")[0])

    def data_version(self) -> int:
        """A number that changes whenever another connection (thread or process) commits:
        an idle watcher polls this instead of the feed."""
        return int(self._read_one("PRAGMA data_version")[0])

    def events_after(
        self,
        workspace: str,
        store: str,
        after: int,
        prefix: str | None = None,
        limit: int = MAX_PAGE,
    ) -> Changes:
        """The events of `store` (by name in `workspace`: across deletes and re-creates) past
        position `after`, at most `limit`, in commit order; ``clear`` events match any
        `prefix`. One read snapshot."""
        conn = self._reader()
        try:
            conn.execute("BEGIN")
            try:
                return self._changes(conn, workspace, store, after, prefix, limit)
            finally:
                conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise _unavailable(exc) from None

    def _changes(
        self,
        conn: sqlite3.Connection,
        workspace: str,
        store: str,
        after: int,
        prefix: str | None,
        limit: int,
    ) -> Changes:
        latest = int(conn.execute("SELECT max(seq) FROM events").fetchone()[0])
        first = int(conn.execute("SELECT min(seq) FROM events").fetchone()[0])
        gap = None
        if after > latest:  # a position from another database, or one restored from backup
            gap = after = latest
        elif after + 1 < first:
            gap = after = first - 1
        ws = self._workspace_id(conn, workspace, create=False)
        spans = (
            []
            if ws is None
            else conn.execute(
                "SELECT store_id, since, until FROM store_names "
                "WHERE workspace_id = ? AND name = ? AND (until IS NULL OR until > ?)",
                (ws, store, after),
            ).fetchall()
        )
        if not spans or after == latest:
            return Changes([], latest, gap)
        where: list[str] = []
        params: list[Any] = [after, latest]
        for store_id, since, until in spans:
            where.append("(store_id = ? AND seq > ?" + (")" if until is None else " AND seq <= ?)"))
            params += [store_id, since] if until is None else [store_id, since, until]
        sql = (
            "SELECT seq, type, key, value FROM events WHERE seq > ? AND seq <= ? "
            f"AND ({' OR '.join(where)})"
        )
        if prefix:
            low = prefix.encode()
            high = _successor(low)
            upper = "" if high is None else " AND key < ?"
            sql += f" AND (key IS NULL OR (key >= ?{upper}))"
            params += [low] if high is None else [low, high]
        rows = conn.execute(sql + " ORDER BY seq LIMIT ?", [*params, limit]).fetchall()
        events = [
            EventRow(seq, kind, None if key is None else key.decode(), value)
            for seq, kind, key, value in rows
        ]
        position = events[-1].seq if len(events) == limit else latest
        return Changes(events, position, gap)

    def _changed_since(self, seen: int | None, poll: float) -> int | None:
        """Polling: one cheap ``PRAGMA data_version`` per `poll` while nothing changes."""
        version = self.data_version()
        if version == seen:
            time.sleep(poll)
            return None
        return version


_STALE_NAMES = "store_names WHERE until IS NOT NULL AND until < (SELECT min(seq) FROM events)"
_FORGOTTEN = f"SELECT 1 FROM {_STALE_NAMES} LIMIT 1"


def _forget_store_names(conn: sqlite3.Connection, now: int) -> None:
    """Drop the names of deleted stores whose events are all trimmed."""
    conn.execute(f"DELETE FROM {_STALE_NAMES}")


def _split_sql(script: str) -> list[str]:
    """Split a migration into statements (trigger bodies contain ';')."""
    statements: list[str] = []
    buffer = ""
    for line in script.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            statements.append(buffer.strip())
            buffer = ""
    if buffer.strip():
        statements.append(buffer.strip())
    return statements


def _rollback(conn: sqlite3.Connection) -> None:
    try:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
    except sqlite3.Error:
        pass


def _unavailable(exc: sqlite3.Error) -> Unavailable:
    """Translate a database failure (locked past the busy timeout, disk full, I/O error)."""
    text = str(exc)
    if "full" in text:
        return Unavailable(
            "the database is out of space; writes resume once space is freed",
            {"reason": "disk_full"},
        )
    if "locked" in text or "busy" in text:
        return Unavailable("the database is busy; try again", {"reason": "busy"})
    return Unavailable("the database is unavailable", {"reason": text[:200]})


_UNDECIDED: Any = object()
_FAST: dict[type[Any], Callable[[SqliteEngine, str, str, Any], Any]] = {
    ops.Get: SqliteEngine._point_op,
    ops.GetRecord: SqliteEngine._point_op,
    ops.Has: SqliteEngine._point_op,
    ops.Ttl: SqliteEngine._point_op,
    ops.Set: SqliteEngine._fast_set,
    ops.Increment: SqliteEngine._fast_increment,
    ops.Decrement: SqliteEngine._fast_increment,
}

_UnitPath = Callable[[SqliteEngine, sqlite3.Connection, Any, Any, int], Any]
_UNIT_BASES: tuple[tuple[type[Any], _UnitPath], ...] = (
    (ops.Set, SqliteEngine._unit_set),
    (ops.Increment, SqliteEngine._unit_increment),  # and Decrement
    (ops.Delete, SqliteEngine._unit_delete),
    (ops.BatchWork, SqliteEngine._unit_batch),
)
_UNIT_PATHS: dict[type[Any], _UnitPath | None] = {}


def _fast_unit(kind: type[Any]) -> _UnitPath | None:
    """The fast path of a unit's type in `write_many` (subclasses too), or None."""
    return path_for_type(kind, _UNIT_BASES, _UNIT_PATHS)
