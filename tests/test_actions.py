"""The pre-built actions (SPEC §3.3, docs/actions.md): the catalogue, and every action of both
seed documents run with the seeds' input names, through every interface that runs actions:

- ``library``: `runstate.actions.run` on an embedded database;
- ``http``: ``POST /v1/actions/{action}`` on a served database;
- ``cli``: ``runstate actions run NAME --input k=v`` on the embedded file, and ``cli-remote``
  the same with ``--url``/``--token`` (the server runs it).

Each runner answers the action's JSON result or raises the `runstate.Error` of its code, and
`db` observes the same data through the library, so one test body serves every interface.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import httpx
import orjson
import pytest

import runstate
from http_server import start_server
from runstate import actions, cli
from runstate.errors import error_class
from runstate.server.openapi import build_document

TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")

# Prismatic's Persist Data (seed 001): the thirteen actions of every scope, as titled there.
SCOPED = {
    "add_value_to_set": "Add Value To Set",
    "append_multiple_values_to_list": "Append Multiple Values To a List",
    "append_value_to_list": "Append Value To List",
    "clear_all_state": "Clear All State",
    "decrement_value": "Decrement Value",
    "get_value": "Get Value",
    "increment_value": "Increment Value",
    "list_keys": "List Keys",
    "remove_value": "Remove Value",
    "remove_value_from_list": "Remove Value From List",
    "remove_value_from_set": "Remove Value From Set",
    "save_current_time": "Save Current Time",
    "save_value": "Save Value",
}
SCOPE_TITLES = {
    "execution": "Execution",
    "flow": "Flow",
    "cross_flow": "Cross Flow",
    "integration": "Integration",
}
# Each scope's ids, and the store they name.
SCOPE_IDS = {
    "execution": lambda n: ({"execution_id": f"e{n}"}, f"execution:e{n}"),
    "flow": lambda n: ({"instance_id": f"i{n}", "flow_id": f"f{n}"}, f"flow:i{n}:f{n}"),
    "cross_flow": lambda n: ({"instance_id": f"i{n}"}, f"instance:i{n}"),
    "integration": lambda n: ({"integration_id": f"g{n}"}, f"integration:g{n}"),
}
# Pipedream's Data Stores (seed 000) and the rest of SPEC §3.3.
DATA_STORE = {
    "add_or_update_record",
    "add_or_update_records",
    "get_record",
    "delete_record",
    "list_keys",
    "list_records",
    "has_key",
    "delete_all_records",
}
SEED_INPUTS = {
    "key", "value", "key_values", "default_value", "amount", "values", "dynamic_values",
    "flatten_values", "multiple_keys",
}  # fmt: skip

_numbers = itertools.count()


# --- runners ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory, module_server_db: dict[str, Any]
) -> Iterator[Any]:
    server = start_server(tmp_path_factory.mktemp("actions"), durability="fast", **module_server_db)
    yield server
    server.close()


@pytest.fixture(scope="module")
def embedded_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("embedded") / "state.db")


def _raise(code: str, message: str, details: dict[str, Any] | None = None) -> None:
    raise error_class(code)(message, details or {})


def _over_http(http: httpx.Client) -> Callable[..., Any]:
    def act(name: str, **inputs: Any) -> Any:
        answer = http.post(f"/v1/actions/{name}", json=inputs)
        body = answer.json()
        if answer.status_code != 200:
            _raise(**body["error"])
        assert set(body) == {"result"}
        return body["result"]

    return act


def _on_command_line(capsys: pytest.CaptureFixture[str], flags: list[str]) -> Callable[..., Any]:
    def act(name: str, **inputs: Any) -> Any:
        pairs = [f"--input={key}={json.dumps(value)}" for key, value in inputs.items()]
        capsys.readouterr()
        code = cli.main(["actions", "run", name, *pairs, *flags, "--json"])
        out, err = capsys.readouterr()
        if code != 0:
            found = re.fullmatch(r"error: (\w+): (.*)\n", err)
            assert found, err
            _raise(found[1], found[2])
        return json.loads(out)["result"]

    return act


@pytest.fixture(params=["library", "http", "cli", "cli-remote"])
def interface(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def db(interface: str, served: Any, embedded_path: str) -> Iterator[Any]:
    """The data the actions change, through the library."""
    if interface in ("library", "cli"):
        database = runstate.open(embedded_path, purge_interval=None)
    else:
        database = runstate.connect(served.url, token=served.admin_token)
    yield database
    database.close()


@pytest.fixture
def act(
    interface: str, db: Any, served: Any, embedded_path: str, capsys: pytest.CaptureFixture[str]
) -> Iterator[Callable[..., Any]]:
    """`act(name, **inputs)`: the action's JSON result, or its error raised."""
    if interface == "library":
        yield lambda name, **inputs: actions.run(db, name, inputs)
    elif interface == "http":
        with served.client(served.admin_token) as http:
            yield _over_http(http)
    elif interface == "cli":
        yield _on_command_line(capsys, ["--db", embedded_path])
    else:
        yield _on_command_line(capsys, ["--url", served.url, "--token", served.admin_token])


