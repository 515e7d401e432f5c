"""The command line (SPEC §3.4): ``runstate serve``, tokens, stores, records, export/import, usage.

Each command parses its arguments, opens the library object — `runstate.open` for ``--db`` /
``RUNSTATE_DB``, `runstate.connect` for ``--url`` / ``RUNSTATE_URL`` with ``--token`` /
``RUNSTATE_TOKEN`` — calls one method and prints the result: a human-readable line or table, or
with ``--json`` the JSON the HTTP API answers for the same request. Every rule lives in the
library; this module only parses and prints.

Exit status: 0 on success; 1 on an error, printed as one line ``error: <code>: <message>`` on
stderr (the codes of `runstate.errors`); 2 on a usage error. No traceback is ever printed: `main`
catches everything. docs/cli.md documents every command and option (tests/test_docs.py checks).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, NoReturn, Protocol, TextIO

import orjson

import runstate

from .engine.base import EngineBase
from .errors import DISK_FULL_ERRNOS, Error, InvalidRequest, NotFound, Unavailable
from .model import (
    MAX_PAGE,
    Event,
    StoreInfo,
    Usage,
    check_store_name,
    decode_json,
    format_datetime,
    parse_time,
)
from .store import Database, Store
from .transfer import export_line, importer, numbered_lines, parse_line

if TYPE_CHECKING:
    from .client import HttpCore

__all__ = ["DEFAULT_DB", "build_parser", "main"]

DEFAULT_DB = "sqlite:///runstate.db"
ENV_DB, ENV_URL, ENV_TOKEN = "RUNSTATE_DB", "RUNSTATE_URL", "RUNSTATE_TOKEN"
USAGE_ERROR = 2
# Import/export show progress on a terminal at most this often (seconds).
PROGRESS_EVERY = 0.2

Handler = Callable[[argparse.Namespace, "Output"], None]


class UsageError(Exception):
    """A command line that cannot run as given: exit 2, like argparse's own errors."""


# --- output -------------------------------------------------------------------------------------


class Output:
    """Where a command prints: JSON with ``--json``, else lines and tables for a person."""

    def __init__(self, as_json: bool, stdout: TextIO, stderr: TextIO) -> None:
        self.as_json = as_json
        self.stdout = stdout
        self.stderr = stderr

    def json(self, data: Any) -> None:
        self.stdout.write(dumps(data) + "\n")

    def line(self, text: str = "") -> None:
        self.stdout.write(text + "\n")

    def table(self, headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
        """Columns aligned, numbers to the right; an empty table prints its headers only."""
        values = [list(row) for row in rows]
        cells = [[_cell(v) for v in row] for row in values]
        numeric = [
            bool(values) and all(_is_number(row[i]) for row in values) for i in range(len(headers))
        ]
        widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]

        def fmt(texts: Sequence[str]) -> str:
            parts = [
                text.rjust(width) if right else text.ljust(width)
                for text, width, right in zip(texts, widths, numeric, strict=True)
            ]
            return "  ".join(parts).rstrip()

        self.line(fmt(headers))
        for row in cells:
            self.line(fmt(row))

    def progress(self, label: str) -> Progress:
        return Progress(label, self.stderr)


def dumps(data: Any, indent: bool = False) -> str:
    option = orjson.OPT_INDENT_2 if indent else 0
    return orjson.dumps(data, option=option).decode()


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return ", ".join(map(str, value)) or "-"
    return str(value)


class Progress:
    """A count on stderr, rewritten in place, when stderr is a terminal (else silent)."""

    def __init__(self, label: str, stream: TextIO) -> None:
        self.label = label
        self.stream = stream
        self.enabled = _isatty(stream)
        self.count = 0
        self._shown = 0.0

    def step(self, n: int = 1) -> None:
        self.count += n
        if self.enabled and time.monotonic() - self._shown >= PROGRESS_EVERY:
            self._shown = time.monotonic()
            self.stream.write(f"\r{self.label}: {self.count:,}")
            self.stream.flush()

    def show(self, text: str, end: str = "") -> None:
        """Replace the count with `text` (a phase: "writing ...")."""
        if self.enabled:
            self.stream.write(f"\r{self.label}: {text}\033[K{end}")
            self.stream.flush()

    def done(self, text: str) -> None:
        self.show(text, "\n")


