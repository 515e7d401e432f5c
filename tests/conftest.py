"""Shared fixtures: ONE test suite that every backend and interface must pass.

Every test that takes `db`, `store` or `make_db` runs once per entry of `BACKENDS`: ``sqlite``
(the embedded library) and ``remote`` (the app served in-process, through `runstate.connect`).
A backend is a context manager `(directory, clock, **options)` yielding an open database in
`OPENERS`; adding one (PostgreSQL) is a new entry there and in `BACKENDS`, never a copied test.
Tests reach the database only through the public API (`runstate.*`, the `Database` and `Store`
objects), so they run unchanged against the remote client.

Time is a `FakeClock` handed to the database (the server, for ``remote``) as `clock=`: tests move
it with `clock.advance(s)` and the background purge is off, so expiry is deterministic.
"""

from __future__ import annotations

import itertools
import json
import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pytest

import runstate

# 2026-01-01T00:00:00Z: a whole second, so every fake time below is exact in microseconds.
EPOCH = 1_767_225_600.0


class FakeClock:
    """A clock the tests move by hand: `clock()` is float epoch seconds, `advance` moves it."""

    def __init__(self, start: float = EPOCH) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@contextmanager
def _open_sqlite(directory: Path, clock: FakeClock, **options: Any) -> Iterator[Any]:
    with runstate.open(
        directory / "state.db", purge_interval=None, clock=clock, **options
    ) as db:
        yield db


@contextmanager
def _open_remote(directory: Path, clock: FakeClock, **options: Any) -> Iterator[Any]:
    """The app served in-process (tests/http_server.py) on the test's clock, with the options
    as server settings, through the client of `runstate.connect` and an admin token of
    ``default``. No route purges on demand, so `db.purge_expired()` runs what the server's
    background purge runs, on its engine."""
    from http_server import serve_database
    from runstate.client import HttpCore

    with serve_database(directory, clock, durability="fast", **options) as served:
        core = HttpCore(served.url, served.admin_token, timeout=30)
        with runstate.Database(core, purge=served.engine.purge_expired) as db:
            yield db


def postgres_url() -> str:
    """The PostgreSQL server the tests use (``RUNSTATE_TEST_POSTGRES``): required under CI,
    else the test is skipped."""
    url = os.environ.get("RUNSTATE_TEST_POSTGRES", "")
    if not url:
        if os.environ.get("CI") == "true":
            pytest.fail("RUNSTATE_TEST_POSTGRES must be set under CI")
        pytest.skip("RUNSTATE_TEST_POSTGRES is not set")
    return url


# Schemas that were migrated by a test's engine and emptied afterwards: the next test takes one
# (creating and migrating a schema costs ~0.1 s of DDL, emptying one a few ms).
_FREE_SCHEMAS: list[str] = []
_ALL_SCHEMAS: list[str] = []

# Back to what the migrations leave (update with every migration that adds a table or a row).
_EMPTY_SCHEMA = """
DELETE FROM records; DELETE FROM events; DELETE FROM dependents; DELETE FROM stores;
DELETE FROM tokens; DELETE FROM workspaces WHERE name <> 'default';
UPDATE workspaces SET quota = 67108864; UPDATE token_changes SET counter = 0;
ALTER SEQUENCE versions RESTART;
"""


@contextmanager
def fresh_schema() -> Iterator[str]:
    """A database URL with an empty schema of its own (``?schema=t_...``), for one test."""
    import psycopg

    base = postgres_url()
    schema = _FREE_SCHEMAS.pop() if _FREE_SCHEMAS else f"t_{uuid.uuid4().hex[:20]}"
    if schema not in _ALL_SCHEMAS:
        _ALL_SCHEMAS.append(schema)
    joiner = "&" if "?" in base else "?"
    try:
        yield f"{base}{joiner}schema={schema}"
    finally:
        with psycopg.connect(base, autocommit=True) as conn:
            try:
                conn.execute(f'SET search_path = "{schema}"')
                with conn.transaction():
                    conn.execute(_EMPTY_SCHEMA.encode())
                _FREE_SCHEMAS.append(schema)
            except psycopg.Error:  # not migrated (no engine opened it), or damaged: drop it
                conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture(scope="session", autouse=True)
