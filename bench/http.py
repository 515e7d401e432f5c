"""HTTP mode: `runstate serve` against webdis, etcd's JSON gateway and a bare ASGI app, in one run.

    python -m bench.http [--quick] [--check] [--seconds S] [--connections 1,16,64] [--peers a,b]
                         [--ops a,b] [--db postgresql://...] [--pin]

Load comes from `wrk` (keep-alive, one thread) at 1, 16 and 64 connections. Each request is
drawn at random from 10k keys holding 100-byte values (loaded before the timing, untimed):

    op         runstate (durable, granian)       webdis/Redis    etcd gateway      bare ASGI
    get        GET  /v1/stores/bench/records/k   GET /GET/k      POST /v3/kv/range runstate's
    set        PUT  /v1/stores/bench/records/k   PUT /SET/k      POST /v3/kv/put   requests
    increment  POST /v1/stores/bench/batch       GET /INCR/k     POST /v3/kv/put*

(*) etcd has no increment: its row is a put, the durable write it does have. Redis runs in memory
(no fsync), as webdis users run it; runstate fsyncs before acknowledging (`--durability durable`)
and etcd fsyncs its WAL. The bare ASGI app (`bench/asgi_bare.py`) runs on granian, the server
runstate uses, and answers a fixed record-sized body: the ceiling of the HTTP layer.

With a PostgreSQL server (`--db postgresql://...` or ``RUNSTATE_BENCH_POSTGRES``) two more
peers run: ``runstate-pg`` (`runstate serve` on that database, same requests) and ``pgbench``
(the same operation as one SQL statement on a table of its own, at the same client count,
``pgbench -n -c N -j 1``); without one they are skipped with a line saying so.

`--pin` runs the servers on the last core and wrk (and pgbench) on the first (`taskset`). It is
off by default: on these 2-core machines, shared with other work, pinned runs varied as much as
unpinned ones, and pinning halves the cores of a multi-threaded server (runstate: granian's I/O
thread, the event loop, the writer) while the load generator's core sits half idle (measured in
docs/performance.md).

The harness starts every peer itself on free loopback ports and stops it at the end; a peer
whose program is missing is skipped with a line saying why (`make bench-deps` installs them).
For each (op, connections) cell the peers run back to back, each after a warm-up, so the
ratios compare figures taken seconds apart. Results: bench/results/http-<UTC stamp>.json and
.md, and bench/results/latest-http.md. `--check` exits 1 when a ratio of `TARGETS` falls below
its floor by more than `--margin` (what `make bench-quick` runs).
"""

from __future__ import annotations

import argparse
import base64
import importlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

if not __package__:  # run as `python bench/http.py`: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.peers import RedisServer
from bench.report import machine, machine_markdown, publish, ratio_text, timestamp

OPS = ("get", "set", "increment")
CONNECTIONS = (1, 16, 64)
PEER_ORDER = ("runstate", "webdis", "etcd", "bare", "bare-rsgi", "runstate-pg", "pgbench")
N_KEYS = 10_000
VALUE = "v" * 100
STORE = "bench"
START_TIMEOUT = 30.0


@dataclass(frozen=True)
class Target:
    """`ours` ops/s ÷ `peer` ops/s on (`op`, `connections`): QUALITY.md §1's `target`, and the
    `floor` `--check` holds the product to (the target where reached, else the level reached
    now, so the check catches a regression while the target stays open)."""

    op: str
    connections: int
    peer: str
    target: float
    floor: float
    ours: str = "runstate"


TARGETS = (
    Target("get", 64, "webdis", 0.6, 0.6),
    Target("get", 64, "etcd", 3.0, 3.0),
    Target("set", 64, "etcd", 1.5, 0.8),
    Target("increment", 64, "etcd", 1.5, 0.8),
    Target("increment", 64, "pgbench", 0.6, 0.6, ours="runstate-pg"),
)
P50_TARGET_US = ("get", 1, 150.0)
QUICK_SKIP = frozenset({("set", 1), ("increment", 1)})
DEFAULT_MARGIN = 0.15

Request = tuple[str, str, str | None]  # method, path, body


def key(i: int) -> str:
    return f"k{i:05d}"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"exited at start (status {process.returncode})")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"did not listen on {port} within {timeout:.0f} s")


