"""The asyncio API (SPEC §3.1 `connect_async`) end to end against the served app.

`AsyncDatabase`, `AsyncStore` and `AsyncAtomic` are the sync API with every I/O method a
coroutine: the first tests guard that the two surfaces stay the same, then every method runs
at least once against a real server, and a scenario run through both APIs gives the same results.
"""

from __future__ import annotations

import asyncio
import inspect
import socket
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

import runstate
from conftest import FakeClock
from http_server import Served, serve_database

pytestmark = pytest.mark.anyio

# Mapping syntax and helpers of `Store` that are sync-only by design (SPEC §3.1).
SYNC_ONLY = {"items", "values", "setdefault", "pop", "popitem", "update"}
# Not I/O: an iterator or a batch, returned at once.
NOT_COROUTINES = {"keys", "records", "watch", "atomic"}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def served(tmp_path: Path, clock: FakeClock) -> Iterator[Served]:
    with serve_database(tmp_path, clock, durability="fast") as server:
        yield server


@pytest.fixture
async def adb(served: Served) -> AsyncIterator[runstate.AsyncDatabase]:
    async with runstate.connect_async(served.url, token=served.admin_token) as db:
        yield db


@pytest.fixture
async def astore(adb: runstate.AsyncDatabase) -> runstate.AsyncStore:
    return await adb.store("s")


def public(cls: type) -> set[str]:
    return {name for name in dir(cls) if not name.startswith("_")}


# --- the same surface -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sync", "async_"),
    [
        (runstate.Database, runstate.AsyncDatabase),
        (runstate.Store, runstate.AsyncStore),
        (runstate.Atomic, runstate.AsyncAtomic),
    ],
)
def test_the_async_classes_have_the_sync_methods(sync, async_):
    # purge_expired: the server purges (an embedded database has no async API)
    assert public(sync) - public(async_) - SYNC_ONLY - {"purge_expired"} == set()


@pytest.mark.parametrize(
    ("sync", "async_"),
    [(runstate.Database, runstate.AsyncDatabase), (runstate.Store, runstate.AsyncStore)],
)
def test_every_async_method_takes_the_sync_parameters(sync, async_):
    for name in public(async_):
        ours = getattr(async_, name)
        theirs = getattr(sync, name, None)
        if not callable(ours) or theirs is None:
            continue
        assert inspect.signature(ours).parameters.keys() == (
            inspect.signature(theirs).parameters.keys()
        ), name


def test_every_io_method_is_a_coroutine():
    for cls in (runstate.AsyncDatabase, runstate.AsyncStore, runstate.AsyncAtomic):
        for name in public(cls) - NOT_COROUTINES - {"core", "workspace", "name", "results"}:
            member = getattr(cls, name)
            if callable(member) and name != "check":
                assert inspect.iscoroutinefunction(member), f"{cls.__name__}.{name}"


# --- every method once --------------------------------------------------------------------------


