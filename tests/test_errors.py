"""Errors (SPEC §3.1, §4): one class per code under `runstate.Error`, named in CamelCase, each
with `.code`, `.message` and `.details`; and the package's public surface (`__all__`)."""

from __future__ import annotations
import __future__

import inspect
import json

import pytest

import runstate

CODES = [
    "invalid_request", "invalid_key", "invalid_value", "unauthorized", "forbidden", "not_found",
    "conflict", "has_dependents", "value_too_large", "type_mismatch", "out_of_range",
    "quota_exceeded", "rate_limited", "unavailable",
]


def camel(code: str) -> str:
    return "".join(part.capitalize() for part in code.split("_"))


@pytest.mark.parametrize("code", CODES)
def test_every_error_code_has_an_exported_class_named_in_camel_case(code):
    cls = getattr(runstate, camel(code))
    assert issubclass(cls, runstate.Error)
    assert cls.code == code
    assert camel(code) in runstate.__all__


def test_camel_case_names():
    assert camel("invalid_key") == "InvalidKey"
    assert camel("has_dependents") == "HasDependents"


def test_every_code_has_its_own_class():
    classes = [getattr(runstate, camel(code)) for code in CODES]
    assert len(set(classes)) == len(CODES)


def test_every_exported_error_class_is_a_spec_code():
    exported = {
        name for name in runstate.__all__
        if inspect.isclass(getattr(runstate, name))
        and issubclass(getattr(runstate, name), runstate.Error)
    }
    assert exported == {"Error"} | {camel(code) for code in CODES}


def test_error_is_an_exception():
    assert issubclass(runstate.Error, Exception)


@pytest.mark.parametrize("code", CODES)
def test_an_error_has_code_message_and_details(code):
    cls = getattr(runstate, camel(code))
    error = cls("something went wrong", {"key": "k"})
    assert error.code == code
    assert error.message == "something went wrong"
    assert error.details == {"key": "k"}
    assert cls("no details").details == {}


def _raise_each(db):
    """A real failure of each code the embedded library can raise."""
    store = db.store("s")
    store.set_many({"text": "abc", "max": 2**63 - 1})
    db.store("used", workflow="wf")
    return {
        "invalid_request": lambda: store.keys_page(limit=0),
        "invalid_key": lambda: store.set("", 1),
        "invalid_value": lambda: store.set("k", float("nan")),
        "not_found": lambda: db.store_info("missing"),
        "conflict": lambda: db.create_store("s"),
        "has_dependents": lambda: db.delete_store("used"),
        "value_too_large": lambda: store.set("k", "x" * 300_000),
        "type_mismatch": lambda: store.increment("text"),
        "out_of_range": lambda: store.increment("max"),
    }


@pytest.mark.parametrize("code", [
    "invalid_request", "invalid_key", "invalid_value", "not_found", "conflict",
    "has_dependents", "value_too_large", "type_mismatch", "out_of_range",
])
def test_a_raised_error_carries_its_code_a_message_and_json_details(db, code):
    fail = _raise_each(db)[code]
    with pytest.raises(runstate.Error) as info:
        fail()
    error = info.value
    assert type(error) is getattr(runstate, camel(code))
    assert error.code == code
    assert isinstance(error.message, str)
    assert error.message
    assert isinstance(error.details, dict)
    json.dumps(error.details)  # details travel in the HTTP error envelope


def test_quota_exceeded_is_raised_with_its_code(make_db):
    db = make_db(quota_bytes=10)
    with pytest.raises(runstate.QuotaExceeded) as info:
        db.store("s").set("k", "x" * 20)
    assert info.value.code == "quota_exceeded"
    json.dumps(info.value.details)


def test_a_missing_key_through_the_mapping_is_a_key_error_not_a_runstate_error(store):
    with pytest.raises(KeyError) as info:
        store["missing"]
    assert not isinstance(info.value, runstate.Error)


# --- the public surface (httpx tests/test_exported_members.py) ----------------------------------

REQUIRED = {
    "open", "now", "Error", "Record", "StoreInfo", "Usage", *(camel(code) for code in CODES),
}


def test_all_exports_exist():
    for name in runstate.__all__:
        assert hasattr(runstate, name), name


def test_all_is_sorted_without_duplicates():
    assert runstate.__all__ == sorted(set(runstate.__all__))


def test_the_documented_api_is_exported():
    assert set(runstate.__all__) >= REQUIRED


def test_every_public_member_is_exported():
    """Nothing public leaks besides `__all__` (submodules and `__future__` flags aside)."""
    public = {
        name
        for name, member in vars(runstate).items()
        if (not name.startswith("_") or name == "__version__")
        and not inspect.ismodule(member)
        and not isinstance(member, __future__._Feature)
    }
    assert public == set(runstate.__all__)
