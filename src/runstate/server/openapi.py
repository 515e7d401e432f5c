"""The OpenAPI 3.1 document at ``/openapi.json``, built from `routes.ROUTES` and `ops.OPS`.

Nothing here is written twice: every path, method, parameter, body and status comes from the
route table, and every batch op's schema from the op's own inputs (`Op._fields`, `_required`),
typed by `FIELD_SCHEMAS` (one schema per input name; a test checks every input has one).
The schemas say exactly what the server accepts where JSON Schema can say it; what it cannot
(a key's limit is 1024 bytes of UTF-8, not characters) is in the descriptions.
"""

from __future__ import annotations

import functools
from typing import Any

import orjson

from .. import __version__, actions, ops
from ..errors import ERRORS
from ..model import INT64_MAX, INT64_MIN, MAX_DEPTH, MAX_PAGE
from ..tokens import ROLES
from .routes import ROUTES, Route

__all__ = ["FIELD_SCHEMAS", "build_document", "document_bytes"]


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(name: str) -> dict[str, Any]:
    return {"anyOf": [_ref(name), {"type": "null"}]}


def _object(
    properties: dict[str, Any], required: tuple[str, ...] = (), description: str = ""
) -> dict[str, Any]:
    schema: dict[str, Any] = {
        "type": "object",
        "properties": properties,
        "required": list(required),
        "additionalProperties": False,
    }
    if description:
        schema["description"] = description
    return schema


NO_NUL = "^[^\\u0000]*$"

# Scalars shared by parameters, bodies and op inputs.
SCALARS: dict[str, dict[str, Any]] = {
    "Key": {
        "type": "string",
        "minLength": 1,
        "maxLength": 1024,
        "pattern": NO_NUL,
        "description": "A record key: a non-empty string of at most 1024 bytes of UTF-8, no "
        "NUL. In a path, percent-encode every byte outside RFC 3986 unreserved, '.' as %2E.",
    },
    "StoreName": {
        "type": "string",
        "pattern": "^[A-Za-z0-9_.:\\-]{1,128}$",
        "description": "1-128 characters of A-Z a-z 0-9 _ . : -",
    },
    "WorkspaceName": {"type": "string", "pattern": "^[A-Za-z0-9_.\\-]{1,64}$"},
    "Workflow": {"type": "string", "minLength": 1, "maxLength": 256, "pattern": NO_NUL},
    "TokenId": {"type": "string", "minLength": 1, "maxLength": 100},
    "Value": {
        "description": "Any JSON value: integers within signed 64-bit, at most "
        f"{MAX_DEPTH} levels of arrays/objects, at most 256 KiB encoded (configurable)."
    },
    "Ttl": {
        "type": "number",
        "exclusiveMinimum": 0,
        "maximum": 100 * 365 * 86400,
        "description": "seconds (fractions allowed)",
    },
    "Version": {"type": "integer", "minimum": 0, "maximum": INT64_MAX},
    "Int64": {"type": "integer", "minimum": INT64_MIN, "maximum": INT64_MAX},
    "Limit": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE},
    "Prefix": {"type": "string", "pattern": NO_NUL},
    "Cursor": {"type": "string", "minLength": 1, "description": "a next_cursor value"},
    "Boolean": {"type": "boolean"},
    "Time": {
        "type": "string",
        "format": "date-time",
        "description": "UTC, YYYY-MM-DDTHH:MM:SS.ffffffZ",
    },
}

# Each op input, by name (the same name means the same thing in every op).
FIELD_SCHEMAS: dict[str, dict[str, Any]] = {
    "key": _ref("Key"),
    "value": _ref("Value"),
    "default": _ref("Value"),
    "ttl": _nullable("Ttl"),
    "if_version": _nullable("Version"),
    "entries": {
        "type": "object",
        "propertyNames": _ref("Key"),
        "additionalProperties": _ref("Value"),
    },
    "keys": {"type": "array", "items": _ref("Key")},
    "values": {"type": "array", "items": _ref("Value")},
    "flatten": _ref("Boolean"),
    "amount": _ref("Int64"),
    "prefix": _nullable("Prefix"),
    "start": _nullable("Key"),
    "limit": _ref("Limit"),
    "cursor": _nullable("Cursor"),
    "reverse": _ref("Boolean"),
}


