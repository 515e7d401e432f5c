"""What every benchmark report shares: the machine it ran on, latency percentiles, number
formats, and writing the results (JSON + markdown) under bench/results/."""

from __future__ import annotations

import json
import os
import platform
import sqlite3
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

__all__ = [
    "RESULTS_DIR",
    "machine",
    "machine_markdown",
    "percentile_us",
    "ratio_text",
    "timestamp",
    "write_results",
]

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gib() -> float | None:
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 1024**2, 1)
    except OSError:
        pass
    return None


def machine() -> dict[str, Any]:
    """The facts a reader needs to place the figures: CPU, cores, memory, Python, SQLite."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 0
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = []
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "memory_gib": _memory_gib(),
        "os": f"{platform.system()} {platform.release()}",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "python_executable": sys.executable,
        "sqlite": sqlite3.sqlite_version,
        "load_average_at_start": load,
    }


def machine_markdown(info: dict[str, Any]) -> str:
    load = " / ".join(str(x) for x in info["load_average_at_start"]) or "?"
    return (
        f"- CPU: {info['cpu']}, {info['cores']} cores ({info['usable_cores']} usable), "
        f"{info['memory_gib']} GiB\n"
        f"- {info['os']}; {info['python']}; SQLite {info['sqlite']}\n"
        f"- load average at start (1/5/15 min): {load}\n"
    )


def percentile_us(sorted_ns: Sequence[int], q: float) -> float | None:
    """Nearest-rank percentile of latencies already sorted (ns), in microseconds."""
    if not sorted_ns:
        return None
    rank = min(len(sorted_ns) - 1, max(0, int(q * len(sorted_ns) + 0.5) - 1))
    return sorted_ns[rank] / 1000


def ratio_text(ratio: float | None) -> str:
    return "—" if ratio is None else f"{ratio:.2f}x"


def timestamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")


def _write(path: Path, text: str) -> None:
    """Write via a temporary file (ignored by git) so a reader never sees half a report."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def write_results(
    kind: str, stamp: str, data: dict[str, Any], markdown: str, directory: Path | None = None
) -> list[Path]:
    """`<kind>-<stamp>.json` and `.md`, plus `latest-<kind>.md`; returns the paths written."""
    directory = directory or RESULTS_DIR
    directory.mkdir(parents=True, exist_ok=True)
    paths = [
        directory / f"{kind}-{stamp}.json",
        directory / f"{kind}-{stamp}.md",
        directory / f"latest-{kind}.md",
    ]
    _write(paths[0], json.dumps(data, indent=2, sort_keys=False) + "\n")
    _write(paths[1], markdown)
    _write(paths[2], markdown)
    return paths


def publish(
    kind: str,
    stamp: str,
    data: dict[str, Any],
    markdown: str,
    directory: Path | None,
    failures: list[str],
) -> int:
    """Write the results (`write_results`), print the report and where it went; the exit
    status: 1 (with the failures on stderr) when a check failed, else 0."""
    paths = write_results(kind, stamp, data, markdown, directory)
    print()
    print(markdown)
    print("written: " + ", ".join(str(path) for path in paths))
    if failures:
        print("bench check FAILED:", file=sys.stderr)
        for failure in failures:
            print(f"  {failure}", file=sys.stderr)
        return 1
    return 0
