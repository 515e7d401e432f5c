"""The pre-built actions (SPEC §3.3): a catalogue a no-code workflow builder renders and runs.

An action is data — name, title, description and inputs, as the seed documents give them
(Prismatic's *Persist Data* for the four scopes, Pipedream's *Data Stores*) — plus one call
into the core: `Action.plan(inputs)` checks the inputs and answers a `Plan`, the store the
action touches and the one operation of `runstate.ops` that runs there (or the workspace's
usage). Every interface runs that plan and adds nothing to it:

- `run(db, name, inputs)`: the library and the embedded command line (a remote `Database`
  asks the server, which runs the same plan);
- ``POST /v1/actions/{action}``: reads on the engine, writes through the group-commit writer,
  with the token's role and store list applied to the plan's store;
- the catalogue of ``GET /v1/actions``, its OpenAPI entries and ``runstate actions list`` are
  `CATALOGUE`, rendered by `Action.to_json`.

Rules of the inputs (the seeds' precedence): `key_values` is used instead of `key`/`value`,
`multiple_keys` instead of `key`, `dynamic_values` instead of `values`. A missing required input
or an unknown one is `InvalidRequest` naming it; null counts as not given (but for a `value`,
where null is the value to store). Every other error is the operation's own.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import ops
from .engine.base import Reader
from .errors import InvalidRequest, NotFound
from .model import MAX_PAGE, Page, check_bool, check_store_name, decode_json
from .store import cross_flow_store, execution_store, flow_store, integration_store

if TYPE_CHECKING:
    from .store import Database

__all__ = ["CATALOGUE", "INPUT_TYPES", "Action", "Input", "Plan", "find", "run"]

INPUT_TYPES = ("string", "integer", "boolean", "json", "string_list", "json_list", "object")


@dataclass(frozen=True, slots=True)
class Input:
    """One input of an action, as a workflow builder shows it. `type` is one of
    `INPUT_TYPES`; `default` is used when the input is not given."""

    name: str
    label: str
    description: str
    type: str
    required: bool = False
    default: Any = None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "label": self.label,
            "description": self.description,
            "type": self.type,
            "required": self.required,
            "default": self.default,
        }


@dataclass(frozen=True, slots=True)
class Plan:
    """What an action does: run `op` on `store` (both None: read the workspace's usage), and
    turn the operation's result into the action's JSON result with `answer`."""

    store: str | None
    op: ops.Op | None
    answer: Callable[[Any], Any]

    @property
    def writes(self) -> bool:
        return self.op is not None and self.op.writes


class Args:
    """An action's inputs after the generic checks: `given` says whether one was given (null
    is not, but for a `value`), `[]` is its value or default."""

    def __init__(self, action: Action, inputs: Mapping[str, Any]) -> None:
        self._action = action
        self._inputs = {
            i.name: inputs[i.name]
            for i in action.inputs
            if i.name in inputs and (inputs[i.name] is not None or i.name == "value")
        }
        self._defaults = {i.name: i.default for i in action.inputs}

    def given(self, name: str) -> bool:
        return name in self._inputs

    def __getitem__(self, name: str) -> Any:
        return self._inputs.get(name, self._defaults[name])

    def need(self, *names: str, instead: str) -> None:
        """Require `names` unless `instead` (which the seed prefers) was given."""
        missing = [name for name in names if not self.given(name)]
        if missing and not self.given(instead):
            wanted = " and ".join(repr(name) for name in names)
            raise InvalidRequest(
                f"{self._action.name} needs {wanted}, or {instead!r}",
                {"action": self._action.name, "missing": missing, "instead": instead},
            )


@dataclass(frozen=True, slots=True)
class Action:
    """A pre-built action: what the catalogue shows, and `call`, its one call into the core."""

    name: str
    title: str
    description: str
    inputs: tuple[Input, ...]
    call: Callable[[Args], Plan]

    def plan(self, inputs: object) -> Plan:
        """Check `inputs` (a JSON object) and answer what the action does."""
        if not isinstance(inputs, Mapping):
            raise InvalidRequest("an action's inputs are a JSON object", {"action": self.name})
        known = {i.name: i for i in self.inputs}
        unknown = sorted(str(name)[:100] for name in inputs if name not in known)
        if unknown:
            raise InvalidRequest(
                f"{self.name} has no input {unknown[0]!r}",
                {"action": self.name, "unknown": unknown, "inputs": list(known)},
            )
        args = Args(self, inputs)
        missing = [i.name for i in self.inputs if i.required and not args.given(i.name)]
        if missing:
            raise InvalidRequest(
                f"{self.name} needs {', '.join(map(repr, missing))}",
                {"action": self.name, "missing": missing},
            )
        for i in self.inputs:
            if args.given(i.name):
                _check_type(i, args[i.name])
        return self.call(args)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "title": self.title,
            "description": self.description,
            "inputs": [i.to_json() for i in self.inputs],
        }


def _check_type(spec: Input, value: Any) -> None:
    """The checks of a declared type that no operation makes under the input's name (keys,
    values, amounts and ids are checked by the operation, with its own error)."""
    if spec.type == "boolean":
        check_bool(value, spec.name)
    elif spec.type == "object" and not isinstance(value, dict):
        raise InvalidRequest(f"{spec.name} must be an object", {"input": spec.name})
    elif spec.type in ("string_list", "json_list") and not isinstance(value, list):
        raise InvalidRequest(f"{spec.name} must be a list", {"input": spec.name})


def find(name: str) -> Action:
    """The action called `name`; `NotFound` if there is none."""
    found = _BY_NAME.get(name)
    if found is None:
        raise NotFound(
            f"no action named {name[:100]!r} (see the catalogue)", {"action": name[:100]}
        )
    return found


def run(db: Database, name: str, inputs: Mapping[str, Any]) -> Any:
    """Run the action `name` on `db` and answer its JSON result (what ``POST
    /v1/actions/{name}`` answers as ``result``). On a remote database the server runs it."""
    from .client import HttpCore

    core = db.core
    if isinstance(core, HttpCore):
        return core.run_action(name, dict(inputs))
    plan = find(name).plan(inputs)
    if plan.op is None or plan.store is None:
        return db.usage().to_json()
    return plan.answer(core.execute(db.workspace, plan.store, plan.op))


# --- the operations behind the actions ------------------------------------------------------


class _Every(ops.Op):
    """Every key (or record) of the store, read page by page in one snapshot: the listing
    operation's own definition, run until its last page."""

    name = "keys"
    writes = False

    def __init__(self, listing: type[ops.Keys]) -> None:
        self.listing = listing

    def run(self, tx: Reader) -> list[Any]:
        items: list[Any] = []
        cursor = None
        while True:
            page: Page = self.listing(limit=MAX_PAGE, cursor=cursor).run(tx)
            items += page.items
            if page.next_cursor is None:
                return items
            cursor = page.next_cursor

    def result_to_json(self, result: Any) -> Any:  # type: ignore[override]
        if self.listing is ops.Records:
            return [record.to_json() for record in result]
        return result