def _op_schema(cls: type[ops.Op]) -> dict[str, Any]:
    properties: dict[str, Any] = {"op": {"const": cls.name}}
    properties.update({name: FIELD_SCHEMAS[name] for name in cls._fields})
    required = ("op", *(f for f in cls._fields if f in cls._required))
    doc = (cls.__doc__ or "").strip().splitlines()
    return _object(properties, required, doc[0] if doc else f"the {cls.name} operation")


_ERROR = _object(
    {
        "error": _object(
            {
                "code": {"enum": sorted(ERRORS)},
                "message": {"type": "string"},
                "details": {"type": "object"},
            },
            ("code", "message", "details"),
        )
    },
    ("error",),
)

_STORE_INFO = _object(
    {
        "name": _ref("StoreName"),
        "records": {"type": "integer", "minimum": 0},
        "bytes": {"type": "integer", "minimum": 0},
        "dependents": {"type": "array", "items": {"type": "string"}},
        "created_at": _ref("Time"),
        "default_ttl": {"type": ["number", "null"]},
    },
    ("name", "records", "bytes", "dependents", "created_at", "default_ttl"),
)

_TOKEN_FIELDS: dict[str, Any] = {
    "id": _ref("TokenId"),
    "role": {"enum": list(ROLES)},
    "stores": {"anyOf": [{"type": "array", "items": _ref("StoreName")}, {"type": "null"}]},
    "workspace": _ref("WorkspaceName"),
    "created_at": _ref("Time"),
}


def _schemas() -> dict[str, Any]:
    op_names = {f"Op.{name}": _op_schema(cls) for name, cls in ops.OPS.items()}
    bodies_and_results: dict[str, Any] = {
        "Error": _ERROR,
        "Record": _object(
            {
                "key": {"type": "string"},
                "value": _ref("Value"),
                "version": {"type": "integer", "minimum": 1},
                "created_at": _ref("Time"),
                "updated_at": _ref("Time"),
                "expires_at": _nullable("Time"),
            },
            ("key", "value", "version", "created_at", "updated_at", "expires_at"),
        ),
        "RecordPut": _object(
            {"value": _ref("Value"), "ttl": _nullable("Ttl"), "if_version": _nullable("Version")},
            ("value",),
            "if_version: 0 = only if absent, n = only if at version n (404 if the record "
            "is missing, 409 at another version). Without ttl: the store's default_ttl.",
        ),
        "RecordPage": _object(
            {
                "records": {"type": "array", "items": _ref("Record")},
                "next_cursor": _nullable("Cursor"),
            },
            ("records", "next_cursor"),
        ),
        "KeyPage": _object(
            {
                "keys": {"type": "array", "items": {"type": "string"}},
                "next_cursor": _nullable("Cursor"),
            },
            ("keys", "next_cursor"),
        ),
        "StoreInfo": _STORE_INFO,
        "StoreList": _object(
            {"stores": {"type": "array", "items": _ref("StoreInfo")}}, ("stores",)
        ),
        "StoreCreate": _object(
            {"name": _ref("StoreName"), "default_ttl": _nullable("Ttl")}, ("name",)
        ),
        "StorePatch": _object({"default_ttl": _nullable("Ttl")}, ("default_ttl",)),
        "Deleted": _object({"deleted": {"const": True}}, ("deleted",)),
        "DeletedCount": _object({"deleted": {"type": "integer", "minimum": 0}}, ("deleted",)),
        "Check": _object({"key": _ref("Key"), "version": _ref("Version")}, ("key", "version")),
        "Op": {"anyOf": [_ref(name) for name in op_names]},
        "Batch": _object(
            {
                "checks": {"type": "array", "items": _ref("Check"), "maxItems": ops.MAX_BATCH},
                "ops": {"type": "array", "items": _ref("Op"), "maxItems": ops.MAX_BATCH},
            },
            (),
            "Checks (version 0: absent) and operations, one transaction. A failed check is "
            "409 conflict with details.check; a failed op its own error with details.op.",
        ),
        "BatchResult": _object({"results": {"type": "array"}}, ("results",)),
        "ImportLine": _object(
            {"key": _ref("Key"), "value": _ref("Value"), "expires_at": _nullable("Time")},
            ("key", "value"),
            "One record, as export writes it; a line whose expires_at has passed is skipped.",
        ),
        "ImportResult": _object({"imported": {"type": "integer", "minimum": 0}}, ("imported",)),
        "Usage": _object(
            {
                "records": {"type": "integer", "minimum": 0},
                "bytes": {"type": "integer", "minimum": 0},
                "quota_bytes": {"type": "integer", "minimum": 0},
                "stores": {"type": "array", "items": _ref("StoreInfo")},
            },
            ("records", "bytes", "quota_bytes", "stores"),
        ),
        "TokenCreate": _object(
            {
                "role": {"enum": list(ROLES)},
                "stores": {
                    "anyOf": [
                        {
                            "type": "array",
                            "items": _ref("StoreName"),
                            "minItems": 1,
                            "maxItems": 1000,
                        },
                        {"type": "null"},
                    ]
                },
                "workspace": _nullable("WorkspaceName"),
            },
            ("role",),
            "workspace (null: the caller's): only an unlimited admin token of the default "
            "workspace may name another one (it is created if new).",
        ),
        "TokenInfo": _object(_TOKEN_FIELDS, tuple(_TOKEN_FIELDS)),
        "TokenCreated": _object(
            {"token": {"type": "string", "pattern": "^rs_"}, **_TOKEN_FIELDS},
            ("token", *_TOKEN_FIELDS),
        ),
        "TokenList": _object(
            {"tokens": {"type": "array", "items": _ref("TokenInfo")}}, ("tokens",)
        ),
        "Revoked": _object({"revoked": {"const": True}}, ("revoked",)),
        "Health": _object({"status": {"const": "ok"}}, ("status",)),
    }
    return {**SCALARS, **bodies_and_results, **op_names, **_action_schemas()}


