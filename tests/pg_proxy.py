"""A small TCP proxy for the PostgreSQL fault tests (QUALITY R10): put it between a server and
the database and break the path on demand.

    with PgProxy("127.0.0.1", 5432) as proxy:
        url = proxy.url("postgresql://postgres@127.0.0.1:5432/test?schema=s")  # via the proxy
        proxy.latency = 0.02      # seconds added to every chunk, each way
        proxy.reset()             # every open connection gets a TCP RST, now
        proxy.down()              # reset everything and refuse new connections...
        proxy.up()                # ...until this (the same port again)
        proxy.stalled = True      # connections stay open but nothing passes (a partition)
        proxy.connections         # how many are open; proxy.accepted: how many ever

Threads, not asyncio: one accepts, two per connection pump bytes (a chunk waits `latency`
before it is forwarded). A reset closes both sockets with ``SO_LINGER`` 0, so each peer sees
a reset, as when a database host or a middlebox drops the connection.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from urllib.parse import urlsplit, urlunsplit

__all__ = ["PgProxy"]


def _abort(sock: socket.socket) -> None:
    """Close with an RST (no FIN, no TIME_WAIT). The pump thread blocked in ``recv`` on this
    socket holds the file open, so a bare close would send nothing: ``SHUT_RD`` wakes it
    (sending nothing), and the kernel closes, with the RST, when that ``recv`` returns."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RD)
    with contextlib.suppress(OSError):
        sock.close()


class _Pair:
    def __init__(self, client: socket.socket, upstream: socket.socket) -> None:
        self.client = client
        self.upstream = upstream
        self.closed = False

    def abort(self) -> None:
        self.closed = True
        _abort(self.client)
        _abort(self.upstream)


class PgProxy:
    def __init__(self, target_host: str = "127.0.0.1", target_port: int = 5432) -> None:
        self.target = (target_host, target_port)
        self.latency = 0.0
        self.stalled = False
        self.accepted = 0
        self._pairs: set[_Pair] = set()
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._closed = False
        self._listen(0)
        assert self._listener is not None
        self.port: int = self._listener.getsockname()[1]

    # --- controls ---------------------------------------------------------------------------

    def url(self, database_url: str) -> str:
        """`database_url` with its host and port replaced by the proxy's."""
        parts = urlsplit(database_url)
        user = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
        return urlunsplit(parts._replace(netloc=f"{user}127.0.0.1:{self.port}"))

    @property
    def connections(self) -> int:
        with self._lock:
            return len(self._pairs)

    def reset(self) -> int:
        """Reset every open connection (both sides); how many there were."""
        with self._lock:
            pairs = list(self._pairs)
            self._pairs.clear()
        for pair in pairs:
            pair.abort()
        return len(pairs)

    def down(self) -> None:
        """The database goes away: every connection is reset and new ones are refused."""
        with self._lock:
            listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        self.reset()

    def up(self) -> None:
        """Accept connections again, on the same port."""
        with self._lock:
            if self._listener is not None:
                return
        deadline = time.monotonic() + 10
        while True:
            try:
                self._listen(self.port)
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def close(self) -> None:
        self._closed = True
        self.down()

    def __enter__(self) -> PgProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the machinery ----------------------------------------------------------------------

    def _listen(self, port: int) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listener.bind(("127.0.0.1", port))
            listener.listen(128)
        except OSError:
            listener.close()
            raise
        with self._lock:
            self._listener = listener
        threading.Thread(
            target=self._accept, args=(listener,), name="pg-proxy-accept", daemon=True
        ).start()

    def _accept(self, listener: socket.socket) -> None:
        while not self._closed:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # the listener was closed (down)
            with self._lock:
                if self._listener is not listener:
                    _abort(client)
                    return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                _abort(client)
                continue
            for sock in (client, upstream):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            pair = _Pair(client, upstream)
            with self._lock:
                self._pairs.add(pair)
                self.accepted += 1
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(
                    target=self._pump, args=(pair, source, sink), name="pg-proxy-pump", daemon=True
                ).start()

    def _pump(self, pair: _Pair, source: socket.socket, sink: socket.socket) -> None:
        try:
            while not pair.closed:
                chunk = source.recv(65536)
                if not chunk:
                    break
                delay = self.latency
                if delay > 0:
                    time.sleep(delay)
                while self.stalled and not pair.closed:  # held, neither lost nor refused
                    time.sleep(0.01)
                if pair.closed:
                    return
                sink.sendall(chunk)
        except OSError:
            pass
        # one side ended or failed: end the other side the same way
        with self._lock:
            was_open = pair in self._pairs
            self._pairs.discard(pair)
        if was_open:
            pair.abort()
