"""Library mode: runstate embedded against diskcache, sqlitedict and redis-py, in one run.

    python -m bench.library [--quick] [--check] [--seconds S] [--peers a,b] [--ops a,b]

runstate runs in both durability modes: ``runstate`` (fast: crash-safe, not fsynced) against
diskcache, sqlitedict and Redis in memory, and ``runstate-durable`` (fsync before each write
returns) against ``redis-fsync`` (Redis with ``appendfsync always``), on the write rows.

Each row of the matrix (operation x value size x key space x processes) is measured for every
peer back to back, in `--rounds` rounds whose peer order alternates, so the ratios compare
figures taken seconds apart on the same machine and a burst of load from elsewhere lands on
one round, not on one peer. Per round: a warm-up (untimed), then a timed run of `--seconds`,
each operation timed on its own with `time.perf_counter_ns` into a preallocated list; a
cell's ops/s is the median over rounds of operations / time spent inside them (set-up between
batches excluded), its p50/p99 pool every round. Multi-process rows run in a pool of spawned
processes kept per peer and data set. Every peer gets a fresh temp directory per value size
(Redis: its own in-memory server, or only the harness's keys removed from a given one).

Results: bench/results/library-<UTC timestamp>.json and .md, and bench/results/latest-library.md.
`--check` exits 1 if a ratio of `GUARDS` (runstate / a peer, 1 process) falls below its floor by
more than `--margin`, printing the failing rows.
"""

from __future__ import annotations

import argparse
import gc
import multiprocessing
import queue
import random
import shutil
import statistics
import string
import sys
import tempfile
import time
from array import array
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

if not __package__:  # run as `python bench/library.py`: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.peers import (
    PEERS,
    REDIS_PEERS,
    Kind,
    Peer,
    PeerSpec,
    RedisPeer,
    RedisServer,
    open_peer,
    peer_version,
    unavailable,
)
from bench.report import (
    machine,
    machine_markdown,
    percentile_us,
    publish,
    ratio_text,
    timestamp,
)


@dataclass(frozen=True)
class Guard:
    """A ratio `make bench-quick` checks: runstate ops/s ÷ `peer` ops/s on `op` (1 process,
    100 B values, every key space run). `target` is QUALITY.md §1's; `floor` what the check
    holds the product to: the target where it is reached, else the level reached now (the
    guard then catches a regression while the target stays open, and says so)."""

    op: str
    peer: str
    target: float
    floor: float


GUARDS = (
    Guard("get", "diskcache", 1.0, 1.0),
    Guard("get", "redis", 5.0, 5.0),
    Guard("set", "diskcache", 3.0, 1.3),
    Guard("increment", "diskcache", 1.5, 1.0),
)
DEFAULT_MARGIN = 0.10

PEER_ORDER = ("runstate", "runstate-durable", "diskcache", "sqlitedict", "redis", "redis-fsync")
# The durable pair runs the rows that write; a read does not depend on the durability mode.
DURABLE_PAIR = ("runstate-durable", "redis-fsync")
READ_OPS = ("get", "get_miss")
N_KEYS = 10_000
HOT, WIDE = "hot", "10k"
VALUE_SIZES = (100, 4096)
# A hot list or set is put back to its starting content after this many operations, so the
# rows measure appending to a value of about the row's size, not to an ever longer one.
HOT_RESET_EVERY = 10
# Aim for timing batches of ~10 ms: the deadline is checked between batches only.
BATCH_SECONDS = 0.01
MAX_BATCH = 256
MIX_LENGTH, MIX_WRITES = 1009, 101  # 10% writes

OP_LABELS = {
    "get": "get (hit)",
    "get_miss": "get (miss)",
    "set": "set",
    "increment": "increment",
    "append": "append",
    "add_to_set": "add_to_set",
    "mix": "90/10 get/set",
}
# Operations whose cost depends on the value size; the others run once, in the 100 B group.
SIZED_OPS = ("get", "set", "append", "add_to_set", "mix")
# Key prefix (all peers use the same key names) and what those keys hold.
_DATA: dict[str, tuple[str, Kind | None]] = {
    "get": ("v", "value"),
    "set": ("v", "value"),
    "mix": ("v", "value"),
    "get_miss": ("m", None),
    "increment": ("c", "counter"),
    "append": ("l", "list"),
    "add_to_set": ("s", "set"),
}