# An action input's JSON schema by its catalogue type; null is "not given" (but for a value).
_INPUT_SCHEMAS: dict[str, dict[str, Any]] = {
    "string": {"type": "string"},
    "integer": _ref("Int64"),
    "boolean": _ref("Boolean"),
    "json": _ref("Value"),
    "string_list": {"type": "array", "items": {"type": "string"}},
    "json_list": {"type": "array", "items": _ref("Value")},
    "object": {"type": "object", "additionalProperties": _ref("Value")},
}


def _input_schema(spec: actions.Input) -> dict[str, Any]:
    schema = dict(_INPUT_SCHEMAS[spec.type])
    if spec.name != "value" and not spec.required:
        schema = {"anyOf": [schema, {"type": "null"}]}
    schema["description"] = spec.description
    if spec.default is not None:
        schema["default"] = spec.default
    return schema


def _action_schemas() -> dict[str, Any]:
    """From the catalogue of `runstate.actions`: each action's inputs (``Action.{name}``),
    the names, the catalogue and the answer."""
    per_action = {
        f"Action.{action.name}": _object(
            {spec.name: _input_schema(spec) for spec in action.inputs},
            tuple(spec.name for spec in action.inputs if spec.required),
            f"{action.title}: {action.description}",
        )
        for action in actions.CATALOGUE
    }
    spec_fields: dict[str, Any] = {
        "name": {"type": "string"},
        "label": {"type": "string"},
        "description": {"type": "string"},
        "type": {"enum": list(actions.INPUT_TYPES)},
        "required": {"type": "boolean"},
        "default": _ref("Value"),
    }
    action_fields: dict[str, Any] = {
        "name": _ref("ActionName"),
        "title": {"type": "string"},
        "description": {"type": "string"},
        "inputs": {"type": "array", "items": _object(spec_fields, tuple(spec_fields))},
    }
    return {
        "ActionName": {"enum": [action.name for action in actions.CATALOGUE]},
        "ActionList": _object(
            {"actions": {"type": "array", "items": _object(action_fields, tuple(action_fields))}},
            ("actions",),
        ),
        "ActionInputs": {
            "type": "object",
            "description": "The action's inputs: the schema Action.{action} of the action named "
            "in the path (a missing required input or an unknown one is invalid_request)",
        },
        "ActionResult": _object(
            {"result": _ref("Value")}, ("result",), "The result of the action's operation"
        ),
        **per_action,
    }


