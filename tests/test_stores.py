"""Stores, dependents and scopes (SPEC §1 store/dependent/scope, §2.1, §3.1)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

import runstate


def names(db):
    return [info.name for info in db.stores()]


# --- create / list / info / update / delete ---------------------------------------------------


def test_create_store_returns_its_info(db, clock):
    info = db.create_store("orders")
    assert isinstance(info, runstate.StoreInfo)
    assert info.name == "orders"
    assert info.records == 0
    assert info.bytes == 0
    assert info.dependents == []
    assert info.created_at == datetime.fromtimestamp(clock(), UTC)
    assert info.default_ttl is None


def test_create_store_with_a_default_ttl(db):
    assert db.create_store("cache", default_ttl=90).default_ttl == 90
    assert db.store_info("cache").default_ttl == 90
    assert db.create_store("half", default_ttl=0.5).default_ttl == 0.5


def test_creating_an_existing_store_is_a_conflict(db, unchanged):
    db.create_store("orders", default_ttl=10)
    db.store("orders").set("k", 1)
    with unchanged(), pytest.raises(runstate.Conflict):
        db.create_store("orders")


def test_stores_lists_every_store(db):
    for name in ["b", "a", "c"]:
        db.create_store(name)
    assert sorted(names(db)) == ["a", "b", "c"]
    assert all(isinstance(info, runstate.StoreInfo) for info in db.stores())


def test_a_new_database_has_no_stores(db):
    assert db.stores() == []


def test_store_info_counts_records_and_bytes(db):
    store = db.store("s")
    store.set("ab", "xyz")  # 2 + 5
    store.set("é", [1, 2])  # 2 + 5
    info = db.store_info("s")
    assert info.records == 2
    assert info.bytes == 14
    assert len(store) == 2


def test_update_store_sets_and_removes_the_default_ttl(db):
    db.create_store("s")
    assert db.update_store("s", default_ttl=30).default_ttl == 30
    assert db.store_info("s").default_ttl == 30
    assert db.update_store("s", default_ttl=None).default_ttl is None
    assert db.store_info("s").default_ttl is None


def test_delete_store_removes_it_and_its_records(db):
    store = db.store("s")
    store.set_many({"a": 1, "b": 2})
    db.store("other").set("a", 1)
    db.delete_store("s")
    assert "s" not in names(db)
    assert store.get("a") is None
    assert list(store.keys()) == []
    assert db.store("other").get("a") == 1
    assert db.usage().records == 1


def test_a_deleted_store_can_be_created_again_empty(db):
    db.store("s").set("a", 1)
    db.delete_store("s")
    db.create_store("s")
    assert list(db.store("s").keys()) == []
    assert db.store_info("s").records == 0


MISSING_STORE_CALLS = {
    "store_info": lambda db: db.store_info("nope"),
    "update_store": lambda db: db.update_store("nope", default_ttl=5),
    "delete_store": lambda db: db.delete_store("nope"),
}


@pytest.mark.parametrize("call", MISSING_STORE_CALLS.values(), ids=MISSING_STORE_CALLS.keys())
def test_info_update_or_delete_of_a_missing_store_is_not_found(db, unchanged, call):
    db.store("s").set("k", 1)
    with unchanged(), pytest.raises(runstate.NotFound):
        call(db)
    assert "nope" not in names(db)


# --- names ------------------------------------------------------------------------------------

VALID_NAMES = ["a", "A", "0", "orders", "my_store", "my-store", "my.store", "a:b:c", "...", "-",
               "_", ":", "x" * 128, "AZaz09_.:-"]
INVALID_NAMES = {
    "empty": "",
    "129": "x" * 129,
    "space": "a b",
    "slash": "a/b",
    "question": "a?b",
    "percent": "a%b",
    "umlaut": "ü",
    "emoji": "🔥",
    "nul": "a\x00",
    "newline": "a\n",
    "none": None,
    "int": 1,
    "bytes": b"abc",
}


def test_a_valid_store_name_works_everywhere(db, subtests):
    for name in VALID_NAMES:
        with subtests.test(name=name):
            info = db.create_store(name)
            assert info.name == name
            db.store(name).set("k", 1)
            assert db.store_info(name).records == 1
            assert name in names(db)
            db.delete_store(name)


INVALID_NAME_CALLS = {
    "store": lambda db, name: db.store(name),
    "create_store": lambda db, name: db.create_store(name),
    "store_info": lambda db, name: db.store_info(name),
    "update_store": lambda db, name: db.update_store(name, default_ttl=5),
    "delete_store": lambda db, name: db.delete_store(name),
    "add_dependent": lambda db, name: db.add_dependent(name, "wf"),
    "remove_dependent": lambda db, name: db.remove_dependent(name, "wf"),
}


@pytest.mark.parametrize("call", INVALID_NAME_CALLS.values(), ids=INVALID_NAME_CALLS.keys())
def test_an_invalid_store_name_is_invalid_request(db, unchanged, subtests, call):
    for label, name in INVALID_NAMES.items():
        with subtests.test(name=label), unchanged(), pytest.raises(runstate.InvalidRequest):
            call(db, name)


# --- select or create; reading a missing store --------------------------------------------------


def test_store_selects_or_creates(db):
    db.store("fresh")
    assert "fresh" in names(db)
    db.store("fresh").set("k", 1)
    assert db.store("fresh").get("k") == 1
    assert names(db).count("fresh") == 1


@pytest.fixture
def gone(db):
    """A Store object whose store has been deleted: it no longer exists."""
    store = db.store("gone")
    db.delete_store("gone")
    return store


def test_the_first_write_creates_the_store(db, gone):
    gone.set("k", 1)
    assert "gone" in names(db)
    assert db.store_info("gone").records == 1


@pytest.mark.parametrize(
    "write",
    [
        lambda s: s.increment("n"),
        lambda s: s.append("l", 1),
        lambda s: s.set_many({"a": 1}),
        lambda s: s.get_or_create("k", 1),
        lambda s: s.add_to_set("t", 1),
        lambda s: s.save_current_time("t"),
        lambda s: s.__setitem__("k", 1),
    ],
    ids=["increment", "append", "set_many", "get_or_create", "add_to_set",
         "save_current_time", "setitem"],
)
def test_every_creating_write_creates_the_store(db, gone, write):
    write(gone)
    assert db.store_info("gone").records == 1


def test_reading_a_missing_store_is_empty_and_does_not_create_it(db, gone):
    assert gone.get("k") is None
    assert gone.get("k", 7) == 7
    assert gone.get_record("k") is None
    assert gone.has("k") is False
    assert "k" not in gone
    assert gone.ttl("k") is None
    assert list(gone.keys()) == []
    assert list(gone.records()) == []
    assert gone.keys_page().items == []
    assert len(gone) == 0
    with pytest.raises(KeyError):
        gone["k"]
    assert "gone" not in names(db)
    with pytest.raises(runstate.NotFound):
        db.store_info("gone")


def test_writes_that_change_nothing_do_not_create_a_missing_store(db, gone):
    assert gone.delete("k") is False
    assert gone.delete_many(["k"]) == 0
    assert gone.clear() == 0
    assert gone.remove_from_list("k", 1) == 0
    assert gone.remove_from_set("k", 1) is False
    assert gone.set_ttl("k", 5) is False
    assert "gone" not in names(db)


# --- dependents -------------------------------------------------------------------------------


def test_store_with_a_workflow_registers_it_as_a_dependent(db):
    db.store("orders", workflow="wf_123")
    assert db.store_info("orders").dependents == ["wf_123"]


def test_a_dependent_is_listed_once(db):
    db.store("orders", workflow="wf_1")
    db.store("orders", workflow="wf_1")
    db.add_dependent("orders", "wf_1")
    assert db.store_info("orders").dependents == ["wf_1"]


def test_add_and_remove_dependent(db):
    db.create_store("orders")
    assert db.add_dependent("orders", "wf_b").dependents == ["wf_b"]
    assert sorted(db.add_dependent("orders", "wf_a").dependents) == ["wf_a", "wf_b"]
    assert db.remove_dependent("orders", "wf_b").dependents == ["wf_a"]
    assert db.store_info("orders").dependents == ["wf_a"]


def test_a_store_with_dependents_cannot_be_deleted(db, unchanged):
    db.store("orders", workflow="wf_1").set("k", 1)
    db.add_dependent("orders", "wf_2")
    with unchanged(), pytest.raises(runstate.HasDependents) as info:
        db.delete_store("orders")
    assert sorted(info.value.details["dependents"]) == ["wf_1", "wf_2"]
    assert info.value.code == "has_dependents"


def test_a_store_can_be_deleted_once_its_dependents_are_removed(db):
    db.store("orders", workflow="wf_1")
    db.remove_dependent("orders", "wf_1")
    db.delete_store("orders")
    assert "orders" not in names(db)


@pytest.mark.parametrize("call", [
    lambda db: db.add_dependent("nope", "wf"),
    lambda db: db.remove_dependent("nope", "wf"),
], ids=["add", "remove"])
def test_dependents_of_a_missing_store_is_not_found(db, call):
    with pytest.raises(runstate.NotFound):
        call(db)


# --- scopes -----------------------------------------------------------------------------------

SCOPES = {
    "flow": (lambda db: db.flow_state("inst1", "flowA"), "flow:inst1:flowA"),
    "execution": (lambda db: db.execution_state("exec-9"), "execution:exec-9"),
    "cross_flow": (lambda db: db.cross_flow_state("inst1"), "instance:inst1"),
    "integration": (lambda db: db.integration_state("int.7"), "integration:int.7"),
}


@pytest.mark.parametrize(("open_scope", "name"), SCOPES.values(), ids=SCOPES.keys())
def test_a_scope_is_the_store_with_its_reserved_name(db, open_scope, name):
    scope = open_scope(db)
    assert scope.name == name
    scope.set("k", "via scope")
    assert db.store(name).get("k") == "via scope"
    db.store(name).set("k2", "via name")
    assert open_scope(db).get("k2") == "via name"
    assert name in names(db)


def test_scopes_are_separate_stores(db):
    stores = [open_scope(db) for open_scope, _ in SCOPES.values()]
    for i, scope in enumerate(stores):
        scope.set("k", i)
    assert [scope.get("k") for scope in stores] == [0, 1, 2, 3]


def test_flow_state_of_another_flow_or_instance_is_another_store(db):
    db.flow_state("i1", "f1").set("k", 1)
    assert db.flow_state("i1", "f2").get("k") is None
    assert db.flow_state("i2", "f1").get("k") is None
    assert db.cross_flow_state("i1").get("k") is None


def test_execution_state_has_a_default_ttl_of_24_hours(db, clock):
    scope = db.execution_state("e1")
    scope.set("k", 1)
    assert db.store_info("execution:e1").default_ttl == 86400
    assert scope.ttl("k") == pytest.approx(86400)
    clock.advance(86400)
    assert scope.get("k") is None


def test_execution_state_created_through_its_name_has_the_24_hour_ttl(db):
    """SPEC §1: `execution:{execution_id}` is a store with default_ttl 24 h, reachable by that
    name through every interface, so the first write through the name must not lose the ttl."""
    db.store("execution:e2").set("k", 1)
    assert db.execution_state("e2").ttl("k") == pytest.approx(86400)


@pytest.mark.parametrize("open_scope", [
    lambda db: db.flow_state("i1", "f1"),
    lambda db: db.cross_flow_state("i1"),
    lambda db: db.integration_state("g1"),
], ids=["flow", "cross_flow", "integration"])
def test_other_scopes_have_no_default_ttl(db, open_scope):
    scope = open_scope(db)
    scope.set("k", 1)
    assert scope.ttl("k") is None


BAD_IDS = {"colon": "a:b", "empty": "", "space": "a b", "slash": "a/b", "emoji": "🔥",
           "none": None, "int": 5}
SCOPE_CALLS = {
    "flow_instance": lambda db, bad: db.flow_state(bad, "f"),
    "flow_flow": lambda db, bad: db.flow_state("i", bad),
    "execution": lambda db, bad: db.execution_state(bad),
    "cross_flow": lambda db, bad: db.cross_flow_state(bad),
    "integration": lambda db, bad: db.integration_state(bad),
}


@pytest.mark.parametrize("call", SCOPE_CALLS.values(), ids=SCOPE_CALLS.keys())
def test_an_invalid_scope_id_is_invalid_request(db, unchanged, subtests, call):
    for label, bad in BAD_IDS.items():
        with subtests.test(id=label), unchanged(), pytest.raises(runstate.InvalidRequest):
            call(db, bad)


@pytest.mark.parametrize(
    ("call", "longest"),
    [
        (lambda db, n: db.execution_state("e" * n), 128 - len("execution:")),
        (lambda db, n: db.flow_state("i" * (n - 1), "f"), 128 - len("flow::")),
        (lambda db, n: db.flow_state("i", "f" * (n - 1)), 128 - len("flow::")),
        (lambda db, n: db.cross_flow_state("c" * n), 128 - len("instance:")),
        (lambda db, n: db.integration_state("g" * n), 128 - len("integration:")),
    ],
    ids=["execution", "flow_instance", "flow_flow", "cross_flow", "integration"],
)
def test_a_scope_name_is_at_most_128_characters(db, unchanged, call, longest):
    """`longest` is the id length that makes the store name exactly 128 characters."""
    scope = call(db, longest)
    assert len(scope.name) == 128
    scope.set("k", 1)
    with unchanged(), pytest.raises(runstate.InvalidRequest):
        call(db, longest + 1)