async def test_reads_and_writes_of_single_records(astore, clock):
    record = await astore.set("k", {"a": 1}, ttl=60)
    assert record.value == {"a": 1}
    assert record.expires_at == datetime.fromtimestamp(clock() + 60, UTC)
    assert await astore.get("k") == {"a": 1}
    assert await astore.get("missing", default=0) == 0
    assert await astore.get_record("k") == record
    assert await astore.get_record("missing") is None
    assert await astore.has("k") is True
    assert await astore.has("missing") is False
    assert await astore.ttl("k") == 60
    assert await astore.set_ttl("k", None) is True
    assert await astore.ttl("k") is None
    updated = await astore.set("k", 2, if_version=(await astore.get_record("k")).version)
    assert updated.value == 2
    assert await astore.get_or_create("k", 3) == 2
    assert await astore.get_or_create("new", 3) == 3
    assert await astore.delete("k", if_version=updated.version) is True
    assert await astore.delete("k") is False
    assert await astore.set_many({"a": 1, "b": 2}, ttl=5) == 2
    assert await astore.delete_many(["a", "b", "zz"]) == 2
    stamp = await astore.save_current_time("t")
    assert stamp == datetime.fromtimestamp(clock(), UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    assert await astore.get("t") == stamp
    assert await astore.clear() == 2


async def test_counters_lists_and_sets(astore):
    assert await astore.increment("n") == 1
    assert await astore.increment("n", 5) == 6
    assert await astore.decrement("n", 2) == 4
    assert await astore.decrement("n") == 3
    assert await astore.append("l", 1) == 1
    assert await astore.append_many("l", [2, [3, 4]], flatten=True) == 4
    assert await astore.remove_from_list("l", 3) == 1
    assert await astore.get("l") == [1, 2, 4]
    assert await astore.add_to_set("set", "a") is True
    assert await astore.add_to_set("set", "a") is False
    assert await astore.remove_from_set("set", "a") is True
    assert await astore.remove_from_set("set", "a") is False


async def test_keys_and_records_are_async_iterators_that_page(astore):
    await astore.set_many({f"k{i:03}": i for i in range(25)})
    keys = astore.keys(prefix="k0", limit=7)
    assert not inspect.iscoroutine(keys)
    assert [k async for k in keys] == [f"k{i:03}" for i in range(25)]
    values = [r.value async for r in astore.records(limit=10, reverse=True)]
    assert values == list(range(24, -1, -1))
    assert [k async for k in astore.keys(start="k020")] == ["k020", "k021", "k022", "k023", "k024"]
    page = await astore.keys_page(limit=10)
    assert len(page.items) == 10
    assert page.next_cursor is not None
    rest = await astore.records_page(cursor=page.next_cursor, limit=100)
    assert [r.key for r in rest.items] == [f"k{i:03}" for i in range(10, 25)]
    assert rest.next_cursor is None


async def test_stores_dependents_and_usage(adb):
    info = await adb.create_store("orders", default_ttl=10)
    assert (info.name, info.default_ttl) == ("orders", 10)
    with pytest.raises(runstate.Conflict):
        await adb.create_store("orders")
    assert (await adb.update_store("orders", default_ttl=None)).default_ttl is None
    orders = await adb.store("orders", workflow="wf_1")
    await orders.set("k", "v")
    assert (await adb.store_info("orders")).dependents == ["wf_1"]
    assert (await adb.add_dependent("orders", "wf_2")).dependents == ["wf_1", "wf_2"]
    with pytest.raises(runstate.HasDependents) as caught:
        await adb.delete_store("orders")
    assert caught.value.details["dependents"] == ["wf_1", "wf_2"]
    await adb.remove_dependent("orders", "wf_1")
    await adb.remove_dependent("orders", "wf_2")
    assert [s.name for s in await adb.stores()] == ["orders"]
    usage = await adb.usage()
    assert (usage.records, usage.bytes) == (1, len("k") + len('"v"'))
    await adb.delete_store("orders")
    with pytest.raises(runstate.NotFound):
        await adb.store_info("orders")


async def test_scopes_are_the_reserved_stores(adb):
    stores = [
        await adb.execution_state("e1"),
        await adb.flow_state("i1", "f1"),
        await adb.cross_flow_state("i1"),
        await adb.integration_state("n1"),
    ]
    names = ["execution:e1", "flow:i1:f1", "instance:i1", "integration:n1"]
    assert [s.name for s in stores] == names
    assert (await adb.store_info("execution:e1")).default_ttl == 24 * 3600
    with pytest.raises(runstate.InvalidRequest):
        await adb.flow_state("i:1", "f1")


# --- atomic batches -----------------------------------------------------------------------------


async def test_async_atomic_runs_every_op_in_one_batch(astore):
    await astore.set("balance", 5)
    version = (await astore.get_record("balance")).version
    async with astore.atomic() as tx:
        tx.check("balance", version=version)
        tx.set("balance", 10)
        tx.increment("n")
        tx.get("balance")
    assert [type(r).__name__ for r in tx.results] == ["Record", "int", "int"]
    assert tx.results[1:] == [1, 10]
    assert await astore.get("balance") == 10


async def commit(store: runstate.AsyncStore, *steps: Any) -> runstate.AsyncAtomic:
    """Queue each step (a function of the batch) in one ``async with store.atomic()``."""
    async with store.atomic() as tx:
        for step in steps:
            step(tx)
    return tx


def fail(tx: Any) -> None:
    raise KeyError("x")


async def test_a_failed_check_or_op_raises_at_exit_and_changes_nothing(astore):
    await astore.set("n", "text")
    with pytest.raises(runstate.Conflict) as caught:
        await commit(astore, lambda tx: tx.check("absent", version=3), lambda tx: tx.set("x", 1))
    assert caught.value.details["check"] == 0
    with pytest.raises(runstate.TypeMismatch) as caught:
        await commit(astore, lambda tx: tx.set("x", 1), lambda tx: tx.increment("n"))
    assert caught.value.details["op"] == 1
    assert await astore.has("x") is False


async def test_an_exception_in_the_block_discards_the_batch(astore):
    with pytest.raises(KeyError):
        await commit(astore, lambda tx: tx.set("x", 1), fail)
    assert await astore.has("x") is False


async def test_an_invalid_input_raises_at_exit_with_its_index(astore):
    with pytest.raises(runstate.InvalidKey) as caught:
        await commit(astore, lambda tx: tx.set("ok", 1), lambda tx: tx.set("", 1))
    assert caught.value.details["op"] == 1
    assert await astore.has("ok") is False


# --- errors and the network ---------------------------------------------------------------------


async def test_errors_are_the_embedded_ones_without_a_batch_index(astore):
    await astore.set("n", "text")
    with pytest.raises(runstate.TypeMismatch) as caught:
        await astore.increment("n")
    assert caught.value.details == {"key": "n", "expected": "integer", "found": "string"}
    with pytest.raises(runstate.InvalidKey):
        await astore.get(5)  # type: ignore[arg-type]


async def test_a_dead_server_is_unavailable():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with runstate.connect_async(f"http://127.0.0.1:{port}", timeout=2) as db:
        with pytest.raises(runstate.Unavailable):
            await db.usage()


async def test_concurrent_increments_through_one_client_are_not_lost(astore):
    results = await asyncio.gather(*(astore.increment("n") for _ in range(100)))
    assert sorted(results) == list(range(1, 101))


# --- one scenario, both APIs ----------------------------------------------------------------------

SCENARIO: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = [
    ("set", ("k", {"a": [1, 2.5]}), {"ttl": 30}),
    ("get", ("k",), {}),
    ("get", ("missing",), {"default": "d"}),
    ("increment", ("n", 7), {}),
    ("decrement", ("n",), {"amount": 2}),
    ("append_many", ("l", [1, [2, 3]]), {"flatten": True}),
    ("remove_from_list", ("l", 2), {}),
    ("add_to_set", ("set", {"b": 1, "a": 2}), {}),
    ("add_to_set", ("set", {"a": 2, "b": 1}), {}),
    ("has", ("set",), {}),
    ("ttl", ("k",), {}),
    ("set_many", ({"x": 1, "y": None},), {}),
    ("delete_many", (["x", "nope"],), {}),
    ("get_or_create", ("y", 5), {}),
    ("delete", ("y",), {}),
    ("keys_page", (), {"limit": 2}),
    ("save_current_time", ("t",), {}),
    ("set_ttl", ("t", 5), {}),
    ("clear", (), {}),
]


def comparable(result: Any) -> Any:
    """A result without the versions and times that differ between two stores."""
    if isinstance(result, runstate.Record):
        return ("record", result.key, result.value, result.expires_at)
    if isinstance(result, runstate.Page):
        return ("page", result.items)
    return result


async def test_the_sync_and_async_apis_give_the_same_results(served, adb):
    sync_results = []
    with runstate.connect(served.url, token=served.admin_token) as db:
        store = db.store("sync")
        for name, args, kwargs in SCENARIO:
            sync_results.append(comparable(getattr(store, name)(*args, **kwargs)))
    astore = await adb.store("async")
    async_results = [
        comparable(await getattr(astore, name)(*args, **kwargs)) for name, args, kwargs in SCENARIO
    ]
    assert async_results == sync_results
