"""The command line (SPEC §3.4, docs/cli.md): every command on the embedded database and, where
a served database is available, the same commands through `--url/--token`; JSON output shapes,
exit statuses, one-line errors without tracebacks, keys that need care, export/import.

Most tests call `runstate.cli.main` in-process (fast); a few run the installed `runstate`
entry point as a subprocess, as a user would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import runstate
from runstate import cli
from runstate.model import parse_time

ENV = ("RUNSTATE_DB", "RUNSTATE_URL", "RUNSTATE_TOKEN")
RECORD_FIELDS = {"key", "value", "version", "created_at", "updated_at", "expires_at"}
STORE_FIELDS = {"name", "records", "bytes", "dependents", "created_at", "default_ttl"}
TIME = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z"


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def json(self) -> Any:
        return json.loads(self.out)

    @property
    def lines(self) -> list[str]:
        return self.out.splitlines()


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


def _run(capsys: pytest.CaptureFixture[str], args: list[str]) -> Result:
    capsys.readouterr()
    code = cli.main(args)
    captured = capsys.readouterr()
    return Result(code, captured.out, captured.err)


@dataclass
class Target:
    """Where the commands run: `--db` on a file, or `--url/--token` against a server."""

    name: str
    flags: list[str]
    open: Callable[[], Any]  # the same database through the library, to check what happened


def _embedded(tmp_path: Path) -> Iterator[Target]:
    path = tmp_path / "state.db"
    yield Target("embedded", ["--db", str(path)], lambda: runstate.open(path, purge_interval=None))


def _remote(tmp_path: Path) -> Iterator[Target]:
    http_server = pytest.importorskip("http_server", reason="the HTTP server has not landed")
    directory = tmp_path / "served"
    directory.mkdir()
    with http_server.serve_database(directory) as server:
        url, token = server.url, server.admin_token
        yield Target(
            "remote", ["--url", url, "--token", token], lambda: runstate.connect(url, token=token)
        )


TARGETS = {"embedded": _embedded, "remote": _remote}


@pytest.fixture(params=sorted(TARGETS))
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Target]:
    yield from TARGETS[request.param](tmp_path)


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str], target: Target) -> Callable[..., Result]:
    """`run("get", "s", "k")`: the command on the test's target, connection flags after it."""

    def call(*args: str) -> Result:
        return _run(capsys, [*args, *target.flags])

    return call


@pytest.fixture
def db(target: Target) -> Iterator[Any]:
    database = target.open()
    yield database
    database.close()