def stop_process(process: subprocess.Popen[bytes] | None) -> None:
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class HttpPeer(ABC):
    """One HTTP server under test: started on a free loopback port, loaded, measured, stopped."""

    name: ClassVar[str]
    note: ClassVar[str]

    def __init__(self, workdir: Path, workers: int) -> None:
        self.workdir = workdir / self.name
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.workers = workers
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.headers: dict[str, str] = {}
        self.version = "?"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @abstractmethod
    def missing(self) -> str | None:
        """Why this peer cannot run here, or None."""

    @abstractmethod
    def start(self) -> None:
        """Start the server (and load the data set)."""

    @abstractmethod
    def requests(self, op: str) -> list[Request]:
        """The requests `op` draws from."""

    # `taskset -c CPU` before every server command when pinned (see the module docstring).
    pin: ClassVar[list[str]] = []

    def spawn(self, command: Sequence[str], env: dict[str, str] | None = None) -> None:
        log = open(self.workdir / "server.log", "ab")
        self.process = subprocess.Popen(
            [*self.pin, *command],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=self.workdir,
            start_new_session=True,
        )
        log.close()
        wait_for_port(self.port, self.process, START_TIMEOUT)

    def stop(self) -> None:
        stop_process(self.process)
        self.process = None


def _venv_bin(name: str) -> str | None:
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else shutil.which(name)


class RunstateHttp(HttpPeer):
    name = "runstate"
    note = (
        "`runstate serve --durability durable` (granian, group commit, fsync before each "
        "acknowledgement) on a fresh SQLite file; increment = one-op POST .../batch."
    )

    def missing(self) -> str | None:
        try:
            importlib.import_module("runstate.server")
        except ImportError as exc:
            return f"runstate.server is not importable ({exc})"
        return None if _venv_bin("runstate") else "the runstate command is not installed"

    def database(self) -> str:
        return str(self.workdir / "bench.db")

    def start(self) -> None:
        runstate: Any = importlib.import_module("runstate")
        db = self.database()
        with runstate.open(db, durability="fast", quota_bytes=1 << 34, purge_interval=None) as rs:
            store = rs.store(STORE)
            store.clear()
            items = {key(i): VALUE for i in range(N_KEYS)}
            store.set_many(items)
            store.set_many({f"n{i:05d}": 0 for i in range(N_KEYS)})
        runstate_bin = _venv_bin("runstate")
        assert runstate_bin is not None
        created = subprocess.run(
            [runstate_bin, "token", "create", "--role", "admin", "--json", "--db", db],
            capture_output=True,
            text=True,
            check=True,
        )
        self.headers = {
            "Authorization": f"Bearer {json.loads(created.stdout)['token']}",
            "Content-Type": "application/json",
        }
        env = {k: v for k, v in os.environ.items() if not k.startswith("RUNSTATE_")}
        self.spawn(
            [runstate_bin, "serve", "--db", db, "--port", str(self.port),
             "--durability", "durable", "--workers", str(self.workers)],
            env,
        )  # fmt: skip
        self.version = runstate.__version__

    def requests(self, op: str) -> list[Request]:
        if op == "get":
            return [("GET", f"/v1/stores/{STORE}/records/{key(i)}", None) for i in range(N_KEYS)]
        if op == "set":
            body = json.dumps({"value": VALUE})
            return [("PUT", f"/v1/stores/{STORE}/records/{key(i)}", body) for i in range(N_KEYS)]
        return [
            (
                "POST",
                f"/v1/stores/{STORE}/batch",
                json.dumps({"ops": [{"op": "increment", "key": f"n{i:05d}"}]}),
            )
            for i in range(N_KEYS)
        ]


class BareAsgi(RunstateHttp):
    """Sends runstate's requests to an app that only answers them: the same bytes on the wire."""

    name = "bare"
    interface, target = "asgi", "bench.asgi_bare:app"
    note = (
        "`granian --interface asgi bench.asgi_bare:app`: reads the body, answers a fixed "
        "record-sized JSON body; the HTTP layer's ceiling."
    )

    def missing(self) -> str | None:
        return None if _venv_bin("granian") else "granian is not installed"

    def start(self) -> None:
        granian = _venv_bin("granian")
        assert granian is not None
        root = Path(__file__).resolve().parent.parent
        env = dict(os.environ, PYTHONPATH=str(root))
        self.headers = {"Authorization": "Bearer x", "Content-Type": "application/json"}
        self.spawn(
            [granian, "--interface", self.interface, "--host", "127.0.0.1",
             "--port", str(self.port), "--workers", str(self.workers), "--no-ws",
             "--log-level", "warning", "--loop", "uvloop", self.target],
            env,
        )  # fmt: skip
        self.version = "granian " + _distribution_version("granian")


