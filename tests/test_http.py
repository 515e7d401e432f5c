"""The HTTP API (SPEC §3.2, §4, §5): every route's shapes and statuses, keys in paths, limits,
and one error envelope on every error path.

The semantics of the operations are the shared suite's (it runs remote too); here is what only
HTTP has: routes, status codes, query and body parsing, percent-encoded paths, the body limit,
streaming export/import, health, metrics and the OpenAPI document.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

import runstate
from http_server import quote_key, start_server
from runstate import ops
from runstate.config import ServerConfig
from runstate.errors import ERRORS, Unavailable
from runstate.server import first_start
from runstate.server.routes import ROUTES

KEYS = ["/", "?", "#", "%", " ", "ü", "🔥", ".", "..", "a/b/../c", "%2F", "%2E%2E", "k?x=1#f",
        "../../etc", "tab\there", "+plus", "~tilde", "a" * 1024]  # fmt: skip


@pytest.fixture
def served(tmp_path, clock, server_db):
    server = start_server(tmp_path, clock, durability="fast", **server_db)
    yield server
    server.close()


@pytest.fixture
def http(served):
    with served.client(served.admin_token) as client:
        yield client


def rec(store: str, key: str) -> str:
    return f"/v1/stores/{quote_key(store)}/records/{quote_key(key)}"


def assert_error(response: httpx.Response, code: str, status: int | None = None) -> dict[str, Any]:
    """The one error envelope: exactly {"error": {"code", "message", "details"}}, its status
    the code's, JSON, and no traceback."""
    assert response.status_code == (status or ERRORS[code].status), response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str)
    assert body["error"]["message"]
    assert isinstance(body["error"]["details"], dict)
    assert "Traceback" not in response.text
    return dict(body["error"])


# --- stores -----------------------------------------------------------------------------------


def test_creating_a_store_answers_201_with_its_info(http):
    r = http.post("/v1/stores", json={"name": "orders", "default_ttl": 60})
    assert r.status_code == 201
    info = r.json()
    assert set(info) == {"name", "records", "bytes", "dependents", "created_at", "default_ttl"}
    assert (info["name"], info["records"], info["bytes"]) == ("orders", 0, 0)
    assert (info["dependents"], info["default_ttl"]) == ([], 60)
    assert info["created_at"] == "2026-01-01T00:00:00.000000Z"


def test_creating_an_existing_store_is_a_conflict(http):
    http.post("/v1/stores", json={"name": "orders"})
    assert_error(http.post("/v1/stores", json={"name": "orders"}), "conflict")


@pytest.mark.parametrize(
    "body",
    [{}, {"name": ""}, {"name": "a/b"}, {"name": "x" * 129}, {"name": 5}, {"name": "a", "x": 1},
     {"name": "a", "default_ttl": 0}, {"name": "a", "default_ttl": "5"}, [], "orders"],
)  # fmt: skip
def test_creating_a_store_with_a_bad_body_is_invalid_request(http, body):
    assert_error(http.post("/v1/stores", json=body), "invalid_request")


def test_store_list_info_update_and_delete(http):
    http.post("/v1/stores", json={"name": "b"})
    http.post("/v1/stores", json={"name": "a"})
    http.put(rec("a", "k"), json={"value": "vv"})
    stores = http.get("/v1/stores").json()
    assert set(stores) == {"stores"}
    assert [s["name"] for s in stores["stores"]] == ["a", "b"]
    info = http.get("/v1/stores/a").json()
    assert (info["records"], info["bytes"]) == (1, len(b"k") + len(b'"vv"'))
    patched = http.patch("/v1/stores/a", json={"default_ttl": 1.5})
    assert (patched.status_code, patched.json()["default_ttl"]) == (200, 1.5)
    assert http.patch("/v1/stores/a", json={"default_ttl": None}).json()["default_ttl"] is None
    r = http.delete("/v1/stores/a")
    assert (r.status_code, r.json()) == (200, {"deleted": True})
    assert_error(http.get("/v1/stores/a"), "not_found")


@pytest.mark.parametrize(
    ("method", "body"), [("GET", None), ("PATCH", {"default_ttl": 5}), ("DELETE", None)]
)
def test_info_update_or_delete_of_a_missing_store_is_not_found(http, method, body):
    assert_error(http.request(method, "/v1/stores/nope", json=body), "not_found")


@pytest.mark.parametrize("body", [{}, {"default_ttl": -1}, {"default_ttl": True}, {"x": 1}])
def test_a_bad_store_update_is_invalid_request(http, body):
    http.post("/v1/stores", json={"name": "s"})
    assert_error(http.patch("/v1/stores/s", json=body), "invalid_request")


def test_dependents_are_added_removed_and_block_delete(http):
    http.post("/v1/stores", json={"name": "s"})
    info = http.put("/v1/stores/s/dependents/" + quote_key("wf 1/ü")).json()
    assert info["dependents"] == ["wf 1/ü"]
    error = assert_error(http.delete("/v1/stores/s"), "has_dependents")
    assert error["details"]["dependents"] == ["wf 1/ü"]
    info = http.delete("/v1/stores/s/dependents/" + quote_key("wf 1/ü")).json()
    assert info["dependents"] == []
    assert http.delete("/v1/stores/s").status_code == 200


