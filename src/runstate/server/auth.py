"""Bearer tokens to `TokenInfo`, role and store checks, and the per-token rate limit.

Lookups run on the event loop: a cached token costs one SHA-256 and a dict lookup. The cache is
dropped whenever the database's token marker (`tokens_changed`) moves, and the marker is read at
most every `refresh` seconds, so a token created or revoked by any process (another worker,
``runstate token create --db``) takes effect within a second.

Rules (SPEC §5): a missing or unknown token is `unauthorized`; a role or store list that does not
allow the request is `forbidden`. Stores are named within the token's workspace, so another
workspace's store is simply not there: `not_found` (never `forbidden`), on every route.
Token values never reach a log or an error message.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable
from typing import Any, Protocol

from ..errors import Forbidden, RateLimited, Unauthorized
from ..tokens import TokenInfo, hash_token

__all__ = ["Authenticator", "RateLimiter", "require_role", "require_store"]

_MAX_CACHED = 10_000
_MISSING: Any = object()


class TokenSource(Protocol):
    def token_by_hash(self, token_hash: str) -> TokenInfo | None: ...

    def tokens_changed(self) -> int: ...


class Authenticator:
    """`authenticate(header)`: the `TokenInfo` of a valid bearer token, or `Unauthorized`."""

    def __init__(
        self,
        source: TokenSource,
        *,
        refresh: float = 0.5,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._source = source
        self._refresh = refresh
        self._monotonic = monotonic
        # By SHA-256 digest of the header's token bytes (never the token itself).
        self._cache: dict[bytes, TokenInfo | None] = {}
        self._marker: int | None = None
        self._checked = -math.inf

    def _fresh(self) -> None:
        now = self._monotonic()
        if now - self._checked < self._refresh:
            return
        marker = self._source.tokens_changed()
        self._checked = now
        if marker != self._marker:
            self._cache.clear()
            self._marker = marker

    def forget(self) -> None:
        """Drop every cached lookup now (this process changed tokens itself)."""
        self._cache.clear()
        self._checked = -math.inf

    def authenticate(self, header: bytes | None) -> TokenInfo:
        if not header:
            raise Unauthorized("this request needs a token: 'Authorization: Bearer <token>'")
        scheme, _, value = header.partition(b" ")
        token = value.strip()
        if scheme.lower() != b"bearer" or not token:
            raise Unauthorized("the Authorization header must be 'Bearer <token>'")
        info = self._lookup(hashlib.sha256(token).digest(), token)
        if info is None:
            raise Unauthorized("the token is not valid (unknown or revoked)")
        return info

    def cached(self, header: bytes | None) -> TokenInfo | None:
        """The `TokenInfo` of a valid bearer token whose lookup is cached (no database call),
        else None: `authenticate` then answers, off the event loop where a lookup is a network
        round trip (PostgreSQL: a loop blocked on an unreachable database stalls every
        request of the process)."""
        if not header:
            return None
        _, _, value = header.partition(b" ")
        self._fresh()
        found = self._cache.get(hashlib.sha256(value.strip()).digest())
        return found if found is not None and header[:7].lower() == b"bearer " else None

    def by_hash(self, token_hash: str) -> TokenInfo | None:
        """The `TokenInfo` of a token known by its stored hash (a dashboard session's), or
        None; from the same cache as bearer tokens (a token's hash is its cache key)."""
        return self._lookup(bytes.fromhex(token_hash), None)

    def _lookup(self, key: bytes, token: bytes | None) -> TokenInfo | None:
        self._fresh()
        info: TokenInfo | None = self._cache.get(key, _MISSING)
        if info is _MISSING:
            stored = key.hex() if token is None else hash_token(token.decode("latin-1"))
            info = self._source.token_by_hash(stored)
            if len(self._cache) >= _MAX_CACHED:
                self._cache.clear()
            self._cache[key] = info
        return info


def require_role(token: TokenInfo, role: str) -> None:
    if not token.allows(role):
        raise Forbidden(
            f"this needs a {role} token; this token's role is {token.role}",
            {"role": token.role, "needed": role},
        )


def require_store(token: TokenInfo, store: str) -> None:
    if not token.can_use_store(store):
        raise Forbidden(
            f"this token is limited to other stores than {store!r}",
            {"store": store},
        )


class RateLimiter:
    """A token bucket per API token: `rate` requests per second, bursts of up to `rate`
    (at least 1). Per server process."""

    def __init__(self, rate: float, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._rate = rate
        self._burst = max(1.0, rate)
        self._monotonic = monotonic
        self._buckets: dict[str, tuple[float, float]] = {}

    def check(self, token_id: str) -> None:
        now = self._monotonic()
        level, last = self._buckets.get(token_id, (self._burst, now))
        level = min(self._burst, level + (now - last) * self._rate)
        if level < 1.0:
            self._buckets[token_id] = (level, now)
            wait = max(1, math.ceil((1.0 - level) / self._rate))
            raise RateLimited(
                f"over the rate limit of {self._rate:g} requests per second; retry in {wait} s",
                {"retry_after": wait, "limit": self._rate},
            )
        self._buckets[token_id] = (level - 1.0, now)
        if len(self._buckets) > _MAX_CACHED:
            self._buckets.clear()
