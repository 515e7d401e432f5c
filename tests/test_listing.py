"""Listing keys and records (SPEC §2 keys/records): UTF-8 byte order, prefix, start, reverse,
limit, cursors, and the iterators that page transparently."""

from __future__ import annotations

import pytest

import runstate


def utf8_sorted(keys, reverse=False):
    return sorted(keys, key=lambda k: k.encode(), reverse=reverse)


def test_keys_are_ordered_by_utf8_bytes(store):
    store.set_many({k: 1 for k in ["🔥", "中", "é", "a", "Z"]})
    assert store.keys_page().items == ["Z", "a", "é", "中", "🔥"]


def test_utf8_order_is_not_utf16_order(store):
    """U+FB01 sorts before U+1F525 in UTF-8 (EF.. < F0..) but after it in UTF-16 (FB01 > D83D)."""
    store.set_many({"\U0001f525": 1, "\ufb01": 2, "\uffff": 3, "\U00010000": 4})
    assert list(store.keys()) == ["\ufb01", "\uffff", "\U00010000", "\U0001f525"]


def test_shorter_key_sorts_before_its_extensions(store):
    store.set_many({"ab": 1, "a": 2, "a\x01": 3, "a ": 4, "b": 5})
    assert list(store.keys()) == ["a", "a\x01", "a ", "ab", "b"]


def test_records_page_holds_records_in_key_order(store):
    store.set_many({"b": 2, "a": 1})
    page = store.records_page()
    assert [(r.key, r.value) for r in page.items] == [("a", 1), ("b", 2)]
    assert all(isinstance(r, runstate.Record) for r in page.items)
    assert page.next_cursor is None


def test_an_empty_store_lists_nothing(store):
    page = store.keys_page()
    assert page.items == []
    assert page.next_cursor is None


# --- prefix -----------------------------------------------------------------------------------

PREFIX_KEYS = [
    "use", "user", "user:", "user:1", "user:2", "user:10", "user;", "users:x", "User:1",
    "a%b", "abc", "a_c", "aXc", "a\\c", "a%", "a_",
    "é", "éa", "é\U0010ffff", "f", "🔥", "🔥x", "\U0010ffff", "\U0010ffffz",
]


def test_prefix_selects_exactly_the_keys_that_start_with_it(store, subtests):
    store.set_many({k: 1 for k in PREFIX_KEYS})
    for prefix in ["user:", "user", "use", "u", "a%", "a_", "a\\", "a", "é", "🔥",
                   "\U0010ffff", "zzz"]:
        with subtests.test(prefix=prefix):
            expected = utf8_sorted(k for k in PREFIX_KEYS if k.startswith(prefix))
            assert list(store.keys(prefix=prefix)) == expected
            assert [r.key for r in store.records(prefix=prefix)] == expected
            assert list(store.keys(prefix=prefix, reverse=True)) == expected[::-1]


def test_an_empty_prefix_selects_everything(store):
    store.set_many({"a": 1, "b": 2})
    assert list(store.keys(prefix="")) == ["a", "b"]


# --- start ------------------------------------------------------------------------------------


def test_start_is_inclusive(store):
    store.set_many({k: 1 for k in "abcde"})
    assert list(store.keys(start="c")) == ["c", "d", "e"]


def test_start_between_keys_begins_at_the_next_key(store):
    store.set_many({k: 1 for k in ["a", "b", "c"]})
    assert list(store.keys(start="bb")) == ["c"]
    assert list(store.keys(start="zz")) == []


def test_start_combines_with_prefix(store):
    store.set_many({k: 1 for k in ["p:1", "p:2", "p:3", "q:1", "o:9"]})
    assert list(store.keys(prefix="p:", start="p:2")) == ["p:2", "p:3"]
    assert list(store.keys(prefix="p:", start="a")) == ["p:1", "p:2", "p:3"]


# --- reverse ----------------------------------------------------------------------------------


def test_reverse_lists_in_descending_byte_order(store):
    keys = ["Z", "a", "é", "中", "🔥", "aa"]
    store.set_many({k: 1 for k in keys})
    assert list(store.keys(reverse=True)) == utf8_sorted(keys, reverse=True)
    assert [r.key for r in store.records(reverse=True)] == utf8_sorted(keys, reverse=True)


def test_reverse_with_start_goes_down_from_start_inclusive(store):
    store.set_many({k: 1 for k in "abcde"})
    assert list(store.keys(start="c", reverse=True)) == ["c", "b", "a"]
    assert list(store.keys(start="cc", reverse=True)) == ["c", "b", "a"]


# --- limit ------------------------------------------------------------------------------------


def test_limit_defaults_to_100(store):
    store.set_many({f"k{i:03}": i for i in range(150)})
    page = store.keys_page()
    assert len(page.items) == 100
    assert page.next_cursor is not None
    assert len(store.records_page().items) == 100


def test_limit_of_1000_is_allowed(store):
    store.set_many({f"k{i:04}": i for i in range(1001)})
    page = store.keys_page(limit=1000)
    assert len(page.items) == 1000
    assert page.next_cursor is not None