def test_dependents_of_a_missing_store_are_not_found(http):
    assert_error(http.put("/v1/stores/nope/dependents/wf"), "not_found")
    assert_error(http.delete("/v1/stores/nope/dependents/wf"), "not_found")


@pytest.mark.parametrize("name", ["a%2Fb", "%00", "x" * 129, "a%20b", "%FF"])
def test_an_invalid_store_name_in_a_path_is_invalid_request(http, name):
    assert_error(http.get(f"/v1/stores/{name}"), "invalid_request")
    assert_error(http.get(f"/v1/stores/{name}/keys"), "invalid_request")


def test_dotted_store_names_are_not_normalised(http):
    for name in [".", "..", "..."]:
        assert http.post("/v1/stores", json={"name": name}).status_code == 201
        http.put(rec(name, "k"), json={"value": name})
        assert http.get(f"/v1/stores/{quote_key(name)}").json()["name"] == name
        assert http.get(rec(name, "k")).json()["value"] == name


# --- records ----------------------------------------------------------------------------------


def test_put_answers_200_with_the_record_whether_it_created_or_replaced(http, clock):
    first = http.put(rec("s", "k"), json={"value": {"a": [1, 2.5]}})
    assert first.status_code == 200
    record = first.json()
    assert set(record) == {"key", "value", "version", "created_at", "updated_at", "expires_at"}
    assert (record["key"], record["value"], record["expires_at"]) == ("k", {"a": [1, 2.5]}, None)
    clock.advance(1.5)
    second = http.put(rec("s", "k"), json={"value": 2, "ttl": 10})
    assert second.status_code == 200
    again = second.json()
    assert again["version"] > record["version"]
    assert again["created_at"] == record["created_at"]
    assert again["updated_at"] == "2026-01-01T00:00:01.500000Z"
    assert again["expires_at"] == "2026-01-01T00:00:11.500000Z"
    assert http.get(rec("s", "k")).json() == again


def test_a_value_reads_back_as_the_same_json(http):
    body = b'{"value": {"z": 1, "a": [1.0, 1e5, -0.0, "\\u00fc"], "m": null}}'
    http.put(rec("s", "k"), content=body, headers={"content-type": "application/json"})
    assert http.get(rec("s", "k")).content.startswith(
        b'{"key":"k","value":{"z":1,"a":[1.0,100000.0,-0.0,"\xc3\xbc"],"m":null}'
    )


def test_getting_a_missing_record_or_store_is_not_found(http):
    assert_error(http.get(rec("nostore", "k")), "not_found")
    http.put(rec("s", "other"), json={"value": 1})
    assert_error(http.get(rec("s", "k")), "not_found")


def test_an_expired_record_is_not_found(http, clock):
    http.put(rec("s", "k"), json={"value": 1, "ttl": 5})
    clock.advance(5)
    assert_error(http.get(rec("s", "k")), "not_found")


def test_delete_answers_deleted_then_not_found(http):
    http.put(rec("s", "k"), json={"value": 1})
    r = http.delete(rec("s", "k"))
    assert (r.status_code, r.json()) == (200, {"deleted": True})
    assert_error(http.delete(rec("s", "k")), "not_found")
    assert_error(http.delete(rec("nostore", "k")), "not_found")


def test_if_version_on_put_and_delete(http):
    assert_error(http.put(rec("s", "k"), json={"value": 1, "if_version": 3}), "not_found")
    created = http.put(rec("s", "k"), json={"value": 1, "if_version": 0}).json()
    assert_error(http.put(rec("s", "k"), json={"value": 2, "if_version": 0}), "conflict")
    error = assert_error(
        http.put(rec("s", "k"), json={"value": 2, "if_version": created["version"] + 1}),
        "conflict",
    )
    assert error["details"]["actual"] == created["version"]
    updated = http.put(rec("s", "k"), json={"value": 2, "if_version": created["version"]}).json()
    assert_error(http.delete(rec("s", "k") + f"?if_version={created['version']}"), "conflict")
    assert http.delete(rec("s", "k") + f"?if_version={updated['version']}").status_code == 200
    assert_error(http.delete(rec("s", "k") + "?if_version=1"), "not_found")


@pytest.mark.parametrize("query", ["if_version=-1", "if_version=x", "if_version=", "v=1",
                                   "if_version=1&if_version=2", "if_version=1.0"])  # fmt: skip
