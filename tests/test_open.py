"""Opening the embedded database (SPEC §3.1, library-api.md `runstate.open`): paths and
``sqlite://`` URLs, durability modes, persistence across opens, context managers.

These tests are about the embedded SQLite backend itself, so they open it directly."""

from __future__ import annotations

import pytest

import runstate


def _open(target, **options):
    return runstate.open(target, purge_interval=None, **options)


def test_a_plain_path_opens_a_file(tmp_path):
    with _open(tmp_path / "a.db") as db:
        db.store("s").set("k", 1)
    assert (tmp_path / "a.db").exists()


def test_a_path_given_as_a_string_works(tmp_path):
    with _open(str(tmp_path / "a.db")) as db:
        db.store("s").set("k", 1)
    assert (tmp_path / "a.db").exists()


def test_sqlite_url_with_three_slashes_is_relative(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with _open("sqlite:///rel.db") as db:
        db.store("s").set("k", 1)
    assert (tmp_path / "rel.db").exists()


def test_sqlite_url_with_four_slashes_is_absolute(tmp_path):
    with _open(f"sqlite:///{tmp_path}/abs.db") as db:
        db.store("s").set("k", 1)
    assert (tmp_path / "abs.db").exists()


@pytest.mark.parametrize("durability", ["fast", "durable"])
def test_both_durability_modes_store_and_keep_data(tmp_path, durability):
    with _open(tmp_path / "d.db", durability=durability) as db:
        db.store("s").set("k", {"v": 1})
    with _open(tmp_path / "d.db") as db:
        assert db.store("s").get("k") == {"v": 1}


@pytest.mark.parametrize("durability", ["nope", "FAST", "", None, 1])
def test_an_unknown_durability_is_invalid_request(tmp_path, durability):
    with pytest.raises(runstate.InvalidRequest) as raised:
        _open(tmp_path / "a.db", durability=durability)
    assert raised.value.details == {"durability": durability}
    assert not (tmp_path / "a.db").exists()


def test_data_metadata_and_versions_survive_reopening(tmp_path):
    with _open(tmp_path / "p.db") as db:
        db.create_store("s", default_ttl=3600)
        db.add_dependent("s", "wf")
        store = db.store("s")
        last = store.set("k", [1.0, {"b": 1, "a": 2}]).version
        store.increment("n")
    with _open(tmp_path / "p.db") as db:
        store = db.store("s")
        record = store.get_record("k")
        assert record.value == [1.0, {"b": 1, "a": 2}]
        assert list(record.value[1]) == ["b", "a"]
        assert store.get("n") == 1
        info = db.store_info("s")
        assert (info.default_ttl, info.dependents, info.records) == (3600, ["wf"], 2)
        assert store.set("k", 2).version > last


def test_the_quota_given_at_open_is_kept(tmp_path):
    with _open(tmp_path / "q.db", quota_bytes=1000) as db:
        assert db.usage().quota_bytes == 1000


def test_two_handles_on_one_file_see_each_others_writes(tmp_path):
    with _open(tmp_path / "s.db") as one, _open(tmp_path / "s.db") as two:
        one.store("s").set("k", 1)
        assert two.store("s").get("k") == 1
        two.store("s").increment("k")
        assert one.store("s").get("k") == 2


def test_a_database_is_a_context_manager_returning_itself(tmp_path):
    db = _open(tmp_path / "c.db")
    with db as entered:
        assert entered is db