def _plan(store: str, op: ops.Op) -> Plan:
    return Plan(store, op, op.result_to_json)


# A call: what the action runs on its store, from its inputs.
Call = Callable[[Args, str], Plan]


def _run(build: Callable[..., ops.Op], *inputs: str) -> Call:
    """The call that runs the operation `build(*inputs)` (the inputs' values, in order)."""
    return lambda a, store: _plan(store, build(*(a[name] for name in inputs)))


def save_value(a: Args, store: str) -> Plan:
    if a.given("key_values"):
        return _plan(store, ops.SetMany(a["key_values"]))
    a.need("key", "value", instead="key_values")
    return _plan(store, ops.Set(a["key"], a["value"]))


def remove_value(a: Args, store: str) -> Plan:
    if a.given("multiple_keys"):
        return _plan(store, ops.DeleteMany(a["multiple_keys"]))
    a.need("key", instead="multiple_keys")
    return _plan(store, ops.Delete(a["key"]))


def append_values(a: Args, store: str) -> Plan:
    if a.given("dynamic_values"):
        values = a["dynamic_values"]
        if isinstance(values, str):  # "in a JSON format": the JSON text of the list
            values = _json_text(values, "dynamic_values")
    else:
        a.need("values", instead="dynamic_values")
        values = a["values"]
    return _plan(store, ops.AppendMany(a["key"], values, a["flatten_values"]))


def _json_text(text: str, name: str) -> Any:
    try:
        return decode_json(text)
    except InvalidRequest:
        raise InvalidRequest(f"{name} is not valid JSON", {"input": name}) from None


def get_record(a: Args, store: str) -> Plan:
    if a["create_if_not_found"]:
        return _plan(store, ops.GetOrCreate(a["key"], a["value"]))
    return _plan(store, ops.Get(a["key"]))