def test_a_bad_delete_query_is_invalid_request(http, query):
    http.put(rec("s", "k"), json={"value": 1})
    assert_error(http.delete(rec("s", "k") + "?" + query), "invalid_request")


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({}, "invalid_request"),
        ({"value": 1, "key": "k"}, "invalid_request"),
        ({"value": 1, "ttl": 0}, "invalid_request"),
        ({"value": 1, "ttl": "1"}, "invalid_request"),
        ({"value": 1, "if_version": -1}, "invalid_request"),
        ({"value": 1, "if_version": True}, "invalid_request"),
        ({"value": 2**64}, "invalid_value"),
        ({"value": -(2**63) - 1}, "invalid_value"),
    ],
)
def test_a_bad_put_body_is_refused_and_changes_nothing(http, body, code):
    http.put(rec("s", "k"), json={"value": "before"})
    assert_error(http.put(rec("s", "k"), content=json.dumps(body)), code)
    assert http.get(rec("s", "k")).json()["value"] == "before"


@pytest.mark.parametrize(
    "content", [b"", b"   ", b"{", b"[1]", b'"x"', b"nul", b'{"value": NaN}', b"\xff\xfe",
                b'{"value": "\\ud800"}', b'{"value": 1} {"value": 2}'],
)  # fmt: skip
def test_a_body_that_is_not_a_json_object_is_invalid_request(http, content):
    response = http.put(rec("s", "k"), content=content)
    assert_error(response, response.json()["error"]["code"])
    assert response.json()["error"]["code"] in ("invalid_request", "invalid_value")
    assert_error(http.get(rec("s", "k")), "not_found")


def test_nesting_65_levels_is_invalid_value_and_64_is_accepted(http):
    assert http.put(rec("s", "k"), content=b'{"value": ' + b"[" * 64 + b"]" * 64 + b"}").is_success
    deep = b'{"value": ' + b"[" * 65 + b"]" * 65 + b"}"
    assert_error(http.put(rec("s", "k"), content=deep), "invalid_value")


# --- keys in paths ------------------------------------------------------------------------------


@pytest.mark.parametrize("key", KEYS)
def test_every_key_round_trips_through_the_path(http, key):
    put = http.put(rec("s", key), json={"value": key})
    assert put.status_code == 200, put.text
    assert put.json()["key"] == key
    got = http.get(rec("s", key)).json()
    assert (got["key"], got["value"]) == (key, key)
    assert http.get("/v1/stores/s/keys").json()["keys"] == [key]
    assert http.delete(rec("s", key)).status_code == 200


def test_keys_that_differ_only_in_encoding_are_different_records(http):
    for key in [".", "%2E", "%252E", "a/b", "a%2Fb"]:
        http.put(rec("s", key), json={"value": key})
    for key in [".", "%2E", "%252E", "a/b", "a%2Fb"]:
        assert http.get(rec("s", key)).json()["value"] == key
    assert len(http.get("/v1/stores/s/keys").json()["keys"]) == 5


def test_an_unencoded_slash_in_a_key_is_another_path(http):
    assert_error(http.get("/v1/stores/s/records/a/b"), "not_found")


@pytest.mark.parametrize(
    ("segment", "code"),
    [("%00", "invalid_key"), ("%FF", "invalid_key"), ("", "invalid_key"),
     ("x" * 1025, "invalid_key"), ("%F0%9F%94%A5" * 257, "invalid_key")],
)  # fmt: skip
def test_an_invalid_key_in_a_path_is_invalid_key(http, segment, code):
    assert_error(http.get(f"/v1/stores/s/records/{segment}"), code)
    assert_error(http.put(f"/v1/stores/s/records/{segment}", json={"value": 1}), code)


# --- listing ----------------------------------------------------------------------------------


@pytest.fixture
def filled(http):
    for key in ["a", "b", "c", "d", "e", "pre:1", "pre:2", "ü", "🔥"]:
        http.put(rec("s", key), json={"value": key})
    return http