class BareRsgi(BareAsgi):
    """The same fixed answer through granian's RSGI interface, which `runstate serve` uses."""

    name = "bare-rsgi"
    note = (
        "`granian --interface rsgi bench.asgi_bare:rsgi_app`: the same fixed answer through "
        "RSGI, the interface runstate serve uses; the ceiling of its HTTP layer."
    )
    interface, target = "rsgi", "bench.asgi_bare:rsgi_app"


class OnPostgres:
    """A peer that runs on the PostgreSQL server given (``--db`` or RUNSTATE_BENCH_POSTGRES):
    set once here for every such peer."""

    postgres: ClassVar[str | None] = None

    @classmethod
    def no_postgres(cls) -> str | None:
        """Why the peer cannot run (no server given), or None."""
        if cls.postgres:
            return None
        return "no PostgreSQL given (--db postgresql://... or RUNSTATE_BENCH_POSTGRES)"


class RunstatePostgres(OnPostgres, RunstateHttp):
    """`runstate serve` on the PostgreSQL server given (schema ``runstate_bench``)."""

    name = "runstate-pg"
    note = (
        "`runstate serve --durability durable --db postgresql://…` (schema runstate_bench), "
        "the same requests as runstate."
    )

    def missing(self) -> str | None:
        return self.no_postgres() or super().missing()

    def database(self) -> str:
        """A fresh schema each run: the server then makes (and prints) a new admin token."""
        assert self.postgres is not None
        import psycopg

        with psycopg.connect(self.postgres, autocommit=True) as conn:
            conn.execute("DROP SCHEMA IF EXISTS runstate_bench CASCADE")
        joiner = "&" if "?" in self.postgres else "?"
        return f"{self.postgres}{joiner}schema=runstate_bench"


# What pgbench runs per op: one statement on a table of its own, as runstate-pg's engine would.
PGBENCH_TABLE = "runstate_bench_pgbench"
PGBENCH_SQL = {
    "get": f"SELECT v FROM {PGBENCH_TABLE} WHERE k = :k;",
    "set": (
        f"INSERT INTO {PGBENCH_TABLE} (k, v) VALUES (:k, '\"{VALUE}\"') "
        "ON CONFLICT (k) DO UPDATE SET v = excluded.v, version = "
        f"{PGBENCH_TABLE}.version + 1 RETURNING version;"
    ),
    "increment": (
        f"INSERT INTO {PGBENCH_TABLE} (k, v) VALUES (:k, '1') ON CONFLICT (k) DO UPDATE "
        f"SET v = ({PGBENCH_TABLE}.v::bigint + 1)::text, version = {PGBENCH_TABLE}.version + 1 "
        "RETURNING v;"
    ),
}


