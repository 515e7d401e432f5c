"""QUALITY R7: a full disk. The database lives on a small tmpfs of its own; writes fill it,
smaller and smaller, until not even the smallest fits.

While the disk is full:
- a write fails with a clear error: over HTTP 503 ``unavailable`` with ``details.reason``
  ``disk_full``, a message saying so, and Retry-After (never a 500); in the library,
  `runstate.Unavailable` with the same code and reason;
- reads go on and answer what was stored;
- nothing stored is damaged: every acknowledged write reads back, the usage equals a recount,
  and ``PRAGMA integrity_check`` is ``ok``.
Once space is freed (a filler file on the same tmpfs is deleted), writes succeed again, in the
same process, without a restart or a reconnect.

Mounting a tmpfs needs root (CI runs as root on these machines): without it the tests skip,
except under CI (``CI`` set), where they fail.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import runstate
from http_server import serve_database
from runstate.errors import error_class

TMPFS_BYTES = 1536 * 1024
FILLER_BYTES = 512 * 1024
VALUE = "v" * 8000
PADS = (8000, 1000, 100, 1)  # record sizes, shrinking until not even the smallest write fits


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs of `TMPFS_BYTES` holding a `FILLER_BYTES` file (deleting it frees space)."""
    if os.geteuid() != 0:
        reason = "mounting a tmpfs needs root"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; CI must run the disk-full test")
        pytest.skip(reason)
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_BYTES},mode=0700", "tmpfs", str(mount)],
        check=True,
    )
    try:
        (mount / "filler").write_bytes(b"\0" * FILLER_BYTES)
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _free_space(disk: Path) -> None:
    (disk / "filler").unlink()


def _fill(write: Callable[[int, str], None]) -> dict[int, str]:
    """Write records r0, r1, ... (``{"n": n, "pad": pad}``), smaller and smaller, until not
    even the smallest fits: the disk is then full for every write. Returns n -> pad of the
    records written (each refusal must be `Unavailable`, reason ``disk_full``)."""
    written: dict[int, str] = {}
    reasons = set()
    n = 0
    for size in PADS:
        for _ in range(5000):
            try:
                write(n, "v" * size)
            except runstate.Unavailable as exc:
                reasons.add(exc.details.get("reason"))
                n += 1  # the refused record's number is never used again
                break
            written[n] = "v" * size
            n += 1
        else:
            raise AssertionError(f"5000 writes of {size} bytes did not fill the disk")
    assert reasons == {"disk_full"}
    assert len(written) > 10, "the disk filled before anything could be written"
    return written


def _check_stored(store: Any, written: dict[int, str]) -> None:
    for n, pad in written.items():
        assert store.get(f"r{n}") == {"n": n, "pad": pad}, f"record r{n} damaged or lost"


def _integrity(path: Path) -> str:
    import sqlite3

    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        conn.close()


def test_a_full_disk_fails_writes_over_http_with_503_and_resumes_once_freed(small_disk):
    with serve_database(small_disk, durability="durable") as served:
        with served.client(served.admin_token) as http:

            def write(n: int, pad: str) -> None:
                answer = http.put(
                    f"/v1/stores/s/records/r{n}", json={"value": {"n": n, "pad": pad}}
                )
                if answer.status_code != 200:
                    error = answer.json()["error"]
                    raise error_class(error["code"])(error["message"], error["details"])

            written = _fill(write)
            lines = b"".join(
                b'{"key": "i%d", "value": "%s"}\n' % (n, VALUE.encode()) for n in range(20)
            )
            writes = [
                ("PUT", "/v1/stores/s/records/more", {"json": {"value": VALUE}}),
                ("POST", "/v1/stores/s/batch", {"json": {"ops": [{"op": "append", "key": "l",
                                                                  "value": VALUE}]}}),
                ("POST", "/v1/stores/s/import", {"content": lines}),
                ("POST", "/v1/stores", {"json": {"name": "new-store"}}),
                ("POST", "/v1/tokens", {"json": {"role": "read"}}),
            ]  # fmt: skip
            for _ in range(2):  # every write keeps failing the same clear way, never a 500
                for method, path, body in writes:
                    refused = http.request(method, path, **body)
                    assert refused.status_code == 503, (path, refused.text)
                    error = refused.json()["error"]
                    assert error["code"] == "unavailable"
                    assert error["details"]["reason"] == "disk_full", (path, error)
                    assert "space" in error["message"]
                    assert refused.headers["retry-after"] == "1"

            # reads go on
            assert http.get("/healthz").status_code == 200
            assert http.get("/v1/stores/s/records/r0").json()["value"] == {"n": 0, "pad": VALUE}
            keys = http.get("/v1/stores/s/keys", params={"limit": 1000}).json()["keys"]
            assert set(keys) == {f"r{n}" for n in written}
            usage = http.get("/v1/usage").json()
            assert usage["records"] == len(written)
            assert http.get("/v1/stores/s/records/more").status_code == 404
            assert http.get("/v1/stores/s/records/i0").status_code == 404  # no import applied
            assert [s["name"] for s in http.get("/v1/stores").json()["stores"]] == ["s"]

            with runstate.connect(served.url, token=served.admin_token) as db:
                _check_stored(db.store("s"), written)
            assert _integrity(small_disk / "state.db") == "ok"

            _free_space(small_disk)
            resumed = http.put("/v1/stores/s/records/more", json={"value": "after"})
            assert resumed.status_code == 200, resumed.text
            assert http.get("/v1/stores/s/records/more").json()["value"] == "after"
            assert http.post(
                "/v1/stores/s/batch", json={"ops": [{"op": "increment", "key": "n"}]}
            ).json() == {"results": [1]}
            with runstate.connect(served.url, token=served.admin_token) as db:
                _check_stored(db.store("s"), written)
    assert _integrity(small_disk / "state.db") == "ok"


def test_a_full_disk_raises_unavailable_in_the_library_and_resumes_once_freed(small_disk, recount):
    with runstate.open(small_disk / "state.db", durability="durable") as db:
        store = db.store("s")
        written = _fill(lambda n, pad: store.set(f"r{n}", {"n": n, "pad": pad}))
        for write in (
            lambda: store.increment("n"),
            lambda: store.append("l", VALUE),
            lambda: store.set_many({"a": VALUE, "b": VALUE}),
            lambda: store.set("tiny", 1),
            lambda: db.create_store("new"),
        ):
            with pytest.raises(runstate.Unavailable) as refused:
                write()
            assert refused.value.details["reason"] == "disk_full"
        _check_stored(store, written)
        usage = db.usage()
        assert (usage.records, usage.bytes) == recount(db)["s"]
        assert _integrity(small_disk / "state.db") == "ok"

        _free_space(small_disk)
        assert store.increment("n") == 1
        store.set("more", "after")
        assert store.get("more") == "after"
        _check_stored(store, written)
        usage = db.usage()
        assert (usage.records, usage.bytes) == recount(db)["s"]
    with contextlib.suppress(FileNotFoundError):
        assert _integrity(small_disk / "state.db") == "ok"