def test_listing_pages_with_a_cursor(filled):
    keys, cursor = [], None
    while True:
        params = {"limit": 4} if cursor is None else {"limit": 4, "cursor": cursor}
        page = filled.get("/v1/stores/s/keys", params=params).json()
        assert set(page) == {"keys", "next_cursor"}
        keys += page["keys"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert keys == ["a", "b", "c", "d", "e", "pre:1", "pre:2", "ü", "🔥"]


def test_listing_records_has_record_objects(filled):
    page = filled.get("/v1/stores/s/records", params={"prefix": "pre:"}).json()
    assert set(page) == {"records", "next_cursor"}
    assert [(r["key"], r["value"]) for r in page["records"]] == [("pre:1",) * 2, ("pre:2",) * 2]
    assert page["next_cursor"] is None


def test_listing_prefix_start_and_reverse(filled):
    def keys(**params):
        return filled.get("/v1/stores/s/keys", params=params).json()["keys"]

    assert keys(prefix="pre:") == ["pre:1", "pre:2"]
    assert keys(start="d", limit=2) == ["d", "e"]
    assert keys(reverse="true", limit=2) == ["🔥", "ü"]
    assert keys(reverse="false", limit=1) == ["a"]
    assert keys(start="c", reverse="true") == ["c", "b", "a"]
    assert keys(prefix="") == keys()


def test_listing_a_missing_store_is_empty(http):
    assert http.get("/v1/stores/none/keys").json() == {"keys": [], "next_cursor": None}
    assert http.get("/v1/stores/none/records").json() == {"records": [], "next_cursor": None}


@pytest.mark.parametrize(
    "query",
    ["limit=0", "limit=1001", "limit=x", "limit=", "limit=1.5", "reverse=1", "reverse=True",
     "reverse=", "cursor=", "cursor=%FF%FF", "start=", "prefix=%00", "other=1", "limit=1&limit=2",
     "prefix=%FF"],
)  # fmt: skip
def test_a_bad_listing_query_is_refused(filled, query):
    response = filled.get("/v1/stores/s/keys?" + query)
    assert response.json()["error"]["code"] in ("invalid_request", "invalid_key")
    assert_error(response, response.json()["error"]["code"])


def test_clear_answers_the_number_deleted(filled):
    r = filled.delete("/v1/stores/s/records")
    assert (r.status_code, r.json()) == (200, {"deleted": 9})
    assert filled.delete("/v1/stores/s/records").json() == {"deleted": 0}
    assert filled.delete("/v1/stores/none/records").json() == {"deleted": 0}


# --- batch ------------------------------------------------------------------------------------

# One example of every operation, by name, run in order on a fresh store.
EXAMPLES: dict[str, dict[str, Any]] = {
    "set": {"key": "k", "value": {"v": 1}, "ttl": 60},
    "set_many": {"entries": {"m1": 1, "m2": [2]}},
    "get": {"key": "k"},
    "get_record": {"key": "k"},
    "get_or_create": {"key": "g", "value": "made"},
    "has": {"key": "g"},
    "increment": {"key": "n", "amount": 5},
    "decrement": {"key": "n"},
    "append": {"key": "l", "value": 1},
    "append_many": {"key": "l", "values": [[2, 3]], "flatten": True},
    "remove_from_list": {"key": "l", "value": 2},
    "add_to_set": {"key": "set", "value": "a"},
    "remove_from_set": {"key": "set", "value": "a"},
    "save_current_time": {"key": "t"},
    "set_ttl": {"key": "g", "ttl": 30},
    "ttl": {"key": "g"},
    "keys": {"prefix": "m", "limit": 1},
    "records": {"prefix": "m"},
    "delete": {"key": "m1"},
    "delete_many": {"keys": ["m2", "nope"]},
    "clear": {},
}


def test_the_examples_cover_every_operation():
    assert set(EXAMPLES) == set(ops.OPS)


def test_every_operation_is_a_batch_op_with_the_embedded_result(http, tmp_path, clock):
    """Each op by its name and inputs answers what the embedded library's op answers
    (through the op's own `result_to_json`)."""
    batch = [{"op": name, **inputs} for name, inputs in EXAMPLES.items()]
    response = http.post("/v1/stores/s/batch", json={"ops": batch})
    assert response.status_code == 200, response.text
    assert set(response.json()) == {"results"}
    with runstate.open(tmp_path / "embedded.db", clock=clock, purge_interval=None) as db:
        built = [ops.parse_op(op) for op in batch]
        expected = db.core.batch("default", "s", [], built)
        assert response.json()["results"] == [
            type(op).result_to_json(result) for op, result in zip(built, expected, strict=True)
        ]


@pytest.mark.parametrize(("name", "inputs"), EXAMPLES.items(), ids=EXAMPLES.keys())
def test_every_operation_alone_is_a_batch_op(http, name, inputs):
    response = http.post("/v1/stores/s/batch", json={"ops": [{"op": name, **inputs}]})
    assert response.status_code == 200, response.text
    assert len(response.json()["results"]) == 1


def test_a_failed_check_is_a_conflict_naming_it_and_changes_nothing(http):
    http.put(rec("s", "k"), json={"value": 1})
    body = {"checks": [{"key": "k", "version": 0}], "ops": [{"op": "set", "key": "x", "value": 1}]}
    error = assert_error(http.post("/v1/stores/s/batch", json=body), "conflict")
    assert error["details"]["check"] == 0
    assert_error(http.get(rec("s", "x")), "not_found")


def test_a_failed_op_is_its_own_error_naming_it_and_changes_nothing(http):
    http.put(rec("s", "text"), json={"value": "x"})
    body = {"ops": [{"op": "set", "key": "x", "value": 1}, {"op": "increment", "key": "text"}]}
    error = assert_error(http.post("/v1/stores/s/batch", json=body), "type_mismatch")
    assert error["details"]["op"] == 1
    assert_error(http.get(rec("s", "x")), "not_found")
    error = assert_error(
        http.post(
            "/v1/stores/s/batch",
            json={
                "ops": [
                    {"op": "set", "key": "n", "value": 2**63 - 1},
                    {"op": "increment", "key": "n"},
                ]
            },
        ),
        "out_of_range",
    )
    assert error["details"]["op"] == 1


@pytest.mark.parametrize(
    ("body", "code", "where"),
    [
        ({"ops": [{"op": "nope"}]}, "invalid_request", {"op": 0}),
        ({"ops": [{"op": "get"}]}, "invalid_request", {"op": 0}),
        ({"ops": [{"op": "get", "key": "k", "x": 1}]}, "invalid_request", {"op": 0}),
        ({"ops": [{"op": "get", "key": "k"}, "get"]}, "invalid_request", {"op": 1}),
        ({"ops": [{"op": "get", "key": ""}]}, "invalid_key", {"op": 0}),
        ({"ops": [{"op": "set", "key": "k", "value": 2**64}]}, "invalid_value", {"op": 0}),
        ({"ops": [{"op": "increment", "key": "k", "amount": 2**64}]}, "out_of_range", {"op": 0}),
        ({"checks": [{"key": "k"}]}, "invalid_request", {"check": 0}),
        ({"checks": [{"key": "k", "version": -1}]}, "invalid_request", {"check": 0}),
        ({"ops": {}}, "invalid_request", {}),
        ({"checks": "x"}, "invalid_request", {}),
        ({"other": []}, "invalid_request", {}),
        ({"ops": [{"op": "get", "key": "k"}] * 1001}, "invalid_request", {}),
        ({"checks": [{"key": "k", "version": 0}] * 1001}, "invalid_request", {}),
    ],
)
def test_a_bad_batch_is_refused_naming_the_culprit(http, body, code, where):
    error = assert_error(http.post("/v1/stores/s/batch", json=body), code)
    for name, index in where.items():
        assert error["details"][name] == index


def test_a_batch_of_1000_ops_and_1000_checks_is_accepted(http):
    body = {
        "checks": [{"key": f"c{i}", "version": 0} for i in range(1000)],
        "ops": [{"op": "increment", "key": "n"}] * 1000,
    }
    assert http.post("/v1/stores/s/batch", json=body).json()["results"][-1] == 1000


def test_an_empty_batch_answers_no_results(http):
    assert http.post("/v1/stores/s/batch", json={}).json() == {"results": []}


# --- export and import --------------------------------------------------------------------------


def test_export_streams_ndjson_and_import_restores_it(http, clock):
    http.put(rec("src", "a/b"), json={"value": {"x": [1, "ü"]}})
    http.put(rec("src", "ttl"), json={"value": 1, "ttl": 30})
    for i in range(2500):  # more than one page of the export
        http.put(rec("src", f"n{i:05}"), json={"value": i}) if i % 500 == 0 else None
    http.post(
        "/v1/stores/src/batch",
        json={"ops": [{"op": "set_many", "entries": {f"m{i:05}": i for i in range(2500)}}]},
    )
    r = http.get("/v1/stores/src/export")
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/x-ndjson"
    lines = [orjson.loads(line) for line in r.content.splitlines()]
    assert len(lines) == 2 + 5 + 2500
    assert all(set(line) == {"key", "value", "expires_at"} for line in lines)
    assert lines[0] == {"key": "a/b", "value": {"x": [1, "ü"]}, "expires_at": None}
    assert {"key": "ttl", "value": 1, "expires_at": "2026-01-01T00:00:30.000000Z"} in lines
    imported = http.post("/v1/stores/dst/import", content=r.content)
    assert (imported.status_code, imported.json()) == (200, {"imported": len(lines)})
    assert http.get("/v1/stores/dst/export").content == r.content


def test_export_of_a_missing_store_is_empty(http):
    r = http.get("/v1/stores/none/export")
    assert (r.status_code, r.content) == (200, b"")


def test_import_overwrites_and_skips_blank_lines(http):
    http.put(rec("s", "a"), json={"value": "old"})
    body = b'{"key": "a", "value": "new"}\n\n{"key": "b", "value": 2, "expires_at": null}\n'
    assert http.post("/v1/stores/s/import", content=body).json() == {"imported": 2}
    assert http.get(rec("s", "a")).json()["value"] == "new"
    assert http.post("/v1/stores/s/import", content=b"").json() == {"imported": 0}


def test_import_skips_lines_already_expired(http):
    body = b'{"key": "old", "value": 1, "expires_at": "2020-01-01T00:00:00Z"}\n'
    assert http.post("/v1/stores/s/import", content=body).json() == {"imported": 0}


@pytest.mark.parametrize(
    ("bad", "reason"),
    [(b"{", "invalid_request"), (b'{"key": "", "value": 1}', "invalid_key"),
     (b'{"key": "k"}', "invalid_request"), (b'{"key": "k", "value": 1, "x": 2}', "invalid_request"),
     (b'{"key": "k", "value": 1, "expires_at": "soon"}', "invalid_request"),
     (b'{"key": "k", "value": 1, "expires_at": 5}', "invalid_request"),
     (b'{"key": 5, "value": 1}', "invalid_key"), (b'{"key": "k", "value": 99999999999999999999}',
                                                  "invalid_value"),
     (b"[1]", "invalid_request")],
)  # fmt: skip
def test_a_bad_import_line_is_named_and_nothing_is_imported(http, bad, reason):
    body = b'{"key": "first", "value": 1}\n\n' + bad + b'\n{"key": "last", "value": 1}\n'
    error = assert_error(http.post("/v1/stores/s/import", content=body), "invalid_request")
    assert error["details"] == {"line": 3, "reason": reason}
    assert "line 3" in error["message"]
    assert http.get("/v1/stores/s/keys").json()["keys"] == []


def test_an_import_over_the_quota_changes_nothing(tmp_path, clock):
    with (
        start_server(tmp_path, clock, quota_bytes=100) as served,
        served.client(served.admin_token) as http,
    ):
        body = b"".join(b'{"key": "k%d", "value": "%s"}\n' % (i, b"x" * 20) for i in range(10))
        assert_error(http.post("/v1/stores/s/import", content=body), "quota_exceeded")
        assert http.get("/v1/usage").json()["bytes"] == 0


def test_an_import_line_over_the_value_limit_is_named(tmp_path, clock):
    with (
        start_server(tmp_path, clock, max_value_bytes=10) as served,
        served.client(served.admin_token) as http,
    ):
        body = b'{"key": "a", "value": 1}\n{"key": "b", "value": "%s"}\n' % (b"x" * 20)
        error = assert_error(http.post("/v1/stores/s/import", content=body), "invalid_request")
        assert error["details"]["line"] == 2


# --- usage, health, metrics, OpenAPI -------------------------------------------------------------


def test_usage_has_records_bytes_quota_and_stores(http):
    http.put(rec("s", "k"), json={"value": "vv"})
    usage = http.get("/v1/usage").json()
    assert set(usage) == {"records", "bytes", "quota_bytes", "stores"}
    assert (usage["records"], usage["bytes"], usage["quota_bytes"]) == (1, 5, 64 * 1024 * 1024)
    assert [s["name"] for s in usage["stores"]] == ["s"]


def test_healthz_and_openapi_need_no_token(served):
    with served.client() as anonymous:
        assert anonymous.get("/healthz").json() == {"status": "ok"}
        document = anonymous.get("/openapi.json").json()
    assert document["openapi"].startswith("3.1")
    documented = {
        (method.upper(), path) for path, item in document["paths"].items() for method in item
    }
    assert documented == {(route.method, route.path) for route in ROUTES}


def test_metrics_are_prometheus_text_with_requests_latency_errors_and_sizes(http):
    http.put(rec("s", "k"), json={"value": "vv"})
    http.get(rec("s", "missing"))
    text = http.get("/metrics").text
    assert 'runstate_http_requests_total{route="/v1/stores/{store}/records/{key}",method="PUT",' \
           'status="200"} 1' in text  # fmt: skip
    assert 'status="404"} 1' in text
    assert re.search(r'runstate_http_request_duration_seconds_bucket\{route="[^"]+",le="\+Inf"\}',
                     text)  # fmt: skip
    assert 'runstate_errors_total{code="not_found"} 1' in text
    assert 'runstate_records{workspace="default"} 1' in text
    assert 'runstate_bytes{workspace="default"} 5' in text
    assert "runstate_commits_total" in text
    for line in text.splitlines():
        assert line.startswith("#") or re.fullmatch(r"[a-z_]+(\{.*\})? -?[0-9.e+]+", line), line


# --- error paths: unknown routes, limits, failures ---------------------------------------------


def test_an_unknown_path_is_not_found_and_a_wrong_method_is_405_with_allow(http):
    assert_error(http.get("/v1/nothing"), "not_found")
    assert_error(http.get("/nothing"), "not_found")  # "/" is the dashboard (test_dashboard.py)
    response = http.request("PATCH", "/v1/stores/s/records/k")
    assert_error(response, "invalid_request", 405)
    assert response.headers["allow"] == "GET, PUT, DELETE"


def test_actions_and_watch_are_served(http):
    """Their own behaviour is in tests/test_actions.py and tests/test_watch.py."""
    names = {action["name"] for action in http.get("/v1/actions").json()["actions"]}
    assert {"flow.save_value", "usage_metrics", "store.get_record"} <= names
    answer = http.post("/v1/actions/store.has_key", json={"store": "s", "key": "k"})
    assert answer.json() == {"result": False}
    with http.stream("GET", "/v1/stores/s/watch") as stream:
        assert stream.status_code == 200
        assert stream.headers["content-type"] == "text/event-stream"
        assert next(stream.iter_lines()).startswith(":")


def test_a_value_over_the_limit_is_value_too_large(tmp_path, clock):
    with (
        start_server(tmp_path, clock, max_value_bytes=100) as served,
        served.client(served.admin_token) as http,
    ):
        assert http.put(rec("s", "k"), json={"value": "x" * 98}).status_code == 200
        assert_error(http.put(rec("s", "k"), json={"value": "x" * 99}), "value_too_large")


def test_a_write_over_the_quota_is_quota_exceeded(tmp_path, clock):
    with (
        start_server(tmp_path, clock, quota_bytes=50) as served,
        served.client(served.admin_token) as http,
    ):
        http.put(rec("s", "k"), json={"value": "x" * 40})
        assert_error(http.put(rec("s", "k2"), json={"value": "x" * 40}), "quota_exceeded")
        assert http.delete(rec("s", "k")).status_code == 200


def _raw_request(served, head: bytes, body: bytes = b"") -> bytes:
    with socket.create_connection(("127.0.0.1", served.port), timeout=10) as sock:
        sock.sendall(head + body)
        data = b""
        while b"\r\n\r\n" not in data:
            data += sock.recv(65536)
        headers, _, rest = data.partition(b"\r\n\r\n")
        length = int(re.search(rb"content-length: (\d+)", headers.lower()).group(1))
        while len(rest) < length:
            rest += sock.recv(65536)
        return headers + b"\r\n\r\n" + rest


def test_the_body_limit_is_checked_before_the_body_is_read(served):
    """A Content-Length over 1 MiB is refused at once: no byte of the body is ever sent."""
    head = (
        b"PUT /v1/stores/s/records/k HTTP/1.1\r\nHost: x\r\n"
        b"Authorization: Bearer " + served.admin_token.encode() + b"\r\n"
        b"Content-Type: application/json\r\nContent-Length: 2000000\r\n\r\n"
    )
    answer = _raw_request(served, head)
    assert answer.startswith(b"HTTP/1.1 413")
    assert b'"code":"value_too_large"' in answer


def test_a_chunked_body_is_refused_once_it_passes_the_limit(served, http):
    def chunks():
        yield b'{"value": "'
        for _ in range(40):
            yield b"x" * 32768
        yield b'"}'

    response = http.put(rec("s", "k"), content=chunks())
    assert_error(response, "value_too_large")
    assert_error(http.get(rec("s", "k")), "not_found")


def test_a_body_at_the_limit_is_read(tmp_path, clock):
    with (
        start_server(tmp_path, clock, max_body_bytes=2048) as served,
        served.client(served.admin_token) as http,
    ):
        value = "x" * (2048 - len('{"value":""}'))
        assert http.put(rec("s", "k"), content=orjson.dumps({"value": value})).status_code == 200
        assert_error(
            http.put(rec("s", "k"), content=orjson.dumps({"value": value + "x"})),
            "value_too_large",
        )


@pytest.mark.parametrize("length", [b"abc", b"-1", b"1" * 30])
def test_a_malformed_content_length_is_refused(served, length):
    head = (
        b"PUT /v1/stores/s/records/k HTTP/1.1\r\nHost: x\r\nContent-Length: " + length + b"\r\n"
        b"Authorization: Bearer " + served.admin_token.encode() + b"\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", served.port), timeout=10) as sock:
        sock.sendall(head)
        answer = sock.recv(65536)
    assert answer.split(b" ")[1] in (b"400", b"413")


