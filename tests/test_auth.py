"""Tokens, roles, store limits and tenants (SPEC §5, QUALITY security checks).

A walk over EVERY route of the API (the route table the OpenAPI document is built from) with
no token, a wrong token, each role, store-limited tokens and another workspace's admin token:

- no or unknown token: 401 on every route under /v1 and /metrics (public routes answer);
- a role below the route's: 403; a token limited to stores: 403 on any other store;
- another workspace's token: the default workspace's stores are not there (404, or an empty
  listing as for any missing store), its data is never returned and never changed.
"""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest

from http_server import start_server
from runstate.engine import open_engine
from runstate.server.auth import Authenticator
from runstate.server.routes import ROUTES
from runstate.tokens import ROLES, hash_token, issue_token

# One request per route, on store `st` (`victim` is a token id to revoke).
REQUESTS: dict[str, Any] = {
    "listStores": lambda st, victim: ("GET", "/v1/stores", None),
    "createStore": lambda st, victim: ("POST", "/v1/stores", {"name": st}),
    "getStore": lambda st, victim: ("GET", f"/v1/stores/{st}", None),
    "updateStore": lambda st, victim: ("PATCH", f"/v1/stores/{st}", {"default_ttl": 600}),
    "deleteStore": lambda st, victim: ("DELETE", f"/v1/stores/{st}", None),
    "addDependent": lambda st, victim: ("PUT", f"/v1/stores/{st}/dependents/wf2", None),
    "removeDependent": lambda st, victim: ("DELETE", f"/v1/stores/{st}/dependents/wf2", None),
    "listRecords": lambda st, victim: ("GET", f"/v1/stores/{st}/records", None),
    "clearStore": lambda st, victim: ("DELETE", f"/v1/stores/{st}/records", None),
    "listKeys": lambda st, victim: ("GET", f"/v1/stores/{st}/keys", None),
    "getRecord": lambda st, victim: ("GET", f"/v1/stores/{st}/records/k", None),
    "putRecord": lambda st, victim: ("PUT", f"/v1/stores/{st}/records/k", {"value": "new"}),
    "deleteRecord": lambda st, victim: ("DELETE", f"/v1/stores/{st}/records/k", None),
    "batch": lambda st, victim: (
        "POST",
        f"/v1/stores/{st}/batch",
        {"ops": [{"op": "increment", "key": "n"}]},
    ),
    "exportRecords": lambda st, victim: ("GET", f"/v1/stores/{st}/export", None),
    "importRecords": lambda st, victim: (
        "POST",
        f"/v1/stores/{st}/import",
        b'{"key": "imported", "value": 1}\n',
    ),
    "watchStore": lambda st, victim: ("GET", f"/v1/stores/{st}/watch", None),
    "usage": lambda st, victim: ("GET", "/v1/usage", None),
    "listActions": lambda st, victim: ("GET", "/v1/actions", None),
    "runAction": lambda st, victim: (
        "POST",
        "/v1/actions/store.get_record",
        {"store": st, "key": "k"},
    ),
    "listTokens": lambda st, victim: ("GET", "/v1/tokens", None),
    "createToken": lambda st, victim: ("POST", "/v1/tokens", {"role": "read"}),
    "revokeToken": lambda st, victim: ("DELETE", f"/v1/tokens/{victim}", None),
    "healthz": lambda st, victim: ("GET", "/healthz", None),
    "metrics": lambda st, victim: ("GET", "/metrics", None),
    "openapi": lambda st, victim: ("GET", "/openapi.json", None),
}

# What an unlimited admin of the default workspace gets on the seeded store "s".
ADMIN_STATUS = {
    "createStore": 409,  # exists
    "deleteStore": 409,  # has a dependent
    "createToken": 201,
}

ROUTE = {route.operation_id: route for route in ROUTES}
# The role each request needs: the route's, but this batch writes.
NEEDS = {op: ("write" if op == "batch" else ROUTE[op].role) for op in REQUESTS}
STORE_ROUTES = {
    op for op in REQUESTS if "{store}" in ROUTE[op].path or op in ("createStore", "runAction")
}
TOKEN_ROUTES = {"listTokens", "createToken", "revokeToken"}