class Pgbench(OnPostgres, HttpPeer):
    """Not an HTTP server: `pgbench` itself is the load, on the PostgreSQL server given."""

    name = "pgbench"
    note = (
        "pgbench -n -j 1 -c N, one statement per transaction on a table of its own (text key "
        "primary key, text value, version): SELECT for get, INSERT … ON CONFLICT DO UPDATE for "
        "set and increment; average latency only (pgbench reports no percentiles here)."
    )

    def missing(self) -> str | None:
        if self.no_postgres() or shutil.which("pgbench"):
            return self.no_postgres()
        return "no pgbench binary (apt-get install postgresql-client)"

    def start(self) -> None:
        assert self.postgres is not None
        ddl = (
            f"DROP TABLE IF EXISTS {PGBENCH_TABLE}; CREATE TABLE {PGBENCH_TABLE} "
            "(k text PRIMARY KEY, v text NOT NULL, version bigint NOT NULL DEFAULT 1); "
            f"INSERT INTO {PGBENCH_TABLE} (k, v) SELECT 'k' || lpad(i::text, 5, '0'), "
            f"'\"{VALUE}\"' FROM generate_series(0, {N_KEYS - 1}) i; "
            f"INSERT INTO {PGBENCH_TABLE} (k, v) SELECT 'n' || lpad(i::text, 5, '0'), '0' "
            f"FROM generate_series(0, {N_KEYS - 1}) i;"
        )
        subprocess.run(["psql", self.postgres, "-q", "-v", "ON_ERROR_STOP=1", "-c", ddl],
                       check=True, capture_output=True, timeout=120)  # fmt: skip
        found = subprocess.run(["pgbench", "--version"], capture_output=True, text=True)
        number = re.search(r"\d+\.\d+", found.stdout)
        self.version = number.group(0) if number else "?"

    def requests(self, op: str) -> list[Request]:
        return []

    def run_cell(self, op: str, connections: int, seconds: float, workdir: Path) -> Cell:
        assert self.postgres is not None
        prefix = "k" if op != "increment" else "n"
        script = workdir / f"pgbench-{op}.sql"
        script.write_text(
            f"\\set i random(0, {N_KEYS - 1})\n"
            + PGBENCH_SQL[op].replace(":k", f"('{prefix}' || lpad(:i::text, 5, '0'))")
            + "\n",
            encoding="utf-8",
        )
        command = ["pgbench", "-n", "-j", "1", "-c", str(connections),
                   "-T", str(max(1, round(seconds))), "-f", str(script), self.postgres]  # fmt: skip
        done = subprocess.run(
            [*Wrk.pin, *command], capture_output=True, text=True, timeout=seconds + 60
        )
        cell = Cell(self.name, op, connections)
        tps = re.search(r"tps = ([\d.]+)", done.stdout)
        latency = re.search(r"latency average = ([\d.]+) ms", done.stdout)
        if done.returncode != 0 or tps is None:
            cell.note = f"pgbench failed: {(done.stderr or done.stdout).strip()[:200]}"
            return cell
        cell.ops_per_s = float(tps.group(1))
        cell.requests = int(cell.ops_per_s * seconds)
        if latency:
            cell.note = f"average latency {float(latency.group(1)) * 1000:,.0f} µs"
        return cell


class Wrk:
    """Where wrk runs: `taskset -c CPU` when pinned."""

    pin: ClassVar[list[str]] = []


class Webdis(HttpPeer):
    name = "webdis"
    note = (
        "webdis (Debian package) over our own redis-server kept in memory (save '', "
        "appendonly no): GET /GET/k, PUT /SET/k with the value as body, GET /INCR/k."
    )

    def __init__(self, workdir: Path, workers: int) -> None:
        super().__init__(workdir, workers)
        self.redis: RedisServer | None = None

    def missing(self) -> str | None:
        if not shutil.which("webdis"):
            return "no webdis binary (apt-get install webdis)"
        if not shutil.which("redis-server"):
            return "no redis-server binary (apt-get install redis-server)"
        return None

    def start(self) -> None:
        import redis

        self.redis = RedisServer()
        if not self.redis.owned or self.redis.url is None:
            raise RuntimeError(f"no Redis of our own: {self.redis.origin}")
        redis_port = int(self.redis.url.rsplit(":", 1)[1].split("/")[0])
        client = redis.Redis.from_url(self.redis.url)
        pipe = client.pipeline(transaction=False)
        for i in range(N_KEYS):
            pipe.set(key(i), VALUE)
            pipe.set(f"n{i:05d}", 0)
        pipe.execute()
        client.close()
        config = {
            "redis_host": "127.0.0.1",
            "redis_port": redis_port,
            "http_host": "127.0.0.1",
            "http_port": self.port,
            "threads": 2,
            "daemonize": False,
            "database": 0,
            "verbosity": 0,
            "logfile": str(self.workdir / "webdis.log"),
        }
        path = self.workdir / "webdis.json"
        path.write_text(json.dumps(config), encoding="utf-8")
        self.spawn(["webdis", str(path)])
        self.version = _debian_version("webdis")

    def requests(self, op: str) -> list[Request]:
        if op == "get":
            return [("GET", f"/GET/{key(i)}", None) for i in range(N_KEYS)]
        if op == "set":
            return [("PUT", f"/SET/{key(i)}", VALUE) for i in range(N_KEYS)]
        return [("GET", f"/INCR/n{i:05d}", None) for i in range(N_KEYS)]

    def stop(self) -> None:
        super().stop()
        if self.redis is not None:
            self.redis.stop()
            self.redis = None


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