def test_the_rate_limit_answers_429_with_retry_after(tmp_path, clock):
    with (
        start_server(tmp_path, clock, rate_limit=3) as served,
        served.client(served.admin_token) as http,
    ):
        statuses = [http.get("/v1/stores").status_code for _ in range(10)]
        assert statuses[:3] == [200, 200, 200]
        assert 429 in statuses
        response = http.get("/v1/stores")
        assert_error(response, "rate_limited")
        assert int(response.headers["retry-after"]) >= 1
        with served.client(served.token("read")) as other:  # per token
            assert other.get("/v1/stores").status_code == 200


def test_a_database_failure_is_503_with_retry_after(served, http, monkeypatch):
    def fail(*args: Any) -> Any:
        raise Unavailable("the database is out of space", {"reason": "disk_full"})

    http.put(rec("s", "k"), json={"value": 1})
    monkeypatch.setattr(served.engine, "write_many", fail)
    response = http.put(rec("s", "k"), json={"value": 2})
    assert_error(response, "unavailable")
    assert response.headers["retry-after"] == "1"
    assert http.get(rec("s", "k")).json()["value"] == 1  # reads go on


def test_an_unexpected_failure_is_503_without_a_traceback(served, http, monkeypatch, caplog):
    import sqlite3

    def broken(*args: Any) -> Any:
        raise sqlite3.OperationalError("disk I/O error")

    def bug(*args: Any) -> Any:
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(served.engine, "get_row", broken)
    assert_error(http.get(rec("s", "k")), "unavailable")
    monkeypatch.setattr(served.engine, "execute", bug)
    with caplog.at_level(logging.ERROR, logger="runstate.server"):
        response = http.get("/v1/stores/s/keys")
    assert_error(response, "unavailable")
    assert "ZeroDivisionError" not in response.text
    assert "a bug" in caplog.text  # logged for the operator
    assert served.admin_token not in caplog.text