# --- the catalogue ------------------------------------------------------------------------------


def test_the_catalogue_holds_every_action_of_both_seeds(served):
    with served.client(served.admin_token) as http:
        catalogue = http.get("/v1/actions").json()
    assert set(catalogue) == {"actions"}
    found = {action["name"]: action for action in catalogue["actions"]}
    expected = {f"{scope}.{name}" for scope in SCOPE_TITLES for name in SCOPED}
    expected |= {"usage_metrics"} | {f"store.{name}" for name in DATA_STORE}
    assert set(found) == expected
    assert len(catalogue["actions"]) == len(expected)
    for scope, scope_title in SCOPE_TITLES.items():
        for name, title in SCOPED.items():
            assert found[f"{scope}.{name}"]["title"] == f"{scope_title} - {title}"
    assert found["usage_metrics"]["title"] == "Get Persist Data Usage Metrics"
    assert found["store.add_or_update_record"]["title"] == "Add or update a single record"
    assert found["store.add_or_update_records"]["title"] == "Add or update multiple records"
    assert found["store.get_record"]["title"] == "Get record"


def test_every_action_and_input_has_the_catalogue_shape(served):
    with served.client(served.admin_token) as http:
        catalogue = http.get("/v1/actions").json()["actions"]
    for action in catalogue:
        assert set(action) == {"name", "title", "description", "inputs"}
        assert action["description"]
        for spec in action["inputs"]:
            assert set(spec) == {"name", "label", "description", "type", "required", "default"}
            assert spec["type"] in actions.INPUT_TYPES
            assert spec["label"]
            assert spec["description"]
            assert re.fullmatch(r"[a-z_]+", spec["name"])


def test_the_seeds_descriptions_inputs_and_defaults(served):
    with served.client(served.admin_token) as http:
        found = {a["name"]: a for a in http.get("/v1/actions").json()["actions"]}

    def inputs(name: str) -> dict[str, Any]:
        return {spec["name"]: spec for spec in found[name]["inputs"]}

    flow = inputs("flow.append_multiple_values_to_list")
    assert list(flow) == ["instance_id", "flow_id", "key", "dynamic_values", "values",
                          "flatten_values"]  # fmt: skip
    assert flow["flatten_values"]["default"] is False
    assert flow["flatten_values"]["type"] == "boolean"
    assert flow["dynamic_values"]["label"] == "Dynamic Values"
    assert inputs("integration.increment_value")["amount"]["default"] == 1
    assert inputs("execution.decrement_value")["amount"]["type"] == "integer"
    assert list(inputs("cross_flow.save_value")) == ["instance_id", "key", "value", "key_values"]
    assert inputs("cross_flow.save_value")["key_values"]["type"] == "object"
    assert inputs("flow.remove_value")["multiple_keys"]["type"] == "string_list"
    assert inputs("execution.get_value")["default_value"]["label"] == "Default Value"
    assert list(inputs("execution.list_keys")) == ["execution_id"]
    assert list(inputs("store.get_record")) == ["store", "key", "create_if_not_found", "value"]
    assert inputs("store.add_or_update_records")["records"]["type"] == "object"
    assert found["cross_flow.list_keys"]["description"] == (
        "List all keys persisted at the cross-flow level"
    )
    assert found["integration.clear_all_state"]["description"] == (
        "Delete all integration state stored for all instances of this integration"
    )
    assert found["flow.get_value"]["description"] == (
        "Get the value with the specified key, returning the specified default value if key "
        "not present"
    )
    used = {spec["name"] for a in found.values() for spec in a["inputs"]}
    assert SEED_INPUTS <= used