def test_the_walk_covers_every_route():
    assert set(REQUESTS) == set(ROUTE)


class World:
    """A served database seeded before every request: in the default workspace, stores "s"
    and "other", each with record k and dependent wf, and a victim token to revoke."""

    def __init__(self, served: Any) -> None:
        self.served = served
        self.admin = served.client(served.admin_token)
        self.anonymous = served.client()

    def seed(self) -> str:
        for store in ("s", "other"):
            if self.admin.get(f"/v1/stores/{store}/records/k").status_code != 200:
                self.admin.put(f"/v1/stores/{store}/records/k", json={"value": "v"})
            self.admin.put(f"/v1/stores/{store}/dependents/wf")
        _, info = issue_token(self.served.engine, role="read")
        return info.id

    def call(self, token: str | None, op: str, store: str = "s") -> httpx.Response:
        victim = self.seed()
        method, path, body = REQUESTS[op](store, victim)
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        content = body if isinstance(body, bytes) else None if body is None else orjson.dumps(body)
        if op == "watchStore":  # an endless stream: its status, headers and first chunk
            with self.anonymous.stream(method, path, headers=headers) as answer:
                first = answer.read() if answer.is_error else next(answer.iter_raw())
                return httpx.Response(answer.status_code, headers=answer.headers, content=first)
        return self.anonymous.request(method, path, content=content, headers=headers)

    def snapshot(self) -> Any:
        """The default workspace as its admin sees it (stores, records, tokens)."""
        stores = self.admin.get("/v1/stores").json()["stores"]
        records = {
            s["name"]: self.admin.get(f"/v1/stores/{s['name']}/records").json()["records"]
            for s in stores
        }
        tokens = self.admin.get("/v1/tokens").json()["tokens"]
        return stores, records, tokens


@pytest.fixture(scope="module")
def world(tmp_path_factory, module_server_db):
    """One server for the module (on SQLite, then on PostgreSQL): every request re-seeds what
    it may have changed, and each test makes its own tokens (and workspaces)."""
    served = start_server(tmp_path_factory.mktemp("auth"), durability="fast", **module_server_db)
    world = World(served)
    yield world
    world.admin.close()
    world.anonymous.close()
    served.close()


def _is_auth_error(response: httpx.Response, status: int, code: str) -> bool:
    return response.status_code == status and response.json()["error"]["code"] == code


@pytest.mark.parametrize("op", REQUESTS)
def test_no_token_or_an_unknown_token_is_unauthorized(world, op):
    for token in (None, "rs_" + "A" * 43, "not-a-token"):
        response = world.call(token, op)
        if NEEDS[op] is None:
            assert response.status_code == 200
        else:
            assert _is_auth_error(response, 401, "unauthorized"), (token, response.text)
            assert response.headers["www-authenticate"].startswith("Bearer")


def test_a_malformed_authorization_header_is_unauthorized(world):
    for header in ("Basic abc", "Bearer", "Token x", world.served.admin_token):
        response = world.anonymous.get("/v1/stores", headers={"Authorization": header})
        assert _is_auth_error(response, 401, "unauthorized")


def test_the_bearer_scheme_is_case_insensitive(world):
    with world.served.client() as http:
        headers = {"Authorization": f"bearer {world.served.admin_token}"}
        assert http.get("/v1/stores", headers=headers).status_code == 200


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("op", REQUESTS)
def test_each_role_may_do_what_its_rank_allows(world, role, op):
    token = world.served.token(role)
    response = world.call(token, op)
    needed = NEEDS[op]
    if needed is not None and ROLES[role] < ROLES[needed]:
        assert _is_auth_error(response, 403, "forbidden"), response.text
    else:
        assert response.status_code == ADMIN_STATUS.get(op, 200), response.text


def test_a_read_token_may_run_a_batch_of_reads_only(world):
    with world.served.client(world.served.token("read")) as http:
        reads = {"ops": [{"op": "get", "key": "k"}, {"op": "keys"}], "checks": []}
        world.seed()
        assert http.post("/v1/stores/s/batch", json=reads).json()["results"][0] == "v"
        mixed = {"ops": [{"op": "get", "key": "k"}, {"op": "set", "key": "k", "value": 1}]}
        assert _is_auth_error(http.post("/v1/stores/s/batch", json=mixed), 403, "forbidden")
    assert world.admin.get("/v1/stores/s/records/k").json()["value"] == "v"