@pytest.mark.parametrize("limit", [0, -1, 1001, 10**6, True, 1.0, "10", None],
                         ids=["0", "-1", "1001", "1e6", "true", "1.0", "str", "none"])
def test_a_limit_outside_1_to_1000_is_invalid_request(store, limit):
    store.set("a", 1)
    with pytest.raises(runstate.InvalidRequest):
        store.keys_page(limit=limit)
    with pytest.raises(runstate.InvalidRequest):
        store.records_page(limit=limit)
    with pytest.raises(runstate.InvalidRequest):
        list(store.keys(limit=limit))


def test_the_last_page_has_no_cursor_even_when_it_is_full(store):
    store.set_many({k: 1 for k in "abc"})
    page = store.keys_page(limit=3)
    assert page.items == ["a", "b", "c"]
    assert page.next_cursor is None


# --- cursors ----------------------------------------------------------------------------------


def _pages(store, method, **kwargs):
    pages, cursor = [], None
    while True:
        page = getattr(store, method)(cursor=cursor, **kwargs)
        pages.append(page.items)
        if page.next_cursor is None:
            return pages
        assert isinstance(page.next_cursor, str)
        cursor = page.next_cursor


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_cursor_pages_through_2500_keys_without_duplicates_or_gaps(store, reverse):
    keys = [f"{i}:{'é' if i % 3 else '🔥'}" for i in range(2500)]
    store.set_many(dict.fromkeys(keys, 0))
    pages = _pages(store, "keys_page", limit=1000, reverse=reverse)
    assert [len(p) for p in pages] == [1000, 1000, 500]
    assert [k for page in pages for k in page] == utf8_sorted(keys, reverse=reverse)


def test_cursor_pages_through_records_with_a_prefix(store):
    store.set_many({f"p:{i:03}": i for i in range(250)} | {f"q:{i}": i for i in range(50)})
    pages = _pages(store, "records_page", prefix="p:", limit=100)
    assert [len(p) for p in pages] == [100, 100, 50]
    assert [r.value for page in pages for r in page] == list(range(250))


def test_cursor_continues_past_keys_deleted_meanwhile(store):
    store.set_many({f"k{i}": i for i in range(6)})
    first = store.keys_page(limit=2)
    store.delete("k1")  # on the first page, already returned
    store.delete("k2")  # would have opened the second page
    second = store.keys_page(limit=2, cursor=first.next_cursor)
    assert first.items + second.items == ["k0", "k1", "k3", "k4"]


def test_a_key_written_behind_the_cursor_is_not_returned_again(store):
    store.set_many({f"k{i}": i for i in range(4)})
    first = store.keys_page(limit=2)
    store.set("k0", "rewritten")
    store.set("k00", "new, behind the cursor")
    rest = list(store.keys(cursor=first.next_cursor))
    assert rest == ["k2", "k3"]


def test_cursor_with_start_keeps_going_from_the_cursor(store):
    store.set_many({k: 1 for k in "abcdef"})
    first = store.keys_page(start="b", limit=2)
    assert first.items == ["b", "c"]
    assert store.keys_page(start="b", limit=2, cursor=first.next_cursor).items == ["d", "e"]


@pytest.mark.parametrize("cursor", ["!!!", "", 5, "%%%%"], ids=["bang", "empty", "int", "pct"])
def test_a_cursor_that_was_not_issued_is_invalid_request(store, cursor):
    store.set("a", 1)
    with pytest.raises(runstate.InvalidRequest):
        store.keys_page(cursor=cursor)


def test_reverse_must_be_a_bool(store):
    with pytest.raises(runstate.InvalidRequest):
        store.keys_page(reverse="yes")


# --- iteration helpers ------------------------------------------------------------------------


def test_keys_iterates_over_every_match_page_by_page(store):
    keys = [f"k{i:04}" for i in range(1234)]
    store.set_many(dict.fromkeys(keys, 1))
    assert list(store.keys()) == keys
    assert list(store.keys(limit=7)) == keys
    assert list(store.keys(limit=1000, reverse=True)) == keys[::-1]


def test_records_iterates_over_every_match_page_by_page(store):
    store.set_many({f"k{i:03}": i for i in range(250)})
    records = list(store.records(limit=100))
    assert [r.value for r in records] == list(range(250))
    assert [r.key for r in records] == [f"k{i:03}" for i in range(250)]


def test_keys_iterator_honours_prefix_and_start(store):
    store.set_many({f"a{i:03}": 1 for i in range(300)} | {"b": 1})
    assert list(store.keys(prefix="a", start="a150", limit=50)) == [
        f"a{i:03}" for i in range(150, 300)
    ]


def test_iterating_the_store_yields_every_key(store):
    keys = [f"k{i:03}" for i in range(205)]
    store.set_many(dict.fromkeys(keys, None))
    assert list(store) == keys
    assert len(store) == 205
