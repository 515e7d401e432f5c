"""Dashboard sessions: the signed session cookie, CSRF tokens and the same-origin check.

Signing in with a token sets one cookie, ``runstate_session`` (HttpOnly, SameSite=Strict,
Path=/, Secure over HTTPS), whose value is ``v1.<session id>.<token hash>.<expiry>.<mac>``: the
SHA-256 of the token (what the database stores, never the token itself), when the session ends,
and an HMAC-SHA256 of all that under the server's session secret. The cookie is therefore
checked without any server-side table, so every worker process (``--workers N``) accepts a
session any of them issued, as long as they share the secret: `share_secret` puts one in the
environment before the workers start (or set ``RUNSTATE_SESSION_SECRET`` yourself, for several
servers behind one address, or for sessions that outlive a restart).

Each request on a session looks the token up again by its hash (through the server's token
cache), so revoking the token ends its sessions as it ends the token's bearer use. Signing out
clears the cookie and remembers the session id as ended in this process until its expiry.

CSRF: the token of a session is HMAC(secret, ``csrf:`` + session id), handed to the page by
``GET /dashboard/session``; before signing in, a ``runstate_signin`` cookie holds a random nonce
and the sign-in form's CSRF token is HMAC(secret, ``signin:`` + nonce). Every request made on
the cookie that is not a GET must carry it in ``X-CSRF-Token`` and come from the same origin
(``Origin`` equal to the ``Host`` it was sent to, or else ``Sec-Fetch-Site: same-origin``).
SameSite alone is not enough: browsers count every port of a host as the same site.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from ...errors import Forbidden, Unauthorized

__all__ = [
    "SECRET_ENV",
    "SESSION_COOKIE",
    "SESSION_SECONDS",
    "SIGNIN_COOKIE",
    "SIGNIN_SECONDS",
    "Session",
    "Sessions",
    "check_same_origin",
    "read_cookie",
    "share_secret",
]

SECRET_ENV = "RUNSTATE_SESSION_SECRET"  # noqa: S105 - the variable's name, not a secret
SESSION_COOKIE = "runstate_session"
SIGNIN_COOKIE = "runstate_signin"
SESSION_SECONDS = 12 * 3600
SIGNIN_SECONDS = 3600
_ENDED_MAX = 100_000
_HASH = re.compile(r"[0-9a-f]{64}")
_SAFE_METHODS = frozenset({"GET", "HEAD"})


def share_secret() -> None:
    """Give the worker processes that start after this one session secret (unless set)."""
    os.environ.setdefault(SECRET_ENV, secrets.token_urlsafe(32))


def read_cookie(header: bytes | None, name: str) -> str | None:
    """The value of cookie `name` in a ``Cookie`` header, or None."""
    if not header:
        return None
    wanted = name.encode()
    for part in header.split(b";"):
        key, sep, value = part.strip().partition(b"=")
        if sep and key == wanted:
            try:
                return value.strip().decode("ascii")
            except UnicodeDecodeError:
                return None
    return None


def check_same_origin(headers: Mapping[bytes, bytes]) -> None:
    """Refuse a cookie-authenticated write that a page of another origin could have sent."""
    origin = headers.get(b"origin")
    if origin is not None:
        host = headers.get(b"host", b"")
        if host and origin in (b"http://" + host, b"https://" + host):
            return
        raise Forbidden("cross-origin requests are refused on a dashboard session")
    if headers.get(b"sec-fetch-site") == b"same-origin":
        return
    raise Forbidden("a request on a dashboard session must come from the dashboard (Origin)")


@dataclass(frozen=True, slots=True)
class Session:
    """A signed-in dashboard session: its id, the hash of its token, its end (epoch s)."""

    id: str
    token_hash: str
    expires: int


class Sessions:
    """Issues and checks session cookies and CSRF tokens (module docstring)."""

    def __init__(self, secret: str | None = None, clock: Callable[[], float] = time.time) -> None:
        key = secret or os.environ.get(SECRET_ENV) or secrets.token_urlsafe(32)
        self._key = hashlib.sha256(b"runstate-dashboard:" + key.encode()).digest()
        self._clock = clock
        self._ended: dict[str, int] = {}  # session id -> its expiry (signed out here)

    def _mac(self, message: str) -> str:
        digest = hmac.new(self._key, message.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")

    def now(self) -> float:
        return self._clock()

    @staticmethod
    def new_nonce() -> str:
        return secrets.token_urlsafe(18)

    # --- sessions ---------------------------------------------------------------------------

    def issue(self, token_hash: str) -> tuple[Session, str]:
        """A new session for the token with this hash, and its cookie value."""
        session = Session(
            secrets.token_urlsafe(18), token_hash, int(self._clock()) + SESSION_SECONDS
        )
        body = f"v1.{session.id}.{session.token_hash}.{session.expires}"
        return session, f"{body}.{self._mac(body)}"

    def read(self, value: str | None) -> Session | None:
        """The session of a cookie value: None unless it is signed here, live and not ended."""
        if not value:
            return None
        body, _, mac = value.rpartition(".")
        parts = body.split(".")
        if len(parts) != 4 or parts[0] != "v1" or not hmac.compare_digest(mac, self._mac(body)):
            return None
        _, session_id, token_hash, expires = parts
        if not expires.isdigit() or not _HASH.fullmatch(token_hash):
            return None
        session = Session(session_id, token_hash, int(expires))
        if session.expires <= self._clock() or session.id in self._ended:
            return None
        return session

    def end(self, session: Session) -> None:
        """Sign out: this session id is refused from now on (in this process)."""
        now = self._clock()
        if len(self._ended) >= _ENDED_MAX:
            self._ended = {k: v for k, v in self._ended.items() if v > now}
        self._ended[session.id] = session.expires

    # --- CSRF ---------------------------------------------------------------------------------

    def csrf(self, session: Session) -> str:
        return self._mac("csrf:" + session.id)

    def signin_csrf(self, nonce: str) -> str:
        return self._mac("signin:" + nonce)

    def check_csrf(self, headers: Mapping[bytes, bytes], expected: str) -> None:
        given = headers.get(b"x-csrf-token", b"")
        if not hmac.compare_digest(given, expected.encode()):
            raise Forbidden("the CSRF token is missing or wrong: reload the dashboard")

    def check_request(self, method: str, headers: Mapping[bytes, bytes], session: Session) -> None:
        """A request on `session`: reads from anywhere but another site; anything else from
        the same origin with the session's CSRF token."""
        if method in _SAFE_METHODS:
            if headers.get(b"sec-fetch-site", b"same-origin") in (b"cross-site", b"same-site"):
                raise Forbidden("cross-site requests are refused on a dashboard session")
            return
        check_same_origin(headers)
        self.check_csrf(headers, self.csrf(session))

    def session_of(self, headers: Mapping[bytes, bytes]) -> Session:
        """The live session of the request's cookie, or `Unauthorized`."""
        session = self.read(read_cookie(headers.get(b"cookie"), SESSION_COOKIE))
        if session is None:
            raise Unauthorized(
                "this request needs a token ('Authorization: Bearer <token>') or a dashboard "
                "session; the session may have expired: sign in again"
            )
        return session
