"""The server's configuration: every setting in one typed place.

Each setting has a default, an environment variable and a command-line flag (the names are in
each field's metadata, so the CLI and the docs are derived from this table, never restated):

=====================  ==========================  ===================  =========================
setting                environment                 flag                 default
=====================  ==========================  ===================  =========================
db                     RUNSTATE_DB                 --db                 sqlite:///runstate.db
host                   RUNSTATE_HOST               --host               127.0.0.1
port                   RUNSTATE_PORT               --port               8765
workers                RUNSTATE_WORKERS            --workers            1
durability             RUNSTATE_DURABILITY         --durability         durable
quota_bytes            RUNSTATE_QUOTA_BYTES        --quota-bytes        64 MiB (the database's)
max_value_bytes        RUNSTATE_MAX_VALUE_BYTES    --max-value-bytes    256 KiB
max_body_bytes         RUNSTATE_MAX_BODY_BYTES     --max-body-bytes     1 MiB
max_import_bytes       RUNSTATE_MAX_IMPORT_BYTES   --max-import-bytes   256 MiB
rate_limit             RUNSTATE_RATE_LIMIT         --rate-limit         off (requests/s per token)
event_retention        RUNSTATE_EVENT_RETENTION    --event-retention    3600 (seconds)
watch_heartbeat        RUNSTATE_WATCH_HEARTBEAT    --watch-heartbeat    15 (seconds)
purge_interval         RUNSTATE_PURGE_INTERVAL     --purge-interval     1 (seconds)
pool_size              RUNSTATE_POOL_SIZE          --pool-size          16 (PostgreSQL connections)
=====================  ==========================  ===================  =========================

`clock` is for tests only (a callable returning epoch seconds); it has no variable or flag.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import InvalidRequest

__all__ = ["ServerConfig", "setting_fields"]

_MIB = 1024 * 1024


def _setting(default: Any, env: str, flag: str, help: str) -> Any:
    return field(default=default, metadata={"env": env, "flag": flag, "help": help})


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """How `runstate serve` runs. Build with `ServerConfig.from_env(**flags)`; invalid values
    raise `InvalidRequest` naming the setting."""

    db: str = _setting(
        "sqlite:///runstate.db",
        "RUNSTATE_DB",
        "--db",
        "database URL: sqlite:///rel.db, sqlite:////abs/path.db, a file path, or "
        "postgresql://user@host:5432/db (?schema=name)",
    )
    host: str = _setting("127.0.0.1", "RUNSTATE_HOST", "--host", "address to bind")
    port: int = _setting(8765, "RUNSTATE_PORT", "--port", "port to bind (0: any free port)")
    workers: int = _setting(1, "RUNSTATE_WORKERS", "--workers", "worker processes")
    durability: str = _setting(
        "durable",
        "RUNSTATE_DURABILITY",
        "--durability",
        "durable: fsync before a write is acknowledged; fast: crash-safe, not power-safe",
    )
    quota_bytes: int | None = _setting(
        None,
        "RUNSTATE_QUOTA_BYTES",
        "--quota-bytes",
        "bytes of keys + values per workspace (default: the database's, 64 MiB when new)",
    )
    max_value_bytes: int | None = _setting(
        None, "RUNSTATE_MAX_VALUE_BYTES", "--max-value-bytes", "largest encoded value (256 KiB)"
    )
    max_body_bytes: int = _setting(
        _MIB, "RUNSTATE_MAX_BODY_BYTES", "--max-body-bytes", "largest JSON request body"
    )
    max_import_bytes: int = _setting(
        256 * _MIB, "RUNSTATE_MAX_IMPORT_BYTES", "--max-import-bytes", "largest NDJSON import"
    )
    rate_limit: float | None = _setting(
        None,
        "RUNSTATE_RATE_LIMIT",
        "--rate-limit",
        "requests per second per token (per worker); unset: no limit",
    )
    event_retention: float = _setting(
        3600.0,
        "RUNSTATE_EVENT_RETENTION",
        "--event-retention",
        "seconds change-feed events are kept",
    )
    watch_heartbeat: float = _setting(
        15.0,
        "RUNSTATE_WATCH_HEARTBEAT",
        "--watch-heartbeat",
        "seconds between heartbeats (': ping') on an idle change-feed stream",
    )
    purge_interval: float = _setting(
        1.0,
        "RUNSTATE_PURGE_INTERVAL",
        "--purge-interval",
        "seconds between purges of expired records",
    )
    pool_size: int = _setting(
        16,
        "RUNSTATE_POOL_SIZE",
        "--pool-size",
        "PostgreSQL connections per server process (at most)",
    )
    clock: Callable[[], float] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if type(self.db) is not str or not self.db:
            raise _bad("db", "must be a database URL or file path")
        if type(self.host) is not str or not self.host:
            raise _bad("host", "must be an address")
        _check_int(self, "port", 0, 65535)
        _check_int(self, "workers", 1, 256)
        _check_int(self, "pool_size", 1, 1000)
        if self.durability not in ("durable", "fast"):
            raise _bad("durability", "must be 'durable' or 'fast'")
        for name in ("quota_bytes", "max_value_bytes"):
            if getattr(self, name) is not None:
                _check_int(self, name, 0, 2**62)
        _check_int(self, "max_body_bytes", 1024, 2**40)
        _check_int(self, "max_import_bytes", 1024, 2**42)
        if self.rate_limit is not None:
            _check_number(self, "rate_limit")
        _check_number(self, "event_retention")
        _check_number(self, "watch_heartbeat")
        _check_number(self, "purge_interval")

    @property
    def url(self) -> str:
        """The base URL clients use (IPv6 hosts in brackets)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> ServerConfig:
        """Defaults, then ``RUNSTATE_*`` variables, then `overrides` (flags; None = not given)."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in setting_fields():
            text = env.get(f.metadata["env"])
            if text is not None and text.strip() != "":
                values[f.name] = _parse(f, text.strip())
        values.update({k: v for k, v in overrides.items() if v is not None})
        unknown = sorted(set(values) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise InvalidRequest(f"unknown settings: {', '.join(unknown)}")
        return cls(**values)

    def replace(self, **changes: Any) -> ServerConfig:
        return dataclasses.replace(self, **changes)


def setting_fields() -> list[dataclasses.Field[Any]]:
    """The settings that have an environment variable and a flag (all but `clock`)."""
    return [f for f in dataclasses.fields(ServerConfig) if "env" in f.metadata]


def _bad(name: str, why: str) -> InvalidRequest:
    return InvalidRequest(f"setting {name} {why}", {"setting": name})


def _check_int(config: ServerConfig, name: str, low: int, high: int) -> None:
    value = getattr(config, name)
    if type(value) is not int or not low <= value <= high:
        raise _bad(name, f"must be an integer from {low} to {high}")


def _check_number(config: ServerConfig, name: str) -> None:
    value = getattr(config, name)
    if type(value) not in (int, float) or not math.isfinite(value) or value <= 0:
        raise _bad(name, "must be a number greater than 0")


def _parse(f: dataclasses.Field[Any], text: str) -> Any:
    kind = str(f.type)
    try:
        if kind.startswith("int"):
            return int(text)
        if kind.startswith("float"):
            return float(text)
    except ValueError:
        raise InvalidRequest(
            f"{f.metadata['env']}={text!r} is not a number", {"setting": f.name}
        ) from None
    return text
