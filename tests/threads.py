"""Load from many threads released at the same moment, for the concurrency tests."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, TypeVar

R = TypeVar("R")
T = TypeVar("T")


def in_threads_with(
    count: int,
    setup: Callable[[int], AbstractContextManager[R]],
    work: Callable[[int, R], T],
) -> list[T]:
    """`work(n, resource)` for n in range(count), each in a thread of its own, with `resource`
    entered from `setup(n)` first (a connection, say) so that every thread starts its load at
    the same moment (a barrier). The results in order; once every thread has ended, the first
    failure is raised (a failing thread breaks the barrier, so none waits for it forever)."""
    results: list[Any] = [None] * count
    failures: list[BaseException] = []
    start = threading.Barrier(count)

    def run(number: int) -> None:
        try:
            with setup(number) as resource:
                start.wait()
                results[number] = work(number, resource)
        except BaseException as exc:
            failures.append(exc)
            start.abort()

    threads = [threading.Thread(target=run, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise failures[0]
    return results


def in_threads(count: int, work: Callable[[int], T]) -> list[T]:
    """`in_threads_with` with nothing to set up: `work(n)` in `count` threads released together."""
    return in_threads_with(count, lambda _: contextlib.nullcontext(), lambda n, _: work(n))