def _isatty(stream: IO[Any]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


# --- opening the database -----------------------------------------------------------------------


def _target(args: argparse.Namespace) -> tuple[str, str]:
    """("db", url) or ("url", url): flags first, then the environment, then the default file."""
    db, url = getattr(args, "db", None), getattr(args, "url", None)
    if db and url:
        raise UsageError("runstate: error: give --db or --url, not both")
    if db:
        return "db", str(db)
    if url:
        return "url", str(url)
    env_db, env_url = os.environ.get(ENV_DB), os.environ.get(ENV_URL)
    if env_db and env_url:
        raise UsageError(
            f"runstate: error: both {ENV_DB} and {ENV_URL} are set: pass --db or --url"
        )
    if env_url:
        return "url", env_url
    return "db", env_db or DEFAULT_DB


def _token(args: argparse.Namespace) -> str | None:
    token = getattr(args, "token", None) or os.environ.get(ENV_TOKEN)
    return str(token) if token else None


def open_database(args: argparse.Namespace) -> Database:
    """The library object a data command works on: embedded (`runstate.open`) or remote
    (`runstate.connect`)."""
    kind, where = _target(args)
    if kind == "url":
        return runstate.connect(where, token=_token(args))
    # A command-line write is one short transaction: fsync it, whatever the server's mode.
    return runstate.open(where, durability="durable", purge_interval=None)


@contextlib.contextmanager
def open_server(args: argparse.Namespace) -> Iterator[HttpCore]:
    """The client of ``--url`` itself, for what the `Database` API leaves out: tokens and a
    store's export and import as streams."""
    from .client import HttpCore

    with open_database(args) as db:
        core = db.core
        if not isinstance(core, HttpCore):  # pragma: no cover - --url always connects
            raise Unavailable("this command needs --url for a runstate server")
        yield core


# --- values -------------------------------------------------------------------------------------


def parse_value(text: str, as_string: bool = False) -> Any:
    """VALUE as JSON, or the text itself when it is not valid JSON (or `as_string`)."""
    if as_string:
        return text
    try:
        return decode_json(text)
    except InvalidRequest:
        return text


def show_value(value: Any) -> str:
    """A value for a person: a string as it is, anything else as (indented) JSON."""
    if isinstance(value, str):
        return value
    return dumps(value, indent=isinstance(value, dict | list) and bool(value))


# --- commands: server and tokens ------------------------------------------------------------


def cmd_serve(args: argparse.Namespace, out: Output) -> None:
    from .config import ServerConfig
    from .server import serve

    flags = {name: getattr(args, name, None) for name in _SERVE_FLAGS}
    serve(ServerConfig.from_env(**flags))


# The `serve` flags, by `ServerConfig` field: a flag left out falls back to RUNSTATE_* / default.
_SERVE_FLAGS = ("db", "host", "port", "workers", "durability", "quota_bytes")


class Tokens:
    """Token administration: on the database directly (``--db``, also while a server runs on
    it: the server sees the change within a second) or through the HTTP API (``--url``, with an
    admin token)."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.kind, self.where = _target(args)

    def create(
        self, role: str, stores: list[str] | None, workspace: str | None
    ) -> dict[str, Any]:
        """A new token; `workspace` None: the default one (on a server: the caller's)."""
        from .tokens import DEFAULT_WORKSPACE, issue_token

        if self.kind == "url":
            with open_server(self.args) as server:
                token, info = server.issue_token(role=role, stores=stores, workspace=workspace)
        else:
            with self._engine() as engine:
                token, info = issue_token(
                    engine, role=role, stores=stores, workspace=workspace or DEFAULT_WORKSPACE
                )
        return {"token": token, **info.to_json()}

    def list(self) -> list[dict[str, Any]]:
        """The tokens of every workspace (on a server: the caller's workspace)."""
        if self.kind == "url":
            with open_server(self.args) as server:
                infos = server.list_tokens()
        else:
            with self._engine() as engine:
                infos = engine.list_tokens(None)
        return [info.to_json() for info in infos]

    def revoke(self, token_id: str) -> None:
        if self.kind == "url":
            with open_server(self.args) as server:
                revoked = server.revoke_token(token_id)
        else:
            with self._engine() as engine:
                revoked = engine.revoke_token(token_id)
        if not revoked:
            raise NotFound(f"no token with id {token_id[:100]!r}", {"id": token_id[:100]})

    @contextlib.contextmanager
    def _engine(self) -> Iterator[Any]:
        from .engine import open_engine

        engine = open_engine(self.where, durability="durable")
        try:
            yield engine
        finally:
            engine.close()


def cmd_token_create(args: argparse.Namespace, out: Output) -> None:
    created = Tokens(args).create(args.role, args.store or None, args.workspace)
    if out.as_json:
        out.json(created)
        return
    out.line(f"token: {created['token']}")
    out.line(f"id: {created['id']}")
    out.line(f"role: {created['role']}")
    out.line(f"stores: {_cell(created.get('stores')) if created.get('stores') else 'all'}")
    out.line(f"workspace: {created['workspace']}")
    out.stderr.write("The token is shown only now: keep it somewhere safe.\n")


def cmd_token_list(args: argparse.Namespace, out: Output) -> None:
    found = Tokens(args).list()
    if out.as_json:
        out.json({"tokens": found})
        return
    out.table(
        ["id", "role", "stores", "workspace", "created_at"],
        [
            [t["id"], t["role"], t["stores"] or "all", t["workspace"], _time(t["created_at"])]
            for t in found
        ],
    )


def _time(text: Any) -> Any:
    return parse_time(text) if isinstance(text, str) else text


def cmd_token_revoke(args: argparse.Namespace, out: Output) -> None:
    Tokens(args).revoke(args.id)
    if out.as_json:
        out.json({"revoked": True})
    else:
        out.line(f"revoked {args.id}")


# --- commands: pre-built actions and the change feed ---------------------------------------


def cmd_actions_list(args: argparse.Namespace, out: Output) -> None:
    from .actions import CATALOGUE

    if _target(args)[0] == "url":
        with open_server(args) as server:
            found = server.list_actions()
    else:
        found = [action.to_json() for action in CATALOGUE]
    if out.as_json:
        out.json({"actions": found})
        return
    out.table(["name", "title", "inputs"], [_action_row(action) for action in found])


def _action_row(action: dict[str, Any]) -> list[Any]:
    inputs = [i["name"] + ("" if i["required"] else "?") for i in action["inputs"]]
    return [action["name"], action["title"], " ".join(inputs) or "-"]


def cmd_actions_run(args: argparse.Namespace, out: Output) -> None:
    from . import actions

    inputs = _action_inputs(args.name, args.input or [])
    with open_database(args) as db:
        result = actions.run(db, args.name, inputs)
    if out.as_json:
        out.json({"result": result})
    else:
        out.line(show_value(result))


def _action_inputs(name: str, given: list[str]) -> dict[str, Any]:
    """``--input NAME=VALUE`` pairs: VALUE as JSON (else the text), but for an input the
    catalogue types ``string`` any JSON but a string or null is the text itself (so ``key=42``
    is the key "42")."""
    from .actions import find

    try:
        types = {i.name: i.type for i in find(name).inputs}
    except NotFound:  # the server answers that (or knows an action this version does not)
        types = {}
    inputs: dict[str, Any] = {}
    for pair in given:
        key, equals, text = pair.partition("=")
        if not equals or not key:
            raise UsageError(f"runstate actions run: error: --input {pair!r} is not NAME=VALUE")
        if key in inputs:
            raise UsageError(f"runstate actions run: error: --input {key} is given twice")
        value = parse_value(text)
        textual = types.get(key) == "string" and value is not None and type(value) is not str
        inputs[key] = text if textual else value
    return inputs


def cmd_watch(args: argparse.Namespace, out: Output) -> None:
    with open_database(args) as db:
        for event in _store(db, args.store).watch(prefix=args.prefix):
            if out.as_json:
                out.json(event.to_json())
            else:
                out.line(_show_event(event))
            out.stdout.flush()


def _show_event(event: Event) -> str:
    if event.type == "gap":
        return f"gap: changes older than the event retention were missed (at {event.version})"
    what = event.type if event.key is None else f"{event.type} {event.key}"
    if event.type == "set":
        what += f" = {dumps(event.value)}"
    return f"{what} (version {event.version})"


# --- commands: stores -----------------------------------------------------------------------


def _show_store(info: StoreInfo, out: Output) -> None:
    if out.as_json:
        out.json(info.to_json())
        return
    out.table(["field", "value"], [[k, _cell(v)] for k, v in _info_fields(info)])


def _info_fields(info: StoreInfo) -> list[tuple[str, Any]]:
    return [
        ("name", info.name),
        ("records", info.records),
        ("bytes", info.bytes),
        ("dependents", info.dependents),
        ("default_ttl", info.default_ttl),
        ("created_at", info.created_at),
    ]


def _stores_table(stores: list[StoreInfo], out: Output) -> None:
    out.table(
        ["name", "records", "bytes", "dependents", "default_ttl", "created_at"],
        [[value for _, value in _info_fields(info)] for info in stores],
    )


def cmd_stores_list(args: argparse.Namespace, out: Output) -> None:
    with open_database(args) as db:
        stores = db.stores()
    if out.as_json:
        out.json({"stores": [s.to_json() for s in stores]})
    else:
        _stores_table(stores, out)


def cmd_stores_create(args: argparse.Namespace, out: Output) -> None:
    with open_database(args) as db:
        _show_store(db.create_store(args.name, default_ttl=args.default_ttl), out)


def cmd_stores_info(args: argparse.Namespace, out: Output) -> None:
    with open_database(args) as db:
        _show_store(db.store_info(args.name), out)


def cmd_stores_delete(args: argparse.Namespace, out: Output) -> None:
    with open_database(args) as db:
        db.delete_store(args.name)
    if out.as_json:
        out.json({"deleted": True})
    else:
        out.line(f"deleted store {args.name}")


# --- commands: records ----------------------------------------------------------------------


def _store(db: Database, name: str) -> Store:
    """A store object without creating the store: reads of a missing store are empty."""
    return Store(db, check_store_name(name))


def _no_record(args: argparse.Namespace) -> NotFound:
    return NotFound(
        f"no record {args.key!r} in store {args.store!r}", {"store": args.store, "key": args.key}
    )


def cmd_get(args: argparse.Namespace, out: Output) -> None:
    with open_database(args) as db:
        record = _store(db, args.store).get_record(args.key)
    if record is None:
        raise _no_record(args)
    if out.as_json:
        out.json(record.to_json())
    else:
        out.line(show_value(record.value))


def cmd_set(args: argparse.Namespace, out: Output) -> None:
    value = parse_value(args.value, args.string)
    with open_database(args) as db:
        record = _store(db, args.store).set(args.key, value, args.ttl, args.if_version)
    if out.as_json:
        out.json(record.to_json())
        return
    expires = f", expires {format_datetime(record.expires_at)}" if record.expires_at else ""
    out.line(f"set {record.key} (version {record.version}{expires})")


def cmd_delete(args: argparse.Namespace, out: Output) -> None:
    with open_database(args) as db:
        existed = _store(db, args.store).delete(args.key, args.if_version)
    if not existed:
        raise _no_record(args)
    if out.as_json:
        out.json({"deleted": True})
    else:
        out.line(f"deleted {args.key}")


def cmd_incr(args: argparse.Namespace, out: Output) -> None:
    with open_database(args) as db:
        value = _store(db, args.store).increment(args.key, args.amount)
    out.json({"result": value}) if out.as_json else out.line(str(value))


def cmd_append(args: argparse.Namespace, out: Output) -> None:
    value = parse_value(args.value, args.string)
    with open_database(args) as db:
        length = _store(db, args.store).append(args.key, value)
    out.json({"result": length}) if out.as_json else out.line(str(length))


def cmd_keys(args: argparse.Namespace, out: Output) -> None:
    with open_database(args) as db:
        keys, cursor = _list_keys(_store(db, args.store), args)
    if out.as_json:
        out.json({"keys": keys, "next_cursor": cursor})
        return
    for key in keys:
        out.line(key)


def _list_keys(store: Store, args: argparse.Namespace) -> tuple[list[str], str | None]:
    """Every matching key, or the first `--limit` of them and the cursor that continues."""
    wanted: int | None = args.limit
    keys: list[str] = []
    cursor: str | None = args.cursor
    while True:
        size = MAX_PAGE if wanted is None else min(wanted - len(keys), MAX_PAGE)
        page = store.keys_page(args.prefix, args.start, size, cursor, args.reverse)
        keys.extend(page.items)
        cursor = page.next_cursor
        if cursor is None or (wanted is not None and len(keys) >= wanted):
            return keys, cursor


def cmd_clear(args: argparse.Namespace, out: Output) -> None:
    with open_database(args) as db:
        deleted = _store(db, args.store).clear()
    out.json({"deleted": deleted}) if out.as_json else out.line(f"deleted {deleted} records")


def cmd_usage(args: argparse.Namespace, out: Output) -> None:
    with open_database(args) as db:
        usage: Usage = db.usage()
    if out.as_json:
        out.json(usage.to_json())
        return
    share = 100 * usage.bytes / usage.quota_bytes if usage.quota_bytes else math.inf
    out.line(
        f"{usage.records} records, {usage.bytes} bytes of {usage.quota_bytes} "
        f"({share:.1f}% of the quota)"
    )
    if usage.stores:
        out.line()
        _stores_table(usage.stores, out)


# --- commands: export and import ------------------------------------------------------------


def cmd_export(args: argparse.Namespace, out: Output) -> None:
    progress = out.progress(f"export {args.store}")
    with _exported(args) as chunks, _sink(args.output, out) as sink:
        for chunk in chunks:
            sink.write(chunk)
            progress.step(chunk.count(b"\n"))
    progress.done(f"{progress.count:,} records")
    if args.output is None:
        return
    if out.as_json:
        out.json({"exported": progress.count})
    else:
        out.line(f"exported {progress.count} records to {args.output}")


@contextlib.contextmanager
def _exported(args: argparse.Namespace) -> Iterator[Iterable[bytes]]:
    """The store's NDJSON: as the server streams it (``--url``), else a line a record read."""
    if _target(args)[0] == "url":
        with open_server(args) as server:
            yield server.export_records(args.store)
        return
    with open_database(args) as db:
        yield map(export_line, _store(db, args.store).records(limit=MAX_PAGE))


@contextlib.contextmanager
def _sink(path: str | None, out: Output) -> Iterator[_BytesWriter]:
    """stdout, or FILE written through a temporary file so a failed export leaves no half file."""
    if path is None or path == "-":
        buffer = getattr(out.stdout, "buffer", None)
        if buffer is None:
            yield _TextSink(out.stdout)
        else:
            out.stdout.flush()
            yield buffer
            buffer.flush()
        return
    target = Path(path)
    tmp = target.with_name(f".{target.name}.tmp")
    try:
        with open(tmp, "wb") as f:
            yield f
        tmp.replace(target)
    finally:
        tmp.unlink(missing_ok=True)


class _BytesWriter(Protocol):
    def write(self, data: bytes, /) -> int: ...


class _TextSink:
    """A bytes writer over a text stream (for streams without a ``buffer``)."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, data: bytes) -> int:
        return self.stream.write(data.decode())


def cmd_import(args: argparse.Namespace, out: Output) -> None:
    progress = out.progress(f"import {args.store}")
    kind = _target(args)[0]
    try:
        with _source(args.file) as lines:
            if kind == "url":
                imported = _import_remote(args, lines, progress)
            else:
                imported = _import_embedded(args, lines, progress)
    except OSError as exc:
        raise InvalidRequest(f"cannot read {args.file}: {exc.strerror or exc}") from None
    progress.done(f"{imported:,} records imported")
    if out.as_json:
        out.json({"imported": imported})
    else:
        out.line(f"imported {imported} records into {args.store}")


def _import_embedded(args: argparse.Namespace, lines: Iterable[bytes], progress: Progress) -> int:
    """Every line read and checked, then one write transaction (all or nothing)."""
    entries = []
    for number, text in numbered_lines(lines):
        entries.append(parse_line(number, text))
        progress.step()
    progress.show(f"writing {len(entries):,} records")
    with open_database(args) as db:
        name = _store(db, args.store).name
        core = db.core
        if not isinstance(core, EngineBase):  # pragma: no cover - --db always opens an engine
            raise Unavailable("an import needs the embedded engine or a server")
        return int(core.write(db.workspace, name, importer(entries)))


def _import_remote(args: argparse.Namespace, lines: Iterable[bytes], progress: Progress) -> int:
    """The file streamed to the server's import route, which applies it all or nothing."""

    def body() -> Iterator[bytes]:
        for line in lines:
            progress.step()
            yield line

    with open_server(args) as server:
        return int(server.import_records(args.store, body()))


@contextlib.contextmanager
def _source(path: str) -> Iterator[Iterable[bytes]]:
    if path == "-":
        yield sys.stdin.buffer
        return
    with open(path, "rb") as f:
        yield f


# --- the parser -----------------------------------------------------------------------------


def _common() -> argparse.ArgumentParser:
    """The options every subcommand accepts after its name. Their default is "absent" so that
    a value given before a nested subcommand (``stores --json list``) is not reset."""
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("connection and output")
    group.add_argument(
        "--db",
        metavar="URL",
        default=argparse.SUPPRESS,
        help=f"embedded database: sqlite:///rel.db, sqlite:////abs.db or a path "
        f"(env {ENV_DB}; default {DEFAULT_DB})",
    )
    group.add_argument(
        "--url",
        default=argparse.SUPPRESS,
        help=f"a runstate server, e.g. http://127.0.0.1:8765 (env {ENV_URL})",
    )
    group.add_argument(
        "--token", default=argparse.SUPPRESS, help=f"the server's bearer token (env {ENV_TOKEN})"
    )
    group.add_argument(
        "--json",
        action="store_true",
        default=argparse.SUPPRESS,
        help="print the JSON the HTTP API answers",
    )
    return common


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {text!r}")
    return value


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None


def _seconds(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None


class _Parser(argparse.ArgumentParser):
    """argparse, with usage errors raised as `UsageError` (exit 2) instead of exiting here."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.format_usage()}{self.prog}: error: {message}")


def build_parser() -> argparse.ArgumentParser:
    """The whole command line; docs/cli.md documents every command and option in it."""
    common = _common()
    parser = _Parser(
        prog="runstate",
        description="runstate: a key-value data store for workflow automations.",
    )
    parser.add_argument("--version", action="version", version=_version())
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(
        group: Any, name: str, handler: Handler | None, help_text: str
    ) -> argparse.ArgumentParser:
        sub: argparse.ArgumentParser = group.add_parser(
            name, parents=[common], help=help_text, description=help_text
        )
        if handler is not None:
            sub.set_defaults(handler=handler)
        return sub

    serve = add(commands, "serve", cmd_serve, "run the HTTP server and dashboard")
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=_int, help="port to listen on (default 8765)")
    serve.add_argument("--workers", type=_positive_int, help="server processes (default 1)")
    serve.add_argument(
        "--durability",
        choices=["durable", "fast"],
        help="durable: fsync before each acknowledgement (default); fast: crash-safe only",
    )
    serve.add_argument(
        "--quota-bytes", type=_int, help="each workspace's quota in bytes (default 64 MiB)"
    )

    token = add(commands, "token", None, "create, list and revoke API tokens")
    token_commands = token.add_subparsers(dest="token_command", metavar="ACTION", required=True)
    create = add(token_commands, "create", cmd_token_create, "create a token (shown once)")
    create.add_argument(
        "--role", choices=["admin", "write", "read"], default="write", help="default: write"
    )
    create.add_argument(
        "--store",
        action="append",
        metavar="NAME",
        help="limit the token to this store (repeat for several; default: every store)",
    )
    create.add_argument(
        "--workspace",
        metavar="W",
        help="the token's workspace, created if missing (default: default; with --url, the "
        "admin token's own)",
    )
    add(token_commands, "list", cmd_token_list, "list tokens (never their secret)")
    revoke = add(token_commands, "revoke", cmd_token_revoke, "revoke a token by its id")
    revoke.add_argument("id", metavar="ID", help="the token's id (tok_...)")

    actions = add(commands, "actions", None, "list and run the pre-built actions")
    action_commands = actions.add_subparsers(
        dest="actions_command", metavar="ACTION", required=True
    )
    add(action_commands, "list", cmd_actions_list, "list the actions catalogue")
    run = add(action_commands, "run", cmd_actions_run, "run one action")
    run.add_argument("name", metavar="NAME", help="the action's name, e.g. flow.save_value")
    run.add_argument(
        "--input",
        action="append",
        metavar="NAME=VALUE",
        help="an input (VALUE parsed as JSON, else a string); repeat for several",
    )

    stores = add(commands, "stores", cmd_stores_list, "list, create, inspect and delete stores")
    store_commands = stores.add_subparsers(dest="stores_command", metavar="ACTION")
    add(store_commands, "list", cmd_stores_list, "list the stores (the default)")
    created = add(store_commands, "create", cmd_stores_create, "create a store")
    created.add_argument("name", metavar="NAME")
    created.add_argument(
        "--default-ttl",
        type=_seconds,
        metavar="S",
        help="seconds a record written without its own ttl lives",
    )
    info = add(store_commands, "info", cmd_stores_info, "show a store")
    info.add_argument("name", metavar="NAME")
    removed = add(store_commands, "delete", cmd_stores_delete, "delete a store and its records")
    removed.add_argument("name", metavar="NAME")

    def record_command(
        name: str, handler: Handler, help_text: str, key: bool = True
    ) -> argparse.ArgumentParser:
        sub = add(commands, name, handler, help_text)
        sub.add_argument("store", metavar="STORE")
        if key:
            sub.add_argument("key", metavar="KEY")
        return sub

    record_command("get", cmd_get, "print a record's value")
    setter = record_command("set", cmd_set, "write a record")
    setter.add_argument("value", metavar="VALUE", help="JSON, else stored as a string")
    setter.add_argument("--ttl", type=_seconds, metavar="S", help="expire after S seconds")
    setter.add_argument(
        "--if-version",
        type=_int,
        metavar="N",
        help="only if the record is at version N (0: only if absent)",
    )
    setter.add_argument("--string", action="store_true", help="store VALUE as a string as it is")
    deleter = record_command("delete", cmd_delete, "delete a record")
    deleter.add_argument(
        "--if-version", type=_int, metavar="N", help="only if the record is at version N"
    )
    incr = record_command("incr", cmd_incr, "add to an integer (a missing key counts as 0)")
    incr.add_argument(
        "amount", metavar="AMOUNT", type=_int, nargs="?", default=1, help="default 1"
    )
    appender = record_command("append", cmd_append, "append a value to a list")
    appender.add_argument("value", metavar="VALUE", help="JSON, else a string")
    appender.add_argument("--string", action="store_true", help="append VALUE as a string")
    lister = record_command("keys", cmd_keys, "list keys in UTF-8 byte order", key=False)
    lister.add_argument("--prefix", help="only keys starting with this")
    lister.add_argument("--start", help="from this key on (inclusive)")
    lister.add_argument("--limit", type=_positive_int, metavar="N", help="at most N keys")
    lister.add_argument("--cursor", help="continue after a previous --json answer's next_cursor")
    lister.add_argument("--reverse", action="store_true", help="in descending order")
    record_command("clear", cmd_clear, "delete every record of a store", key=False)
    watcher = record_command(
        "watch", cmd_watch, "print every change of a store as it happens", key=False
    )
    watcher.add_argument("--prefix", help="only keys starting with this (clears always show)")

    exporter = add(commands, "export", cmd_export, "write a store's records as NDJSON")
    exporter.add_argument("store", metavar="STORE")
    exporter.add_argument(
        "-o", "--output", metavar="FILE", help="write to FILE instead of standard output"
    )
    importer = add(commands, "import", cmd_import, "load NDJSON records into a store")
    importer.add_argument("store", metavar="STORE")
    importer.add_argument("file", metavar="FILE", help="NDJSON file ('-': standard input)")

    add(commands, "usage", cmd_usage, "the workspace's records and bytes against its quota")
    return parser


def _version() -> str:
    from . import __version__

    return f"runstate {__version__}"


# --- main -----------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; the exit status (0 ok, 1 error, 2 usage error)."""
    stdout, stderr = sys.stdout, sys.stderr
    try:
        args = build_parser().parse_args(argv)
        handler: Handler = args.handler
        handler(args, Output(bool(getattr(args, "json", False)), stdout, stderr))
        stdout.flush()
    except UsageError as exc:
        stderr.write(f"{exc}\n")
        return USAGE_ERROR
    except SystemExit as exc:  # --help and --version
        return exc.code if isinstance(exc.code, int) else 0
    except Error as exc:
        stderr.write(f"error: {exc.code}: {_one_line(exc.message)}\n")
        return 1
    except KeyboardInterrupt:
        stderr.write("error: interrupted\n")
        return 130
    except BrokenPipeError:
        # The reader went away (`runstate export s | head`): not an error of ours.
        with contextlib.suppress(OSError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        return 0
    except OSError as exc:  # a file the command reads or writes (`-o`, an import's input)
        code = "unavailable" if exc.errno in DISK_FULL_ERRNOS else "invalid_request"
        where = f" ({exc.filename})" if exc.filename else ""
        stderr.write(f"error: {code}: {_one_line(exc.strerror or str(exc))}{where}\n")
        return 1
    except Exception as exc:  # never a traceback: one line, the exception named
        transport = type(exc).__module__.startswith(("httpx", "httpcore"))
        code = "unavailable" if transport else "internal"
        stderr.write(f"error: {code}: {type(exc).__name__}: {_one_line(str(exc))}\n")
        return 1
    return 0


def _one_line(text: str) -> str:
    return " ".join(text.split())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