def test_the_openapi_document_is_generated_from_the_catalogue():
    schemas = build_document()["components"]["schemas"]
    assert schemas["ActionName"]["enum"] == [a.name for a in actions.CATALOGUE]
    save = schemas["Action.flow.save_value"]
    assert set(save["properties"]) == {"instance_id", "flow_id", "key", "value", "key_values"}
    assert save["required"] == ["instance_id", "flow_id"]
    assert schemas["Action.store.add_or_update_records"]["required"] == ["store", "records"]


def test_the_command_line_lists_the_catalogue(capsys, served, tmp_path):
    capsys.readouterr()
    assert cli.main(["actions", "list", "--db", str(tmp_path / "x.db"), "--json"]) == 0
    local = json.loads(capsys.readouterr().out)
    flags = ["--url", served.url, "--token", served.admin_token]
    assert cli.main(["actions", "list", *flags, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == local
    with served.client(served.admin_token) as http:
        assert http.get("/v1/actions").json() == local
    assert cli.main(["actions", "list", *flags]) == 0
    table = capsys.readouterr().out
    assert "flow.append_multiple_values_to_list" in table
    assert "Flow - Append Multiple Values To a List" in table


# --- every action has its effect ----------------------------------------------------------------


@pytest.mark.parametrize("scope", SCOPE_IDS)
def test_every_scoped_action_has_its_effect(act, db, scope):
    ids, name = SCOPE_IDS[scope](next(_numbers))
    state = runstate.Store(db, name)

    def run(action: str, **inputs: Any) -> Any:
        return act(f"{scope}.{action}", **ids, **inputs)

    saved = run("save_value", key="a", value={"n": 1})
    assert (saved["key"], saved["value"]) == ("a", {"n": 1})
    assert state["a"] == {"n": 1}
    assert run("save_value", key_values={"b": 1, "c": "x"}) == 2
    assert (state["b"], state["c"]) == (1, "x")
    assert run("get_value", key="a") == {"n": 1}
    assert run("get_value", key="missing", default_value=7) == 7
    assert run("get_value", key="missing") is None

    assert run("increment_value", key="n") == 1
    assert run("increment_value", key="n", amount=5) == 6
    assert run("decrement_value", key="n") == 5
    assert run("decrement_value", key="n", amount=10) == -5
    assert state["n"] == -5

    assert run("append_value_to_list", key="l", value=1) == 1
    assert run("append_multiple_values_to_list", key="l", values=[2, [3, 4]]) == 3
    assert run("append_multiple_values_to_list", key="l", values=[[5, 6]],
               flatten_values=True) == 5  # fmt: skip
    assert run("append_multiple_values_to_list", key="l", dynamic_values=[7]) == 6
    assert state["l"] == [1, 2, [3, 4], 5, 6, 7]
    assert run("remove_value_from_list", key="l", value=[3, 4]) == 1
    assert state["l"] == [1, 2, 5, 6, 7]

    assert run("add_value_to_set", key="s", value="x") is True
    assert run("add_value_to_set", key="s", value="x") is False
    assert run("add_value_to_set", key="s", value="y") is True
    assert run("remove_value_from_set", key="s", value="x") is True
    assert state["s"] == ["y"]

    stamp = run("save_current_time", key="t")
    assert TIME.fullmatch(stamp)
    assert state["t"] == stamp

    assert run("list_keys") == ["a", "b", "c", "l", "n", "s", "t"]
    assert run("remove_value", key="a") is True
    assert run("remove_value", key="a") is False
    assert run("remove_value", multiple_keys=["b", "c", "nope"]) == 2
    assert run("list_keys") == ["l", "n", "s", "t"]
    assert run("clear_all_state") == 4
    assert run("list_keys") == []
    assert list(state.keys()) == []


def test_list_keys_pages_through_every_key(act, db):
    ids, name = SCOPE_IDS["integration"](next(_numbers))
    keys = {f"k{i:04d}": i for i in range(2500)}
    runstate.Store(db, name).set_many(keys)
    assert act("integration.list_keys", **ids) == sorted(keys)


def test_execution_state_expires_a_day_after_it_was_written(act, db):
    ids, name = SCOPE_IDS["execution"](next(_numbers))
    act("execution.save_value", **ids, key="k", value=1)
    act("execution.increment_value", **ids, key="n")
    for key in ("k", "n"):
        record = runstate.Store(db, name).get_record(key)
        assert record.expires_at - record.updated_at == timedelta(hours=24)
    assert db.store_info(name).default_ttl == 24 * 3600


def test_every_data_store_action_has_its_effect(act, db):
    store = f"pd{next(_numbers)}"
    state = runstate.Store(db, store)
    record = act("store.add_or_update_record", store=store, key="Triggered", value="2026-01-01")
    assert (record["key"], record["value"]) == ("Triggered", "2026-01-01")
    assert state["Triggered"] == "2026-01-01"
    assert act("store.add_or_update_records", store=store, records={"a": 1, "b": [2]}) == 2
    assert (state["a"], state["b"]) == (1, [2])
    assert act("store.get_record", store=store, key="a") == 1
    assert act("store.get_record", store=store, key="new") is None
    assert "new" not in state
    assert act("store.get_record", store=store, key="new", create_if_not_found=True,
               value={"fresh": True}) == {"fresh": True}  # fmt: skip
    assert state["new"] == {"fresh": True}
    assert act("store.get_record", store=store, key="new", create_if_not_found=True,
               value="ignored") == {"fresh": True}  # fmt: skip
    assert act("store.has_key", store=store, key="a") is True
    assert act("store.has_key", store=store, key="zzz") is False
    assert act("store.list_keys", store=store) == ["Triggered", "a", "b", "new"]
    listed = act("store.list_records", store=store)
    assert [(r["key"], r["value"]) for r in listed] == [
        ("Triggered", "2026-01-01"), ("a", 1), ("b", [2]), ("new", {"fresh": True})
    ]  # fmt: skip
    assert set(listed[0]) == {"key", "value", "version", "created_at", "updated_at", "expires_at"}
    assert act("store.delete_record", store=store, key="a") is True
    assert act("store.delete_record", store=store, key="a") is False
    assert "a" not in state
    assert act("store.delete_all_records", store=store) == 3
    assert list(state.keys()) == []
    assert act("store.list_keys", store="never-written") == []


def test_usage_metrics_is_the_usage_object(act, db):
    act("store.add_or_update_record", store=f"u{next(_numbers)}", key="k", value="v")
    usage = act("usage_metrics")
    assert set(usage) == {"records", "bytes", "quota_bytes", "stores"}
    assert usage == db.usage().to_json()


# --- precedence and errors ----------------------------------------------------------------------


def test_dynamic_values_are_used_instead_of_values(act, db):
    ids, name = SCOPE_IDS["flow"](next(_numbers))
    assert act("flow.append_multiple_values_to_list", **ids, key="l", values=[1, 2],
               dynamic_values=[[3, 4]], flatten_values=True) == 2  # fmt: skip
    assert runstate.Store(db, name)["l"] == [3, 4]


def test_dynamic_values_may_be_json_text(act, db):
    ids, name = SCOPE_IDS["flow"](next(_numbers))
    assert act("flow.append_multiple_values_to_list", **ids, key="l",
               dynamic_values='[1, {"a": 2}]') == 2  # fmt: skip
    assert runstate.Store(db, name)["l"] == [1, {"a": 2}]
    with pytest.raises(runstate.InvalidRequest, match="dynamic_values"):
        act("flow.append_multiple_values_to_list", **ids, key="l", dynamic_values="[1,")


def test_multiple_keys_are_used_instead_of_key(act, db):
    ids, name = SCOPE_IDS["cross_flow"](next(_numbers))
    runstate.Store(db, name).set_many({"a": 1, "b": 2, "c": 3})
    assert act("cross_flow.remove_value", **ids, key="a", multiple_keys=["b", "c"]) == 2
    assert list(runstate.Store(db, name).keys()) == ["a"]


def test_key_values_are_used_instead_of_key_and_value(act, db):
    ids, name = SCOPE_IDS["integration"](next(_numbers))
    assert act("integration.save_value", **ids, key="a", value=1, key_values={"b": 2}) == 1
    assert list(runstate.Store(db, name).items()) == [("b", 2)]


def test_a_null_value_is_saved_but_a_null_input_is_not_given(act, db):
    ids, name = SCOPE_IDS["flow"](next(_numbers))
    act("flow.save_value", **ids, key="k", value=None, key_values=None)
    assert runstate.Store(db, name).get_record("k").value is None
    assert act("flow.increment_value", **ids, key="n", amount=None) == 1


@pytest.mark.parametrize(
    ("name", "inputs", "missing"),
    [
        ("flow.save_value", {"instance_id": "i"}, "flow_id"),
        ("flow.save_value", {"instance_id": "i", "flow_id": "f", "key": "k"}, "value"),
        ("execution.get_value", {"execution_id": "e"}, "key"),
        ("execution.get_value", {"execution_id": "e", "key": None}, "key"),
        ("cross_flow.remove_value", {"instance_id": "i"}, "key"),
        ("integration.append_multiple_values_to_list", {"integration_id": "g", "key": "l"},
         "values"),
        ("store.add_or_update_record", {"key": "k", "value": 1}, "store"),
        ("store.add_or_update_records", {"store": "s"}, "records"),
    ],
)  # fmt: skip
def test_a_missing_required_input_is_invalid_request_naming_it(act, name, inputs, missing):
    with pytest.raises(runstate.InvalidRequest) as raised:
        act(name, **inputs)
    assert repr(missing) in raised.value.message


def test_an_unknown_input_is_invalid_request(act):
    with pytest.raises(runstate.InvalidRequest, match="'colour'"):
        act("store.has_key", store="s", key="k", colour="red")


def test_an_unknown_action_is_not_found(act, served):
    with pytest.raises(runstate.NotFound):
        act("flow.fly_away", instance_id="i", flow_id="f")
    with served.client(served.admin_token) as http:
        answer = http.post("/v1/actions/flow.fly_away", json={})
    assert answer.status_code == 404
    assert answer.json()["error"]["code"] == "not_found"


@pytest.mark.parametrize(
    ("name", "inputs", "error"),
    [
        ("flow.increment_value", {"key": "s", "amount": "2"}, runstate.InvalidRequest),
        ("flow.save_value", {"key": "", "value": 1}, runstate.InvalidKey),
        ("flow.save_value", {"key": "k", "value": 2**70}, runstate.InvalidValue),
        ("flow.remove_value", {"multiple_keys": "a"}, runstate.InvalidRequest),
        ("flow.append_multiple_values_to_list", {"key": "k", "values": [1],
                                                 "flatten_values": "yes"},
         runstate.InvalidRequest),
    ],
)  # fmt: skip
def test_other_errors_are_the_operations_own(act, name, inputs, error):
    ids, _ = SCOPE_IDS["flow"](next(_numbers))
    with pytest.raises(error):
        act(name, **ids, **inputs)


def test_a_type_mismatch_is_the_cores_error_and_changes_nothing(act, db):
    ids, name = SCOPE_IDS["flow"](next(_numbers))
    act("flow.save_value", **ids, key="s", value="text")
    with pytest.raises(runstate.TypeMismatch):
        act("flow.increment_value", **ids, key="s")
    with pytest.raises(runstate.TypeMismatch):
        act("flow.append_value_to_list", **ids, key="s", value=1)
    assert runstate.Store(db, name)["s"] == "text"


def test_a_bad_scope_id_is_invalid_request(act):
    with pytest.raises(runstate.InvalidRequest):
        act("flow.get_value", instance_id="a:b", flow_id="f", key="k")
    with pytest.raises(runstate.InvalidRequest):
        act("store.has_key", store="no/slash", key="k")


def test_inputs_must_be_a_json_object(served):
    with served.client(served.admin_token) as http:
        for body in (b"[]", b"1", b'"x"'):
            answer = http.post("/v1/actions/usage_metrics", content=body)
            assert answer.json()["error"]["code"] == "invalid_request", body
        assert http.post("/v1/actions/usage_metrics", content=b"{}").status_code == 200


def test_a_string_input_on_the_command_line_is_the_text_itself(capsys, tmp_path):
    path = str(tmp_path / "cli.db")
    args = ["actions", "run", "flow.save_value", "--input", "instance_id=1", "--input",
            "flow_id=2", "--input", "key=42", "--input", "value=42", "--db", path]  # fmt: skip
    assert cli.main(args) == 0
    with runstate.open(path, purge_interval=None) as db:
        assert runstate.Store(db, "flow:1:2")["42"] == 42


# --- roles and store limits ---------------------------------------------------------------------


def _post(served: Any, token: str, name: str, **inputs: Any) -> httpx.Response:
    with served.client(token) as http:
        return http.post(f"/v1/actions/{name}", content=orjson.dumps(inputs))


def test_a_read_token_runs_reading_actions_only(served):
    token = served.token("read")
    ids, _ = SCOPE_IDS["flow"](next(_numbers))
    assert _post(served, token, "flow.get_value", **ids, key="k").status_code == 200
    assert _post(served, token, "flow.list_keys", **ids).status_code == 200
    assert _post(served, token, "usage_metrics").status_code == 200
    assert _post(served, token, "store.get_record", store="s", key="k").status_code == 200
    for name, inputs in [
        ("flow.save_value", {"key": "k", "value": 1}),
        ("flow.increment_value", {"key": "n"}),
        ("flow.clear_all_state", {}),
    ]:
        answer = _post(served, token, name, **ids, **inputs)
        assert answer.status_code == 403, name
        assert answer.json()["error"]["code"] == "forbidden"
    created = _post(served, token, "store.get_record", store="s", key="k",
                    create_if_not_found=True, value=1)  # fmt: skip
    assert created.status_code == 403
    with served.client(served.admin_token) as http:
        assert http.get("/v1/stores/s/records/k").status_code == 404


def test_a_store_limited_token_acts_on_its_stores_only(served):
    ids, name = SCOPE_IDS["flow"](next(_numbers))
    token = served.token("write", stores=[name, "mine"])
    assert _post(served, token, "flow.save_value", **ids, key="k", value=1).status_code == 200
    assert _post(served, token, "store.has_key", store="mine", key="k").status_code == 200
    for action, inputs in [
        ("store.has_key", {"store": "other", "key": "k"}),
        ("store.add_or_update_record", {"store": "other", "key": "k", "value": 1}),
        ("cross_flow.list_keys", {"instance_id": ids["instance_id"]}),
    ]:
        answer = _post(served, token, action, **inputs)
        assert answer.status_code == 403, action
    usage = _post(served, token, "usage_metrics").json()["result"]
    assert [s["name"] for s in usage["stores"]] == [name]


def test_no_token_is_unauthorized(served):
    with served.client() as http:
        assert http.get("/v1/actions").status_code == 401
        assert http.post("/v1/actions/usage_metrics", json={}).status_code == 401