get_value = _run(ops.Get, "key", "default_value")
increment_value = _run(ops.Increment, "key", "amount")
decrement_value = _run(ops.Decrement, "key", "amount")
append_value = _run(ops.Append, "key", "value")
remove_from_list = _run(ops.RemoveFromList, "key", "value")
add_to_set = _run(ops.AddToSet, "key", "value")
remove_from_set = _run(ops.RemoveFromSet, "key", "value")
save_current_time = _run(ops.SaveCurrentTime, "key")
list_keys = _run(lambda: _Every(ops.Keys))
list_records = _run(lambda: _Every(ops.Records))
clear = _run(ops.Clear)
set_record = _run(ops.Set, "key", "value")
set_records = _run(ops.SetMany, "records")
delete_record = _run(ops.Delete, "key")
has_key = _run(ops.Has, "key")


# --- the catalogue: Prismatic's Persist Data, for each scope ----------------------------------

_KEY_TEXT = "This is the key that will be used to refer to the stored value"
_KEY = Input("key", "Key", _KEY_TEXT, "string")
_KEY_REQUIRED = Input("key", "Key", _KEY_TEXT, "string", required=True)
_STORED = Input("value", "Value", "This is the value that will be stored", "json", required=True)
_REMOVED = Input("value", "Value", "This is the value that will be removed", "json", required=True)
_AMOUNT = Input(
    "amount", "Amount", "This is the amount that will be used for incrementing/decrementing",
    "integer", default=1,
)  # fmt: skip

