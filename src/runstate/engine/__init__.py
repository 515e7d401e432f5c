"""Storage backends: `sqlite` (the embedded default) and `postgres` (many servers, one database).

`open_engine` picks the backend from the database URL, so the library, the server and the CLI
open databases the same way."""

from __future__ import annotations

import os
from typing import Any

__all__ = ["open_engine"]


def open_engine(url: str | os.PathLike[str], **options: Any) -> Any:
    """The engine for `url`: ``postgresql://...`` (or ``postgres://``) opens PostgreSQL (with
    `pool_size` among the options); anything else is a SQLite file (path or ``sqlite:///``)."""
    text = os.fspath(url)
    if text.startswith(("postgresql://", "postgres://")):
        try:
            from .postgres import PostgresEngine
        except ImportError as exc:  # the optional dependency is missing
            from ..errors import InvalidRequest

            raise InvalidRequest(
                "the PostgreSQL backend needs psycopg: pip install 'runstate[postgres]'",
                {"missing": exc.name},
            ) from None
        return PostgresEngine(text, **options)
    options.pop("pool_size", None)
    from .sqlite import SqliteEngine

    return SqliteEngine(text, **options)