class Etcd(HttpPeer):
    name = "etcd"
    note = (
        "etcd (Debian etcd-server) single member, its defaults (WAL fsync per commit), through "
        "its JSON gateway: POST /v3/kv/range, POST /v3/kv/put; increment = put (no increment)."
    )

    def missing(self) -> str | None:
        return None if shutil.which("etcd") else "no etcd binary (apt-get install etcd-server)"

    def start(self) -> None:
        import httpx

        peer_port = free_port()
        self.spawn(
            ["etcd", "--name", "bench", "--data-dir", str(self.workdir / "data"),
             "--listen-client-urls", self.url, "--advertise-client-urls", self.url,
             "--listen-peer-urls", f"http://127.0.0.1:{peer_port}",
             "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer_port}",
             "--initial-cluster", f"bench=http://127.0.0.1:{peer_port}",
             "--log-level", "error"],
        )  # fmt: skip
        self.headers = {"Content-Type": "application/json"}
        deadline = time.monotonic() + START_TIMEOUT
        with httpx.Client(base_url=self.url, timeout=10) as client:
            while client.get("/health").status_code != 200:
                if time.monotonic() > deadline:
                    raise RuntimeError("etcd did not become healthy")
                time.sleep(0.1)

            def put(i: int) -> None:
                body = {"key": _b64(key(i)), "value": _b64(VALUE)}
                client.post("/v3/kv/put", json=body).raise_for_status()

            with ThreadPoolExecutor(16) as pool:
                list(pool.map(put, range(N_KEYS)))
        found = subprocess.run(["etcd", "--version"], capture_output=True, text=True)
        self.version = found.stdout.splitlines()[0].split()[-1] if found.stdout else "?"

    def requests(self, op: str) -> list[Request]:
        if op == "get":
            return [
                ("POST", "/v3/kv/range", json.dumps({"key": _b64(key(i))})) for i in range(N_KEYS)
            ]
        prefix = "k" if op == "set" else "n"
        bodies = (
            json.dumps({"key": _b64(f"{prefix}{i:05d}"), "value": _b64(VALUE)})
            for i in range(N_KEYS)
        )
        return [("POST", "/v3/kv/put", body) for body in bodies]


PEERS: dict[str, type[HttpPeer]] = {
    p.name: p for p in (RunstateHttp, Webdis, Etcd, BareAsgi, BareRsgi, RunstatePostgres, Pgbench)
}


def _distribution_version(name: str) -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def _debian_version(package: str) -> str:
    try:
        found = subprocess.run(
            ["dpkg-query", "-W", "-f", "${Version}", package], capture_output=True, text=True
        )
    except OSError:
        return "?"
    return found.stdout.strip() or "?"


# --- wrk ----------------------------------------------------------------------------------------


def _lua_string(text: str) -> str:
    level = "=" * 4
    assert f"]{level}]" not in text
    return f"[{level}[{text}]{level}]"


def lua_script(requests: Sequence[Request], headers: dict[str, str]) -> str:
    """A wrk script that sends one of `requests` at random each time (formatted once at init)."""
    specs = ",\n".join(
        f"{{{_lua_string(m)}, {_lua_string(p)}, {'nil' if b is None else _lua_string(b)}}}"
        for m, p, b in requests
    )
    head = ", ".join(f"[ {_lua_string(k)} ] = {_lua_string(v)}" for k, v in headers.items())
    return (
        f"local specs = {{\n{specs}\n}}\n"
        f"local headers = {{{head}}}\n"
        "local reqs = {}\n"
        "init = function(args)\n"
        "  for i, s in ipairs(specs) do reqs[i] = wrk.format(s[1], s[2], headers, s[3]) end\n"
        "  math.randomseed(os.time())\n"
        "end\n"
        "request = function() return reqs[math.random(#reqs)] end\n"
    )


@dataclass
class Cell:
    peer: str
    op: str
    connections: int
    ops_per_s: float | None = None
    p50_us: float | None = None
    p99_us: float | None = None
    requests: int = 0
    errors: int = 0
    note: str = ""


_UNITS = {"us": 1.0, "ms": 1000.0, "s": 1_000_000.0, "m": 60_000_000.0}