@pytest.mark.parametrize("role", ["read", "write", "admin"])
@pytest.mark.parametrize("op", REQUESTS)
def test_a_store_limited_token_is_forbidden_other_stores(world, role, op):
    token = world.served.token(role, stores=["s"])
    mine, other = world.call(token, op, "s"), world.call(token, op, "other")
    needed = NEEDS[op]
    below = needed is not None and ROLES[role] < ROLES[needed]
    if below or op in TOKEN_ROUTES:  # a limited token never manages tokens
        assert _is_auth_error(mine, 403, "forbidden"), mine.text
        return
    assert mine.status_code == ADMIN_STATUS.get(op, 200), mine.text
    if op in STORE_ROUTES:
        assert _is_auth_error(other, 403, "forbidden"), other.text
    else:
        assert other.status_code == mine.status_code


def test_a_store_limited_token_sees_only_its_stores(world):
    world.seed()
    with world.served.client(world.served.token("read", stores=["s", "missing"])) as http:
        assert [s["name"] for s in http.get("/v1/stores").json()["stores"]] == ["s"]
        usage = http.get("/v1/usage").json()
        assert [s["name"] for s in usage["stores"]] == ["s"]
    with world.served.client(world.served.token("write", stores=["s"])) as http:
        assert _is_auth_error(http.post("/v1/stores", json={"name": "new"}), 403, "forbidden")


# Routes on which another workspace finds no such store: 404, or an empty listing.
ABSENT = {
    "getStore": 404,
    "updateStore": 404,
    "deleteStore": 404,
    "addDependent": 404,
    "removeDependent": 404,
    "getRecord": 404,
    "deleteRecord": 404,
    "revokeToken": 404,
    "metrics": 403,  # metrics cover every workspace: the default workspace's tokens only
}
EMPTY = {
    "listRecords": {"records": [], "next_cursor": None},
    "listKeys": {"keys": [], "next_cursor": None},
    "clearStore": {"deleted": 0},
}


@pytest.mark.parametrize("op", REQUESTS)
def test_another_workspace_never_sees_or_changes_this_ones_data(world, op):
    token = world.served.token("admin", workspace=f"w-{op}")
    world.seed()
    before = world.snapshot()
    response = world.call(token, op)
    if op in ABSENT:
        expected = "not_found" if ABSENT[op] == 404 else "forbidden"
        assert _is_auth_error(response, ABSENT[op], expected), response.text
    elif op in EMPTY:
        assert response.json() == EMPTY[op]
    elif op == "exportRecords":
        assert response.content == b""
    else:
        assert response.status_code < 400, response.text
        if NEEDS[op] is not None:
            assert b'"v"' not in response.content  # the default workspace's value
    after = world.snapshot()
    assert after[:2] == before[:2]
    assert {t["id"] for t in before[2]} <= {t["id"] for t in after[2]}


def test_another_workspace_lists_only_its_own_stores_tokens_and_usage(world):
    world.seed()
    token = world.served.token("admin", workspace="w2")
    with world.served.client(token) as http:
        http.put("/v1/stores/s/records/mine", json={"value": 1})
        assert [s["name"] for s in http.get("/v1/stores").json()["stores"]] == ["s"]
        assert http.get("/v1/stores/s/keys").json()["keys"] == ["mine"]
        usage = http.get("/v1/usage").json()
        assert (usage["records"], [s["records"] for s in usage["stores"]]) == (1, [1])
        tokens = http.get("/v1/tokens").json()["tokens"]
        assert {t["workspace"] for t in tokens} == {"w2"}
        forbidden = http.post("/v1/tokens", json={"role": "admin", "workspace": "default"})
        assert _is_auth_error(forbidden, 403, "forbidden")
        assert _is_auth_error(http.get("/v1/tokens?workspace=default"), 403, "forbidden")
    assert "mine" not in world.admin.get("/v1/stores/s/keys").json()["keys"]


