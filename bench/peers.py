"""The stores measured in library mode, each behind the same small interface.

Every peer does each operation the way its users would: its own command where it has one
(diskcache `incr`, Redis `INCR`/`RPUSH`/`SADD`), else a read-modify-write (inside
`cache.transact()` for diskcache; sqlitedict has no transaction, so its read-modify-writes are
not atomic across processes). A peer whose package is missing is reported by `unavailable()`
and skipped by the harness with a line saying why.

Every operation method takes `(key, arg)` so the timing loop can call them all alike; `arg` is
the value to write or the element to add, and ignored by `get` and `increment`.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import os
import shutil
import socket
import subprocess
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

__all__ = [
    "PEERS",
    "REDIS_PEERS",
    "Kind",
    "Peer",
    "PeerSpec",
    "RedisServer",
    "open_peer",
    "peer_version",
    "unavailable",
]

# What a key holds: a string value, a list, a set (of strings), or an integer counter.
Kind = Literal["value", "list", "set", "counter"]

# The bulk loads that set up a data set run in chunks of this many records.
_LOAD_CHUNK = 1000

# runstate's default workspace quota (64 MiB) is smaller than the 4 KiB data set.
_RUNSTATE_QUOTA = 4 * 1024**3


@dataclass(frozen=True)
class PeerSpec:
    """Enough to open a peer again in another process: its name and where its data lives
    (a directory for the embedded stores, a redis:// URL for Redis)."""

    name: str
    location: str


class Peer(ABC):
    """One store under test. Each method performs one operation and returns its result."""

    name: ClassVar[str]
    # One line for the report: how the peer is configured and how the operations map onto it.
    note: ClassVar[str]

    @abstractmethod
    def __init__(self, location: str) -> None:
        """Open the peer on `location`: a directory, or a redis:// URL."""

    @abstractmethod
    def get(self, key: str, arg: Any) -> Any: ...

    @abstractmethod
    def set(self, key: str, arg: Any) -> Any: ...

    @abstractmethod
    def increment(self, key: str, arg: Any) -> Any: ...

    @abstractmethod
    def append(self, key: str, arg: Any) -> Any: ...

    @abstractmethod
    def add_to_set(self, key: str, arg: Any) -> Any: ...

    @abstractmethod
    def load(self, kind: Kind, items: Mapping[str, Any]) -> None:
        """Write `items` (untimed set-up), replacing whatever the keys held."""

    @abstractmethod
    def close(self) -> None: ...


def _chunks(items: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    pairs = list(items.items())
    for start in range(0, len(pairs), _LOAD_CHUNK):
        yield dict(pairs[start : start + _LOAD_CHUNK])


def _python_object(kind: Kind, value: Any) -> Any:
    """How the pickling peers hold each kind: a Python set for sets, a fresh list for lists."""
    if kind == "set":
        return set(value)
    if kind == "list":
        return list(value)
    return value


class RunstatePeer(Peer):
    name = "runstate"
    note = 'runstate.open(path, durability="fast") (WAL, synchronous=NORMAL), one store.'
    durability = "fast"

    def __init__(self, directory: str) -> None:
        runstate: Any = importlib.import_module("runstate")
        path = os.path.join(directory, "runstate.db")
        self._db = runstate.open(path, durability=self.durability, quota_bytes=_RUNSTATE_QUOTA)
        self._store = self._db.store("bench")

    def get(self, key: str, arg: Any) -> Any:
        return self._store.get(key)

    def set(self, key: str, arg: Any) -> Any:
        return self._store.set(key, arg)

    def increment(self, key: str, arg: Any) -> Any:
        return self._store.increment(key)

    def append(self, key: str, arg: Any) -> Any:
        return self._store.append(key, arg)

    def add_to_set(self, key: str, arg: Any) -> Any:
        return self._store.add_to_set(key, arg)

    def load(self, kind: Kind, items: Mapping[str, Any]) -> None:
        for chunk in _chunks(items):
            self._store.set_many({k: list(v) if kind == "set" else v for k, v in chunk.items()})

    def close(self) -> None:
        self._db.close()


class RunstateDurablePeer(RunstatePeer):
    name = "runstate-durable"
    note = (
        'runstate.open(path, durability="durable") (WAL, synchronous=FULL: fsync before each '
        "write returns), one store."
    )
    durability = "durable"


class DiskcachePeer(Peer):
    name = "diskcache"
    note = (
        "diskcache.Cache(dir) with its defaults (WAL, synchronous=NORMAL); increment = incr(); "
        "append/add_to_set = read-modify-write of a list/set inside cache.transact()."
    )

    def __init__(self, directory: str) -> None:
        diskcache: Any = importlib.import_module("diskcache")
        self._cache = diskcache.Cache(directory)

    def get(self, key: str, arg: Any) -> Any:
        return self._cache.get(key)

    def set(self, key: str, arg: Any) -> Any:
        return self._cache.set(key, arg)

    def increment(self, key: str, arg: Any) -> Any:
        return self._cache.incr(key)

    def append(self, key: str, arg: Any) -> Any:
        cache = self._cache
        with cache.transact():
            items = cache.get(key, [])
            items.append(arg)
            cache.set(key, items)
        return len(items)

    def add_to_set(self, key: str, arg: Any) -> Any:
        cache = self._cache
        with cache.transact():
            members = cache.get(key, set())
            if arg in members:
                return False
            members.add(arg)
            cache.set(key, members)
        return True

    def load(self, kind: Kind, items: Mapping[str, Any]) -> None:
        for chunk in _chunks(items):
            with self._cache.transact():
                for key, value in chunk.items():
                    self._cache.set(key, _python_object(kind, value))

    def close(self) -> None:
        self._cache.close()


class SqlitedictPeer(Peer):
    name = "sqlitedict"
    note = (
        "SqliteDict(file, autocommit=True): every write committed before it returns "
        "(its defaults: journal_mode=DELETE, synchronous=OFF); increment/append/add_to_set = "
        "read-modify-write (not atomic across processes)."
    )

    def __init__(self, directory: str) -> None:
        self._module: Any = importlib.import_module("sqlitedict")
        self._path = os.path.join(directory, "sqlitedict.sqlite")
        self._dict = self._module.SqliteDict(self._path, autocommit=True)

    def get(self, key: str, arg: Any) -> Any:
        return self._dict.get(key)

    def set(self, key: str, arg: Any) -> Any:
        self._dict[key] = arg

    def increment(self, key: str, arg: Any) -> Any:
        value = self._dict.get(key, 0) + 1
        self._dict[key] = value
        return value

    def append(self, key: str, arg: Any) -> Any:
        items = self._dict.get(key, [])
        items.append(arg)
        self._dict[key] = items
        return len(items)

    def add_to_set(self, key: str, arg: Any) -> Any:
        members = self._dict.get(key, set())
        if arg in members:
            return False
        members.add(arg)
        self._dict[key] = members
        return True

    def load(self, kind: Kind, items: Mapping[str, Any]) -> None:
        # A second handle without autocommit, so a bulk load is one commit per chunk.
        loader = self._module.SqliteDict(self._path, autocommit=False)
        try:
            for chunk in _chunks(items):
                loader.update({k: _python_object(kind, v) for k, v in chunk.items()})
                loader.commit()
        finally:
            loader.close()

    def close(self) -> None:
        self._dict.close()


class RedisPeer(Peer):
    name = "redis"
    note = (
        "redis-py Redis() (no hiredis) against a local redis-server kept in memory "
        "(save '', appendonly no); GET/SET/INCR/RPUSH/SADD."
    )

    def __init__(self, url: str) -> None:
        redis: Any = importlib.import_module("redis")
        self._client = redis.Redis.from_url(url)

    def get(self, key: str, arg: Any) -> Any:
        return self._client.get(key)

    def set(self, key: str, arg: Any) -> Any:
        return self._client.set(key, arg)

    def increment(self, key: str, arg: Any) -> Any:
        return self._client.incr(key)

    def append(self, key: str, arg: Any) -> Any:
        return self._client.rpush(key, arg)

    def add_to_set(self, key: str, arg: Any) -> Any:
        return self._client.sadd(key, arg)

    def load(self, kind: Kind, items: Mapping[str, Any]) -> None:
        for chunk in _chunks(items):
            pipe = self._client.pipeline(transaction=False)
            for key, value in chunk.items():
                if kind in ("value", "counter"):
                    pipe.set(key, value)
                    continue
                pipe.delete(key)
                if kind == "list":
                    pipe.rpush(key, *value)
                else:
                    pipe.sadd(key, *value)
            pipe.execute()

    def forget(self, pattern: str) -> None:
        """Delete the keys matching `pattern` (the harness's own), leaving others alone."""
        batch: list[Any] = []
        for key in self._client.scan_iter(match=pattern, count=1000):
            batch.append(key)
            if len(batch) >= _LOAD_CHUNK:
                self._client.unlink(*batch)
                batch.clear()
        if batch:
            self._client.unlink(*batch)

    def server_version(self) -> str:
        return str(self._client.info("server").get("redis_version", "?"))

    def close(self) -> None:
        self._client.close()


class RedisFsyncPeer(RedisPeer):
    name = "redis-fsync"
    note = (
        "redis-py Redis() against a local redis-server with its append-only file fsynced "
        "before each reply (appendonly yes, appendfsync always): the durable rows' peer."
    )


PEERS: dict[str, type[Peer]] = {
    peer.name: peer
    for peer in (
        RunstatePeer,
        RunstateDurablePeer,
        DiskcachePeer,
        SqlitedictPeer,
        RedisPeer,
        RedisFsyncPeer,
    )
}
# The peers that need a Redis server, and whether it fsyncs its append-only file.
REDIS_PEERS = {"redis": False, "redis-fsync": True}


def open_peer(spec: PeerSpec) -> Peer:
    return PEERS[spec.name](spec.location)


def _module(name: str) -> str:
    """The module (and distribution) a peer is measured through: its name up to any '-'."""
    return name.split("-")[0]


def unavailable(name: str) -> str | None:
    """Why the peer cannot be measured here, or None if it can. (Each peer's module and
    distribution are named like the peer, up to a '-' naming its variant.)"""
    try:
        module = importlib.import_module(_module(name))
    except ImportError as exc:
        return f"{_module(name)} is not installed ({exc})"
    if name.startswith("runstate") and not callable(getattr(module, "open", None)):
        return "runstate.open() does not exist yet"
    return None


def peer_version(name: str) -> str:
    try:
        return importlib.metadata.version(_module(name))
    except importlib.metadata.PackageNotFoundError:
        return str(getattr(importlib.import_module(_module(name)), "__version__", "?"))


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


class RedisServer:
    """A Redis for the run: our own redis-server on a free loopback port (kept in memory,
    stopped at the end), else an existing one given by URL or found at 127.0.0.1:6379.

    `url` is None when there is no Redis to measure; `origin` says which case held."""

    def __init__(self, url: str | None = None, *, fsync: bool = False) -> None:
        self.url: str | None = None
        self.origin = ""
        self.owned = False
        self.fsync = fsync
        self._process: subprocess.Popen[bytes] | None = None
        self._dir: str | None = None
        if url:
            self.url, self.origin = url, f"given: {url}"
            return
        binary = shutil.which("redis-server")
        if binary:
            self._start(binary)
            return
        if fsync:  # an existing server's persistence is not ours to choose
            self.origin = "no redis-server binary to start one that fsyncs"
            return
        if _reachable("127.0.0.1", 6379):
            self.url, self.origin = "redis://127.0.0.1:6379/0", "existing server at 127.0.0.1:6379"
            return
        self.origin = "no redis-server binary and nothing listening on 127.0.0.1:6379"

    def _start(self, binary: str) -> None:
        port = _free_port()
        self._dir = tempfile.mkdtemp(prefix="runstate-bench-redis-")
        self._process = subprocess.Popen(
            [
                binary,
                "--bind",
                "127.0.0.1",
                "--port",
                str(port),
                "--save",
                "",
                "--appendonly",
                "yes" if self.fsync else "no",
                "--appendfsync",
                "always",
                "--dir",
                self._dir,
                "--daemonize",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                self.origin = f"redis-server exited at start (status {self._process.returncode})"
                return
            if _reachable("127.0.0.1", port):
                self.url = f"redis://127.0.0.1:{port}/0"
                kept = "append-only file fsynced per write" if self.fsync else "in memory"
                self.origin = f"own redis-server on 127.0.0.1:{port} ({kept})"
                self.owned = True
                return
            time.sleep(0.05)
        self.stop()
        self.origin = "redis-server did not answer within 10 s"

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __enter__(self) -> RedisServer:
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(Exception):
            self.stop()
