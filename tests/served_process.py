"""`runstate serve` as a real subprocess, on a database of one of the server backends.

The reliability tests that kill servers or run several of them on one database (QUALITY R1, R3,
R8, R9) use this rather than the in-process server of `http_server.py`:

    database = server_database("sqlite", tmp_path)      # or the `server_database` fixture
    server = ServerProcess(database.url, tmp_path / "serve.log")
    server.start()                       # waits for /healthz; returns the seconds it took
    with server.connect() as db: ...     # runstate.connect with the admin token
    server.kill()                        # SIGKILL to the whole process group
    database.integrity()                 # "ok" when the stored database is sound

A second server on the same database shares the first one's admin token (`token=`), since the
admin token is printed on the database's first start only.

Backends (`SERVER_BACKENDS`): ``sqlite`` (a file in the test's directory) and, once the
PostgreSQL backend has landed and `tests/conftest.py` lists ``postgres`` in `BACKENDS`,
``postgres``: a schema of its own on the server `RUNSTATE_TEST_POSTGRES` names, dropped afterwards.
Every test taking the `server_database` fixture then runs on both, unchanged.
"""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

import runstate
from conftest import BACKENDS

__all__ = [
    "SERVER_BACKENDS",
    "ServerDatabase",
    "ServerProcess",
    "free_port",
    "open_server_database",
    "running_servers",
    "soak",
]


def soak(ci: int, long: int) -> int:
    """A size for the CI run, or for `make soak` (``RUNSTATE_SOAK=1``)."""
    return long if os.environ.get("RUNSTATE_SOAK") == "1" else ci


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ServerDatabase:
    """A database for `runstate serve --db URL`, and how to check it is sound."""

    name: str
    url: str
    integrity: Callable[[], str]


def _sqlite_integrity(path: Path) -> Callable[[], str]:
    def check() -> str:
        conn = sqlite3.connect(path, timeout=30)
        try:
            return str(conn.execute("PRAGMA integrity_check").fetchone()[0])
        finally:
            conn.close()

    return check


@contextmanager
def _sqlite(directory: Path) -> Iterator[ServerDatabase]:
    path = directory / "served.db"
    yield ServerDatabase("sqlite", str(path), _sqlite_integrity(path))


@contextmanager
def _postgres(directory: Path) -> Iterator[ServerDatabase]:
    """A schema of its own on the test PostgreSQL server (conftest's `fresh_schema`; skipped
    when ``RUNSTATE_TEST_POSTGRES`` is unset outside CI). PostgreSQL checks its pages itself;
    the check here is that every table of the schema reads end to end."""
    import psycopg

    from conftest import fresh_schema, postgres_url

    with fresh_schema() as url:
        schema = url.rsplit("schema=", 1)[1]

        def check() -> str:
            with psycopg.connect(postgres_url()) as conn:
                tables = conn.execute(
                    "SELECT tablename FROM pg_tables WHERE schemaname = %s", (schema,)
                ).fetchall()
                for (table,) in tables:
                    conn.execute(f'SELECT count(*) FROM "{schema}"."{table}"').fetchone()
            return "ok"

        yield ServerDatabase("postgres", url, check)


_OPENERS: dict[str, Callable[[Path], Any]] = {"sqlite": _sqlite, "postgres": _postgres}
# The PostgreSQL variant runs once the backend has landed (conftest lists it).
SERVER_BACKENDS = ["sqlite", *(["postgres"] if "postgres" in BACKENDS else [])]


def open_server_database(name: str, directory: Path) -> Any:
    """A context manager yielding a `ServerDatabase` of backend `name` in `directory`."""
    return _OPENERS[name](directory)


@pytest.fixture(params=SERVER_BACKENDS)
def server_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ServerDatabase]:
    with open_server_database(str(request.param), tmp_path) as database:
        yield database


class ServerProcess:
    """`runstate serve` in its own process group, so SIGKILL reaches its worker processes."""

    def __init__(
        self,
        db: str,
        log: Path,
        *,
        token: str | None = None,
        args: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
        durability: str = "durable",
    ) -> None:
        self.db = db
        self.log = log
        self.args = args
        self.env = env or {}
        self.durability = durability
        self.process: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.admin_token = token

    def start(self) -> float:
        """Start and wait until /healthz answers; the seconds that took."""
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        command = [
            sys.executable, "-c", "import sys; from runstate.cli import main; sys.exit(main())",
            "serve", "--db", self.db, "--port", str(port), "--durability", self.durability,
            *self.args,
        ]  # fmt: skip
        env = {k: v for k, v in os.environ.items() if not k.startswith("RUNSTATE_")}
        env.update(self.env)
        began = time.monotonic()
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        deadline = began + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"runstate serve exited: {self.log.read_text()[-3000:]}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.02)
        else:
            raise AssertionError(f"runstate serve did not answer: {self.log.read_text()[-3000:]}")
        elapsed = time.monotonic() - began
        if self.admin_token is None:
            self.admin_token = self._printed_token()
        return elapsed

    def _printed_token(self) -> str:
        for line in self.log.read_text(errors="replace").splitlines():
            if line.startswith("admin token: "):
                return line.split(": ", 1)[1].strip()
        raise AssertionError("the first start printed no 'admin token: ...' line")

    def kill(self) -> None:
        assert self.process is not None
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(timeout=10)
        self.process = None

    def terminate(self) -> None:
        """SIGTERM: a graceful shutdown (the writer drains)."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        finally:
            self.process = None

    def stop(self) -> None:
        if self.process is not None:
            self.kill()

    def connect(self, timeout: float = 5) -> Any:
        return runstate.connect(self.url, token=self.admin_token, timeout=timeout)

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextmanager
def running_servers(
    database: ServerDatabase,
    directory: Path,
    count: int,
    args: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
) -> Iterator[list[ServerProcess]]:
    """`count` servers of `runstate serve` on one database, started one after the other (the
    first creates it and prints the admin token the others share); killed on exit."""
    started: list[ServerProcess] = []
    try:
        token = None
        for n in range(count):
            server = ServerProcess(
                database.url, directory / f"serve{n}.log", token=token, args=args, env=env
            )
            started.append(server)
            server.start()
            token = server.admin_token
        yield started
    finally:
        for server in started:
            server.stop()