def test_the_operator_manages_other_workspaces(world):
    created = world.admin.post(
        "/v1/tokens", json={"role": "write", "stores": ["a", "b"], "workspace": "team"}
    )
    assert created.status_code == 201
    body = created.json()
    assert set(body) == {"token", "id", "role", "stores", "workspace", "created_at"}
    assert (body["role"], body["stores"], body["workspace"]) == ("write", ["a", "b"], "team")
    listed = world.admin.get("/v1/tokens", params={"workspace": "team"}).json()["tokens"]
    assert [t["id"] for t in listed] == [body["id"]]
    assert "token" not in listed[0]
    with world.served.client(body["token"]) as http:
        assert http.put("/v1/stores/a/records/k", json={"value": 1}).status_code == 200
    assert world.admin.delete(f"/v1/tokens/{body['id']}").json() == {"revoked": True}
    assert _is_auth_error(world.admin.delete(f"/v1/tokens/{body['id']}"), 404, "not_found")


@pytest.mark.parametrize(
    "body",
    [{}, {"role": "root"}, {"role": "read", "stores": []}, {"role": "read", "stores": ["a/b"]},
     {"role": "read", "workspace": "no/slash"}, {"role": "read", "x": 1}],
)  # fmt: skip
def test_a_bad_token_request_is_invalid_request(world, body):
    response = world.admin.post("/v1/tokens", json=body)
    assert _is_auth_error(response, 400, "invalid_request"), response.text


def test_tokens_are_shown_once_and_stored_as_hashes(world):
    created = world.admin.post("/v1/tokens", json={"role": "read"}).json()
    assert created["token"].startswith("rs_")
    assert len(created["token"]) == 46
    for info in world.admin.get("/v1/tokens").json()["tokens"]:
        assert set(info) == {"id", "role", "stores", "workspace", "created_at"}
    found = world.served.engine.token_by_hash(hash_token(created["token"]))
    assert found.id == created["id"]


def test_a_token_made_or_revoked_by_another_process_takes_effect(world):
    """`runstate token create --db` writes through its own engine; the server notices."""
    other = open_engine(world.served.app.config.db)  # the same database, another engine
    try:
        token, info = issue_token(other, role="read")
        with world.served.client(token) as http:
            assert _eventually(lambda: http.get("/v1/stores").status_code == 200)
            other.revoke_token(info.id)
            assert _eventually(lambda: http.get("/v1/stores").status_code == 401)
    finally:
        other.close()


def test_a_token_revoked_through_the_server_stops_working_at_once(world):
    created = world.admin.post("/v1/tokens", json={"role": "read"}).json()
    with world.served.client(created["token"]) as http:
        assert http.get("/v1/stores").status_code == 200
        world.admin.delete(f"/v1/tokens/{created['id']}")
        assert _is_auth_error(http.get("/v1/stores"), 401, "unauthorized")


def _eventually(check: Any, timeout: float = 5.0) -> bool:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return False


class FakeTokens:
    def __init__(self) -> None:
        self.tokens: dict[str, Any] = {}
        self.marker = 0
        self.lookups = 0

    def token_by_hash(self, token_hash: str) -> Any:
        self.lookups += 1
        return self.tokens.get(token_hash)

    def tokens_changed(self) -> int:
        return self.marker


def test_token_changes_are_seen_within_a_second_and_lookups_are_cached():
    source, now = FakeTokens(), [0.0]
    auth = Authenticator(source, monotonic=lambda: now[0])
    header = b"Bearer rs_new"
    with pytest.raises(Exception, match="not valid"):
        auth.authenticate(header)
    with pytest.raises(Exception, match="not valid"):
        auth.authenticate(header)
    assert source.lookups == 1  # unknown tokens are cached too
    source.tokens[hash_token("rs_new")] = "info"
    source.marker += 1
    now[0] += 0.99  # within a second of the change, however it falls between refreshes
    assert auth.authenticate(header) == "info"
    del source.tokens[hash_token("rs_new")]
    source.marker += 1
    now[0] += 0.99
    with pytest.raises(Exception, match="not valid"):
        auth.authenticate(header)
