"""Group commit (SPEC §6, server-architecture.md): concurrent writes share one commit (one fsync
in durable mode), each stays atomic on its own, and shutdown loses no acknowledged write.

Commits are counted by the writer (`Writer.commits`, also `runstate_commits_total` in /metrics).
To make grouping deterministic, the first commit is held at a gate while more writes arrive:
they must all go out together in the next commit.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

import runstate
from http_server import quote_key, start_server
from runstate import ops
from runstate.config import ServerConfig


@pytest.fixture
def served(tmp_path):
    server = start_server(tmp_path)  # the server's default: durable (fsync before ack)
    yield server
    server.close()


class Gate:
    """Wraps `engine.write_many`: the first call waits until `open()`; counts calls."""

    def __init__(self, engine: Any) -> None:
        self.inner = engine.write_many
        self.opened = threading.Event()
        self.entered = threading.Event()
        self.groups: list[int] = []
        self.first = 0

    def __call__(self, units: Any) -> Any:
        if not self.groups:
            self.first = len(units)
            self.entered.set()
            self.opened.wait(30)
        self.groups.append(len(units))
        return self.inner(units)

    def open(self) -> None:
        self.opened.set()


@pytest.fixture
def gate(served, monkeypatch) -> Gate:
    found = Gate(served.engine)
    monkeypatch.setattr(served.engine, "write_many", found)
    return found


def _queued(served: Any) -> int:
    return int(served.state.writer._queue.qsize())


def _wait_for(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.002)


def _in_threads(n: int, fn: Callable[[int], Any]) -> Iterator[Any]:
    pool = ThreadPoolExecutor(n)
    futures = [pool.submit(fn, i) for i in range(n)]
    pool.shutdown(wait=False)
    return (f.result(timeout=60) for f in futures)


def test_the_server_runs_durable_by_default(served):
    assert ServerConfig().durability == "durable"
    assert served.engine.durability == "durable"


def test_writes_that_arrive_during_a_commit_share_the_next_one(served, gate):
    n = 40
    clients = [served.client(served.admin_token) for _ in range(n + 1)]

    def put(i: int) -> httpx.Response:
        return clients[i].put(f"/v1/stores/s/records/k{i}", json={"value": i})

    first = _in_threads(1, lambda _: put(n))
    gate.entered.wait(10)
    rest = _in_threads(n, put)
    _wait_for(lambda: _queued(served) == n)
    gate.open()
    responses = [*first, *rest]
    assert [r.status_code for r in responses] == [200] * (n + 1)
    assert gate.groups == [1, n]
    assert len({r.json()["version"] for r in responses}) == n + 1
    metrics = clients[0].get("/metrics").text
    assert "runstate_commits_total 2" in metrics
    assert f"runstate_commit_units_total {n + 1}" in metrics
    for client in clients:
        client.close()


def test_each_write_of_a_group_is_atomic_on_its_own(served, gate):
    served.engine.write("default", "s", ops.Set("text", "x").run)  # not through the gate
    clients = [served.client(served.admin_token) for _ in range(4)]
    bodies = [
        ("POST", "/v1/stores/s/batch", {"ops": [{"op": "set", "key": "a", "value": 1}]}),
        ("POST", "/v1/stores/s/batch", {"ops": [
            {"op": "set", "key": "b", "value": 1}, {"op": "increment", "key": "text"}]}),
        ("PUT", "/v1/stores/s/records/c", {"value": 3}),
        ("PUT", "/v1/stores/s/records/d", {"value": 4, "if_version": 99}),
    ]  # fmt: skip

    def send(i: int) -> httpx.Response:
        method, path, body = bodies[i]
        return clients[i].request(method, path, json=body)

    first = _in_threads(1, lambda _: clients[0].put("/v1/stores/s/records/z", json={"value": 0}))
    gate.entered.wait(10)
    rest = _in_threads(4, send)
    _wait_for(lambda: _queued(served) == 4)
    gate.open()
    assert next(first).status_code == 200
    statuses = [r.status_code for r in rest]
    assert statuses == [200, 422, 200, 404]
    assert gate.groups == [1, 4]
    with served.client(served.admin_token) as http:
        assert http.get("/v1/stores/s/keys").json()["keys"] == ["a", "c", "text", "z"]
    for client in clients:
        client.close()


def test_concurrent_increments_lose_nothing_and_share_commits(served):
    clients = [served.client(served.admin_token) for _ in range(16)]
    per_client = 25

    def run(i: int) -> list[int]:
        return [
            clients[i]
            .post("/v1/stores/s/batch", json={"ops": [{"op": "increment", "key": "n"}]})
            .json()["results"][0]
            for _ in range(per_client)
        ]

    before = served.state.writer.commits
    seen = sorted(v for values in _in_threads(16, run) for v in values)
    assert seen == list(range(1, 16 * per_client + 1))
    commits = served.state.writer.commits - before
    assert 1 <= commits <= 16 * per_client
    for client in clients:
        client.close()


def test_shutdown_answers_every_queued_write_and_keeps_it(tmp_path, monkeypatch):
    served = start_server(tmp_path)
    gate = Gate(served.engine)
    monkeypatch.setattr(served.engine, "write_many", gate)
    n = 20
    clients = [served.client(served.admin_token) for _ in range(n)]

    def put(i: int) -> int:
        key = quote_key(f"k/{i}")
        return clients[i].put(f"/v1/stores/s/records/{key}", json={"value": i}).status_code

    responses = _in_threads(n, put)
    gate.entered.wait(10)
    _wait_for(lambda: _queued(served) == n - gate.first)
    closing = threading.Thread(target=served.close)
    closing.start()  # as on SIGTERM: stop accepting, finish requests in flight, drain, close
    time.sleep(0.2)
    gate.open()
    acknowledged = [i for i, status in enumerate(responses) if status == 200]
    closing.join(30)
    assert acknowledged == list(range(n))
    with runstate.open(tmp_path / "state.db") as db:
        store = db.store("s")
        assert {k: store[k] for k in store} == {f"k/{i}": i for i in acknowledged}
    for client in clients:
        client.close()


def test_the_writer_refuses_work_after_close(served):
    import asyncio

    writer = served.state.writer
    writer.close()

    async def submit() -> Any:
        return await writer.submit("default", "s", lambda tx: None)

    with pytest.raises(runstate.Unavailable):
        asyncio.run(submit())