@pytest.mark.parametrize(
    ("error", "reason", "message"),
    [
        (OSError(errno.ENOSPC, "No space left on device", "/data/x"), "disk_full", "disk space"),
        (OSError(errno.EACCES, "Permission denied", "/data/x"), "EACCES", "read or write a file"),
        (PermissionError(errno.EROFS, "Read-only file system"), "EROFS", "read or write a file"),
    ],
)
def test_a_file_error_is_503_naming_what_failed_not_the_database(
    served, http, monkeypatch, caplog, error, reason, message
):
    def broken(*args: Any) -> Any:
        raise error

    monkeypatch.setattr(served.engine, "get_row", broken)
    with caplog.at_level(logging.WARNING, logger="runstate.server"):
        response = http.get(rec("s", "k"))
    assert assert_error(response, "unavailable")["details"]["reason"] == reason
    assert message in response.json()["error"]["message"]
    assert "/data/x" not in response.text  # logged for the operator, not answered
    assert "database" not in response.json()["error"]["message"]
    assert "Traceback" not in caplog.text


def test_a_bug_in_one_write_does_not_fail_the_others_of_its_group(served, http):
    import asyncio

    writer = served.state.writer

    def bug(tx: Any) -> Any:
        raise ZeroDivisionError

    async def both() -> list[Any]:
        return await asyncio.gather(
            writer.submit("default", "s", bug),
            writer.submit("default", "s", ops.Set("k", 1).run),
            return_exceptions=True,
        )

    results = asyncio.run_coroutine_threadsafe(both(), served.state.tasks[0].get_loop()).result()
    assert isinstance(results[0], Unavailable)
    assert results[1].value == 1


