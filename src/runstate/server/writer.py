"""Group commit: one writer thread, many writes per commit.

Request handlers on the event loop `submit` a unit of work (workspace, store, function of a
`Txn`) and await its result. The writer thread takes every unit waiting in the queue (up to
`max_group`) and runs them with `engine.write_many`: each unit atomic in its own savepoint, the
group in ONE transaction, so in ``durable`` mode one fsync acknowledges every write of the group.
Writes that arrive while a commit is in progress form the next group, so the more concurrent
writers there are, the more each commit carries.

Guarantees:

- a unit's result (or its `runstate.Error`) is handed back only after the commit that holds it
  returned: an acknowledged write is durable;
- a unit that fails with an `Error` undoes only itself; a unit that fails with anything else
  (a bug) is isolated by re-running the group's units one by one, so it cannot fail the others;
- a database failure (`Unavailable`) fails every unit of that group and nothing of it applies;
- `close` runs everything already submitted before it returns (graceful shutdown loses no
  acknowledged write); `submit` after `close` raises `Unavailable`.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from ..engine.base import Txn
from ..errors import Error, Unavailable
from ..ops import BatchWork, Op

__all__ = ["GroupEngine", "Writer"]

log = logging.getLogger("runstate.server")

# What a unit runs: a function of a `Txn`, or an op or batch (which an engine may run by a fast
# path of its own, with the op's `run` as the definition).
Work = Callable[[Txn], Any] | Op | BatchWork
Unit = tuple[str, str, Work]


class GroupEngine(Protocol):
    def write_many(self, units: Sequence[Unit]) -> list[Any]: ...


class _Job:
    __slots__ = ("future", "loop", "unit")

    def __init__(self, unit: Unit, future: asyncio.Future[Any], loop: asyncio.AbstractEventLoop):
        self.unit = unit
        self.future = future
        self.loop = loop


_STOP: Any = object()


def _settle(settled: list[tuple[asyncio.Future[Any], Any]]) -> None:
    """On the loop: hand each result (or exception) to its waiting request."""
    for future, result in settled:
        if future.done():  # the client went away; the write itself stands
            continue
        if isinstance(result, BaseException):
            future.set_exception(result)
        else:
            future.set_result(result)


class Writer:
    """The group-commit writer of one server process (see the module docstring)."""

    def __init__(
        self,
        engine: GroupEngine,
        *,
        max_group: int = 512,
        on_commit: Callable[[int], None] | None = None,
    ) -> None:
        self._engine = engine
        self._max_group = max_group
        self._on_commit = on_commit
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._lock = threading.Lock()
        self.commits = 0
        self.units = 0

    def start(self) -> None:
        with self._lock:
            if self._thread is None and not self._closed:
                self._thread = threading.Thread(
                    target=self._run, name="runstate-writer", daemon=True
                )
                self._thread.start()

    def submit(self, workspace: str, store: str, fn: Work) -> asyncio.Future[Any]:
        """Queue `fn` to run in a write transaction on `store` (on the running event loop):
        await the answer for its result once committed. A plain function returning the future,
        not a coroutine: one level less to suspend and resume for every write."""
        if self._closed:
            raise Unavailable("the server is shutting down; try again", {"reason": "shutdown"})
        if self._thread is None:
            self.start()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.put(_Job((workspace, store, fn), future, loop))
        return future

    def close(self, timeout: float | None = 30.0) -> None:
        """Stop taking work, run everything already queued, and stop the thread."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            thread = self._thread
        self._queue.put(_STOP)
        if thread is not None:
            thread.join(timeout)
        # A submit that raced with close: refuse it rather than leave it waiting forever.
        refused = self._drain()
        self._hand_back(
            refused, [Unavailable("the server is shutting down; try again")] * len(refused)
        )

    # --- the writer thread ------------------------------------------------------------------

    def _run(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is _STOP:
                return
            group: list[_Job] = [first]
            while len(group) < self._max_group:
                try:
                    job = self._queue.get_nowait()
                except queue.Empty:
                    break
                if job is _STOP:
                    stopping = True
                    break
                group.append(job)
            self._commit(group)
        # Whatever arrived between the stop marker and now was submitted before `close`
        # returned to its caller's check; run it too.
        rest = self._drain()
        if rest:
            self._commit(rest)

    def _drain(self) -> list[_Job]:
        """Every job still queued (stop markers dropped), without waiting."""
        jobs: list[_Job] = []
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                return jobs
            if job is not _STOP:
                jobs.append(job)

    def _commit(self, group: list[_Job]) -> None:
        results = self._write(group)
        self.commits += 1
        self.units += len(group)
        if self._on_commit is not None:
            self._on_commit(len(group))
        self._hand_back(group, results)

    @staticmethod
    def _hand_back(group: list[_Job], results: list[Any]) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], Any]]] = {}
        for job, result in zip(group, results, strict=True):
            by_loop.setdefault(job.loop, []).append((job.future, result))
        for loop, settled in by_loop.items():
            try:
                loop.call_soon_threadsafe(_settle, settled)
            except RuntimeError:  # that loop is closed: nobody waits for these results
                continue

    def _write(self, group: list[_Job]) -> list[Any]:
        units = [job.unit for job in group]
        try:
            return self._engine.write_many(units)
        except Error as exc:
            return [exc] * len(group)
        except Exception:
            if len(group) == 1:
                log.exception("a write failed unexpectedly")
                return [_internal()]
        # A bug in one unit must not fail the others: run them one by one.
        results: list[Any] = []
        for job in group:
            results.extend(self._write([job]))
        return results


def _internal() -> Unavailable:
    return Unavailable("the write failed on the server; it has been logged", {"reason": "internal"})