@pytest.fixture
def embedded(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> Callable[..., Result]:
    """Commands on an embedded file only (for what needs no server, or only the file)."""
    path = str(tmp_path / "state.db")

    def call(*args: str) -> Result:
        return _run(capsys, [*args, "--db", path])

    return call


def assert_error(result: Result, code: str, exit_status: int = 1) -> None:
    assert result.code == exit_status, result
    assert result.out == ""
    lines = result.err.splitlines()
    assert len(lines) == 1, result.err
    assert lines[0].startswith(f"error: {code}: "), result.err
    assert "Traceback" not in result.err


def assert_usage_error(result: Result) -> None:
    assert result.code == 2, result
    assert result.out == ""
    assert "Traceback" not in result.err
    assert "error:" in result.err


# --- records --------------------------------------------------------------------------------


def test_set_then_get_prints_the_value(run):
    assert run("set", "s", "k", '{"a": [1, 2]}').code == 0
    result = run("get", "s", "k")
    assert result.code == 0
    assert json.loads(result.out) == {"a": [1, 2]}


def test_get_prints_a_string_as_it_is(run):
    run("set", "s", "k", "hello world")
    assert run("get", "s", "k").out == "hello world\n"


def test_get_json_is_the_record_object(run):
    run("set", "s", "k", "[1, 2.0]")
    record = run("get", "s", "k", "--json").json
    assert set(record) == RECORD_FIELDS
    assert record["key"] == "k"
    assert record["value"] == [1, 2.0]
    assert record["version"] > 0
    assert record["expires_at"] is None
    assert parse_time(record["created_at"]) == parse_time(record["updated_at"])


def test_get_json_keeps_the_number_form(run):
    run("set", "s", "k", "1.0")
    assert '"value":1.0' in run("get", "s", "k", "--json").out


def test_set_json_is_the_record_written(run, db):
    written = run("set", "s", "k", "7", "--json").json
    assert set(written) == RECORD_FIELDS
    assert written["value"] == 7
    assert written["version"] == db.store("s").get_record("k").version


@pytest.mark.parametrize(
    ("text", "stored"),
    [
        ("42", 42),
        ("-3", -3),
        ("1.5", 1.5),
        ("true", True),
        ("null", None),
        ('"42"', "42"),
        ('{"page": 3}', {"page": 3}),
        ("[1, \"a\"]", [1, "a"]),
        ("hello", "hello"),
        ("", ""),
        ("{not json", "{not json"),
        ("NaN", "NaN"),
        (" 42 ", 42),
    ],
)
def test_set_parses_value_as_json_else_stores_a_string(run, db, text, stored):
    assert run("set", "s", "k", text).code == 0
    value = db.store("s").get("k")
    assert value == stored
    assert type(value) is type(stored)


@pytest.mark.parametrize("text", ["42", '{"a": 1}', "true", "hello"])
def test_set_string_stores_the_text_as_it_is(run, db, text):
    assert run("set", "s", "k", text, "--string").code == 0
    assert db.store("s").get("k") == text


def test_set_of_an_integer_outside_64_bits_is_invalid_value(run, db):
    assert_error(run("set", "s", "k", str(2**63)), "invalid_value")
    assert db.store("s").get("k") is None


def test_set_with_ttl_sets_expires_at(run):
    before = datetime.now(UTC)
    record = run("set", "s", "k", "1", "--ttl", "60", "--json").json
    expires = parse_time(record["expires_at"])
    assert before + timedelta(seconds=59) < expires < before + timedelta(seconds=62)


@pytest.mark.parametrize("ttl", ["0", "-1", "nan", "inf"])
def test_set_with_a_bad_ttl_is_invalid_request(run, ttl):
    assert_error(run("set", "s", "k", "1", f"--ttl={ttl}"), "invalid_request")


def test_set_with_a_ttl_that_is_no_number_is_a_usage_error(run):
    assert_usage_error(run("set", "s", "k", "1", "--ttl", "soon"))


def test_set_if_version_is_compare_and_set(run, db):
    version = run("set", "s", "k", "1", "--json").json["version"]
    assert_error(run("set", "s", "k", "2", "--if-version", str(version + 1000)), "conflict")
    assert db.store("s").get("k") == 1
    assert run("set", "s", "k", "2", "--if-version", str(version)).code == 0
    assert db.store("s").get("k") == 2
    assert_error(run("set", "s", "k", "3", "--if-version", "0"), "conflict")
    assert run("set", "s", "new", "3", "--if-version", "0").code == 0


def test_get_of_a_missing_record_is_not_found(run):
    assert_error(run("get", "s", "missing"), "not_found")
    assert_error(run("get", "no-such-store", "k"), "not_found")


def test_get_of_a_missing_record_does_not_create_the_store(run, db):
    run("get", "ghost", "k")
    assert "ghost" not in [s.name for s in db.stores()]


def test_delete_removes_the_record(run, db):
    run("set", "s", "k", "1")
    result = run("delete", "s", "k", "--json")
    assert result.code == 0
    assert result.json == {"deleted": True}
    assert not db.store("s").has("k")


def test_delete_of_a_missing_record_is_not_found(run):
    assert_error(run("delete", "s", "missing"), "not_found")


def test_delete_if_version_at_another_version_is_conflict(run, db):
    version = run("set", "s", "k", "1", "--json").json["version"]
    assert_error(run("delete", "s", "k", "--if-version", str(version + 1000)), "conflict")
    assert db.store("s").has("k")
    assert run("delete", "s", "k", "--if-version", str(version)).code == 0


def test_incr_counts_from_zero_and_prints_the_new_value(run):
    assert run("incr", "s", "n").out == "1\n"
    assert run("incr", "s", "n", "5").out == "6\n"
    assert run("incr", "s", "n", "-10").out == "-4\n"
    assert run("incr", "s", "n", "--json").json == {"result": -3}


def test_incr_of_a_non_integer_is_type_mismatch(run, db):
    run("set", "s", "k", "1.5")
    assert_error(run("incr", "s", "k"), "type_mismatch")
    assert db.store("s").get("k") == 1.5


def test_incr_past_64_bits_is_out_of_range(run, db):
    run("set", "s", "n", str(2**63 - 1))
    assert_error(run("incr", "s", "n"), "out_of_range")
    assert db.store("s").get("n") == 2**63 - 1


def test_incr_amount_must_be_an_integer(run):
    assert_usage_error(run("incr", "s", "n", "1.5"))


def test_append_prints_the_new_length(run, db):
    assert run("append", "s", "l", "7").out == "1\n"
    assert run("append", "s", "l", '{"a": 1}', "--json").json == {"result": 2}
    assert run("append", "s", "l", "8", "--string").code == 0
    assert db.store("s").get("l") == [7, {"a": 1}, "8"]


def test_append_to_a_non_list_is_type_mismatch(run):
    run("set", "s", "k", "1")
    assert_error(run("append", "s", "k", "2"), "type_mismatch")


def test_keys_lists_every_key_in_byte_order(run, db):
    db.store("s").set_many({f"k{i:04}": i for i in range(1500)} | {"é": 1, "z": 2})
    result = run("keys", "s")
    assert result.code == 0
    assert result.lines == [*(f"k{i:04}" for i in range(1500)), "z", "é"]


def test_keys_json_prefix_reverse(run, db):
    db.store("s").set_many({"user:1": 1, "user:2": 2, "order:1": 3})
    assert run("keys", "s", "--json").json == {
        "keys": ["order:1", "user:1", "user:2"],
        "next_cursor": None,
    }
    assert run("keys", "s", "--prefix", "user:", "--reverse").lines == ["user:2", "user:1"]
    assert run("keys", "s", "--start", "user:", "--json").json["keys"] == ["user:1", "user:2"]


def test_keys_limit_and_cursor_page_through(run, db):
    db.store("s").set_many({f"k{i}": i for i in range(5)})
    first = run("keys", "s", "--limit", "2", "--json").json
    assert first["keys"] == ["k0", "k1"]
    assert first["next_cursor"]
    second = run("keys", "s", "--limit", "2", "--cursor", first["next_cursor"], "--json").json
    assert second["keys"] == ["k2", "k3"]
    rest = run("keys", "s", "--cursor", second["next_cursor"], "--json").json
    assert rest == {"keys": ["k4"], "next_cursor": None}


def test_keys_limit_above_one_page(run, db):
    db.store("s").set_many({f"k{i:04}": i for i in range(1200)})
    result = run("keys", "s", "--limit", "1100", "--json").json
    assert len(result["keys"]) == 1100
    assert result["next_cursor"]


def test_keys_of_a_missing_store_is_empty(run):
    assert run("keys", "nothing", "--json").json == {"keys": [], "next_cursor": None}


@pytest.mark.parametrize("limit", ["0", "-1", "x"])
def test_keys_limit_must_be_a_positive_integer(run, limit):
    assert_usage_error(run("keys", "s", f"--limit={limit}"))


def test_clear_deletes_every_record(run, db):
    db.store("s").set_many({"a": 1, "b": 2})
    assert run("clear", "s", "--json").json == {"deleted": 2}
    assert run("clear", "s").out == "deleted 0 records\n"
    assert list(db.store("s").keys()) == []


WEIRD_KEYS = [
    "a/b",
    "/leading/and/trailing/",
    ".",
    "..",
    "../etc/passwd",
    "spa ce",
    "?x=1#frag%20",
    "%2F",
    "emoji 🎉",
    "ünïcödé",
    "tab\tnew\nline",
    "back\\slash",
    "k" * 1024,
    "'\"quotes\"'",
]


@pytest.mark.parametrize("key", WEIRD_KEYS, ids=range(len(WEIRD_KEYS)))
def test_weird_keys_round_trip(run, db, key):
    assert run("set", "s", key, "v").code == 0
    assert db.store("s").get(key) == "v"
    assert run("get", "s", key, "--json").json["key"] == key
    assert run("keys", "s", "--json").json["keys"] == [key]
    assert run("incr", "counters", key).out == "1\n"
    assert run("delete", "s", key).code == 0
    assert not db.store("s").has(key)


def test_a_key_that_starts_with_a_dash_goes_after_double_dash(capsys, target, db):
    assert _run(capsys, ["set", *target.flags, "s", "--", "-k", "v"]).code == 0
    assert db.store("s").get("-k") == "v"
    assert _run(capsys, ["get", *target.flags, "--", "s", "-k"]).out == "v\n"


@pytest.mark.parametrize("key", ["", "k" * 1025, "a\x00b"])
def test_invalid_keys_are_invalid_key(run, key):
    assert_error(run("set", "s", key, "1"), "invalid_key")


@pytest.mark.parametrize("name", ["bad name", "", "x" * 129, "slash/no"])
def test_invalid_store_names_are_invalid_request(run, name):
    assert_error(run("set", name, "k", "1"), "invalid_request")
    assert_error(run("get", name, "k"), "invalid_request")


# --- stores and usage -----------------------------------------------------------------------


def test_stores_lists_as_a_table_and_as_json(run, db):
    db.store("b").set("k", 1)
    db.create_store("a", default_ttl=60)
    table = run("stores")
    assert table.code == 0
    assert table.lines[0].split() == [
        "name", "records", "bytes", "dependents", "default_ttl", "created_at"
    ]
    assert [line.split()[0] for line in table.lines[1:]] == ["a", "b"]
    listed = run("stores", "list", "--json").json
    assert set(listed) == {"stores"}
    assert [s["name"] for s in listed["stores"]] == ["a", "b"]
    assert all(set(s) == STORE_FIELDS for s in listed["stores"])
    assert listed["stores"][0]["default_ttl"] == 60
    assert run("stores", "--json").json == listed


def test_stores_create_info_delete(run, db):
    created = run("stores", "create", "orders", "--default-ttl", "3600", "--json").json
    assert set(created) == STORE_FIELDS
    assert created["name"] == "orders"
    assert created["default_ttl"] == 3600
    assert created["records"] == 0
    assert db.store_info("orders").default_ttl == 3600
    info = run("stores", "info", "orders", "--json").json
    assert info == created
    assert "orders" in run("stores", "info", "orders").out
    deleted = run("stores", "delete", "orders", "--json")
    assert deleted.code == 0
    assert "orders" not in [s.name for s in db.stores()]


def test_stores_create_of_an_existing_store_is_conflict(run):
    run("stores", "create", "orders")
    assert_error(run("stores", "create", "orders"), "conflict")


def test_stores_info_and_delete_of_a_missing_store_are_not_found(run):
    assert_error(run("stores", "info", "ghost"), "not_found")
    assert_error(run("stores", "delete", "ghost"), "not_found")


def test_stores_delete_with_dependents_is_has_dependents(run, db):
    db.store("orders", workflow="wf_1").set("k", 1)
    result = run("stores", "delete", "orders")
    assert_error(result, "has_dependents")
    assert "wf_1" in result.err
    assert db.store("orders").get("k") == 1


def test_stores_create_with_a_bad_default_ttl_is_invalid_request(run):
    assert_error(run("stores", "create", "s", "--default-ttl", "-5"), "invalid_request")


def test_usage_json_is_the_usage_object(run, db):
    db.store("s").set("key", "value")
    usage = run("usage", "--json").json
    assert set(usage) == {"records", "bytes", "quota_bytes", "stores"}
    assert usage["records"] == 1
    assert usage["bytes"] == len("key") + len('"value"')
    assert usage["quota_bytes"] > 0
    assert [s["name"] for s in usage["stores"]] == ["s"]
    assert all(set(s) == STORE_FIELDS for s in usage["stores"])
    text = run("usage").out
    assert "1 records" in text
    assert str(usage["quota_bytes"]) in text


# --- export and import ----------------------------------------------------------------------


def _records(db: Any, store: str) -> list[tuple[str, Any, datetime | None]]:
    return [(r.key, r.value, r.expires_at) for r in db.store(store).records()]


def test_export_writes_one_ndjson_line_per_record(run, db):
    store = db.store("s")
    store.set("b", {"x": [1, 2.5, None]})
    store.set("a", "text", ttl=3600)
    result = run("export", "s")
    assert result.code == 0
    lines = [json.loads(line) for line in result.lines]
    assert [line["key"] for line in lines] == ["a", "b"]
    assert all(set(line) == {"key", "value", "expires_at"} for line in lines)
    assert lines[1] == {"key": "b", "value": {"x": [1, 2.5, None]}, "expires_at": None}
    assert parse_time(lines[0]["expires_at"]) == store.get_record("a").expires_at


def test_export_to_a_file_and_import_round_trip_with_expiry(run, db, tmp_path):
    source = db.store("src")
    entries = {key: {"key": key, "n": i, "float": 1.0} for i, key in enumerate(WEIRD_KEYS)}
    source.set_many(entries)
    for start in (0, 750):  # 1500 records: more than one page of an export
        with source.atomic() as tx:
            for i in range(start, start + 750):
                tx.set(f"ttl:{i:04}", i, ttl=1000 + i)
    out = tmp_path / "export.ndjson"
    exported = run("export", "src", "-o", str(out), "--json")
    assert exported.code == 0
    assert exported.json == {"exported": len(entries) + 1500}
    imported = run("import", "copy", str(out), "--json")
    assert imported.code == 0
    assert imported.json == {"imported": len(entries) + 1500}
    assert _records(db, "copy") == _records(db, "src")  # expires_at to the microsecond
    assert '"float":1.0' in out.read_text(encoding="utf-8")


def test_a_file_that_cannot_be_written_is_a_one_line_error_with_a_spec_code(run, db, tmp_path):
    db.store("s").set("k", 1)
    result = run("export", "s", "-o", str(tmp_path))  # a directory, not a file
    assert result.code == 1
    assert result.err.startswith("error: invalid_request: ")
    assert tmp_path.name in result.err  # the file named (or its temporary sibling)
    assert "Traceback" not in result.err


def test_import_overwrites_existing_keys_and_keeps_others(run, db, tmp_path):
    db.store("s").set_many({"a": 1, "keep": 2})
    path = tmp_path / "in.ndjson"
    path.write_text('{"key": "a", "value": "new", "expires_at": null}\n\n', encoding="utf-8")
    assert run("import", "s", str(path)).code == 0
    assert db.store("s").get("a") == "new"
    assert db.store("s").get("keep") == 2


def test_import_skips_records_already_expired(run, db, tmp_path):
    path = tmp_path / "in.ndjson"
    past = "2020-01-01T00:00:00.000000Z"
    path.write_text(
        f'{{"key": "old", "value": 1, "expires_at": "{past}"}}\n'
        '{"key": "new", "value": 2}\n',
        encoding="utf-8",
    )
    assert run("import", "s", str(path), "--json").json == {"imported": 1}
    assert list(db.store("s").keys()) == ["new"]


BAD_LINES = {
    "not json": "{nope",
    "not an object": "[1, 2]",
    "no value": '{"key": "k"}',
    "unknown field": '{"key": "k", "value": 1, "ttl": 5}',
    "empty key": '{"key": "", "value": 1}',
    "key not a string": '{"key": 5, "value": 1}',
    "integer out of range": '{"key": "k", "value": 99999999999999999999}',
    "too deep": '{"key": "k", "value": ' + "[" * 65 + "]" * 65 + "}",
    "bad time": '{"key": "k", "value": 1, "expires_at": "tomorrow"}',
    "time not a string": '{"key": "k", "value": 1, "expires_at": 5}',
}


@pytest.mark.parametrize("bad", sorted(BAD_LINES))
def test_a_bad_import_line_is_named_and_changes_nothing(run, db, tmp_path, bad):
    db.store("s").set_many({"a": "before", "b": [1]})
    before = [(r.key, r.value, r.version) for r in db.store("s").records()]
    path = tmp_path / "in.ndjson"
    path.write_text(
        '{"key": "a", "value": "after", "expires_at": null}\n'
        '{"key": "c", "value": 3, "expires_at": null}\n'
        f"{BAD_LINES[bad]}\n"
        '{"key": "d", "value": 4, "expires_at": null}\n',
        encoding="utf-8",
    )
    result = run("import", "s", str(path))
    assert_error(result, "invalid_request")
    assert "line 3" in result.err
    assert [(r.key, r.value, r.version) for r in db.store("s").records()] == before


def test_an_import_over_the_quota_changes_nothing(embedded, tmp_path, capsys):
    path = tmp_path / "state.db"
    runstate.open(path, purge_interval=None, quota_bytes=50_000).close()
    lines = [json.dumps({"key": f"k{i:05}", "value": "x" * 100}) for i in range(1000)]
    source = tmp_path / "big.ndjson"
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = embedded("import", "s", str(source))
    assert_error(result, "quota_exceeded")
    assert "line " in result.err
    with runstate.open(path, purge_interval=None) as db:
        assert db.usage().records == 0


def test_import_of_a_missing_file_is_an_error(run, tmp_path):
    assert_error(run("import", "s", str(tmp_path / "absent.ndjson")), "invalid_request")


def test_import_reads_standard_input(run, db, monkeypatch):
    data = b'{"key": "k", "value": [1], "expires_at": null}\n'
    monkeypatch.setattr(sys, "stdin", _Stdin(data))
    assert run("import", "s", "-").code == 0
    assert db.store("s").get("k") == [1]


class _Stdin:
    def __init__(self, data: bytes) -> None:
        import io

        self.buffer = io.BytesIO(data)


def test_export_and_import_show_no_progress_when_stderr_is_not_a_terminal(run, db, tmp_path):
    db.store("s").set_many({f"k{i}": i for i in range(10)})
    out = tmp_path / "e.ndjson"
    result = run("export", "s", "-o", str(out))
    assert result.err == ""
    assert run("import", "t", str(out)).err == ""


def test_progress_is_shown_on_a_terminal(capsys):
    import io

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    stream = Terminal()
    progress = cli.Progress("import s", stream)
    progress.step(5)
    progress.done("5 records")
    assert "import s: 5" in stream.getvalue()
    assert stream.getvalue().endswith("import s: 5 records\x1b[K\n")


# --- connection, environment and errors -----------------------------------------------------


def test_sqlite_urls_and_plain_paths(embedded, capsys, tmp_path):
    for where in ["sqlite:///rel.db", f"sqlite:///{tmp_path}/abs.db", "plain.db"]:
        assert _run(capsys, ["set", "s", "k", "1", "--db", where]).code == 0
    assert (tmp_path / "rel.db").exists()
    assert (tmp_path / "abs.db").exists()
    assert (tmp_path / "plain.db").exists()


def test_the_default_database_is_runstate_db_in_the_working_directory(capsys, tmp_path):
    assert _run(capsys, ["set", "s", "k", "1"]).code == 0
    assert (tmp_path / "runstate.db").exists()


def test_runstate_db_environment_variable(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("RUNSTATE_DB", f"sqlite:///{tmp_path}/env.db")
    assert _run(capsys, ["set", "s", "k", "1"]).code == 0
    with runstate.open(tmp_path / "env.db", purge_interval=None) as db:
        assert db.store("s").get("k") == 1


def test_db_flag_wins_over_the_environment(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("RUNSTATE_URL", "http://127.0.0.1:9")
    assert _run(capsys, ["set", "s", "k", "1", "--db", "flag.db"]).code == 0
    assert (tmp_path / "flag.db").exists()


def test_db_and_url_together_are_a_usage_error(capsys):
    assert_usage_error(_run(capsys, ["get", "s", "k", "--db", "a.db", "--url", "http://x"]))


def test_both_environment_variables_are_a_usage_error(capsys, monkeypatch):
    monkeypatch.setenv("RUNSTATE_DB", "a.db")
    monkeypatch.setenv("RUNSTATE_URL", "http://127.0.0.1:9")
    assert_usage_error(_run(capsys, ["get", "s", "k"]))


def test_a_database_in_a_missing_directory_is_one_error_line(capsys, tmp_path):
    result = _run(capsys, ["get", "s", "k", "--db", str(tmp_path / "no" / "such.db")])
    assert_error(result, "invalid_request")


def test_a_file_that_is_not_a_database_is_one_error_line(capsys, tmp_path):
    (tmp_path / "junk.db").write_bytes(b"this is not sqlite" * 100)
    result = _run(capsys, ["get", "s", "k", "--db", str(tmp_path / "junk.db")])
    assert result.code == 1
    assert len(result.err.splitlines()) == 1
    assert result.err.startswith("error: ")
    assert "Traceback" not in result.err


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["bogus"],
        ["get"],
        ["get", "s"],
        ["set", "s", "k"],
        ["token"],
        ["token", "create", "--role", "root"],
        ["stores", "create"],
        ["serve", "--port", "eighty"],
        ["serve", "--durability", "sometimes"],
        ["serve", "--workers", "0"],
        ["get", "s", "k", "--no-such-option"],
        ["actions"],
        ["actions", "run"],
        ["actions", "run", "flow.save_value", "--input", "key"],
        ["actions", "run", "flow.save_value", "--input", "key=a", "--input", "key=b"],
        ["watch"],
    ],
)
def test_usage_errors_exit_2_without_a_traceback(capsys, args):
    assert_usage_error(_run(capsys, args))


def test_help_exits_0(capsys):
    assert _run(capsys, ["--help"]).code == 0
    assert _run(capsys, ["keys", "--help"]).code == 0
    assert "runstate" in _run(capsys, ["--version"]).out


def _leaf_commands() -> list[list[str]]:
    from test_docs import COMMANDS

    return [
        name.split()
        for name, parser in COMMANDS.items()
        if not any(getattr(a, "required", False) and a.choices for a in parser._actions
                   if a.__class__.__name__ == "_SubParsersAction")
    ]


def test_common_options_are_accepted_after_every_subcommand():
    parser = cli.build_parser()
    filler = {"STORE": "s", "KEY": "k", "VALUE": "v", "NAME": "n", "ID": "i", "FILE": "f"}
    for command in _leaf_commands():
        sub = parser
        for word in command:
            sub = next(
                a for a in sub._actions if a.__class__.__name__ == "_SubParsersAction"
            ).choices[word]
        positionals = [
            filler[str(a.metavar)]
            for a in sub._actions
            if not a.option_strings and a.__class__.__name__ != "_SubParsersAction"
            and a.nargs != "?"
        ]
        args = parser.parse_args(
            [*command, *positionals, "--db", "x.db", "--url", "u", "--token", "t", "--json"]
        )
        assert (args.db, args.url, args.token, args.json) == ("x.db", "u", "t", True), command


def test_an_unexpected_failure_is_one_line_without_a_traceback(capsys, monkeypatch):
    def broken(args, out):
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(cli, "cmd_get", broken)
    monkeypatch.setattr(cli, "open_database", broken)
    result = _run(capsys, ["get", "s", "k"])
    assert result.code == 1
    assert result.err == "error: internal: RuntimeError: boom second line\n"


def _runstate(*args: str, cwd: Path, env: dict[str, str] | None = None) -> Result:
    """The installed entry point, as a user runs it."""
    command = [sys.executable, "-c", "import sys; from runstate.cli import main; sys.exit(main())"]
    environment = {k: v for k, v in os.environ.items() if k not in ENV} | (env or {})
    done = subprocess.run(
        [*command, *args], cwd=cwd, env=environment, capture_output=True, text=True, timeout=60
    )
    return Result(done.returncode, done.stdout, done.stderr)


def test_the_entry_point_runs_and_reports_errors_in_one_line(tmp_path):
    assert _runstate("set", "s", "k", "41", cwd=tmp_path).code == 0
    assert _runstate("incr", "s", "k", cwd=tmp_path).out == "42\n"
    missing = _runstate("get", "s", "nope", cwd=tmp_path)
    assert missing.code == 1
    assert missing.err == "error: not_found: no record 'nope' in store 's'\n"
    usage = _runstate("get", cwd=tmp_path)
    assert usage.code == 2
    assert "Traceback" not in usage.err


def test_export_into_a_closed_pipe_is_quiet(tmp_path):
    with runstate.open(tmp_path / "runstate.db", purge_interval=None) as db:
        db.store("s").set_many({f"k{i:05}": "x" * 100 for i in range(20_000)})
    script = (
        f"{sys.executable} -c 'import sys; from runstate.cli import main; sys.exit(main())' "
        "export s | head -n 1"
    )
    done = subprocess.run(
        ["bash", "-o", "pipefail", "-c", script],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if k not in ENV},
    )
    assert json.loads(done.stdout)["key"] == "k00000"
    assert "Traceback" not in done.stderr


