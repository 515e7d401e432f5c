"""The web dashboard (SPEC §3.5): a single-page app in plain JS and CSS, served from this package.

What the server does for it, and nothing more:

- ``GET /`` answers the page and ``GET /dashboard/app.js|app.css|icon.svg`` its assets, from
  the package's ``static/`` folder (no build step, nothing fetched from another host), with a
  strict Content-Security-Policy (``'self'`` only, no framing);
- ``/dashboard/session`` signs in (POST a token), says who is signed in (GET) and signs out
  (DELETE), with the signed session cookie of `sessions`;
- `session_token` lets the app's request pipeline take that cookie instead of a bearer token on
  every ``/v1`` route, with the CSRF and same-origin checks.

Everything else, the page does through the ``/v1`` API, so the roles and store limits of the
token it signed in with hold exactly as for any client.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Any

import orjson

from ...errors import InvalidRequest, Unauthorized
from ...tokens import TokenInfo, hash_token
from ..routes import Param, Request, Response, Route, json_response, read_body
from .sessions import (
    SESSION_COOKIE,
    SESSION_SECONDS,
    SIGNIN_COOKIE,
    SIGNIN_SECONDS,
    Session,
    Sessions,
    check_same_origin,
    read_cookie,
    share_secret,
)

if TYPE_CHECKING:
    from ..app import State

__all__ = ["DASHBOARD_ROUTES", "session_token", "share_secret"]

_MAX_SIGNIN_BODY = 4096

# Every dashboard answer: only this origin's scripts, styles and API; never in a frame.
_SECURITY_HEADERS: list[tuple[bytes, bytes]] = [
    (
        b"content-security-policy",
        b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        b"connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    ),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
]
_NO_STORE = (b"cache-control", b"no-store")


@functools.cache
def _sessions() -> Sessions:
    """This process's sessions (the secret comes from the environment: `share_secret`)."""
    return Sessions()


def session_token(state: State, method: str, headers: Mapping[bytes, bytes]) -> TokenInfo:
    """The token behind the request's session cookie, for a ``/v1`` route: `Unauthorized`
    without a live session (or when its token was revoked), `Forbidden` when a write lacks
    the CSRF token or comes from another origin."""
    sessions = _sessions()
    session = sessions.session_of(headers)
    sessions.check_request(method, headers, session)
    return _token_of(state, session)


def _token_of(state: State, session: Session) -> TokenInfo:
    info = state.auth.by_hash(session.token_hash)
    if info is None:
        raise Unauthorized("the token of this session was revoked: sign in again")
    return info


# --- static assets ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Asset:
    body: bytes
    gzipped: bytes | None
    content_type: bytes
    version: str | None  # None: the page itself, never cached without asking


_TYPES = {
    "js": b"text/javascript; charset=utf-8",
    "css": b"text/css; charset=utf-8",
    "svg": b"image/svg+xml",
    "html": b"text/html; charset=utf-8",
}
_ASSETS = ("app.js", "app.css", "icon.svg")


@functools.cache
def _assets() -> dict[str, _Asset]:
    """The page and its assets, read once. The page names each asset with a hash of its
    content (``?v=``): asked for by that name, an asset may be cached for good, and after an
    upgrade the page names the new one."""
    folder = resources.files(__package__).joinpath("static")
    out: dict[str, _Asset] = {}
    page = folder.joinpath("index.html").read_text("utf-8")
    for name in _ASSETS:
        body = folder.joinpath(name).read_bytes()
        version = hashlib.sha256(body).hexdigest()[:12]
        out[name] = _asset(name, body, version)
        page = page.replace(f"/dashboard/{name}", f"/dashboard/{name}?v={version}")
    out["index.html"] = _asset("index.html", page.encode(), None)
    return out


def _asset(name: str, body: bytes, version: str | None) -> _Asset:
    kind = name.rpartition(".")[2]
    gzipped = gzip.compress(body, 9, mtime=0) if len(body) > 1024 else None
    return _Asset(body, gzipped, _TYPES[kind], version)


def _serve(req: Request, name: str) -> Response:
    asset = _assets()[name]
    forever = asset.version is not None and req.query.get("v") == asset.version
    cache = b"public, max-age=31536000, immutable" if forever else b"no-cache"
    headers = [*_SECURITY_HEADERS, (b"cache-control", cache), (b"vary", b"accept-encoding")]
    body = asset.body
    if asset.gzipped is not None and b"gzip" in req.headers.get(b"accept-encoding", b""):
        body = asset.gzipped
        headers.append((b"content-encoding", b"gzip"))
    return Response(200, body, asset.content_type, headers)


async def page(req: Request) -> Response:
    return _serve(req, "index.html")


async def script(req: Request) -> Response:
    return _serve(req, "app.js")


async def stylesheet(req: Request) -> Response:
    return _serve(req, "app.css")


async def icon(req: Request) -> Response:
    return _serve(req, "icon.svg")