# (suffix, title, description, inputs, call); {level} is the scope's own word
_SCOPED: tuple[tuple[str, str, str, tuple[Input, ...], Call], ...] = (
    ("add_value_to_set", "Add Value To Set",
     "Add a value to the set with the specified key, creating the set as needed",
     (_KEY_REQUIRED, _STORED), add_to_set),
    ("append_multiple_values_to_list", "Append Multiple Values To a List",
     "Append multiple values to the list with the specified key, creating the list as needed",
     (_KEY_REQUIRED,
      Input("dynamic_values", "Dynamic Values",
            "Use this input if you need to provide multiple values in a JSON format. This "
            "input will be favored over the Values input. (A JSON array, or its JSON text.)",
            "json"),
      Input("values", "Values",
            "Use this input if you need to provide multiple values to the same key.",
            "json_list"),
      Input("flatten_values", "Flatten Values",
            "If this is enabled the values of the multiple values input or the dynamic values "
            "input will be flattened.", "boolean", default=False)),
     append_values),
    ("append_value_to_list", "Append Value To List",
     "Append a value to the list with the specified key, creating the list as needed",
     (_KEY_REQUIRED, _STORED), append_value),
    ("clear_all_state", "Clear All State", "{clear}", (), clear),
    ("decrement_value", "Decrement Value",
     "Decrement the stored integer value with the specified key by the specified amount",
     (_KEY_REQUIRED, _AMOUNT), decrement_value),
    ("get_value", "Get Value",
     "Get the value with the specified key, returning the specified default value if key not "
     "present",
     (_KEY_REQUIRED,
      Input("default_value", "Default Value",
            "This is the value that will be returned if there is no value present", "json")),
     get_value),
    ("increment_value", "Increment Value",
     "Increment the stored integer value with the specified key by the specified amount",
     (_KEY_REQUIRED, _AMOUNT), increment_value),
    ("list_keys", "List Keys", "List all keys persisted at the {level} level", (), list_keys),
    ("remove_value", "Remove Value", "Remove the value with the specified key",
     (_KEY,
      Input("multiple_keys", "Multiple Keys",
            "Use this input if you need to provide multiple keys. Please take note that this "
            "action favors this input instead of the regular key input, which it ignores.",
            "string_list")),
     remove_value),
    ("remove_value_from_list", "Remove Value From List",
     "Remove the value from the list with the specified key", (_KEY_REQUIRED, _REMOVED),
     remove_from_list),
    ("remove_value_from_set", "Remove Value From Set",
     "Remove the value from the set with the specified key", (_KEY_REQUIRED, _REMOVED),
     remove_from_set),
    ("save_current_time", "Save Current Time",
     "Save the current time in UTC using the specified key", (_KEY_REQUIRED,), save_current_time),
    ("save_value", "Save Value", "Save a value with the specified key for use at a later time",
     (_KEY,
      Input("value", "Value", "This is the value that will be stored", "json"),
      Input("key_values", "Key/Values",
            "Use this input if you need to provide multiple keys and values. Please take note "
            "that this action favors this input instead of the regular key/value inputs, "
            "which it ignores.", "object")),
     save_value),
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class _Scope:
    name: str
    title: str
    level: str
    clear: str
    ids: tuple[Input, ...]
    store: Callable[..., str]  # the scope's store name from its ids, in the order of `ids`


def _id(name: str, label: str, description: str) -> Input:
    return Input(name, label, description, "string", required=True)


_INSTANCE = _id("instance_id", "Instance ID", "The instance whose state this is")
_SCOPES = (
    _Scope("execution", "Execution", "execution", "Delete all execution state",
           (_id("execution_id", "Execution ID",
                "The execution whose state this is (store execution:{execution_id}; its "
                "records expire 24 h after they were written)"),),
           execution_store),
    _Scope("flow", "Flow", "flow", "Delete all flow state stored for this instance",
           (_INSTANCE, _id("flow_id", "Flow ID", "The flow of the instance whose state this is")),
           flow_store),
    _Scope("cross_flow", "Cross Flow", "cross-flow",
           "Delete all cross-flow state stored for this instance", (_INSTANCE,), cross_flow_store),
    _Scope("integration", "Integration", "integration",
           "Delete all integration state stored for all instances of this integration",
           (_id("integration_id", "Integration ID",
                "The integration whose state this is (shared by all of its instances)"),),
           integration_store),
)  # fmt: skip


def _scoped(scope: _Scope) -> list[Action]:
    def on_scope(call: Call) -> Callable[[Args], Plan]:
        return lambda a: call(a, scope.store(*(a[i.name] for i in scope.ids)))

    return [
        Action(
            f"{scope.name}.{suffix}",
            f"{scope.title} - {title}",
            description.format(level=scope.level, clear=scope.clear),
            (*scope.ids, *inputs),
            on_scope(call),
        )
        for suffix, title, description, inputs, call in _SCOPED
    ]


# --- Pipedream's Data Stores, and the workspace -------------------------------------------------

_STORE = Input(
    "store", "Data Store",
    "Select or create a Data Store: its name (1-128 characters of A-Z a-z 0-9 _ . : -); a "
    "write creates it if it does not exist", "string", required=True,
)  # fmt: skip
_LOOKUP = Input("key", "Key", "The key that identifies the record", "string", required=True)
_DATA = (
    ("add_or_update_record", "Add or update a single record",
     "Store a value under a key; an existing record's value is replaced",
     (Input("key", "Key", "The unique identifier to look up this data in the future", "string",
            required=True),
      Input("value", "Value", "The data that should be stored under the Key", "json",
            required=True)),
     set_record),
    ("add_or_update_records", "Add or update multiple records",
     "Store several records in one step, all or nothing",
     (Input("records", "Records", "The records to add or update: an object of key -> value",
            "object", required=True),),
     set_records),
    ("get_record", "Get record",
     "Retrieve the latest value of a record (null if the key is not found), optionally "
     "creating the record if the key is not found",
     (_LOOKUP,
      Input("create_if_not_found", "Create new record if key is not found",
            "If the specified key isn't found, create a new record with Value", "boolean",
            default=False),
      Input("value", "Value", "The value of the new record, if one is created", "json")),
     get_record),
    ("delete_record", "Delete record",
     "Delete a single record. Deleting a record does not delete the entire Data Store.",
     (_LOOKUP,), delete_record),
    ("list_keys", "List keys", "List every key of the Data Store", (), list_keys),
    ("list_records", "List records",
     "List every record of the Data Store, with its value, version and times", (),
     list_records),
    ("has_key", "Check for existence of key", "Whether a record with the key exists",
     (_LOOKUP,), has_key),
    ("delete_all_records", "Delete all records",
     "Delete every record of the Data Store (the store itself stays)", (), clear),
)  # fmt: skip


def _data_store() -> list[Action]:
    def on_store(call: Call) -> Callable[[Args], Plan]:
        return lambda a: call(a, check_store_name(a["store"]))

    return [
        Action(f"store.{suffix}", title, description, (_STORE, *inputs), on_store(call))
        for suffix, title, description, inputs, call in _DATA
    ]


def _usage(a: Args) -> Plan:
    return Plan(None, None, lambda usage: usage)


USAGE_METRICS = Action(
    "usage_metrics",
    "Get Persist Data Usage Metrics",
    "Get usage metrics for persisted data. Persisted data can total 64 MB (the workspace "
    "quota's default).",
    (),
    _usage,
)

CATALOGUE: tuple[Action, ...] = (
    *(action for scope in _SCOPES for action in _scoped(scope)),
    USAGE_METRICS,
    *_data_store(),
)
_BY_NAME = {action.name: action for action in CATALOGUE}