def _micros(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if match is None:
        raise ValueError(f"not a wrk duration: {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_wrk(output: str, cell: Cell) -> Cell:
    """Requests/sec, the 50% and 99% latencies, and errors (non-2xx answers, socket errors)."""
    rate = re.search(r"Requests/sec:\s+([\d.]+)", output)
    cell.ops_per_s = float(rate.group(1)) if rate else None
    for name, attr in (("50", "p50_us"), ("99", "p99_us")):
        found = re.search(rf"^\s+{name}%\s+(\S+)", output, re.MULTILINE)
        setattr(cell, attr, _micros(found.group(1)) if found else None)
    total = re.search(r"(\d+) requests in", output)
    cell.requests = int(total.group(1)) if total else 0
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    cell.errors = int(bad.group(1)) if bad else 0
    if socket_errors:
        cell.errors += sum(int(x) for x in socket_errors.groups())
    if cell.requests and cell.errors > cell.requests * 0.01:
        cell.note = f"{cell.errors} errors of {cell.requests} requests: not counted"
        cell.ops_per_s = cell.p50_us = cell.p99_us = None
    return cell


def run_wrk(
    wrk: str, url: str, script: Path, connections: int, seconds: float, latency: bool = True
) -> str:
    command = [*Wrk.pin, wrk, "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s"]
    command += ["-s", str(script)]
    if latency:
        command.append("--latency")
    done = subprocess.run([*command, url], capture_output=True, text=True, timeout=seconds + 60)
    if done.returncode != 0 or done.stderr.strip():  # a script error is only on stderr
        raise RuntimeError(f"wrk failed: {done.stderr.strip()[:300]}")
    return done.stdout


# --- the run ------------------------------------------------------------------------------------


def measure(
    peers: dict[str, HttpPeer],
    ops: Sequence[str],
    connections: Sequence[int],
    seconds: float,
    warmup: float,
    wrk: str,
    workdir: Path,
    skip: frozenset[tuple[str, int]] = frozenset(),
) -> list[Cell]:
    scripts: dict[tuple[str, str], Path] = {}
    for name, peer in peers.items():
        if isinstance(peer, Pgbench):
            continue
        for op in ops:
            path = workdir / f"{name}-{op}.lua"
            path.write_text(lua_script(peer.requests(op), peer.headers), encoding="utf-8")
            scripts[name, op] = path
    cells = []
    for op in ops:
        for conns in connections:
            if (op, conns) in skip:
                continue
            for name, peer in peers.items():
                cell = Cell(name, op, conns)
                try:
                    if isinstance(peer, Pgbench):
                        cell = peer.run_cell(op, conns, seconds, workdir)
                        raise _Done
                    if warmup > 0:
                        run_wrk(wrk, peer.url, scripts[name, op], conns, warmup, latency=False)
                    output = run_wrk(wrk, peer.url, scripts[name, op], conns, seconds)
                    parse_wrk(output, cell)
                except _Done:
                    pass
                except (RuntimeError, subprocess.TimeoutExpired) as exc:
                    cell.note = str(exc)[:200]
                cells.append(cell)
                print(f"  {op:<9} c={conns:<3} {name:<9} {_rate(cell.ops_per_s):>10} ops/s  "
                      f"p50 {_us(cell.p50_us):>9}  p99 {_us(cell.p99_us):>9}  {cell.note}",
                      flush=True)  # fmt: skip
    return cells


class _Done(Exception):
    """A cell measured without wrk."""


def _rate(value: float | None) -> str:
    return "—" if value is None else f"{value:,.0f}"


def _us(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:,.0f} µs" if value < 10_000 else f"{value / 1000:,.1f} ms"


def ratio(
    cells: list[Cell], op: str, conns: int, peer: str, ours: str = "runstate"
) -> float | None:
    mine = _find(cells, ours, op, conns)
    theirs = _find(cells, peer, op, conns)
    if mine is None or theirs is None or not mine.ops_per_s or not theirs.ops_per_s:
        return None
    return mine.ops_per_s / theirs.ops_per_s


def _find(cells: list[Cell], peer: str, op: str, conns: int) -> Cell | None:
    for cell in cells:
        if (cell.peer, cell.op, cell.connections) == (peer, op, conns):
            return cell
    return None


def markdown(
    cells: list[Cell],
    peers: dict[str, HttpPeer],
    skipped: dict[str, str],
    info: dict[str, Any],
    settings: dict[str, Any],
) -> str:
    names = [p for p in PEER_ORDER if p in peers]
    others = [p for p in names if p not in ("runstate", "runstate-pg", "pgbench")]
    pg = "runstate-pg" in peers and "pgbench" in peers
    lines = [
        "# HTTP benchmark: runstate serve vs webdis, etcd and a bare ASGI app",
        "",
        machine_markdown(info),
        f"- wrk, 1 thread, keep-alive; {settings['seconds']} s per cell after a "
        f"{settings['warmup']} s warm-up; {N_KEYS} keys of 100-byte values, drawn at random; "
        f"server workers: {settings['workers']}; "
        + (
            "servers pinned to the last core, wrk to the first"
            if settings.get("pinned")
            else "not pinned to cores"
        ),
        "",
        "Peers:",
        "",
    ]
    for name in names:
        lines.append(f"- **{name}** ({peers[name].version}): {peers[name].note}")
    for name, why in skipped.items():
        lines.append(f"- **{name}**: skipped: {why}")
    header = ["op", "conns"] + [f"{n} ops/s (p50 / p99)" for n in names]
    header += [f"runstate/{n}" for n in others]
    header += ["runstate-pg/pgbench"] if pg else []
    lines += ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    ops = list(dict.fromkeys(c.op for c in cells))
    conns_list = list(dict.fromkeys(c.connections for c in cells))
    for op in ops:
        for conns in conns_list:
            if all(_find(cells, name, op, conns) is None for name in names):
                continue  # a cell --quick does not run
            row = [op, str(conns)]
            for name in names:
                cell = _find(cells, name, op, conns)
                if cell is None or cell.ops_per_s is None:
                    row.append("—" + (f" ({cell.note})" if cell and cell.note else ""))
                else:
                    row.append(f"{_rate(cell.ops_per_s)} ({_us(cell.p50_us)} / {_us(cell.p99_us)})")
            row += [ratio_text(ratio(cells, op, conns, n)) for n in others]
            if pg:
                row.append(ratio_text(ratio(cells, op, conns, "pgbench", "runstate-pg")))
            lines.append("| " + " | ".join(row) + " |")
    lines += ["", "Targets (QUALITY.md §1):", ""]
    for t in TARGETS:
        got = ratio(cells, t.op, t.connections, t.peer, t.ours)
        verdict = "—" if got is None else ("met" if got >= t.target else "missed")
        lines.append(
            f"- {t.op}, c={t.connections}: {t.ours}/{t.peer} ≥ {t.target}x: {ratio_text(got)} "
            f"({verdict})"
        )
    op, conns, limit = P50_TARGET_US
    cell = _find(cells, "runstate", op, conns)
    p50 = cell.p50_us if cell else None
    verdict = "—" if p50 is None else ("met" if p50 <= limit else "missed")
    lines.append(f"- {op}, c={conns}: p50 ≤ {limit:.0f} µs: {_us(p50)} ({verdict})")
    return "\n".join(lines) + "\n"


def check(cells: list[Cell], margin: float) -> tuple[list[str], list[str]]:
    """(failures, notes): the targets whose ratio is below its floor by more than `margin`;
    targets whose peers were not measured are noted, not failed (a peer may be missing)."""
    failures, notes = [], []
    for t in TARGETS:
        got = ratio(cells, t.op, t.connections, t.peer, t.ours)
        name = f"{t.op}, c={t.connections}: {t.ours}/{t.peer}"
        if got is None:
            notes.append(f"{name}: not measured here")
        elif got < t.floor * (1 - margin):
            failures.append(
                f"{name} {got:.2f}x < {t.floor * (1 - margin):.2f}x (floor {t.floor}x less "
                f"{margin:.0%}; target {t.target}x)"
            )
    return failures, notes


def pin_cores(enabled: bool) -> bool:
    """Servers on the last usable core, wrk (and pgbench) on the first; False if not done
    (not asked, fewer than 2 cores, or no taskset)."""
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if not enabled or len(cores) < 2 or shutil.which("taskset") is None:
        return False
    HttpPeer.pin = ["taskset", "-c", str(cores[-1])]
    Wrk.pin = ["taskset", "-c", str(cores[0])]
    return True


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="runstate HTTP benchmark (wrk)")
    parser.add_argument(
        "--quick", action="store_true", help="the checked cells only: c=1,64, 1 s each"
    )
    parser.add_argument("--check", action="store_true", help="exit 1 if a target's floor is missed")
    parser.add_argument("--margin", type=float, default=DEFAULT_MARGIN)
    parser.add_argument("--seconds", type=float, help="timed seconds per cell (2, quick 1)")
    parser.add_argument("--warmup", type=float, help="warm-up seconds per cell (0.5)")
    parser.add_argument("--connections", help="comma-separated (1,16,64; quick 1,64)")
    parser.add_argument("--peers", help="comma-separated (all; quick runstate,webdis,etcd + pg)")
    parser.add_argument("--ops", default=",".join(OPS), help=f"of {','.join(OPS)}")
    parser.add_argument("--workers", type=int, default=1, help="server processes per peer")
    parser.add_argument(
        "--db", default=os.environ.get("RUNSTATE_BENCH_POSTGRES"), help="postgresql://... for "
        "the runstate-pg and pgbench rows (default: $RUNSTATE_BENCH_POSTGRES)"
    )  # fmt: skip
    parser.add_argument(
        "--pin", action="store_true", help="servers on the last core, wrk on the first"
    )
    parser.add_argument("--tmpdir", help="where the peers' data goes")
    parser.add_argument("--out", type=Path, help="results directory (bench/results)")
    args = parser.parse_args(argv)
    seconds = args.seconds or (1.0 if args.quick else 2.0)
    warmup = args.warmup if args.warmup is not None else 0.5
    default_conns = "1,64" if args.quick else ",".join(map(str, CONNECTIONS))
    connections = [int(c) for c in (args.connections or default_conns).split(",") if c]
    quick_peers = "runstate,webdis,etcd,runstate-pg,pgbench"
    wanted = (args.peers or (quick_peers if args.quick else ",".join(PEER_ORDER))).split(",")
    ops = [op for op in args.ops.split(",") if op]
    unknown = set(ops) - set(OPS) or set(wanted) - set(PEERS)
    if unknown:
        parser.error(f"unknown: {', '.join(sorted(unknown))}")
    OnPostgres.postgres = args.db
    pinned = pin_cores(args.pin)

    wrk = shutil.which("wrk")
    if wrk is None:
        print("bench.http: skipped: no wrk binary (make bench-deps, or apt-get install wrk)")
        return 0
    info = machine()
    workdir = Path(tempfile.mkdtemp(prefix="runstate-bench-http-", dir=args.tmpdir))
    peers: dict[str, HttpPeer] = {}
    skipped: dict[str, str] = {}
    try:
        for name in [p for p in PEER_ORDER if p in wanted]:
            peer = PEERS[name](workdir, args.workers)
            why = peer.missing()
            if why is None:
                try:
                    print(f"starting {name} on 127.0.0.1:{peer.port} ...", flush=True)
                    peer.start()
                    peers[name] = peer
                    continue
                except Exception as exc:  # a peer that fails to start is skipped, not fatal
                    peer.stop()
                    why = f"did not start: {exc}"
            skipped[name] = why
            print(f"bench.http: skipping {name}: {why}", flush=True)
        # quick: 1 connection only where a target names it (GET latency)
        skip = QUICK_SKIP if args.quick and not args.connections else frozenset()
        cells = measure(peers, ops, connections, seconds, warmup, wrk, workdir, skip)
    finally:
        for peer in peers.values():
            peer.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    settings = {"seconds": seconds, "warmup": warmup, "workers": args.workers, "pinned": pinned}
    failures, notes = check(cells, args.margin) if args.check else ([], [])
    report = markdown(cells, peers, skipped, info, settings)
    if args.check:
        verdict = "FAILED" if failures else "passed"
        report += f"\nCheck (floors less {args.margin:.0%}): **{verdict}**\n\n"
        report += "".join(f"- {line}\n" for line in failures + notes)
    data = {
        "machine": info,
        "settings": settings,
        "peers": {n: {"version": p.version, "note": p.note} for n, p in peers.items()},
        "skipped": skipped,
        "cells": [asdict(c) for c in cells],
        "targets": [asdict(t) for t in TARGETS],
        "check": {"failures": failures, "notes": notes} if args.check else None,
    }
    return publish("http", timestamp(), data, report, args.out, failures)


if __name__ == "__main__":
    sys.exit(main())