def _drop_test_schemas() -> Iterator[None]:
    yield
    if _ALL_SCHEMAS:
        import psycopg

        with psycopg.connect(os.environ["RUNSTATE_TEST_POSTGRES"], autocommit=True) as conn:
            for schema in _ALL_SCHEMAS:
                conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@contextmanager
def _open_postgres(directory: Path, clock: FakeClock, **options: Any) -> Iterator[Any]:
    with (
        fresh_schema() as url,
        runstate.open(url, purge_interval=None, clock=clock, pool_size=4, **options) as db,
    ):
        yield db


@contextmanager
def _open_remote_postgres(directory: Path, clock: FakeClock, **options: Any) -> Iterator[Any]:
    """`_open_remote` with the server on PostgreSQL."""
    with fresh_schema() as url:
        with _open_remote(directory, clock, db=url, **options) as db:
            yield db


def _server_db(kind: str) -> Iterator[dict[str, Any]]:
    if kind == "sqlite":
        yield {}
        return
    with fresh_schema() as url:
        yield {"db": url}


@pytest.fixture(params=["sqlite", "postgres"])
def server_db(request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    """Settings that put a test server (`http_server.start_server(..., **server_db)`) on the
    SQLite file of its directory, or on a fresh PostgreSQL schema."""
    yield from _server_db(request.param)


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def module_server_db(request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    """`server_db` for a server shared by a module's tests."""
    yield from _server_db(request.param)


# Backend name -> opener: a context manager `(directory, clock, **options)` yielding an open
# database: the embedded SQLite file, the server (in-process, through the HTTP client) and
# PostgreSQL (`runstate.open("postgresql://...")`, a fresh schema per database).
OPENERS: dict[str, Callable[..., AbstractContextManager[Any]]] = {
    "sqlite": _open_sqlite,
    "remote": _open_remote,
    "postgres": _open_postgres,
    "remote-postgres": _open_remote_postgres,
}
BACKENDS = ["sqlite", "remote", "postgres", "remote-postgres"]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make_db(backend: str, tmp_path: Path, clock: FakeClock) -> Iterator[Callable[..., Any]]:
    """Open a fresh database on the current backend with options (`quota_bytes=`,
    `max_value_bytes=`); all share the test's fake clock and are closed after the test."""
    with ExitStack() as opened:
        numbers = itertools.count()

        def make(**options: Any) -> Any:
            directory = tmp_path / f"db{next(numbers)}"
            directory.mkdir()
            return opened.enter_context(OPENERS[backend](directory, clock, **options))

        yield make


@pytest.fixture
def db(make_db: Callable[..., Any]) -> Any:
    return make_db()


@pytest.fixture
def store(db: Any) -> Any:
    return db.store("s")


# --- observing a whole database through the public API ----------------------------------------


def snapshot(db: Any) -> Any:
    """Everything a user can observe: every store (default ttl, dependents) with every record's
    value as JSON, version and times, and the usage figures."""
    stores = {}
    for info in db.stores():
        records = [
            (r.key, encoded(r.value), r.version, r.created_at, r.updated_at, r.expires_at)
            for r in db.store(info.name).records()
        ]
        stores[info.name] = (info.default_ttl, sorted(info.dependents), records)
    usage = db.usage()
    return stores, usage.records, usage.bytes


def encoded(value: Any) -> str:
    """A value as compact UTF-8 JSON (how SPEC §1 counts its bytes)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _recount(db: Any) -> dict[str, tuple[int, int]]:
    """Per store: (records, UTF-8 key bytes + encoded value bytes), counted record by record."""
    counts = {}
    for info in db.stores():
        records = list(db.store(info.name).records())
        size = sum(len(r.key.encode()) + len(encoded(r.value).encode()) for r in records)
        counts[info.name] = (len(records), size)
    return counts


@pytest.fixture
def recount() -> Callable[[Any], dict[str, tuple[int, int]]]:
    """`recount(db)`: per store, (records, bytes) counted record by record."""
    return _recount


@pytest.fixture
def unchanged(request: pytest.FixtureRequest) -> Callable[..., Any]:
    """`with unchanged(): ...` asserts the block changes nothing observable in `db` (the test's
    `db` fixture unless another database is passed)."""

    @contextmanager
    def check(target: Any = None) -> Iterator[None]:
        target = target if target is not None else request.getfixturevalue("db")
        before = snapshot(target)
        yield
        assert snapshot(target) == before

    return check