def test_tokens_never_reach_the_logs(served, caplog):
    with caplog.at_level(logging.DEBUG):
        for token in [served.admin_token, "rs_" + "x" * 43]:
            with served.client(token) as http:
                http.get("/v1/nothing")
                http.get(rec("s", "k"))
                http.put(rec("s", "k"), content=b"{")
    assert served.admin_token not in caplog.text
    assert "x" * 43 not in caplog.text


# --- the server process: first start, announcements, SIGTERM --------------------------------------


def test_first_start_makes_one_admin_token_and_stores_only_its_hash(tmp_path):
    config = ServerConfig(db=str(tmp_path / "state.db"))
    token = first_start(config)
    assert token is not None
    assert re.fullmatch(r"rs_[A-Za-z0-9_-]{43}", token)
    assert first_start(config) is None
    data = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    assert token.encode() not in data


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.slow
def test_serve_announces_itself_and_sigterm_loses_no_acknowledged_write(tmp_path):
    port = _free_port()
    env = {**os.environ, "RUNSTATE_DB": str(tmp_path / "state.db"), "RUNSTATE_PORT": str(port)}
    code = "from runstate.config import ServerConfig; from runstate.server import serve; " \
           "serve(ServerConfig.from_env())"  # fmt: skip
    process = subprocess.Popen(
        [sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline().decode()
        assert first.startswith("admin token: rs_")
        token = first.split(": ", 1)[1].strip()
        assert process.stdout.readline().decode().strip() == (
            f"runstate listening on http://127.0.0.1:{port}"
        )
        headers = {"Authorization": f"Bearer {token}"}
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 10
        while True:
            try:
                httpx.get(url + "/healthz", timeout=1)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        with httpx.Client(base_url=url, headers=headers) as http:
            for i in range(20):
                assert http.put(rec("s", f"k{i}"), json={"value": i}).status_code == 200
        process.send_signal(signal.SIGTERM)
        assert process.wait(15) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.stderr is not None
    assert b"Traceback" not in process.stderr.read()
    with runstate.open(tmp_path / "state.db") as db:
        assert {k: db.store("s")[k] for k in db.store("s")} == {f"k{i}": i for i in range(20)}


def test_config_from_env_and_flags(tmp_path):
    config = ServerConfig.from_env(
        {"RUNSTATE_PORT": "9000", "RUNSTATE_RATE_LIMIT": "2.5", "RUNSTATE_DURABILITY": "fast"},
        port=9001,
        host=None,
    )
    assert (config.port, config.rate_limit, config.durability, config.host) == (
        9001, 2.5, "fast", "127.0.0.1")  # fmt: skip
    assert ServerConfig().durability == "durable"
    with pytest.raises(runstate.InvalidRequest):
        ServerConfig.from_env({"RUNSTATE_PORT": "x"})
    with pytest.raises(runstate.InvalidRequest):
        ServerConfig(durability="maybe")


def test_every_route_and_setting_is_documented():
    """docs/http-api.md names every route; config.py's docstring every setting and variable."""
    import runstate.config
    from runstate.config import setting_fields

    doc = (Path(__file__).resolve().parent.parent / "docs" / "http-api.md").read_text()
    for route in ROUTES:
        assert f"`{route.method} {route.path}" in doc, route.path
    table = runstate.config.__doc__ or ""
    for field in setting_fields():
        assert field.name in doc
        for name in (field.name, field.metadata["env"], field.metadata["flag"]):
            assert name in table, name