@dataclass(frozen=True)
class Row:
    op: str
    value_bytes: int | None  # None where the value size plays no part
    keys: str  # HOT or WIDE
    procs: int

    @property
    def group(self) -> int:
        """The data set (value size) the row runs against."""
        return self.value_bytes or VALUE_SIZES[0]

    @property
    def label(self) -> str:
        value = _size_text(self.value_bytes)
        return f"{OP_LABELS[self.op]}, {value}, {self.keys} keys, {self.procs} proc"


def _size_text(size: int | None) -> str:
    if size is None:
        return "—"
    return f"{size // 1024} KiB" if size % 1024 == 0 else f"{size} B"


def _rows(ops: tuple[str, ...], size: int, procs: int) -> list[Row]:
    """Each of `ops` on hot and 10k keys; an op the value size plays no part in runs only in
    the first (100 B) data set."""
    return [
        Row(op, size if op in SIZED_OPS else None, keys, procs)
        for op in ops
        if op in SIZED_OPS or size == VALUE_SIZES[0]
        for keys in (HOT, WIDE)
    ]


def full_matrix() -> list[Row]:
    rows: list[Row] = []
    for size in VALUE_SIZES:
        rows += _rows(tuple(OP_LABELS), size, 1) + _rows(("set", "increment"), size, 2)
    return rows


def quick_matrix() -> list[Row]:
    return _rows(("get", "set", "increment"), VALUE_SIZES[0], 1)


# --- data ------------------------------------------------------------------------------------


def key_names(prefix: str) -> tuple[str, list[str]]:
    return f"rsb:{prefix}:hot", [f"rsb:{prefix}:{i:05d}" for i in range(N_KEYS)]


def make_value(size: int, variant: int = 0) -> str:
    """A string of `size` ASCII characters (JSON: size + 2 bytes); variants differ."""
    rng = random.Random(size * 1000 + variant)
    return "".join(rng.choices(string.ascii_letters + string.digits, k=size))