_PATH_SCHEMAS = {
    "action": "ActionName",
    "store": "StoreName",
    "key": "Key",
    "workflow": "Workflow",
    "token_id": "TokenId",
}

_STATUS_TEXT = {
    400: "invalid_request, invalid_key or invalid_value",
    401: "unauthorized: missing or unknown token",
    403: "forbidden (role or store list), or quota_exceeded",
    404: "not_found",
    409: "conflict or has_dependents",
    413: "value_too_large: a value or the request body over its limit",
    422: "type_mismatch or out_of_range",
    429: "rate_limited",
    503: "unavailable: the database is unreachable or out of space",
}

_RETRY_AFTER = {
    "Retry-After": {
        "required": True,
        "description": "seconds to wait",
        "schema": {"type": "integer", "minimum": 0},
    }
}


def _error_response(status: int) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": _STATUS_TEXT[status],
        "content": {"application/json": {"schema": _ref("Error")}},
    }
    if status in (429, 503):
        response["headers"] = _RETRY_AFTER
    return response


def _ok_response(route: Route) -> dict[str, Any]:
    what = route.ok[1]
    if what == "application/x-ndjson":
        lines = {"type": "array", "items": _ref("ImportLine")}
        return {
            "description": route.summary + " (the schema is the array of those lines)",
            "content": {what: {"schema": lines}},
        }
    if "/" in what:
        schema: dict[str, Any] = {"type": "object"} if what.endswith("json") else {"type": "string"}
        content = {what: {"schema": schema}}
    else:
        content = {"application/json": {"schema": _ref(what)}}
    return {"description": route.summary, "content": content}


def _operation(route: Route) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "operationId": route.operation_id,
        "summary": route.summary,
        "tags": [route.tag],
        "security": [{"bearer": []}] if route.role else [],
    }
    if route.role:
        operation["description"] = f"Needs a token with the {route.role} role (or above)."
    parameters = [
        {
            "name": segment[1:-1],
            "in": "path",
            "required": True,
            "schema": _ref(_PATH_SCHEMAS[segment[1:-1]]),
        }
        for segment in route.segments
        if segment.startswith("{")
    ]
    parameters += [
        {
            "name": p.name,
            "in": "query",
            "required": False,
            "description": p.description,
            "schema": _ref(p.schema),
        }
        for p in route.query
    ]
    if parameters:
        operation["parameters"] = parameters
    if route.body == "ndjson":
        operation["requestBody"] = {
            "required": False,
            "description": "NDJSON: one ImportLine object per line (the schema is the array "
            "of those lines); blank lines are skipped, an empty body imports nothing.",
            "content": {
                "application/x-ndjson": {"schema": {"type": "array", "items": _ref("ImportLine")}}
            },
        }
    elif route.body is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": _ref(route.body)}},
        }
    responses: dict[str, Any] = {str(route.ok[0]): _ok_response(route)}
    for status in sorted(set(route.errors)):
        responses[str(status)] = _error_response(status)
    operation["responses"] = responses
    return operation


def build_document() -> dict[str, Any]:
    """The OpenAPI 3.1 document of the routes this server has."""
    paths: dict[str, dict[str, Any]] = {}
    for route in ROUTES:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "runstate",
            "version": __version__,
            "description": "A key-value data store for workflow automations. Errors are "
            '{"error": {"code", "message", "details"}}.',
        },
        "paths": paths,
        "components": {
            "schemas": _schemas(),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


@functools.cache
def document_bytes() -> bytes:
    return orjson.dumps(build_document())
