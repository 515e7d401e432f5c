"""QUALITY R2, lost updates through HTTP: many clients, each its own `runstate.connect`, all
writing one key of one served database at once.

An increment or append that reads, changes and writes back outside one transaction loses
updates under this load; the server must run each as one atomic step (through its group-commit
writer), in the `durable` mode a server runs in by default.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import runstate
from http_server import Served, serve_database
from threads import in_threads_with

CLIENTS = 32
INCREMENTS = 300
APPENDS = 100


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with serve_database(tmp_path_factory.mktemp("r2"), durability="durable") as server:
        yield server


@contextlib.contextmanager
def _client_store(served: Served) -> Iterator[Any]:
    """A client of its own (its own connection) and the store every client writes."""
    with runstate.connect(served.url, token=served.admin_token) as db:
        yield db.store("r2")


def in_parallel(served: Served, work: Callable[[int, Any], list[Any]]) -> list[list[Any]]:
    """Run `work(client_number, store)` in `CLIENTS` threads, each with its own connection,
    released together; returns each client's results."""
    return in_threads_with(CLIENTS, lambda _: _client_store(served), work)


@pytest.mark.slow
def test_concurrent_increments_return_each_value_exactly_once(served: Served):
    def work(number: int, store: Any) -> list[int]:
        return [store.increment("counter") for _ in range(INCREMENTS)]

    returned = [value for values in in_parallel(served, work) for value in values]
    assert sorted(returned) == list(range(1, CLIENTS * INCREMENTS + 1))
    with runstate.connect(served.url, token=served.admin_token) as db:
        assert db.store("r2").get("counter") == CLIENTS * INCREMENTS


@pytest.mark.slow
def test_concurrent_appends_keep_every_element_once_in_each_clients_order(served: Served):
    def work(number: int, store: Any) -> list[int]:
        return [store.append("list", [number, i]) for i in range(APPENDS)]

    lengths = [n for values in in_parallel(served, work) for n in values]
    assert sorted(lengths) == list(range(1, CLIENTS * APPENDS + 1))
    with runstate.connect(served.url, token=served.admin_token) as db:
        stored = db.store("r2").get("list")
    assert sorted(map(tuple, stored)) == [(n, i) for n in range(CLIENTS) for i in range(APPENDS)]
    for number in range(CLIENTS):
        assert [i for n, i in stored if n == number] == list(range(APPENDS))


def test_one_client_shared_by_threads_loses_nothing(served: Served):
    """A `Database` from `connect` may be shared between threads (its connection pool is)."""
    returned: list[int] = []
    with runstate.connect(served.url, token=served.admin_token) as db:
        store = db.store("shared")

        def work() -> None:
            values = [store.increment("n") for _ in range(100)]
            returned.extend(values)

        threads = [threading.Thread(target=work) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert sorted(returned) == list(range(1, 801))