def starting_members(size: int) -> list[str]:
    """List/set members whose JSON array is about `size` bytes (18 bytes a member)."""
    return [f"i{j:014d}" for j in range(max(1, size // 18))]


def starting_content(kind: Kind, size: int) -> Any:
    if kind == "value":
        return make_value(size)
    if kind == "counter":
        return 0
    return starting_members(size)


@dataclass
class Plan:
    """What one cell runs: `method` of the peer called with keys[n % len] and args[n % len]."""

    op: str
    keys: list[str]
    args: list[Any]
    reset: tuple[Kind, dict[str, Any]] | None = None  # reloaded between batches (untimed)


def build_plan(row: Row, seed: int) -> Plan:
    """The cell's operations. `seed` (one per round and process) shuffles the keys and makes
    the added elements new, so that every add_to_set really adds. The counts of values (17)
    and of mix entries (1009) share no factor with the 10k keys: each pass over the keys
    writes each key a value other than the one it holds, and mixes reads and writes per key."""
    prefix, kind = _DATA[row.op]
    hot, wide = key_names(prefix)
    rng = random.Random(seed)
    keys = [hot] if row.keys == HOT else rng.sample(wide, len(wide))
    size = row.group
    args: list[Any] = [None]
    if row.op in ("set", "mix"):
        writes = [make_value(size, variant) for variant in range(1, 18)]
        args = writes
        if row.op == "mix":
            args = [writes[i % 17] if i < MIX_WRITES else None for i in range(MIX_LENGTH)]
            rng.shuffle(args)
    elif row.op in ("append", "add_to_set"):
        args = [f"a{seed:04d}{j:010d}" for j in range(4096)]
    reset = None
    if kind in ("list", "set") and row.keys == HOT:
        reset = (kind, {hot: starting_content(kind, size)})
    return Plan(row.op, keys, args, reset)


def load_data(peer: Peer, rows: list[Row], size: int) -> None:
    kinds = {_DATA[row.op] for row in rows}
    for prefix, kind in sorted(kinds, key=str):
        if kind is None:
            continue
        hot, wide = key_names(prefix)
        content = starting_content(kind, size)
        peer.load(kind, dict.fromkeys([hot, *wide], content))


# --- timing ----------------------------------------------------------------------------------


def _operation(peer: Peer, op: str) -> Callable[[str, Any], Any]:
    if op == "mix":
        get, set_ = peer.get, peer.set

        def mix(key: str, arg: Any) -> Any:
            return get(key, None) if arg is None else set_(key, arg)

        return mix
    return getattr(peer, {"get_miss": "get"}.get(op, op))  # type: ignore[no-any-return]


def run_for(
    peer: Peer, plan: Plan, seconds: float, batch: int, capacity: int, start: int = 0
) -> tuple[int, int, list[int]]:
    """Run the plan from its `start`-th operation for `seconds`: (operations, ns spent inside
    them, each one's latency ns)."""
    fn = _operation(peer, plan.op)
    keys, args, reset = plan.keys, plan.args, plan.reset
    if reset is not None:
        batch = min(batch, HOT_RESET_EVERY)
    n_keys, n_args = len(keys), len(args)
    latencies = [0] * max(capacity, batch)
    clock = time.perf_counter_ns
    n = busy = 0
    deadline = clock() + int(seconds * 1e9)
    while True:
        began = clock()
        if began >= deadline:
            break
        if n + batch > len(latencies):
            latencies.extend([0] * max(batch, len(latencies)))
        for i in range(n, n + batch):
            j = start + i
            key = keys[j % n_keys]
            arg = args[j % n_args]
            t0 = clock()
            fn(key, arg)
            latencies[i] = clock() - t0
        busy += clock() - began
        n += batch
        if reset is not None:
            peer.load(*reset)
    del latencies[n:]
    return n, busy, latencies


def warm_and_run(
    peer: Peer, plan: Plan, seconds: float, warmup: float
) -> tuple[int, int, list[int]]:
    """Warm up for `warmup` s (which also sizes the batches and the latency list), then time."""
    warm, busy, _ = run_for(peer, plan, warmup, 8, 4096)
    rate = warm / busy * 1e9 if busy else 1000.0
    batch = max(1, min(MAX_BATCH, int(rate * BATCH_SECONDS)))
    capacity = int(rate * seconds * 1.25) + MAX_BATCH
    return run_for(peer, plan, seconds, batch, capacity, start=warm)


# One timed run of one process: (operations, ns spent inside them, each one's latency in ns).
Run = tuple[int, int, list[int]]


@dataclass
class Cell:
    """One peer on one row: the median of the rounds' rates, latencies pooled over rounds."""

    peer: str
    ops: int = 0
    ops_per_s: float = 0.0
    p50_us: float | None = None
    p99_us: float | None = None
    round_ops_per_s: list[float] = field(default_factory=list)
    error: str | None = None


def summarize(peer: str, rounds: list[list[Run]]) -> Cell:
    """A round's rate is the sum of its processes' rates; the cell's is the rounds' median."""
    rates = [sum(n / busy * 1e9 for n, busy, _ in runs if busy) for runs in rounds]
    latencies = sorted(x for runs in rounds for _, _, lat in runs for x in lat)
    return Cell(
        peer=peer,
        ops=sum(n for runs in rounds for n, _, _ in runs),
        ops_per_s=statistics.median(rates) if rates else 0.0,
        p50_us=percentile_us(latencies, 0.50),
        p99_us=percentile_us(latencies, 0.99),
        round_ops_per_s=[round(rate, 1) for rate in rates],
    )


def _error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:300]


def measure(peer: Peer, row: Row, seconds: float, warmup: float, seed: int) -> list[Run]:
    gc.collect()
    return [warm_and_run(peer, build_plan(row, seed), seconds, warmup)]


def _serve(spec: PeerSpec, barrier: Any, tasks: Any, results: Any) -> None:
    """A worker of a `WorkerPool`: open the peer once, then time each task it is sent,
    starting at the barrier with the other workers, until it is sent None."""
    try:
        peer = open_peer(spec)
    except BaseException as exc:
        results.put((None, "error", _error_text(exc)))
        return
    try:
        while (task := tasks.get()) is not None:
            task_id, row, seconds, warmup, seed = task
            try:
                plan = build_plan(row, seed)
                barrier.wait(timeout=120)
                n, busy, latencies = warm_and_run(peer, plan, seconds, warmup)
                results.put((task_id, "ok", n, busy, array("q", latencies).tobytes()))
            except BaseException as exc:
                barrier.abort()
                results.put((task_id, "error", _error_text(exc)))
    finally:
        peer.close()


class WorkerPool:
    """`procs` processes with the peer open, kept for every multi-process row of a data set:
    starting Python and opening the peer once, not once per cell and round."""

    def __init__(self, spec: PeerSpec, procs: int) -> None:
        # spawn, not fork: a forked child would share the parent's open SQLite handles.
        ctx = multiprocessing.get_context("spawn")
        self.procs = procs
        self._barrier = ctx.Barrier(procs)
        self._results = ctx.Queue()
        self._tasks = [ctx.Queue() for _ in range(procs)]
        self._processes = [
            ctx.Process(target=_serve, args=(spec, self._barrier, tasks, self._results))
            for tasks in self._tasks
        ]
        self._task_id = 0
        for process in self._processes:
            process.start()

    def run(self, row: Row, seconds: float, warmup: float, seed: int) -> list[Run]:
        """One timed run in every process at once; raises if any of them failed."""
        if self._barrier.broken:
            self._barrier.reset()
        self._task_id += 1
        for index, tasks in enumerate(self._tasks):
            tasks.put((self._task_id, row, seconds, warmup, seed + index))
        runs: list[Run] = []
        errors: list[str] = []
        deadline = time.monotonic() + seconds + warmup + 180
        while len(runs) + len(errors) < self.procs:
            try:
                message = self._results.get(timeout=1.0)
            except queue.Empty:
                if time.monotonic() > deadline:
                    raise RuntimeError("a worker process did not report in time") from None
                if not all(process.is_alive() for process in self._processes):
                    raise RuntimeError("a worker process exited") from None
                continue
            if message[0] not in (None, self._task_id):
                continue  # a late answer to an earlier, failed run
            if message[1] == "error":
                errors.append(message[2])
                continue
            _, _, n, busy, raw = message
            latencies = array("q")
            latencies.frombytes(raw)
            runs.append((n, busy, latencies.tolist()))
        if errors:
            raise RuntimeError(errors[0])
        return runs

    def close(self) -> None:
        for tasks, process in zip(self._tasks, self._processes, strict=True):
            if process.is_alive():
                tasks.put(None)
        for process in self._processes:
            process.join(timeout=30)
            if process.is_alive():
                process.terminate()
                process.join()


# --- the run ---------------------------------------------------------------------------------


@dataclass
class RowResult:
    row: Row
    cells: dict[str, Cell] = field(default_factory=dict)

    def ratio(self, peer: str, ours_name: str = "runstate") -> float | None:
        """runstate ops/s (or `ours_name`'s) divided by `peer` ops/s, when both were measured."""
        ours, theirs = self.cells.get(ours_name), self.cells.get(peer)
        if ours is None or theirs is None or ours.error or theirs.error:
            return None
        if not ours.ops_per_s or not theirs.ops_per_s:
            return None
        return ours.ops_per_s / theirs.ops_per_s


@dataclass
class Group:
    """The peers opened on one data set (one value size), each in a fresh place."""

    size: int
    peers: dict[str, Peer] = field(default_factory=dict)
    specs: dict[str, PeerSpec] = field(default_factory=dict)
    dirs: list[str] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)
    pools: dict[tuple[str, int], WorkerPool] = field(default_factory=dict)

    def pool(self, name: str, procs: int) -> WorkerPool:
        key = (name, procs)
        if key not in self.pools:
            self.pools[key] = WorkerPool(self.specs[name], procs)
        return self.pools[key]

    def close(self) -> None:
        for pool in self.pools.values():
            pool.close()
        for peer in self.peers.values():
            try:
                peer.close()
            except Exception as exc:
                print(f"  closing {peer.name}: {_error_text(exc)}", flush=True)
        for directory in self.dirs:
            shutil.rmtree(directory, ignore_errors=True)


def row_peers(row: Row, names: list[str]) -> list[str]:
    """The peers measured on `row`."""
    if row.op in READ_OPS:
        return [name for name in names if name not in DURABLE_PAIR]
    return names


def open_group(
    size: int, rows: list[Row], names: list[str], redis_urls: dict[str, str], tmpdir: str | None
) -> Group:
    group = Group(size)
    for name in names:
        if name in REDIS_PEERS:
            location = redis_urls[name]
        else:
            location = tempfile.mkdtemp(prefix=f"runstate-bench-{name}-", dir=tmpdir)
            group.dirs.append(location)
        spec = PeerSpec(name, location)
        started = time.perf_counter()
        try:
            peer = open_peer(spec)
            if isinstance(peer, RedisPeer):
                peer.forget("rsb:*")
            group.peers[name] = peer
            load_data(peer, rows, size)
        except Exception as exc:
            group.errors[name] = _error_text(exc)
            print(f"  {name}: set-up failed: {group.errors[name]}", flush=True)
            continue
        group.specs[name] = spec
        print(f"  {name}: data loaded in {time.perf_counter() - started:.1f} s", flush=True)
    return group


def _progress(row: Row, cell: Cell) -> str:
    head = f"{row.label:<40} {cell.peer:<10}"
    if cell.error:
        return f"{head} failed: {cell.error}"
    return (
        f"{head} {cell.ops_per_s:>10,.0f} ops/s  p50 {_us(cell.p50_us):>8} µs"
        f"  p99 {_us(cell.p99_us):>8} µs"
    )


def run_row(
    group: Group, row: Row, names: list[str], seconds: float, warmup: float, rounds: int
) -> RowResult:
    """Every peer on `row`, `rounds` times over, alternating the order of the peers so that a
    burst of load from elsewhere on the machine lands on one round, not on one peer."""
    measured: dict[str, list[list[Run]]] = {name: [] for name in names}
    errors = {name: f"set-up failed: {reason}" for name, reason in group.errors.items()}
    for index in range(rounds):
        order = names if index % 2 == 0 else names[::-1]
        # Later rounds only need the caches warm again, not the batch size found.
        warm = warmup if index == 0 else warmup / 4
        seed = 1 + index * row.procs
        for name in order:
            if name in errors:
                continue
            try:
                if row.procs == 1:
                    runs = measure(group.peers[name], row, seconds, warm, seed)
                else:
                    runs = group.pool(name, row.procs).run(row, seconds, warm, seed)
            except Exception as exc:
                errors[name] = _error_text(exc)
                continue
            measured[name].append(runs)
    result = RowResult(row)
    for name in names:
        if name in errors:
            result.cells[name] = Cell(name, error=errors[name])
        else:
            result.cells[name] = summarize(name, measured[name])
    return result


def run_matrix(
    rows: list[Row],
    names: list[str],
    redis_urls: dict[str, str],
    seconds: float,
    warmup: float,
    rounds: int,
    tmpdir: str | None,
) -> list[RowResult]:
    results: list[RowResult] = []
    for size in sorted({row.group for row in rows}):
        group_rows = [row for row in rows if row.group == size]
        print(f"data set: {_size_text(size)} values, {N_KEYS:,} keys + 1 hot key", flush=True)
        group = open_group(size, group_rows, names, redis_urls, tmpdir)
        try:
            for row in group_rows:
                result = run_row(group, row, row_peers(row, names), seconds, warmup, rounds)
                for cell in result.cells.values():
                    print(_progress(row, cell), flush=True)
                results.append(result)
        finally:
            group.close()
    return results


def check(results: list[RowResult], margin: float) -> list[str]:
    """The guards of `GUARDS` whose ratio is below its floor by more than `margin`."""
    failures: list[str] = []
    checked = 0
    for result in results:
        row = result.row
        for guard in GUARDS:
            if guard.op != row.op or row.procs != 1 or row.group != VALUE_SIZES[0]:
                continue
            checked += 1
            ratio = result.ratio(guard.peer)
            floor = guard.floor * (1 - margin)
            if ratio is None:
                failures.append(f"{row.label}: no ratio against {guard.peer} (not measured)")
            elif ratio < floor:
                failures.append(
                    f"{row.label}: runstate/{guard.peer} {ratio:.2f}x < {floor:.2f}x "
                    f"(floor {guard.floor:.1f}x less {margin:.0%}; target {guard.target:.1f}x)"
                )
    if not checked:
        failures.append("no get, set or increment row with 1 process was run")
    return failures


# --- report ----------------------------------------------------------------------------------


def _us(value: float | None) -> str:
    return "—" if value is None else f"{value:,.1f}"


def _rate(cell: Cell | None) -> str:
    return "—" if cell is None or cell.error else f"{cell.ops_per_s:,.0f}"


def markdown(data: dict[str, Any], results: list[RowResult], names: list[str]) -> str:
    lines = [f"# runstate library benchmark, {data['stamp']}", ""]
    lines += [machine_markdown(data["machine"]).rstrip(), ""]
    config = data["config"]
    lines += [
        f"Mode: {'quick' if config['quick'] else 'full'}; each cell timed in {config['rounds']} "
        f"round{'s' if config['rounds'] != 1 else ''} of {config['seconds']} s "
        f"(first warm-up {config['warmup']} s), median rate reported; "
        f"run took {data['duration_s']:.0f} s.",
        "",
        "| peer | version | set-up |",
        "|---|---|---|",
    ]
    for name, peer in data["peers"].items():
        lines.append(f"| {name} | {peer['version']} | {peer['note']} |")
    for name, reason in data["skipped"].items():
        lines.append(f"| {name} | — | skipped: {reason} |")
    others = [name for name in names if name not in ("runstate", *DURABLE_PAIR)]
    durable = all(name in names for name in DURABLE_PAIR)
    lines += [
        "",
        "## runstate against each peer",
        "",
        "ops/s of runstate, and runstate ops/s ÷ peer ops/s (above 1.00x runstate is faster); "
        "the durable pair (fsync before each write returns) in the last two columns.",
        "",
        "| operation | value | keys | procs | runstate ops/s | "
        + " | ".join(f"÷ {name}" for name in others)
        + (" | runstate-durable ops/s | ÷ redis-fsync" if durable else "")
        + " |",
        "|---|---|---|---|---:|" + "---:|" * (len(others) + (2 if durable else 0)),
    ]
    for result in results:
        row = result.row
        ratios = " | ".join(ratio_text(result.ratio(name)) for name in others)
        extra = ""
        if durable:
            pair = result.ratio("redis-fsync", "runstate-durable")
            extra = f" | {_rate(result.cells.get('runstate-durable'))} | {ratio_text(pair)}"
        lines.append(
            f"| {OP_LABELS[row.op]} | {_size_text(row.value_bytes)} | {row.keys} | {row.procs} "
            f"| {_rate(result.cells.get('runstate'))} | {ratios}{extra} |"
        )
    lines += [
        "",
        "## Every cell",
        "",
        "| operation | value | keys | procs | peer | ops/s | p50 µs | p99 µs | runstate ÷ peer |",
        "|---|---|---|---|---|---:|---:|---:|---:|",
    ]
    for result in results:
        row = result.row
        head = f"| {OP_LABELS[row.op]} | {_size_text(row.value_bytes)} | {row.keys} | {row.procs}"
        for name, cell in result.cells.items():
            if cell.error:
                lines.append(f"{head} | {name} | failed: {cell.error} | | | |")
                continue
            if name == "runstate":
                ratio = ""
            elif name == "redis-fsync":
                ratio = ratio_text(result.ratio(name, "runstate-durable")) + " (durable)"
            else:
                ratio = ratio_text(result.ratio(name))
            lines.append(
                f"{head} | {name} | {cell.ops_per_s:,.0f} | {_us(cell.p50_us)} "
                f"| {_us(cell.p99_us)} | {ratio} |"
            )
    if data["check"] is not None:
        result_check = data["check"]
        lines += ["", "## Check", ""]
        guards = ", ".join(
            f"{g['op']} ÷ {g['peer']} ≥ {g['floor']:.1f}x (target {g['target']:.1f}x)"
            for g in result_check["guards"]
        )
        lines.append(
            f"1 process, 100 B values: {guards}, each less a margin of "
            f"{result_check['margin']:.0%}: **{'passed' if result_check['passed'] else 'FAILED'}**"
        )
        lines += [f"- {failure}" for failure in result_check["failures"]]
    lines += ["", "## Method", "", METHOD, ""]
    return "\n".join(lines)


METHOD = f"""\
Every row is measured for every peer back to back, in rounds whose peer order alternates; a
cell's ops/s is the median of its rounds, its p50/p99 pool every round's operations (2
processes: spawned together, started at a barrier, rates added). Each round warms up (untimed)
and then runs for the set time; each operation is timed alone with `time.perf_counter_ns`, and
ops/s is operations divided by the time spent inside them. Values are ASCII strings of the
row's size. *hot* is one key; *10k* cycles through {N_KEYS:,} keys in a shuffled order. *get
(miss)* reads keys that were never written. *append* and *add_to_set* add a 15-character
string to a list/set that starts at about the row's size; the hot key is put back to that
start every {HOT_RESET_EVERY} operations (untimed). *90/10* is 90% get (hit) and 10% set,
shuffled. Each peer works in a fresh temp directory per value size (Redis: its own server in
memory). The machines are shared: compare the ratios in one run, not absolute figures across
runs."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="runstate library-mode benchmark")
    parser.add_argument("--quick", action="store_true", help="reduced matrix, ~1 min")
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if a ratio of GUARDS falls below its floor"
    )
    parser.add_argument("--margin", type=float, default=DEFAULT_MARGIN)
    parser.add_argument("--seconds", type=float, help="timed seconds per cell and round (0.4)")
    parser.add_argument("--rounds", type=int, help="rounds per row, median taken (2, quick 3)")
    parser.add_argument("--warmup", type=float, help="first warm-up per cell (0.3, quick 0.2)")
    parser.add_argument("--peers", default=",".join(PEER_ORDER), help="comma-separated")
    parser.add_argument("--ops", help=f"only these operations, of {','.join(OP_LABELS)}")
    parser.add_argument("--redis-url", help="an existing Redis to use instead of our own")
    parser.add_argument("--tmpdir", help="where the peers' temp directories go")
    parser.add_argument("--out", type=Path, help="results directory (bench/results)")
    args = parser.parse_args(argv)
    seconds = args.seconds or 0.4
    rounds = max(1, args.rounds or (3 if args.quick else 2))
    warmup = args.warmup if args.warmup is not None else (0.2 if args.quick else 0.3)
    rows = quick_matrix() if args.quick else full_matrix()
    if args.ops:
        wanted_ops = set(args.ops.split(","))
        rows = [row for row in rows if row.op in wanted_ops]
    wanted = [name for name in args.peers.split(",") if name]
    wanted.sort(key=lambda name: PEER_ORDER.index(name) if name in PEER_ORDER else len(PEER_ORDER))
    unknown = [name for name in wanted if name not in PEERS]
    if unknown:
        parser.error(f"unknown peers {unknown}; known: {', '.join(PEERS)}")

    started, stamp, info = time.perf_counter(), timestamp(), machine()
    print(machine_markdown(info), end="", flush=True)
    skipped: dict[str, str] = {}
    for name in wanted:
        reason = unavailable(name)
        if reason:
            skipped[name] = reason
    servers: dict[str, RedisServer] = {}
    try:
        for name, fsync in REDIS_PEERS.items():
            if name in wanted and name not in skipped:
                given = args.redis_url if not fsync else None
                server = servers[name] = RedisServer(given, fsync=fsync)
                if server.url is None:
                    skipped[name] = server.origin
        names = [name for name in wanted if name not in skipped]
        for name, reason in skipped.items():
            print(f"skip {name}: {reason}", flush=True)
        urls = {name: server.url for name, server in servers.items() if server.url}
        for name in urls:
            print(f"{name}: {servers[name].origin}", flush=True)
        results = run_matrix(rows, names, urls, seconds, warmup, rounds, args.tmpdir)
        peers = {name: {"version": peer_version(name), "note": PEERS[name].note} for name in names}
        for name, url in urls.items():
            if name in names:
                redis_peer = RedisPeer(url)
                peers[name]["version"] += f" (server {redis_peer.server_version()})"
                peers[name]["note"] += f" {servers[name].origin}."
                redis_peer.close()
    finally:
        for server in servers.values():
            server.stop()

    failures = check(results, args.margin) if args.check else []
    data: dict[str, Any] = {
        "stamp": stamp,
        "machine": info,
        "config": {
            "quick": args.quick,
            "seconds": seconds,
            "rounds": rounds,
            "warmup": warmup,
            "keys": N_KEYS,
            "hot_reset_every": HOT_RESET_EVERY,
        },
        "duration_s": round(time.perf_counter() - started, 1),
        "peers": peers,
        "skipped": skipped,
        "rows": [
            {
                **asdict(r.row),
                "label": r.row.label,
                "results": {name: asdict(cell) for name, cell in r.cells.items()},
                "ratios": {name: r.ratio(name) for name in names if name != "runstate"},
            }
            for r in results
        ],
        "check": None
        if not args.check
        else {
            "guards": [asdict(guard) for guard in GUARDS],
            "margin": args.margin,
            "passed": not failures,
            "failures": failures,
        },
    }
    text = markdown(data, results, names)
    return publish("library", stamp, data, text, args.out, failures)


if __name__ == "__main__":
    sys.exit(main())