# --- tokens ---------------------------------------------------------------------------------


def test_token_create_json_shape(embedded):
    result = embedded("token", "create", "--json")
    assert result.code == 0
    created = result.json
    assert {"token", "id", "role", "stores", "workspace"} <= set(created)
    assert created["token"].startswith("rs_")
    assert created["id"].startswith("tok_")
    assert (created["role"], created["stores"], created["workspace"]) == ("write", None, "default")


def test_token_create_with_role_stores_and_a_new_workspace(embedded):
    created = embedded(
        "token", "create", "--role", "read", "--store", "a", "--store", "b",
        "--workspace", "acme", "--json",
    ).json
    granted = (created["role"], created["stores"], created["workspace"])
    assert granted == ("read", ["a", "b"], "acme")


def test_token_create_prints_the_token_for_a_person(embedded):
    result = embedded("token", "create")
    assert result.code == 0
    assert result.lines[0].startswith("token: rs_")
    assert "shown only now" in result.err


def test_token_list_and_revoke(embedded):
    first = embedded("token", "create", "--json").json
    second = embedded("token", "create", "--role", "admin", "--json").json
    listed = embedded("token", "list", "--json").json
    assert set(listed) == {"tokens"}
    ids = [t["id"] for t in listed["tokens"]]
    assert ids == [first["id"], second["id"]]
    assert all("token" not in t for t in listed["tokens"])
    assert first["token"] not in embedded("token", "list").out
    assert embedded("token", "revoke", first["id"], "--json").json == {"revoked": True}
    assert [t["id"] for t in embedded("token", "list", "--json").json["tokens"]] == [second["id"]]
    assert_error(embedded("token", "revoke", first["id"]), "not_found")


