"""The security walk of QUALITY, driven by the served OpenAPI document (SPEC §5).

Every path and method of ``/openapi.json`` is called with each identity: an admin, write and
read token, a write token limited to the store it uses, an admin token limited to another
store, no token, an unknown token, and an admin token of another workspace (a tenant). Then:

- each answer has the status SPEC §5 requires: 401 without a valid token, 403 below the role
  the document names or outside the token's store list, and for the tenant nothing of this
  workspace (404 where a store or record must exist, an empty result where a missing store
  reads as empty); every status seen is one the document lists for that operation;
- no answer holds a token value (the caller's or any other) or a traceback, and nothing the
  server logged during the walk holds one;
- the tenant's answers never hold this workspace's data and its calls change none of it.

The concrete request of each operation (store, key, body) and the statuses an unlimited admin
gets come from `test_auth`, whose walk over the route table checks roles and tenants one
route at a time; this one starts from the document a client sees.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from http_server import start_server
from runstate.tokens import ROLES
from test_auth import ABSENT, ADMIN_STATUS, EMPTY, REQUESTS, STORE_ROUTES, TOKEN_ROUTES, World

MARKER = "marker-0f3a9c-of-the-default-workspace"

# identity -> (role, stores, workspace); None: no Authorization header; "unknown": a token
# that looks right and is not in the database.
IDENTITIES: dict[str, Any] = {
    "admin": ("admin", None, "default"),
    "write": ("write", None, "default"),
    "read": ("read", None, "default"),
    "limited-here": ("write", ["s"], "default"),
    "limited-elsewhere": ("admin", ["other"], "default"),
    "none": None,
    "unknown": "unknown",
    "tenant": ("admin", None, "tenant"),  # one workspace per operation
}


@dataclass
class Walk:
    document: dict[str, Any]
    tokens: dict[str, str | None]
    answers: dict[tuple[str, str], httpx.Response] = field(default_factory=dict)
    more_tokens: list[str] = field(default_factory=list)
    tenant_before: Any = None
    tenant_after: Any = None
    logged: list[str] = field(default_factory=list)


class _Everything(logging.Handler):
    def __init__(self, into: list[str]) -> None:
        super().__init__(logging.DEBUG)
        self.into = into

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if record.exc_info:
            text += logging.Formatter().formatException(record.exc_info)
        self.into.append(text)


def _operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            yield method.upper(), path, operation


@pytest.fixture(scope="module")
def walk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Walk]:
    served = start_server(tmp_path_factory.mktemp("walk"), durability="fast")
    logged: list[str] = []
    handler = _Everything(logged)
    root = logging.getLogger()
    root.addHandler(handler)
    previous = root.level
    root.setLevel(logging.DEBUG)
    world = World(served)
    try:
        tokens: dict[str, str | None] = {}
        for name, identity in IDENTITIES.items():
            if identity is None or identity == "unknown":
                tokens[name] = None if identity is None else "rs_" + "Q" * 43
            else:
                role, stores, workspace = identity
                tokens[name] = served.token(role, stores=stores, workspace=workspace)
        world.admin.put("/v1/stores/s/records/marker", json={"value": MARKER})
        document = world.anonymous.get("/openapi.json").json()
        result = Walk(document, tokens, logged=logged)
        world.seed()
        result.tenant_before = world.snapshot()
        order = ["tenant", *(name for name in IDENTITIES if name != "tenant")]
        for name in order:  # the tenant first, so that its calls alone are compared
            for _, _, operation in _operations(document):
                op = operation["operationId"]
                token = tokens[name]
                if name == "tenant":  # a workspace per call, as in test_auth: nothing made
                    token = served.token("admin", workspace=f"tenant-{op}")  # by another call
                    result.more_tokens.append(token)
                result.answers[op, name] = world.call(token, op)
            if name == "tenant":
                world.seed()
                result.tenant_after = world.snapshot()
        yield result
    finally:
        root.removeHandler(handler)
        root.setLevel(previous)
        world.admin.close()
        world.anonymous.close()
        served.close()


def _needed_role(operation: dict[str, Any]) -> str | None:
    if not operation.get("security"):
        return None
    found = re.search(r"Needs a token with the (\w+) role", operation.get("description", ""))
    assert found, f"{operation['operationId']} does not say which role it needs"
    # the walk's batch writes (an increment): it needs the write role
    return "write" if operation["operationId"] == "batch" else found.group(1)


def _expected(identity: str, op: str, needed: str | None) -> int | None:
    """The status SPEC §5 requires, or None where only "not an error" is required."""
    if needed is None:
        return 200
    spec = IDENTITIES[identity]
    if spec is None or spec == "unknown":
        return 401
    role, stores, workspace = spec
    if ROLES[role] < ROLES[needed]:
        return 403
    if stores is not None and (op in TOKEN_ROUTES or ("s" not in stores and op in STORE_ROUTES)):
        return 403
    if workspace != "default":
        return ABSENT.get(op)
    return ADMIN_STATUS.get(op, 200)


def test_the_walk_covers_every_operation_of_the_served_document(walk):
    seen = set()
    for method, path, operation in _operations(walk.document):
        op = operation["operationId"]
        seen.add(op)
        assert op in REQUESTS, f"{method} {path}: no request to walk it with"
        sent_method, sent_path, _ = REQUESTS[op]("s", "tok_x")
        template = re.sub(r"\{[^}]+\}", "[^/]+", path)
        assert sent_method == method, op
        assert re.fullmatch(template, sent_path), (op, sent_path, path)
    assert seen == set(REQUESTS)


@pytest.mark.parametrize("identity", IDENTITIES)
def test_every_answer_has_the_status_the_spec_requires(walk, identity):
    wrong = []
    for method, path, operation in _operations(walk.document):
        op = operation["operationId"]
        answer = walk.answers[op, identity]
        expected = _expected(identity, op, _needed_role(operation))
        status = answer.status_code
        if expected is None:
            ok = status < 400
        else:
            ok = status == expected
        if ok and status >= 400:
            code = answer.json()["error"]["code"]
            ok = code == {401: "unauthorized", 403: "forbidden", 404: "not_found"}.get(status, code)
            if status == 401:
                ok = ok and answer.headers.get("www-authenticate", "").startswith("Bearer")
        if str(status) not in operation["responses"]:
            wrong.append(f"{method} {path}: {status} is not in the document's responses")
        if not ok:
            wrong.append(f"{method} {path}: {status} (expected {expected}) {answer.text[:200]}")
    assert wrong == []


def test_no_answer_holds_a_token_or_a_traceback(walk):
    secrets = [token.encode() for token in [*walk.tokens.values(), *walk.more_tokens] if token]
    for (op, identity), answer in walk.answers.items():
        exposed = answer.content + b"".join(v for _, v in answer.headers.raw)
        assert not any(secret in exposed for secret in secrets), (op, identity)
        assert b"Traceback" not in exposed, (op, identity)


def test_the_server_logs_no_token_and_no_traceback(walk):
    everything = "\n".join(walk.logged)
    for token in [*walk.tokens.values(), *walk.more_tokens]:
        assert not token or token not in everything, "a token was logged"
    assert "Traceback" not in everything


def test_the_tenant_never_sees_or_changes_this_workspaces_data(walk):
    for op in REQUESTS:
        answer = walk.answers[op, "tenant"]
        assert MARKER.encode() not in answer.content, op
        assert b'"v"' not in answer.content or op == "openapi", op
        if op in EMPTY:
            assert answer.json() == EMPTY[op], op
    before, after = walk.tenant_before, walk.tenant_after
    assert after[:2] == before[:2]  # stores and records
    assert {t["id"] for t in before[2]} <= {t["id"] for t in after[2]}  # no token revoked
