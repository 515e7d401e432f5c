"""The dashboard in a real browser (SPEC §3.5): Playwright driving Debian's chromium, headless.

One server for the module (each test uses its own stores), a fresh browser context per test (no
cookies carried over). Every test also checks that the page made no request to another host and
logged no error. Without /usr/bin/chromium (`make browser-deps` installs it) these tests skip,
except under CI=true, where that is a failure.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from http_server import Served, quote_key, serve_database
from runstate import ops

CHROMIUM = Path("/usr/bin/chromium")

if not CHROMIUM.exists() and os.environ.get("CI") != "true":
    pytest.skip(
        "Debian's chromium is not installed (`make browser-deps` installs it)",
        allow_module_level=True,
    )

from playwright.sync_api import Browser, Page, Playwright, expect, sync_playwright  # noqa: E402

BIG = 100_000


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with serve_database(tmp_path_factory.mktemp("dashboard-browser")) as server:
        yield server


@pytest.fixture(scope="module")
def admin(served: Served) -> Iterator[httpx.Client]:
    with served.client(served.admin_token) as http:
        yield http


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def chromium(playwright: Playwright) -> Iterator[Browser]:
    if not CHROMIUM.exists():  # under CI=true: every browser test fails, the rest still run
        pytest.fail("CI=true but /usr/bin/chromium is missing: `make browser-deps` installs it")
    browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
    try:
        yield browser
    finally:
        browser.close()


class Tab:
    """A page of a fresh browser context, with what it requested and logged."""

    def __init__(self, chromium: Browser, served: Served, width: int = 1280, height: int = 800):
        self.served = served
        self.context = chromium.new_context(viewport={"width": width, "height": height})
        self.context.set_default_timeout(10_000)
        self.page: Page = self.context.new_page()
        self.requests: list[tuple[str, str]] = []
        self.errors: list[str] = []
        self.page.on("request", lambda r: self.requests.append((r.method, r.url)))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        # Answers the page handles (401, 403, 409...) are logged by the browser as failed
        # resources; anything else logged as an error is a bug.
        self.page.on(
            "console",
            lambda m: (
                self.errors.append(m.text)
                if m.type == "error" and not m.text.startswith("Failed to load resource")
                else None
            ),
        )

    def open(self, fragment: str = "") -> Page:
        self.page.goto(self.served.url + "/" + fragment)
        return self.page

    def sign_in(self, token: str, fragment: str = "#/stores") -> Page:
        page = self.open(fragment)
        page.fill("#token", token)
        page.keyboard.press("Enter")
        expect(page.locator("main h1")).to_be_visible()
        return page

    def close(self) -> None:
        self.context.close()
        foreign = [url for _, url in self.requests if not url.startswith(self.served.url + "/")]
        assert not foreign, f"requests to another host: {foreign}"
        assert not self.errors, f"errors in the page: {self.errors}"


@pytest.fixture
def tab(chromium: Browser, served: Served) -> Iterator[Tab]:
    t = Tab(chromium, served)
    try:
        yield t
    finally:
        t.close()


def put(admin: httpx.Client, store: str, key: str, value: Any, **extra: Any) -> dict[str, Any]:
    answer = admin.put(
        f"/v1/stores/{store}/records/{quote_key(key)}", json={"value": value, **extra}
    )
    assert answer.status_code == 200, answer.text
    result: dict[str, Any] = answer.json()
    return result


def get(admin: httpx.Client, store: str, key: str) -> httpx.Response:
    return admin.get(f"/v1/stores/{store}/records/{quote_key(key)}")


# --- signing in --------------------------------------------------------------------------------


def test_sign_in_refuses_a_bad_token_then_signs_in_and_out(tab: Tab, served: Served) -> None:
    page = tab.open()
    expect(page.get_by_role("heading", name="Sign in", exact=True)).to_be_visible()
    page.fill("#token", "rs_wrong")
    page.click("button[type=submit]")
    expect(page.get_by_role("alert")).to_contain_text("not valid")
    expect(page.locator("#token")).to_have_attribute("aria-invalid", "true")
    page.fill("#token", served.admin_token)
    page.click("button[type=submit]")
    expect(page.get_by_role("heading", name="Data stores", exact=True)).to_be_visible()
    cookies = {c["name"]: c for c in tab.context.cookies()}
    assert cookies["runstate_session"]["httpOnly"] is True
    assert cookies["runstate_session"]["sameSite"] == "Strict"
    assert served.admin_token not in cookies["runstate_session"]["value"]
    page.reload()  # the session outlives a reload
    expect(page.get_by_role("heading", name="Data stores", exact=True)).to_be_visible()
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="Sign in", exact=True)).to_be_visible()
    page.reload()
    expect(page.get_by_role("heading", name="Sign in", exact=True)).to_be_visible()


# --- stores ------------------------------------------------------------------------------------


def test_store_list_shows_records_bytes_dependents_ttl_and_created(
    tab: Tab, admin: httpx.Client
) -> None:
    admin.post("/v1/stores", json={"name": "list_a", "default_ttl": 7200})
    put(admin, "list_a", "k1", {"n": 1})
    put(admin, "list_a", "k2", "two")
    admin.put("/v1/stores/list_a/dependents/wf_list")
    page = tab.sign_in(tab.served.admin_token)
    headers = page.locator("table.stores thead th").all_inner_texts()
    for column in ("NAME", "RECORDS", "SIZE", "SHARE OF QUOTA", "DEPENDENTS", "DEFAULT TTL"):
        assert column in [h.upper() for h in headers]
    row = page.locator("tr[data-store='list_a']")
    expect(row.locator("td[data-label='Records']")).to_have_text("2")
    info = admin.get("/v1/stores/list_a").json()
    expect(row.locator("td[data-label='Size']")).to_have_text(f"{info['bytes']} B")
    expect(row.locator("td[data-label='Dependents']")).to_have_text("wf_list")
    expect(row.locator("td[data-label='Default TTL']")).to_have_text("2 h")
    expect(row.locator("td[data-label='Created'] time")).to_have_text("just now")


def test_create_store_then_delete_it_after_a_confirmation_naming_it(
    tab: Tab, admin: httpx.Client
) -> None:
    page = tab.sign_in(tab.served.admin_token)
    page.get_by_role("button", name="New store").click()
    dialog = page.locator("dialog")
    dialog.get_by_label("Name").fill("bad name!")
    dialog.get_by_role("button", name="Create store").click()
    expect(dialog.get_by_role("alert")).to_contain_text("1\N{EN DASH}128 characters")
    dialog.get_by_label("Name").fill("created_here")
    dialog.get_by_label("Default TTL (seconds)").fill("60")
    dialog.get_by_role("button", name="Create store").click()
    expect(page.locator("main h1")).to_have_text("created_here")
    assert admin.get("/v1/stores/created_here").json()["default_ttl"] == 60
    page.get_by_role("button", name="Change the default TTL").click()
    dialog.get_by_label("Default TTL (seconds)").fill("7200")
    dialog.get_by_role("button", name="Save").click()
    expect(page.locator(".facts")).to_contain_text("2 h")
    assert admin.get("/v1/stores/created_here").json()["default_ttl"] == 7200

    page.get_by_role("link", name="Data stores").first.click()
    page.get_by_role("button", name="Delete store created_here").click()
    expect(dialog).to_contain_text("Delete store “created_here”?")
    dialog.get_by_role("button", name="Cancel").click()  # nothing happens
    assert admin.get("/v1/stores/created_here").status_code == 200
    page.get_by_role("button", name="Delete store created_here").click()
    dialog.get_by_role("button", name="Delete created_here").click()
    expect(page.locator("tr[data-store='created_here']")).to_have_count(0)
    assert admin.get("/v1/stores/created_here").status_code == 404


def test_store_with_dependents_cannot_be_deleted_and_names_them(
    tab: Tab, admin: httpx.Client
) -> None:
    admin.post("/v1/stores", json={"name": "in_use"})
    admin.put("/v1/stores/in_use/dependents/wf_alpha")
    admin.put("/v1/stores/in_use/dependents/wf_beta")
    page = tab.sign_in(tab.served.admin_token)
    row = page.locator("tr[data-store='in_use']")
    button = row.get_by_role("button", name="Delete")
    expect(button).to_be_disabled()
    expect(row.locator(".blocked .note")).to_have_text("In use by wf_alpha, wf_beta")
    expect(button).to_have_accessible_description("In use by wf_alpha, wf_beta")
    row.get_by_role("link", name="in_use").click()  # the store's page says the same
    expect(page.locator(".page-head .blocked .note")).to_contain_text("wf_alpha, wf_beta")
    expect(page.locator(".page-head").get_by_role("button", name="Delete")).to_be_disabled()


# --- records -----------------------------------------------------------------------------------


def _seed(admin: httpx.Client, store: str, count: int) -> None:
    lines = b"".join(
        orjson.dumps({"key": f"k{i:06d}", "value": {"i": i}}) + b"\n" for i in range(count)
    )
    answer = admin.post(
        f"/v1/stores/{store}/import",
        content=lines,
        headers={"Content-Type": "application/x-ndjson"},
    )
    assert answer.status_code == 200, answer.text


def test_records_page_through_the_cursor_and_filter_by_prefix(
    tab: Tab, admin: httpx.Client
) -> None:
    _seed(admin, "paged", 250)
    page = tab.sign_in(tab.served.admin_token, "#/stores/paged")
    rows = page.locator("table.records tbody tr")
    expect(rows).to_have_count(100)
    expect(rows.first).to_have_attribute("data-key", "k000000")
    expect(page.locator(".range").first).to_have_text("Records 1\N{EN DASH}100 of 250")
    page.get_by_role("button", name="Next →").first.click()
    expect(rows.first).to_have_attribute("data-key", "k000100")
    expect(page.locator(".range").first).to_have_text("Records 101\N{EN DASH}200 of 250")
    page.get_by_role("button", name="Next →").first.click()
    expect(rows).to_have_count(50)
    expect(page.get_by_role("button", name="Next →").first).to_be_disabled()
    page.get_by_role("button", name="← Previous").first.click()
    expect(rows.first).to_have_attribute("data-key", "k000100")

    page.get_by_label("Filter by key prefix").fill("k00012")
    expect(rows).to_have_count(10)
    expect(rows.first).to_have_attribute("data-key", "k000120")
    assert "prefix=k00012" in page.url
    page.get_by_label("Filter by key prefix").fill("nothing")
    expect(page.get_by_text("No keys start with “nothing”")).to_be_visible()


def test_values_are_formatted_json_folded_when_long_with_expiry_and_update_time(
    tab: Tab, admin: httpx.Client
) -> None:
    big = 9007199254740993  # more than a JS number holds: shown and kept exactly
    put(admin, "shown", "short", {"b": 1, "a": [1.0, big]}, ttl=3600)
    put(admin, "shown", "long", {f"field_{i}": "x" * 20 for i in range(40)})
    page = tab.sign_in(tab.served.admin_token, "#/stores/shown")
    short = page.locator("tr[data-key='short']")
    expect(short.locator("pre.json")).to_have_text(f'{{"b": 1, "a": [1.0, {big}]}}')
    expect(short.locator("td[data-label='Expires']")).to_contain_text("in 60 min")
    expect(short.locator("td[data-label='Updated']")).to_contain_text("just now")
    long = page.locator("tr[data-key='long']")
    fold = long.get_by_role("button", name="Show all (42 lines")
    expect(fold).to_be_visible()
    expect(long.locator("pre.json")).not_to_contain_text("field_39")
    fold.click()
    expect(long.locator("pre.json")).to_contain_text('"field_39": "xxxxxxxxxxxxxxxxxxxx"')


def _open_editor(page: Page, key: str) -> Any:
    page.locator(f"tr[data-key='{key}']").get_by_role("button", name=f"Edit {key}").click()
    dialog = page.locator("dialog")
    expect(dialog.get_by_role("heading", name="Edit record", exact=True)).to_be_visible()
    return dialog


def test_add_record(tab: Tab, admin: httpx.Client) -> None:
    admin.post("/v1/stores", json={"name": "adding"})
    page = tab.sign_in(tab.served.admin_token, "#/stores/adding")
    page.get_by_role("button", name="Add record").first.click()
    dialog = page.locator("dialog")
    dialog.get_by_label("Key").fill("user:1")
    dialog.locator("textarea").fill('{"name": "Ada", "n": 1.50}')
    dialog.get_by_label("Expiry").select_option("custom")
    dialog.get_by_label("Expire after seconds").fill("600")
    dialog.get_by_role("button", name="Add record").click()
    expect(page.locator("tr[data-key='user:1'] pre.json")).to_have_text('{"name": "Ada", "n": 1.5}')
    record = get(admin, "adding", "user:1").json()
    assert record["value"] == {"name": "Ada", "n": 1.5}
    assert record["expires_at"] is not None
    # Adding an existing key is refused, not an overwrite.
    page.get_by_role("button", name="Add record").first.click()
    dialog.get_by_label("Key").fill("user:1")
    dialog.locator("textarea").fill("2")
    dialog.get_by_role("button", name="Add record").click()
    expect(dialog.get_by_role("alert")).to_contain_text("already exists")
    assert get(admin, "adding", "user:1").json()["version"] == record["version"]


def test_edit_value_keeps_the_expiry(tab: Tab, admin: httpx.Client) -> None:
    before = put(admin, "editing", "cfg", {"on": False}, ttl=3600)
    page = tab.sign_in(tab.served.admin_token, "#/stores/editing")
    dialog = _open_editor(page, "cfg")
    expect(dialog.locator("textarea")).to_have_value('{"on": false}')
    dialog.locator("textarea").fill('{"on": true, "big": 9007199254740993}')
    dialog.get_by_role("button", name="Save").click()
    expect(dialog).to_have_count(0)
    expect(page.locator("tr[data-key='cfg'] pre.json")).to_contain_text('"on": true')
    after = get(admin, "editing", "cfg").json()
    assert after["value"] == {"on": True, "big": 9007199254740993}  # not rounded by JS
    assert after["version"] > before["version"]
    assert after["expires_at"] is not None


def test_invalid_json_is_refused_inline_and_nothing_is_saved(tab: Tab, admin: httpx.Client) -> None:
    before = put(admin, "invalid", "doc", [1, 2])
    page = tab.sign_in(tab.served.admin_token, "#/stores/invalid")
    dialog = _open_editor(page, "doc")
    area = dialog.locator("textarea")
    area.fill('{"a": 1,,}')
    expect(dialog.locator(".json-status")).to_contain_text("Invalid JSON")
    expect(area).to_have_attribute("aria-invalid", "true")
    save = dialog.get_by_role("button", name="Save")
    expect(save).to_be_disabled()
    area.press("Control+Enter")  # the keyboard shortcut is refused too
    expect(dialog).to_be_visible()
    area.fill("[1, 2, 3]")
    expect(dialog.locator(".json-status")).to_have_text("Valid JSON")
    expect(save).to_be_enabled()
    area.fill("NaN")
    expect(save).to_be_disabled()
    dialog.get_by_role("button", name="Cancel").click()
    assert not [url for method, url in tab.requests if method != "GET" and "/v1/" in url]
    assert get(admin, "invalid", "doc").json()["version"] == before["version"]


def test_edit_conflict_is_reported_not_overwritten(tab: Tab, admin: httpx.Client) -> None:
    put(admin, "racing", "counter", 1)
    page = tab.sign_in(tab.served.admin_token, "#/stores/racing")
    dialog = _open_editor(page, "counter")
    elsewhere = put(admin, "racing", "counter", 100)  # changed meanwhile by a workflow
    dialog.locator("textarea").fill("2")
    dialog.get_by_role("button", name="Save").click()
    alert = dialog.get_by_role("alert")
    expect(alert).to_contain_text("Not saved")
    expect(alert).to_contain_text(
        f"changed elsewhere while you were editing (now version {elsewhere['version']}"
    )
    assert get(admin, "racing", "counter").json()["value"] == 100
    alert.get_by_role("button", name="Load the latest value").click()
    expect(dialog.locator("textarea")).to_have_value("100")
    dialog.locator("textarea").fill("101")
    dialog.get_by_role("button", name="Save").click()
    expect(dialog).to_have_count(0)
    assert get(admin, "racing", "counter").json()["value"] == 101


def test_delete_record_after_confirmation(tab: Tab, admin: httpx.Client) -> None:
    put(admin, "deleting", "keep", 1)
    put(admin, "deleting", "drop/me.now", 2)  # a key that needs encoding in the path
    page = tab.sign_in(tab.served.admin_token, "#/stores/deleting")
    page.get_by_role("button", name="Delete drop/me.now").click()
    dialog = page.locator("dialog")
    expect(dialog).to_contain_text("Delete record “drop/me.now”?")
    dialog.get_by_role("button", name="Delete record").click()
    expect(page.locator("table.records tbody tr")).to_have_count(1)
    assert get(admin, "deleting", "drop/me.now").status_code == 404
    assert get(admin, "deleting", "keep").status_code == 200


def test_a_store_of_100k_records_opens_on_its_first_page(tab: Tab, admin: httpx.Client) -> None:
    value = {"status": "done", "attempts": 3}
    for start in range(0, BIG, 10_000):  # straight into the engine: the fastest way in
        entries = {f"k{i:06d}": value for i in range(start, start + 10_000)}
        tab.served.engine.execute("default", "big", ops.SetMany(entries))
    started = time.perf_counter()
    page = tab.sign_in(tab.served.admin_token, "#/stores/big")
    rows = page.locator("table.records tbody tr")
    expect(rows).to_have_count(100)
    expect(page.locator(".range").first).to_have_text("Records 1\N{EN DASH}100 of 100,000")
    page.get_by_label("Filter by key prefix").fill("k09999")
    expect(rows).to_have_count(10)
    expect(rows.last).to_have_attribute("data-key", "k099999")
    elapsed = time.perf_counter() - started
    print(f"100k store: signed in, first page and a prefix filter in {elapsed:.2f} s")


# --- usage, tokens, roles ---------------------------------------------------------------------


def test_usage_meters_for_the_workspace_and_each_store(tab: Tab, admin: httpx.Client) -> None:
    put(admin, "metered", "k", "x" * 1000)
    usage = admin.get("/v1/usage").json()
    page = tab.sign_in(tab.served.admin_token)
    workspace = page.get_by_role("meter", name="Workspace usage against quota")
    expect(workspace).to_have_attribute("aria-valuenow", str(usage["bytes"]))
    expect(workspace).to_have_attribute("aria-valuemax", str(usage["quota_bytes"]))
    store = page.get_by_role("meter", name="metered usage against quota")
    metered = next(s for s in usage["stores"] if s["name"] == "metered")
    expect(store).to_have_attribute("aria-valuenow", str(metered["bytes"]))
    page.get_by_role("link", name="Usage").click()
    expect(page.get_by_role("heading", name="Usage", exact=True)).to_be_visible()
    expect(page.get_by_role("meter", name="metered usage against quota")).to_be_visible()


def test_tokens_page_shows_a_new_token_once_and_revokes_it(
    tab: Tab, served: Served, admin: httpx.Client
) -> None:
    page = tab.sign_in(served.admin_token)
    page.get_by_role("link", name="Tokens").click()
    page.get_by_role("button", name="New token").click()
    dialog = page.locator("dialog")
    dialog.get_by_label("Role").select_option("read")
    dialog.get_by_label("Limit to stores").fill("orders, users")
    dialog.get_by_role("button", name="Create token").click()
    secret = dialog.get_by_label("New token")
    expect(secret).to_have_value(re.compile(r"^rs_[A-Za-z0-9_-]{43}$"))
    token = secret.input_value()
    expect(dialog).to_contain_text("shown only now")
    with served.client(token) as http:
        assert http.get("/v1/stores/orders/records").status_code == 200
        assert http.get("/v1/stores/other/records").status_code == 403
    dialog.get_by_role("button", name="Done").click()
    expect(dialog).to_have_count(0)
    token_id = next(
        t["id"]
        for t in admin.get("/v1/tokens").json()["tokens"]
        if t["stores"] == ["orders", "users"]
    )
    row = page.locator(f"tr[data-token='{token_id}']")
    expect(row).to_contain_text("read")
    assert token not in page.content()  # shown once: never again
    row.get_by_role("button", name=f"Revoke {token_id}").click()
    expect(dialog).to_contain_text(f"Revoke token {token_id}?")
    dialog.get_by_role("button", name="Revoke token").click()
    expect(row).to_have_count(0)
    with served.client(token) as http:
        assert http.get("/v1/stores").status_code == 401


def test_read_only_token_sees_no_write_controls(
    tab: Tab, served: Served, admin: httpx.Client
) -> None:
    put(admin, "readable", "k", {"x": 1})
    page = tab.sign_in(served.token("read"))
    expect(page.locator("tr[data-store='readable']")).to_be_visible()
    expect(page.locator(".badge.role-read")).to_be_visible()
    main = page.locator("main")
    for name in ("New store", "Delete"):
        expect(main.get_by_role("button", name=name)).to_have_count(0)
    expect(page.get_by_role("link", name="Tokens")).to_have_count(0)
    page.locator("tr[data-store='readable']").get_by_role("link").click()
    expect(page.locator("tr[data-key='k']")).to_be_visible()
    for name in ("Add record", "Edit k", "Delete k", "Clear", "Delete", "Change the default TTL"):
        expect(main.get_by_role("button", name=name)).to_have_count(0)
    main.get_by_role("button", name="View k").click()
    dialog = page.locator("dialog")
    expect(dialog.locator("textarea")).to_have_attribute("readonly", "")
    expect(dialog.get_by_role("button", name="Save")).to_have_count(0)
    page.goto(served.url + "/#/tokens")  # no tokens page, even by its address
    expect(page.get_by_role("heading", name="Data stores", exact=True)).to_be_visible()


def test_store_limited_token_sees_only_its_stores(
    tab: Tab, served: Served, admin: httpx.Client
) -> None:
    put(admin, "mine", "k", 1)
    put(admin, "theirs", "k", 1)
    page = tab.sign_in(served.token("write", stores=["mine"]))
    expect(page.locator("tr[data-store='mine']")).to_be_visible()
    expect(page.locator("tr[data-store='theirs']")).to_have_count(0)
    expect(page.get_by_role("link", name="Tokens")).to_have_count(0)


# --- keyboard, phone width ------------------------------------------------------------------------


def test_keyboard_only_use(tab: Tab, served: Served, admin: httpx.Client) -> None:
    put(admin, "keys", "first", {"a": 1})
    page = tab.open("#/stores/keys")
    expect(page.locator("#token")).to_be_focused()
    page.keyboard.type(served.admin_token)  # the token field has the focus
    page.keyboard.press("Enter")
    expect(page.locator("tr[data-key='first']")).to_be_visible()
    page.keyboard.press("/")
    expect(page.get_by_label("Filter by key prefix")).to_be_focused()
    for _ in range(40):  # Tab reaches the row's Edit button
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.getAttribute('aria-label')") == "Edit first":
            break
    else:
        pytest.fail("Tab never reached the Edit button")
    page.keyboard.press("Enter")
    dialog = page.locator("dialog")
    expect(dialog).to_be_visible()
    page.keyboard.press("Escape")
    expect(dialog).to_have_count(0)
    edit = page.get_by_role("button", name="Edit first")
    expect(edit).to_be_focused()
    page.keyboard.press("Enter")  # the editor opens on the value: edit and save by keyboard
    expect(dialog.locator("textarea")).to_be_focused()
    page.keyboard.press("Control+A")
    page.keyboard.type('{"a": 2}')
    page.keyboard.press("Control+Enter")
    expect(dialog).to_have_count(0)
    expect(page.locator("tr[data-key='first'] pre.json")).to_have_text('{"a": 2}')
    expect(edit).to_be_focused()  # the keyboard keeps its place


@pytest.mark.parametrize("fragment", ["#/stores", "#/stores/phone", "#/tokens", "#/usage"])
def test_phone_width_has_no_horizontal_scroll(
    chromium: Browser, served: Served, admin: httpx.Client, fragment: str
) -> None:
    put(admin, "phone", "a-rather-long-key:" + "x" * 80, {"deep": {"list": list(range(50))}})
    admin.put("/v1/stores/phone/dependents/wf_with_a_long_name_for_phones")
    tab = Tab(chromium, served, width=390, height=844)
    try:
        page = tab.sign_in(served.admin_token, fragment)
        expect(page.locator("main table, main .empty").first).to_be_visible()
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, f"{fragment}: the page is {width} px wide at 390 px"
    finally:
        tab.close()