@pytest.mark.parametrize(
    "args", [["--workspace", "bad name"], ["--store", "bad/store"]], ids=["workspace", "store"]
)
def test_token_create_with_bad_names_is_invalid_request(embedded, args):
    assert_error(embedded("token", "create", *args), "invalid_request")


# --- tokens and the server ----------------------------------------------------------------------


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Any]:
    http_server = pytest.importorskip("http_server", reason="the HTTP server has not landed")
    directory = tmp_path / "served"
    directory.mkdir()
    with http_server.serve_database(directory) as server:
        server.db_path = directory / "state.db"
        yield server


def _eventually(check: Callable[[], bool], seconds: float = 3.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return check()


def test_token_commands_through_the_server(capsys, served):
    flags = ["--url", served.url, "--token", served.admin_token]
    created = _run(capsys, ["token", "create", "--role", "read", "--store", "a", "--json", *flags])
    assert created.code == 0
    token = created.json
    assert (token["role"], token["stores"], token["workspace"]) == ("read", ["a"], "default")
    listed = _run(capsys, ["token", "list", "--json", *flags]).json
    assert token["id"] in [t["id"] for t in listed["tokens"]]
    read_flags = ["--url", served.url, "--token", token["token"]]
    assert_error(_run(capsys, ["set", "a", "k", "1", *read_flags]), "forbidden")
    assert_error(_run(capsys, ["get", "b", "k", *read_flags]), "forbidden")
    revoked = _run(capsys, ["token", "revoke", token["id"], "--json", *flags])
    assert revoked.json == {"revoked": True}
    assert_error(_run(capsys, ["token", "revoke", token["id"], *flags]), "not_found")
    # revocation takes effect within a second (SPEC §3.4), in every server process
    assert _eventually(lambda: _run(capsys, ["keys", "a", *read_flags]).code == 1, 1.5)
    assert_error(_run(capsys, ["keys", "a", *read_flags]), "unauthorized")


def test_a_token_made_with_db_while_the_server_runs_works_within_a_second(capsys, served):
    db_flags = ["--db", str(served.db_path)]
    made = _run(capsys, ["token", "create", "--role", "write", "--json", *db_flags]).json
    flags = ["--url", served.url, "--token", made["token"]]
    assert _eventually(lambda: _run(capsys, ["set", "s", "k", "1", *flags]).code == 0, 1.5)
    assert _run(capsys, ["token", "revoke", made["id"], *db_flags]).code == 0
    assert _eventually(lambda: _run(capsys, ["get", "s", "k", *flags]).code == 1, 1.5)
    assert_error(_run(capsys, ["get", "s", "k", *flags]), "unauthorized")


def test_a_token_for_a_new_workspace_sees_only_that_workspace(capsys, served):
    made = _run(
        capsys, ["token", "create", "--workspace", "acme", "--json", "--db", str(served.db_path)]
    ).json
    assert made["workspace"] == "acme"
    admin = ["--url", served.url, "--token", served.admin_token]
    tenant = ["--url", served.url, "--token", made["token"]]
    assert _run(capsys, ["set", "s", "k", '"default"', *admin]).code == 0
    assert _eventually(lambda: _run(capsys, ["set", "s", "k", '"acme"', *tenant]).code == 0)
    assert _run(capsys, ["get", "s", "k", *tenant]).out == "acme\n"
    assert _run(capsys, ["get", "s", "k", *admin]).out == "default\n"


def test_data_commands_need_a_token_on_a_server(capsys, served):
    assert_error(_run(capsys, ["get", "s", "k", "--url", served.url]), "unauthorized")
    bad = ["--url", served.url, "--token", "rs_not_a_token"]
    assert_error(_run(capsys, ["stores", *bad]), "unauthorized")


def test_runstate_token_environment_variables(capsys, served, monkeypatch):
    monkeypatch.setenv("RUNSTATE_URL", served.url)
    monkeypatch.setenv("RUNSTATE_TOKEN", served.admin_token)
    assert _run(capsys, ["set", "s", "k", "[1]"]).code == 0
    assert _run(capsys, ["get", "s", "k", "--json"]).json["value"] == [1]


def test_an_unreachable_server_is_unavailable(capsys):
    port = _free_port()
    result = _run(capsys, ["get", "s", "k", "--url", f"http://127.0.0.1:{port}", "--token", "x"])
    assert_error(result, "unavailable")
    assert_error(
        _run(capsys, ["token", "list", "--url", f"http://127.0.0.1:{port}"]), "unavailable"
    )


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_serve_prints_the_admin_token_and_where_it_listens(tmp_path):
    pytest.importorskip("runstate.server", reason="the HTTP server has not landed")
    import httpx

    port = _free_port()
    command = [
        sys.executable, "-c", "import sys; from runstate.cli import main; sys.exit(main())",
        "serve", "--db", "sqlite:///served.db", "--port", str(port), "--durability", "fast",
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k not in ENV}
    process = subprocess.Popen(
        command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, start_new_session=True,
    )  # fmt: skip
    try:
        lines: list[str] = []
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line.rstrip("\n"))
            if line.startswith("runstate listening on"):
                break
        assert f"runstate listening on http://127.0.0.1:{port}" in lines, lines
        token = next(line for line in lines if line.startswith("admin token: ")).split()[-1]
        assert token.startswith("rs_")
        assert (tmp_path / "served.db").exists()
        url = f"http://127.0.0.1:{port}"
        assert _eventually(lambda: _healthy(httpx, url), 10)
        answer = httpx.get(url + "/v1/usage", headers={"Authorization": f"Bearer {token}"})
        assert answer.status_code == 200
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert "Traceback" not in "\n".join(lines)


def _healthy(httpx: Any, url: str) -> bool:
    try:
        return bool(httpx.get(url + "/healthz", timeout=1).status_code == 200)
    except httpx.HTTPError:
        return False


def test_serve_refuses_a_bad_setting_in_one_line(capsys, monkeypatch):
    pytest.importorskip("runstate.server", reason="the HTTP server has not landed")
    monkeypatch.setenv("RUNSTATE_PORT", "not-a-port")
    assert_error(_run(capsys, ["serve"]), "invalid_request")
