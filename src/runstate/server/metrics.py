"""Prometheus metrics of one server process, in the text exposition format (version 0.0.4).

Counters are per process (with ``--workers N`` each worker reports its own; sum them in
Prometheus). Route labels are route templates (``/v1/stores/{store}/records/{key}``), never
raw paths, so the number of series stays bounded; no label ever holds a token or a key.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import defaultdict

__all__ = ["CONTENT_TYPE", "Metrics"]

CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"

# Seconds; a point read is ~0.1 ms, a durable commit a few ms.
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
GROUP_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class _Histogram:
    __slots__ = ("bounds", "count", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * len(bounds)
        self.count = 0
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.count += 1
        self.total += value
        i = bisect_left(self.bounds, value)  # the first bound >= value
        if i < len(self.counts):
            self.counts[i] += 1

    def lines(self, name: str, labels: str) -> list[str]:
        sep = "," if labels else ""
        braces = f"{{{labels}}}" if labels else ""
        out = []
        cumulative = 0
        for bound, n in zip(self.bounds, self.counts, strict=True):
            cumulative += n
            out.append(f'{name}_bucket{{{labels}{sep}le="{bound:g}"}} {cumulative}')
        out.append(f'{name}_bucket{{{labels}{sep}le="+Inf"}} {self.count}')
        out.append(f"{name}_sum{braces} {self.total:.6f}")
        out.append(f"{name}_count{braces} {self.count}")
        return out


class Metrics:
    """Request counts by route and status, latency by route, errors by code, group commits."""

    def __init__(self) -> None:
        self.requests: defaultdict[tuple[str, str, int], int] = defaultdict(int)
        self.latency: dict[str, _Histogram] = {}
        self.errors: defaultdict[str, int] = defaultdict(int)
        self.commit_sizes = _Histogram(tuple(float(b) for b in GROUP_BUCKETS))

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        self.requests[(route, method, status)] += 1
        histogram = self.latency.get(route)
        if histogram is None:
            histogram = self.latency[route] = _Histogram(BUCKETS)
        histogram.observe(seconds)

    def error(self, code: str) -> None:
        self.errors[code] += 1

    def commit(self, units: int) -> None:
        """Called by the writer thread after each group commit (int updates are atomic)."""
        self.commit_sizes.observe(float(units))

    def render(self, workspaces: dict[str, tuple[int, int, int]]) -> bytes:
        """The exposition text; `workspaces` maps name -> (records, bytes, quota_bytes)."""
        out = [
            "# HELP runstate_http_requests_total HTTP requests by route template, method, status.",
            "# TYPE runstate_http_requests_total counter",
        ]
        for (route, method, status), n in sorted(self.requests.items()):
            out.append(
                f'runstate_http_requests_total{{route="{_label(route)}",method="{method}",'
                f'status="{status}"}} {n}'
            )
        out += [
            "# HELP runstate_http_request_duration_seconds Request latency by route template.",
            "# TYPE runstate_http_request_duration_seconds histogram",
        ]
        for route, histogram in sorted(self.latency.items()):
            out += histogram.lines(
                "runstate_http_request_duration_seconds", f'route="{_label(route)}"'
            )
        out += [
            "# HELP runstate_errors_total Error responses by error code.",
            "# TYPE runstate_errors_total counter",
        ]
        out += [f'runstate_errors_total{{code="{c}"}} {n}' for c, n in sorted(self.errors.items())]
        out += [
            "# HELP runstate_commits_total Transactions committed by the group-commit writer.",
            "# TYPE runstate_commits_total counter",
            f"runstate_commits_total {self.commit_sizes.count}",
            "# HELP runstate_commit_units_total Writes carried by those commits.",
            "# TYPE runstate_commit_units_total counter",
            f"runstate_commit_units_total {int(self.commit_sizes.total)}",
            "# HELP runstate_commit_group_size Writes per group commit.",
            "# TYPE runstate_commit_group_size histogram",
            *self.commit_sizes.lines("runstate_commit_group_size", ""),
        ]
        out += _gauges(workspaces)
        return ("\n".join(out) + "\n").encode()


def _gauges(workspaces: dict[str, tuple[int, int, int]]) -> list[str]:
    out: list[str] = []
    names = (
        ("runstate_records", "Records stored per workspace (expired ones not yet purged too)."),
        ("runstate_bytes", "Bytes of keys + encoded values per workspace."),
        ("runstate_quota_bytes", "The quota per workspace."),
    )
    for index, (name, help_text) in enumerate(names):
        out += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge"]
        for workspace, figures in sorted(workspaces.items()):
            out.append(f'{name}{{workspace="{_label(workspace)}"}} {figures[index]}')
    return out
