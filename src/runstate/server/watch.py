"""The change feed over HTTP: Server-Sent Events read from the database's event table.

The table is the buffer (SPEC §2.3). Each stream reads it from its own position at its own
pace: a slow consumer only falls behind (its `send` waits for the socket) and holds no queue in
memory, and a writer never waits for a watcher. A stream that falls further behind than the
event retention gets a ``gap`` event, then continues from the oldest event kept.

When a stream reads the table: at once when this process's group-commit writer commits
(`Feed.committed`, called from the writer thread); within `Feed.poll` seconds when another
process commits (one ``PRAGMA data_version`` per poll for the whole process, and only while a
stream is open); and each time it has read a full batch, until it has caught up.

Wire format, per event::

    id: <seq>
    event: <set|delete|expire|clear|gap>
    data: {"type", "store", "key", "version", "value"}

The stream opens with a comment and ``id: <position>`` (the position it starts from), and after
`heartbeat` seconds without an event sends ``: ping``, with ``id: <position>`` when the position
moved (other stores' events), so a client that reconnects with ``Last-Event-ID`` resumes exactly
where it stopped, and never further back than it has to.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from types import FrameType
from typing import Any, Protocol

import orjson

from ..engine.base import Changes
from ..errors import Error

__all__ = ["Feed", "FeedSource", "close_on_stop_signal", "event_stream"]

BATCH = 1000


class FeedSource(Protocol):
    blocking: bool  # True where a read is a network round trip (PostgreSQL)

    def data_version(self) -> int: ...

    def events_after(
        self, workspace: str, store: str, after: int, prefix: str | None = None, limit: int = ...
    ) -> Changes: ...


class Feed:
    """Wakes the streams of one server process when the database may have changed."""

    def __init__(self, engine: FeedSource, poll: float = 0.1) -> None:
        self.poll = poll
        self.streams = 0
        self.closing = False
        self._engine = engine
        self._signal = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    def signal(self) -> asyncio.Event:
        """The event the next change sets. Take it before reading the table, so that a commit
        during the read wakes the stream instead of being slept through."""
        self._loop = self._loop or asyncio.get_running_loop()
        return self._signal

    def _wake(self) -> None:
        signal, self._signal = self._signal, asyncio.Event()
        signal.set()

    def committed(self, units: int) -> None:
        """The writer committed (called on its thread): wake the streams, if there are any."""
        loop = self._loop
        if self.streams and loop is not None:
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody is watching
                loop.call_soon_threadsafe(self._wake)

    async def run(self) -> None:
        """Notice other processes' commits, while any stream is open."""
        self._loop = asyncio.get_running_loop()
        seen: int | None = None
        while True:
            await asyncio.sleep(self.poll)
            if not self.streams:
                seen = None
                continue
            try:
                version = self._engine.data_version()
            except Error:  # the database is busy or gone: the next poll tries again
                continue
            if version != seen:
                seen = version
                self._wake()

    def close(self) -> None:
        """End every stream (the server is stopping); on the loop."""
        self.closing = True
        self._wake()

    def close_threadsafe(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self.close)


def close_on_stop_signal(feed: Feed) -> None:
    """End every stream when the process is asked to stop (SIGINT, SIGTERM), keeping the
    handler already installed (the server's own): a graceful shutdown waits for open responses,
    and a change-feed stream never ends by itself. Only in the main thread, where signals are
    handled; a server run elsewhere (tests) calls `Feed.close_threadsafe` itself."""
    if threading.current_thread() is not threading.main_thread():
        return
    for number in (signal.SIGINT, signal.SIGTERM):
        previous = signal.getsignal(number)
        if not callable(previous):  # the default action (or none): nothing to chain to
            continue

        def handler(
            signum: int, frame: FrameType | None, previous: Callable[..., Any] = previous
        ) -> None:
            feed.close_threadsafe()
            previous(signum, frame)

        signal.signal(number, handler)


def _events(store: str, changes: Changes) -> bytes:
    blocks = []
    if changes.gap is not None:
        gap = b'{"type":"gap","store":%s,"key":null,"version":%d,"value":null}' % (
            orjson.dumps(store),
            changes.gap,
        )
        blocks.append(b"id: %d\nevent: gap\ndata: %s\n\n" % (changes.gap, gap))
    for row in changes.events:
        data = row.to_json_bytes(store)
        blocks.append(b"id: %d\nevent: %s\ndata: %s\n\n" % (row.seq, row.type.encode(), data))
    return b"".join(blocks)


async def _disconnected(receive: Callable[[], Awaitable[dict[str, Any]]]) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def event_stream(
    feed: Feed,
    engine: FeedSource,
    workspace: str,
    store: str,
    prefix: str | None,
    position: int,
    receive: Callable[[], Awaitable[dict[str, Any]]],
    heartbeat: float,
) -> AsyncIterator[bytes]:
    """The Server-Sent Events of `store` past `position`, until the client goes away or the
    server stops (see the module docstring)."""
    feed.streams += 1
    gone = asyncio.ensure_future(_disconnected(receive))
    try:
        yield b": runstate change feed of %s\nid: %d\n\n" % (store.encode(), position)
        sent, quiet_since = position, time.monotonic()
        while not (gone.done() or feed.closing):
            signal = feed.signal()
            if engine.blocking:  # PostgreSQL: a round trip, off the event loop
                changes = await asyncio.to_thread(
                    engine.events_after, workspace, store, position, prefix, BATCH
                )
            else:
                changes = engine.events_after(workspace, store, position, prefix, BATCH)
            position = changes.position
            if changes.events or changes.gap is not None:
                yield _events(store, changes)
                sent = changes.events[-1].seq if changes.events else changes.gap or 0
                quiet_since = time.monotonic()
                if len(changes.events) == BATCH:
                    await asyncio.sleep(0)  # more to read: let other requests run first
                    continue
            wait = heartbeat - (time.monotonic() - quiet_since)
            if wait <= 0:
                yield b": ping\n\n" if position == sent else b": ping\nid: %d\n\n" % position
                sent, quiet_since = position, time.monotonic()
                continue
            waiter = asyncio.ensure_future(signal.wait())
            try:
                await asyncio.wait((waiter, gone), timeout=wait, return_when="FIRST_COMPLETED")
            finally:
                waiter.cancel()
    finally:
        feed.streams -= 1
        gone.cancel()
