"""QUALITY R10 and the PostgreSQL half of R1: a served database whose PostgreSQL misbehaves.

A server (in-process, `durable`) runs on PostgreSQL through `pg_proxy.PgProxy`, a TCP proxy in
the tests, while client threads write through HTTP (set, increment, a shared counter, append,
add_to_set), each on keys of its own, keeping a ledger of what was acknowledged and what was in
doubt (answered 503, or not answered). Then:

- latency: every write still succeeds;
- connections reset (RST) mid-transaction, again and again: every request answers within
  5 s, with its result or a 503; the pool replaces the broken connections by itself;
- the database goes away (connections reset, new ones refused) for `OUTAGE` seconds: every
  request answers within 5 s, a 503 with ``Retry-After`` while it is away, and once it is back
  the same server serves again, without a restart;
- a watcher on a server whose database connections are reset and then go away, following
  writes made through another server: once its server is back, every write once, in order;
- PostgreSQL itself crashes (``pg_ctlcluster ... stop -m immediate``) under the write load and
  is started again: the same, on the real thing.

Known gap, kept as a strict xfail: a database that stops answering without closing the
connection (a partition; the proxy's ``stalled``) holds a request for as long as TCP waits.

After each: nothing acknowledged is lost and nothing is applied twice. Each client appends
unique, increasing ids to its own list, so a write applied twice shows as a duplicate and a
lost one as a gap; counters lie between the acknowledged increments and those plus the ones in
doubt; the integrity check (counters against a recount, allotments against the quota) is ok.

The outage lasts 30 s, as in the issue, at CI size too (the test takes ~35 s;
``RUNSTATE_PG_OUTAGE`` sets another length). These tests restart PostgreSQL or measure the 5 s
bound, so they are `serial` (run alone, after the parallel suite).
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

import runstate
from conftest import fresh_schema, postgres_url
from http_server import Served, start_server
from pg_proxy import PgProxy

pytestmark = [pytest.mark.slow, pytest.mark.serial]

ANSWER_BOUND = 5.0  # the bound on every answer, 503s included
OUTAGE = float(os.environ.get("RUNSTATE_PG_OUTAGE", 30))
CLIENTS = 8
STORE = "faults"
KINDS = ("set", "increment", "shared", "append", "add_to_set")


# --- the load and its ledger ------------------------------------------------------------------


@dataclass
class Ledger:
    """What one client sent and what the server answered, per kind of write: the ids
    acknowledged and the ids in doubt (a 503 or no answer: applied or not)."""

    number: int
    next_id: int = 0
    acked: dict[str, list[int]] = field(default_factory=lambda: {k: [] for k in KINDS})
    doubt: dict[str, list[int]] = field(default_factory=lambda: {k: [] for k in KINDS})
    calls: list[tuple[float, float, str]] = field(default_factory=list)  # began, seconds, outcome
    errors: list[str] = field(default_factory=list)

    def key(self, kind: str) -> str:
        return f"{kind}/{self.number}"

    def write(self, store: Any, kind: str) -> str:
        self.next_id += 1
        n = self.next_id
        began = time.monotonic()
        try:
            if kind == "set":
                store.set(self.key(kind), n)
            elif kind == "increment":
                store.increment(self.key(kind))
            elif kind == "shared":
                store.increment("shared")
            elif kind == "append":
                store.append(self.key(kind), n)
            else:
                store.add_to_set(self.key(kind), n)
        except runstate.Unavailable as exc:
            outcome = str(exc.details.get("reason", "unavailable"))
            self.doubt[kind].append(n)
        except runstate.Error as exc:
            outcome = exc.code
            self.errors.append(f"{kind}: {exc.code}: {exc.message}")
            self.doubt[kind].append(n)
        else:
            outcome = "ok"
            self.acked[kind].append(n)
        self.calls.append((began, time.monotonic() - began, outcome))
        return outcome


class Load:
    """`CLIENTS` threads writing through `url` until `stop()`; each its own connection."""

    def __init__(self, url: str, token: str, clients: int = CLIENTS) -> None:
        self.ledgers = [Ledger(n) for n in range(clients)]
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(url, token, ledger), daemon=True)
            for ledger in self.ledgers
        ]
        for thread in self._threads:
            thread.start()

    def _run(self, url: str, token: str, ledger: Ledger) -> None:
        rng = random.Random(ledger.number)
        # a client timeout well past the bound: a slow answer is measured, not cut short
        try:
            with runstate.connect(url, token=token, timeout=4 * ANSWER_BOUND) as db:
                store = db.store(STORE)  # made by the fixture, before any fault
                while not self._stop.is_set():
                    if ledger.write(store, rng.choice(KINDS)) != "ok":
                        time.sleep(0.05)  # as a client would before retrying; no hot loop
        except BaseException as exc:  # reported by `_verify`
            ledger.errors.append(f"the client failed: {exc!r}")

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=4 * ANSWER_BOUND + 5)
            assert not thread.is_alive(), "a client hung"

    def calls(self) -> list[tuple[float, float, str]]:
        return sorted(call for ledger in self.ledgers for call in ledger.calls)


def _verify(db: Any, ledgers: list[Ledger]) -> dict[str, int]:
    """Nothing acknowledged lost, nothing applied twice, nothing never sent (module doc)."""
    store = db.store(STORE)
    shared = store.get("shared", 0)
    low = sum(len(ledger.acked["shared"]) for ledger in ledgers)
    high = low + sum(len(ledger.doubt["shared"]) for ledger in ledgers)
    assert low <= shared <= high, ("shared counter", low, shared, high)
    in_doubt = applied_in_doubt = 0
    for ledger in ledgers:
        assert ledger.errors == [], ledger.errors
        acked, doubt = ledger.acked, ledger.doubt
        in_doubt += sum(len(ids) for ids in doubt.values())

        counter = store.get(ledger.key("increment"), 0)
        low, high = len(acked["increment"]), len(acked["increment"]) + len(doubt["increment"])
        assert low <= counter <= high, (ledger.key("increment"), low, counter, high)
        applied_in_doubt += counter - low

        items = store.get(ledger.key("append"), [])
        assert len(items) == len(set(items)), f"{ledger.key('append')}: an append applied twice"
        assert items == sorted(items), f"{ledger.key('append')}: out of order"
        assert set(acked["append"]) <= set(items), f"{ledger.key('append')}: acknowledged lost"
        assert set(items) <= set(acked["append"]) | set(doubt["append"]), "never appended"
        applied_in_doubt += len(set(items) & set(doubt["append"]))

        members = store.get(ledger.key("add_to_set"), [])
        assert len(members) == len(set(members)), f"{ledger.key('add_to_set')}: duplicates"
        assert set(acked["add_to_set"]) <= set(members), "acknowledged members lost"
        assert set(members) <= set(acked["add_to_set"]) | set(doubt["add_to_set"])

        value = store.get(ledger.key("set"))
        if acked["set"]:
            assert value is not None, f"{ledger.key('set')}: acknowledged set lost"
            assert value >= max(acked["set"]), f"{ledger.key('set')}: went back to {value}"
        assert value is None or value in set(acked["set"]) | set(doubt["set"]), value
    return {"in_doubt": in_doubt, "applied_in_doubt": applied_in_doubt}


def _check_answers(calls: list[tuple[float, float, str]]) -> dict[str, int]:
    """Every answer within the bound, and every failure a 503 for the database."""
    slow = [(round(b - calls[0][0], 2), round(s, 2), o) for b, s, o in calls if s > ANSWER_BOUND]
    assert not slow, f"answers past {ANSWER_BOUND} s (began after the first, seconds): {slow}"
    outcomes: dict[str, int] = {}
    for _, _, outcome in calls:
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    unexpected = set(outcomes) - {"ok", "database_unreachable", "database_error", "busy"}
    assert not unexpected, outcomes
    return outcomes


class Prober:
    """Raw HTTP reads and writes in a thread, keeping (began, seconds, status, Retry-After):
    what a 503 looks like on the wire."""

    def __init__(self, served: Served) -> None:
        self.answers: list[tuple[float, float, int, str | None]] = []
        self.wrong: list[str] = []  # 503 answers that are not the `unavailable` envelope
        self._stop = threading.Event()
        self._client = httpx.Client(
            base_url=served.url,
            headers={"Authorization": f"Bearer {served.admin_token}"},
            timeout=4 * ANSWER_BOUND,
        )
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        n = 0
        while not self._stop.is_set():
            n += 1
            began = time.monotonic()
            try:
                if n % 2:
                    answer = self._client.get(f"/v1/stores/{STORE}/records/probe")
                else:
                    path = f"/v1/stores/{STORE}/records/probe"
                    answer = self._client.put(path, json={"value": n})
            except httpx.HTTPError:  # no answer at all: recorded as status 0
                self.answers.append((began, time.monotonic() - began, 0, None))
                continue
            self.answers.append(
                (
                    began,
                    time.monotonic() - began,
                    answer.status_code,
                    answer.headers.get("retry-after"),
                )
            )
            if answer.status_code == 503 and answer.json()["error"]["code"] != "unavailable":
                self.wrong.append(answer.text)
            time.sleep(0.05)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=4 * ANSWER_BOUND + 5)
        self._client.close()
        assert self.wrong == [], self.wrong[:3]


# --- fixtures -------------------------------------------------------------------------------------


@pytest.fixture
def proxy() -> Iterator[PgProxy]:
    target = httpx.URL(postgres_url())
    with PgProxy(target.host or "127.0.0.1", target.port or 5432) as running:
        yield running


@pytest.fixture
def schema_url() -> Iterator[str]:
    with fresh_schema() as url:
        yield url


@pytest.fixture
def proxied(proxy: PgProxy, schema_url: str, tmp_path: Path) -> Iterator[Served]:
    """A durable server on a fresh schema, reaching PostgreSQL through the proxy."""
    served = start_server(tmp_path, db=proxy.url(schema_url), durability="durable", pool_size=4)
    try:
        with runstate.connect(served.url, token=served.admin_token) as db:
            db.store(STORE)
        yield served
    finally:
        served.close()


def _wait_until_served(served: Served, deadline: float) -> float:
    """Seconds until a write through the server succeeds again (no restart of anything)."""
    began = time.monotonic()
    with runstate.connect(served.url, token=served.admin_token, timeout=10) as db:
        while True:
            try:
                db.store(STORE).set("recovered", True)
                return time.monotonic() - began
            except runstate.Unavailable:
                assert time.monotonic() - began < deadline, "the server did not recover"
                time.sleep(0.1)


def _settled(served: Served, load: Load) -> dict[str, int]:
    load.stop()
    with runstate.connect(served.url, token=served.admin_token) as db:
        found = _verify(db, load.ledgers)
    assert served.engine.integrity_check() == "ok"
    return found


# --- R10 through the proxy ------------------------------------------------------------------------


def test_latency_slows_writes_but_fails_none(proxied: Served, proxy: PgProxy):
    proxy.latency = 0.02  # each way, every chunk
    load = Load(proxied.url, proxied.admin_token)
    time.sleep(2.0)
    proxy.latency = 0.0
    verified = _settled(proxied, load)
    outcomes = _check_answers(load.calls())
    assert outcomes == {"ok": outcomes["ok"]}, outcomes
    assert outcomes["ok"] >= CLIENTS, outcomes
    assert verified["in_doubt"] == 0


def test_connection_resets_mid_transaction_lose_nothing_and_apply_nothing_twice(
    proxied: Served, proxy: PgProxy
):
    proxy.latency = 0.003  # keeps transactions in flight long enough to be cut
    load = Load(proxied.url, proxied.admin_token)
    time.sleep(0.5)
    resets = 0
    for _ in range(10):
        resets += proxy.reset()
        time.sleep(random.uniform(0.1, 0.4))
    proxy.latency = 0.0
    cut_at = time.monotonic()
    time.sleep(2.0)  # the pool must have replaced every broken connection by itself
    verified = _settled(proxied, load)
    calls = load.calls()
    outcomes = _check_answers(calls)
    late = [c for c in calls if c[0] > cut_at + 1.0]
    assert late
    assert all(outcome == "ok" for _, _, outcome in late), "the pool did not recover"
    print(f"{resets} connections reset; answers {outcomes}; {verified}")
    assert resets >= 10


def test_database_away_answers_503_quickly_and_recovers_without_restart(
    proxied: Served, proxy: PgProxy
):
    load = Load(proxied.url, proxied.admin_token)
    prober = Prober(proxied)
    time.sleep(1.0)
    proxy.down()
    down_at = time.monotonic()
    time.sleep(OUTAGE)
    proxy.up()
    up_at = time.monotonic()
    recovery = _wait_until_served(proxied, deadline=OUTAGE + 60)
    time.sleep(1.0)
    prober.stop()
    verified = _settled(proxied, load)
    calls = load.calls()
    outcomes = _check_answers(calls)
    slowest = max(seconds for _, seconds, _, _ in prober.answers)
    assert slowest <= ANSWER_BOUND, f"an answer took {slowest:.2f} s"
    during = [a for a in prober.answers if down_at + 0.5 < a[0] and a[0] + a[1] < up_at]
    assert len(during) >= OUTAGE, "the prober saw too little of the outage"
    assert {status for _, _, status, _ in during} == {503}, during
    assert all(after is not None and int(after) >= 1 for _, _, _, after in during)
    assert {a[2] for a in prober.answers} <= {200, 404, 503}
    away = [c for c in calls if down_at + 0.5 < c[0] and c[0] + c[1] < up_at]
    assert away
    assert all(outcome != "ok" for _, _, outcome in away)
    late = [c for c in calls if c[0] > up_at + recovery + 0.2]
    assert late
    assert all(outcome == "ok" for _, _, outcome in late), "not recovered"
    print(
        f"outage {OUTAGE:.0f} s; served again {recovery:.2f} s after the database came back; "
        f"{len(during)} probes during it, slowest answer {slowest:.2f} s; {outcomes}; {verified}"
    )


def test_a_watcher_whose_server_loses_the_database_misses_nothing(
    proxied: Served, proxy: PgProxy, schema_url: str, tmp_path: Path
):
    """Server A reaches PostgreSQL through the proxy, server B directly. A watcher on A
    (`Store.watch`, which resumes a dropped stream from its last event) follows writes made
    through B while A's connections are reset and its database goes away for a while: once
    A is back it has delivered every write once, in commit order."""
    seen: list[Any] = []
    failure: list[BaseException] = []
    with (
        start_server(tmp_path / "b", db=schema_url, durability="fast") as other,
        runstate.connect(proxied.url, token=proxied.admin_token, timeout=60) as watching,
    ):
        feed = watching.store(STORE).watch()

        def follow() -> None:
            try:
                for event in feed:
                    seen.append(event)
            except BaseException as exc:  # the iterator ends only by failing
                failure.append(exc)

        follower = threading.Thread(target=follow, daemon=True)
        follower.start()
        time.sleep(0.3)  # the stream is open
        written: list[tuple[str, int, Any]] = []
        lock = threading.Lock()
        stop = threading.Event()

        def writer(number: int) -> None:
            with runstate.connect(other.url, token=proxied.admin_token) as db:
                store = db.store(STORE)
                n = 0
                while not stop.is_set():
                    n += 1
                    key = f"w{number}/{n % 3}"
                    version = store.set(key, [number, n]).version
                    with lock:
                        written.append((key, version, [number, n]))
                    time.sleep(0.005)

        writers = [threading.Thread(target=writer, args=(n,)) for n in range(2)]
        for thread in writers:
            thread.start()
        try:
            for _ in range(4):
                time.sleep(0.3)
                proxy.reset()
            proxy.down()
            time.sleep(3.0)
            proxy.up()
            time.sleep(1.0)
        finally:
            stop.set()
            for thread in writers:
                thread.join()
        deadline = time.monotonic() + 30
        while len(seen) < len(written) and time.monotonic() < deadline and not failure:
            time.sleep(0.05)
        time.sleep(0.3)  # and nothing more than that
        failed = list(failure)  # (closing the client ends the watch with an error: later)
    assert failed == [], failed
    got = [(e.type, e.key, e.version, e.value) for e in seen]
    assert got == [
        ("set", key, version, value) for key, version, value in sorted(written, key=lambda w: w[1])
    ]


@pytest.mark.xfail(
    reason="no bound on a call to a database that stops answering without closing the "
    "connection (a partition): the engine waits on the socket as long as TCP does",
    strict=True,
)
def test_a_silent_database_still_gets_an_answer_within_the_bound(proxied: Served, proxy: PgProxy):
    proxy.stalled = True
    try:
        answers: list[tuple[float, int]] = []

        def request(write: bool) -> None:
            with httpx.Client(
                base_url=proxied.url,
                headers={"Authorization": f"Bearer {proxied.admin_token}"},
                timeout=ANSWER_BOUND + 1,
            ) as http:
                began = time.monotonic()
                path = f"/v1/stores/{STORE}/records/k"
                try:
                    status = http.put(path, json={"value": 1}) if write else http.get(path)
                    answers.append((time.monotonic() - began, status.status_code))
                except httpx.TimeoutException:
                    answers.append((time.monotonic() - began, 0))

        threads = [threading.Thread(target=request, args=(w,)) for w in (True, False)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        proxy.stalled = False
        proxy.reset()
    assert all(seconds <= ANSWER_BOUND and status == 503 for seconds, status in answers), answers


# --- R1 on PostgreSQL: the database server crashes ---------------------------------------------


def _pg_ctl() -> Callable[..., None]:
    """``pg_ctlcluster <version> main <action>`` for the local Debian cluster the tests use
    (as the postgres user when run as root); skipped elsewhere (failed under CI)."""
    url = httpx.URL(postgres_url())
    versions = sorted(os.listdir("/etc/postgresql")) if os.path.isdir("/etc/postgresql") else []
    if (
        not shutil.which("pg_ctlcluster")
        or not versions
        or url.host not in ("127.0.0.1", "localhost")
    ):
        message = "needs the local Debian PostgreSQL cluster (pg_ctlcluster) to crash it"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    version = versions[-1]

    def run(*args: str) -> None:
        command = ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", *args]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=60)

    return run


def _wait_for_postgres(url: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            with psycopg.connect(url, connect_timeout=2) as conn:
                conn.execute("SELECT 1")
                return
        except psycopg.Error:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_postgres_crash_under_write_load_loses_no_acknowledged_write(tmp_path: Path):
    pg_ctl = _pg_ctl()
    base = postgres_url()
    with fresh_schema() as url:
        served = start_server(tmp_path, db=url, durability="durable", pool_size=4)
        try:
            with runstate.connect(served.url, token=served.admin_token) as db:
                db.store(STORE)
            load = Load(served.url, served.admin_token)
            prober = Prober(served)
            try:
                time.sleep(1.0)
                pg_ctl("stop", "-m", "immediate")
                down_at = time.monotonic()
                time.sleep(4.0)  # requests go on meanwhile: 503s, quickly
            finally:
                restart_at = time.monotonic()
                pg_ctl("start")
                _wait_for_postgres(base)
            up_at = time.monotonic()
            recovery = _wait_until_served(served, deadline=60)
            time.sleep(1.0)
            prober.stop()
            verified = _settled(served, load)
            calls = load.calls()
            outcomes = _check_answers(calls)
            during = [
                a for a in prober.answers if down_at + 0.3 < a[0] and a[0] + a[1] < restart_at
            ]
            assert during
            assert {status for _, _, status, _ in during} == {503}, during
            assert all(after is not None for _, _, _, after in during)
            late = [c for c in calls if c[0] > up_at + recovery + 0.2]
            assert late
            assert all(outcome == "ok" for _, _, outcome in late), "not recovered"
            acked = sum(len(ids) for ledger in load.ledgers for ids in ledger.acked.values())
            assert acked > 10 * CLIENTS, "the load wrote too little to prove anything"
            print(
                f"PostgreSQL down {up_at - down_at:.1f} s; served again {recovery:.2f} s "
                f"after; {acked} writes acknowledged; {outcomes}; {verified}"
            )
        finally:
            served.close()