# --- the session endpoints ------------------------------------------------------------------


def _cookie(name: str, value: str, max_age: int, secure: bool) -> tuple[bytes, bytes]:
    attributes = f"{name}={value}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Strict"
    return (b"set-cookie", (attributes + ("; Secure" if secure else "")).encode())


def _session_json(sessions: Sessions, session: Session, info: TokenInfo) -> dict[str, Any]:
    return {
        "signed_in": True,
        "token": info.to_json(),
        "csrf": sessions.csrf(session),
        "expires_in": max(0, session.expires - int(sessions.now())),
    }


def _answer(data: dict[str, Any], status: int = 200, *cookies: tuple[bytes, bytes]) -> Response:
    response = json_response(data, status)
    response.headers += [*_SECURITY_HEADERS, _NO_STORE, *cookies]
    return response


async def session_info(req: Request) -> Response:
    """Who is signed in (with the CSRF token for writes); else a fresh sign-in CSRF token."""
    sessions = _sessions()
    cookie = req.headers.get(b"cookie")
    session = sessions.read(read_cookie(cookie, SESSION_COOKIE))
    if session is not None:
        info = req.state.auth.by_hash(session.token_hash)
        if info is not None:
            return _answer(_session_json(sessions, session, info))
    nonce = read_cookie(cookie, SIGNIN_COOKIE)
    cookies = []
    if not nonce or len(nonce) > 64:
        nonce = sessions.new_nonce()
        cookies.append(_cookie(SIGNIN_COOKIE, nonce, SIGNIN_SECONDS, _secure(req)))
    return _answer({"signed_in": False, "csrf": sessions.signin_csrf(nonce)}, 200, *cookies)


def _secure(req: Request) -> bool:
    """Mark cookies Secure when the page was reached over HTTPS (directly or via a proxy)."""
    origin = req.headers.get(b"origin", b"")
    return origin.startswith(b"https://") or req.headers.get(b"x-forwarded-proto") == b"https"


async def sign_in(req: Request) -> Response:
    """POST ``{"token": ...}`` from the sign-in form: the session cookie, or 401."""
    sessions = _sessions()
    check_same_origin(req.headers)
    nonce = read_cookie(req.headers.get(b"cookie"), SIGNIN_COOKIE)
    if not nonce:
        raise Unauthorized("the sign-in form has expired: reload the page")
    sessions.check_csrf(req.headers, sessions.signin_csrf(nonce))
    body = await read_body(req.receive, req.headers, _MAX_SIGNIN_BODY)
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise InvalidRequest("the body must be JSON") from None
    token = data.get("token") if isinstance(data, dict) else None
    if not isinstance(token, str) or not token.strip():
        raise InvalidRequest('the body must be {"token": "rs_..."}')
    token_hash = hash_token(token.strip())
    info = req.state.auth.by_hash(token_hash)
    if info is None:
        raise Unauthorized("this token is not valid (unknown or revoked)")
    session, value = sessions.issue(token_hash)
    secure = _secure(req)
    return _answer(
        _session_json(sessions, session, info),
        200,
        _cookie(SESSION_COOKIE, value, SESSION_SECONDS, secure),
        _cookie(SIGNIN_COOKIE, "", 0, secure),
    )


async def sign_out(req: Request) -> Response:
    """DELETE: end the session (CSRF-checked) and clear its cookie."""
    sessions = _sessions()
    session = sessions.session_of(req.headers)
    sessions.check_request("DELETE", req.headers, session)
    sessions.end(session)
    return _answer({"signed_out": True}, 200, _cookie(SESSION_COOKIE, "", 0, _secure(req)))


# The content hash the page puts on an asset's address (any value is accepted).
_VERSION = Param("v", lambda text: text, "String", "the asset's version")


def _route(
    method: str, path: str, handler: Any, operation_id: str, ok: str, *query: Param
) -> Route:
    return Route(method, path, handler, operation_id, "dashboard", None, (200, ok), (400,),
                 query=query, tag="dashboard")  # fmt: skip


# Routed by the app beside the API's `ROUTES`, but not part of the API (nor its OpenAPI
# document): no bearer token; the session endpoints check the cookie themselves.
DASHBOARD_ROUTES: tuple[Route, ...] = (
    _route("GET", "/", page, "dashboardPage", "text/html"),
    _route("GET", "/dashboard/app.js", script, "dashboardScript", "text/javascript", _VERSION),
    _route("GET", "/dashboard/app.css", stylesheet, "dashboardStyles", "text/css", _VERSION),
    _route("GET", "/dashboard/icon.svg", icon, "dashboardIcon", "image/svg+xml", _VERSION),
    _route("GET", "/dashboard/session", session_info, "dashboardSession", "application/json"),
    _route("POST", "/dashboard/session", sign_in, "dashboardSignIn", "application/json"),
    _route("DELETE", "/dashboard/session", sign_out, "dashboardSignOut", "application/json"),
)
