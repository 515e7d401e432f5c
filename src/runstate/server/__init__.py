"""The runstate HTTP server: `serve(config)` runs the ASGI app of `app.py` on granian, through
granian's RSGI protocol (`rsgi.py`, a thin adapter: the cheaper protocol of the two).

`serve` opens the database once in the main process (applying migrations), and on the very
first start (no token was ever made) creates the ``default`` workspace's admin token and prints
it once (``admin token: rs_...``); only its hash is stored. Then granian runs `--workers`
processes, each with its own engine and group-commit writer, and prints
``runstate listening on http://HOST:PORT``. SIGTERM or SIGINT shuts down gracefully: granian
stops accepting connections, requests in flight finish, and the lifespan shutdown drains the
writer and closes the engine, so no acknowledged write is lost.
"""

from __future__ import annotations

import sys
from typing import Any

from ..config import ServerConfig
from .app import App, create_app, open_engine

__all__ = ["App", "create_app", "serve"]


def first_start(config: ServerConfig) -> str | None:
    """Migrate the database; on its first start, issue the admin token and return it."""
    from ..tokens import DEFAULT_WORKSPACE, issue_token

    engine = open_engine(config)
    try:
        if engine.has_tokens():
            return None
        token, _ = issue_token(engine, role="admin", workspace=DEFAULT_WORKSPACE)
        return token
    finally:
        engine.close()


def load_app(config: ServerConfig) -> App:
    """Build the app in a granian worker (module level, so it pickles for spawned workers)."""
    return create_app(config)


def load_rsgi_app(config: ServerConfig) -> Any:
    """The app as granian's RSGI target (`rsgi.RsgiApp`): what `serve` runs."""
    from .rsgi import RsgiApp

    return RsgiApp(create_app(config))


# granian logs to stdout by default; stdout is for the lines above (scripts read them).
_STDERR_LOGGING: dict[str, Any] = {
    "handlers": {
        "console": {
            "formatter": "generic",
            "class": "logging.StreamHandler",
            "stream": "ext://sys.stderr",
        },
        "access": {
            "formatter": "access",
            "class": "logging.StreamHandler",
            "stream": "ext://sys.stderr",
        },
    }
}


def _event_loop(loops: Any) -> Any:
    """uvloop where it is installed (a dependency everywhere but Windows): said explicitly,
    since granian's ``auto`` would take any other loop it finds installed first."""
    import importlib.util

    return loops.uvloop if importlib.util.find_spec("uvloop") is not None else loops.asyncio


def serve(config: ServerConfig) -> None:
    """Run the server until SIGTERM/SIGINT (see the module docstring)."""
    import functools

    from granian.constants import Interfaces, Loops
    from granian.server import Server

    from .dashboard import share_secret

    share_secret()  # every worker accepts the dashboard sessions of the others
    token = first_start(config)
    if token is not None:
        print(f"admin token: {token}", flush=True)
    server = Server(
        "runstate.server:load_rsgi_app",
        address=config.host,
        port=config.port,
        interface=Interfaces.RSGI,  # the ASGI app through `rsgi.RsgiApp`: far cheaper
        workers=config.workers,
        log_access=False,
        log_enabled=True,
        log_dictconfig=_STDERR_LOGGING,
        websockets=False,
        loop=_event_loop(Loops),
    )

    def announce() -> None:
        print(f"runstate listening on {config.url}", flush=True)

    server.on_startup(announce)
    try:
        server.serve(target_loader=functools.partial(load_rsgi_app, config), wrap_loader=False)
    finally:
        sys.stdout.flush()
