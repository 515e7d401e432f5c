"""Scale: how runstate's throughput and memory change as the store grows, and with value size.

    python -m bench.scale [--quick] [--max-keys N] [--peers runstate,diskcache]

Two parts, each peer in a spawned process of its own (so its memory is its own) and a fresh
temp directory:

- growth: the store is filled with 100-byte values up to 10k, 100k and 1M keys (bulk loads,
  untimed); at each size, random-key get and set are timed as in `bench.library` and the
  process's resident memory (all of it, and its anonymous part: without the pages of the
  memory-mapped database file) and the files' size on disk are recorded;
- value size: 100 B, 4 KiB, 64 KiB and 256 KiB values (256 KiB is runstate's default limit on
  an encoded value), get and set on a few hundred keys of that size.

Results: bench/results/scale-<stamp>.json and .md, latest-scale.md, and the plot
bench/results/latest-scale.svg (throughput and memory against keys; docs/performance.md shows
it). The plot is drawn here as SVG: no plotting library is needed.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

if not __package__:  # run as `python bench/scale.py`: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.peers import PEERS, PeerSpec, open_peer, peer_version, unavailable
from bench.plot import Series, line_chart
from bench.report import (
    RESULTS_DIR,
    machine,
    machine_markdown,
    percentile_us,
    ratio_text,
    timestamp,
    write_results,
)

SIZES = (10_000, 100_000, 1_000_000)
VALUE_SIZES = (100, 4096, 65536, 262142)  # 262142 characters encode to 256 KiB exactly
VALUE_KEYS = 300
CHUNK = 10_000
PEER_ORDER = ("runstate", "diskcache")


@dataclass
class Point:
    """One measurement: `op` on a store of `keys` keys of `value_bytes`-byte values."""

    keys: int
    value_bytes: int
    op: str
    ops_per_s: float
    p50_us: float | None
    p99_us: float | None
    rss_mib: float | None = None
    anon_mib: float | None = None
    disk_mib: float | None = None


@dataclass
class PeerRun:
    peer: str
    points: list[Point] = field(default_factory=list)
    load_s: dict[int, float] = field(default_factory=dict)
    error: str | None = None


def _memory_mib() -> tuple[float | None, float | None]:
    """This process's resident memory, MiB (Linux): all of it, and its anonymous part (the
    heap: what the process holds; the rest is pages of files it maps, such as SQLite's
    memory-mapped database, which the kernel can drop and re-read)."""
    found: dict[str, float] = {}
    try:
        with open("/proc/self/status", encoding="utf-8") as status:
            for line in status:
                if line.startswith(("VmRSS:", "RssAnon:")):
                    found[line.split(":")[0]] = int(line.split()[1]) / 1024
    except OSError:
        return None, None
    return found.get("VmRSS"), found.get("RssAnon")


def _disk_mib(directory: str) -> float:
    total = 0
    for root, _, files in os.walk(directory):
        for name in files:
            try:
                total += os.path.getsize(os.path.join(root, name))
            except OSError:
                pass
    return total / 1024**2


def _time(fn: Any, keys: list[str], value: Any, seconds: float) -> tuple[float, list[int]]:
    """Call `fn(key, value)` on random keys for `seconds`: (ops/s, sorted latencies ns)."""
    rng = random.Random(7)
    clock = time.perf_counter_ns
    latencies: list[int] = []
    busy = 0
    deadline = clock() + int(seconds * 1e9)
    while clock() < deadline:
        batch = [keys[rng.randrange(len(keys))] for _ in range(64)]
        for key in batch:
            t0 = clock()
            fn(key, value)
            latencies.append(clock() - t0)
        busy += sum(latencies[-64:])
    latencies.sort()
    return (len(latencies) / busy * 1e9 if busy else 0.0), latencies


def _measure(
    peer: Any, n: int, size: int, keys: list[str], value: str, seconds: float
) -> list[Point]:
    points = []
    for op, fn in (("get", peer.get), ("set", peer.set)):
        _time(fn, keys, value, seconds / 4)  # warm-up
        rate, latencies = _time(fn, keys, value, seconds)
        points.append(
            Point(n, size, op, rate, percentile_us(latencies, 0.5), percentile_us(latencies, 0.99))
        )
    return points


def _run_peer(
    name: str, sizes: tuple[int, ...], seconds: float, tmpdir: str | None, out: Any
) -> None:
    """In a child process: the growth and value-size parts for one peer."""
    run = PeerRun(name)
    directory = tempfile.mkdtemp(prefix=f"runstate-bench-scale-{name}-", dir=tmpdir)
    try:
        peer = open_peer(PeerSpec(name, directory))
        value = "v" * 100
        loaded = 0
        for target in sizes:
            began = time.perf_counter()
            while loaded < target:
                end = min(target, loaded + CHUNK)
                peer.load("value", {f"g{i:07d}": value for i in range(loaded, end)})
                loaded = end
            run.load_s[target] = round(time.perf_counter() - began, 2)
            keys = [f"g{i:07d}" for i in range(loaded)]
            points = _measure(peer, loaded, 100, keys, value, seconds)
            rss, anon = _memory_mib()
            for point in points:
                point.rss_mib, point.anon_mib = rss, anon
                point.disk_mib = round(_disk_mib(directory), 1)
            run.points += points
        for size in VALUE_SIZES:
            big = "x" * size
            keys = [f"s{size}:{i:04d}" for i in range(VALUE_KEYS)]
            for start in range(0, VALUE_KEYS, 50):
                peer.load("value", dict.fromkeys(keys[start : start + 50], big))
            run.points += _measure(peer, VALUE_KEYS, size, keys, big, seconds)
        peer.close()
    except Exception as exc:
        run.error = f"{type(exc).__name__}: {exc}"[:300]
    finally:
        import shutil

        shutil.rmtree(directory, ignore_errors=True)
    out.put(asdict(run))


def run_peer(name: str, sizes: tuple[int, ...], seconds: float, tmpdir: str | None) -> PeerRun:
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    process = ctx.Process(target=_run_peer, args=(name, sizes, seconds, tmpdir, out))
    process.start()
    try:
        data = out.get(timeout=1800)
    finally:
        process.join(timeout=60)
    points = [Point(**p) for p in data.pop("points")]
    load_s = {int(k): v for k, v in data.pop("load_s").items()}
    return PeerRun(points=points, load_s=load_s, **data)


def _find(run: PeerRun, keys: int, size: int, op: str) -> Point | None:
    for point in run.points:
        if (point.keys, point.value_bytes, point.op) == (keys, size, op):
            return point
    return None


def _size_text(size: int) -> str:
    if size == VALUE_SIZES[-1]:
        return "256 KiB"
    return f"{size // 1024} KiB" if size >= 1024 else f"{size} B"


def _ratio(ours: Point | None, theirs: Point | None) -> float | None:
    if ours is None or theirs is None or not theirs.ops_per_s:
        return None
    return ours.ops_per_s / theirs.ops_per_s


def markdown(data: dict[str, Any], runs: dict[str, PeerRun], sizes: tuple[int, ...]) -> str:
    names = list(runs)
    others = [n for n in names if n != "runstate"]
    lines = [f"# runstate scale benchmark, {data['stamp']}", "", machine_markdown(data["machine"])]
    lines += [
        f"{data['seconds']} s per cell after a warm-up; random keys; each peer in a process of "
        f"its own; run took {data['duration_s']:.0f} s. Peers: "
        + ", ".join(f"{n} {data['peers'][n]['version']}" for n in names),
        "",
        "![throughput and memory against keys](latest-scale.svg)",
        "",
        "## As the store grows (100 B values)",
        "",
        "| keys | op | "
        + " | ".join(f"{n} ops/s (p50 / p99 µs)" for n in names)
        + " | "
        + " | ".join(f"÷ {n}" for n in others)
        + " | "
        + " | ".join(f"{n} RSS / anon / disk MiB" for n in names)
        + " |",
        "|---|---|" + "---:|" * (2 * len(names) + len(others)),
    ]
    for n in sizes:
        for op in ("get", "set"):
            cells = [_find(runs[name], n, 100, op) for name in names]
            figures = [
                "—" if c is None else f"{c.ops_per_s:,.0f} ({c.p50_us:.1f} / {c.p99_us:.1f})"
                for c in cells
            ]
            ratios = [ratio_text(_ratio(cells[0], _find(runs[o], n, 100, op))) for o in others]
            memory = [
                "—" if c is None else f"{c.rss_mib:.0f} / {c.anon_mib:.0f} / {c.disk_mib:.0f}"
                for c in cells
            ]
            lines.append(f"| {n:,} | {op} | " + " | ".join(figures + ratios + memory) + " |")
    lines += ["", "Bulk load time (s) to reach each size: "]
    for name in names:
        loads = ", ".join(f"{k:,}: {v}" for k, v in runs[name].load_s.items())
        lines.append(f"- {name}: {loads}")
    lines += [
        "",
        f"## Value size ({VALUE_KEYS} keys)",
        "",
        "| value | op | " + " | ".join(f"{n} ops/s (p50 µs)" for n in names) + " | "
        + " | ".join(f"÷ {n}" for n in others) + " |",
        "|---|---|" + "---:|" * (len(names) + len(others)),
    ]  # fmt: skip
    for size in VALUE_SIZES:
        for op in ("get", "set"):
            cells = [_find(runs[name], VALUE_KEYS, size, op) for name in names]
            figures = ["—" if c is None else f"{c.ops_per_s:,.0f} ({c.p50_us:.1f})" for c in cells]
            ratios = [
                ratio_text(_ratio(cells[0], _find(runs[o], VALUE_KEYS, size, op))) for o in others
            ]
            lines.append(f"| {_size_text(size)} | {op} | " + " | ".join(figures + ratios) + " |")
    for name, run in runs.items():
        if run.error:
            lines.append(f"\n{name} failed: {run.error}")
    return "\n".join(lines) + "\n"


def plot(runs: dict[str, PeerRun], sizes: tuple[int, ...]) -> str:
    series: dict[str, list[Series]] = {"get": [], "set": []}
    memory: list[Series] = []
    for name, run in runs.items():
        grown = [p for p in run.points if p.value_bytes == 100 and p.keys in sizes]
        for op in ("get", "set"):
            points = [(float(p.keys), p.ops_per_s) for p in grown if p.op == op]
            series[op].append(Series(f"{name} {op}", points, name))
        anon = [(float(p.keys), p.anon_mib or 0.0) for p in grown if p.op == "set"]
        rss = [(float(p.keys), p.rss_mib or 0.0) for p in grown if p.op == "set"]
        disk = [(float(p.keys), p.disk_mib or 0.0) for p in grown if p.op == "set"]
        memory.append(Series(f"{name} anon", anon, name, ""))
        memory.append(Series(f"{name} RSS", rss, name, "6 4"))
        memory.append(Series(f"{name} disk", disk, name, "2 3"))
    return line_chart(
        [
            ("get: random keys, 100 B values", "ops/s", series["get"]),
            ("set: random keys, 100 B values", "ops/s", series["set"]),
            ("Memory: anonymous, RSS (with the mapped file), disk", "MiB", memory),
        ],
        "keys in the store",
    )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="runstate scale benchmark")
    parser.add_argument("--quick", action="store_true", help="up to 100k keys, shorter cells")
    parser.add_argument("--max-keys", type=int, default=SIZES[-1])
    parser.add_argument("--seconds", type=float, help="timed seconds per cell (0.6, quick 0.3)")
    parser.add_argument("--peers", default=",".join(PEER_ORDER), help="comma-separated")
    parser.add_argument("--tmpdir", help="where the stores go (1M keys: ~0.5 GB)")
    parser.add_argument("--out", type=Path, help="results directory (bench/results)")
    args = parser.parse_args(argv)
    limit = min(args.max_keys, SIZES[1]) if args.quick else args.max_keys
    sizes = tuple(n for n in SIZES if n <= limit)
    seconds = args.seconds or (0.3 if args.quick else 0.6)
    started, stamp, info = time.perf_counter(), timestamp(), machine()
    print(machine_markdown(info), end="", flush=True)
    runs: dict[str, PeerRun] = {}
    for name in [n for n in args.peers.split(",") if n]:
        if name not in PEERS or name.startswith("redis"):
            parser.error(f"{name}: the scale benchmark runs embedded peers only")
        reason = unavailable(name)
        if reason:
            print(f"skip {name}: {reason}", flush=True)
            continue
        print(f"{name}: growing to {sizes[-1]:,} keys ...", flush=True)
        runs[name] = run_peer(name, sizes, seconds, args.tmpdir)
        if runs[name].error:
            print(f"  {name} failed: {runs[name].error}", flush=True)
    data: dict[str, Any] = {
        "stamp": stamp,
        "machine": info,
        "seconds": seconds,
        "sizes": list(sizes),
        "value_sizes": list(VALUE_SIZES),
        "duration_s": round(time.perf_counter() - started, 1),
        "peers": {name: {"version": peer_version(name), "note": PEERS[name].note} for name in runs},
        "runs": {name: asdict(run) for name, run in runs.items()},
    }
    text = markdown(data, runs, sizes)
    out = args.out or RESULTS_DIR
    paths = write_results("scale", stamp, data, text, out)
    svg = plot(runs, sizes)
    for path in (out / f"scale-{stamp}.svg", out / "latest-scale.svg"):
        path.write_text(svg, encoding="utf-8")
        paths.append(path)
    print()
    print(text)
    print("written: " + ", ".join(str(path) for path in paths))
    return 0


if __name__ == "__main__":
    sys.exit(main())
