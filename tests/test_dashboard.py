"""The dashboard's server side over plain HTTP (SPEC §3.5, §5): the page and its assets, signing
in and out, the session cookie on the /v1 API, and the CSRF and same-origin refusals.

The page itself is tested in a real browser in `test_dashboard_browser.py`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from http_server import Served, serve_database
from runstate.server.dashboard.sessions import SESSION_COOKIE, Sessions


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with serve_database(tmp_path_factory.mktemp("dashboard")) as server:
        yield server


class Browser:
    """What a browser does on the page: keep cookies, send Origin and the CSRF header."""

    def __init__(self, served: Served) -> None:
        self.served = served
        self.http = served.client()
        self.origin = served.url
        self.csrf = ""

    def session(self) -> dict[str, Any]:
        answer = self.http.get("/dashboard/session")
        assert answer.status_code == 200
        data: dict[str, Any] = answer.json()
        self.csrf = data["csrf"]
        return data

    def sign_in(self, token: str) -> httpx.Response:
        self.session()
        answer = self.post("/dashboard/session", {"token": token})
        if answer.status_code == 200:
            self.csrf = answer.json()["csrf"]
        return answer

    def headers(self, **extra: str) -> dict[str, str]:
        return {"Origin": self.origin, "X-CSRF-Token": self.csrf, **extra}

    def post(self, path: str, body: Any, **headers: str) -> httpx.Response:
        return self.http.post(path, json=body, headers=self.headers(**headers))

    def close(self) -> None:
        self.http.close()


@pytest.fixture
def browser(served: Served) -> Iterator[Browser]:
    b = Browser(served)
    try:
        yield b
    finally:
        b.close()


def test_page_is_served_at_root_with_a_strict_policy(served: Served) -> None:
    with served.client() as http:
        page = http.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "default-src 'none'" in policy
    assert "script-src 'self'" in policy
    assert "frame-ancestors 'none'" in policy
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["x-content-type-options"] == "nosniff"
    assert 'id="app"' in page.text


def test_assets_are_served_by_runstate_and_name_no_other_host(served: Served) -> None:
    with served.client() as http:
        page = http.get("/").text
        assets = re.findall(r'(?:src|href)="(/dashboard/[^"]+)"', page)
        assert len(assets) == 3  # app.js, app.css, icon.svg, each with its content hash
        for path in assets:
            answer = http.get(path)
            assert answer.status_code == 200, path
            assert "immutable" in answer.headers["cache-control"]
            assert answer.headers["x-content-type-options"] == "nosniff"
            # Nothing fetched from another host: the only URL is the SVG namespace.
            urls = set(re.findall(r"https?://[^\s\"')]+", answer.text))
            assert urls <= {"http://www.w3.org/2000/svg"}, (path, urls)
        assert http.get("/dashboard/nothing.js").status_code == 404
        assert http.get("/dashboard/app.js?v=old").headers["cache-control"] == "no-cache"
        script = next(path for path in assets if ".js?" in path)
        gz = http.get(script, headers={"Accept-Encoding": "gzip"})
        assert gz.headers.get("content-encoding") == "gzip"


def test_dashboard_paths_are_not_in_the_api_document(served: Served) -> None:
    with served.client() as http:
        paths = http.get("/openapi.json").json()["paths"]
    assert not [p for p in paths if p == "/" or p.startswith("/dashboard")]


def test_sign_in_refuses_an_unknown_token(browser: Browser) -> None:
    answer = browser.sign_in("rs_not-a-token")
    assert answer.status_code == 401
    assert answer.json()["error"]["code"] == "unauthorized"
    assert SESSION_COOKIE not in browser.http.cookies


def test_sign_in_sets_an_httponly_strict_cookie_without_the_token(
    browser: Browser, served: Served
) -> None:
    token = served.token("write")
    answer = browser.sign_in(token)
    assert answer.status_code == 200
    data = answer.json()
    assert data["signed_in"] is True
    assert data["token"]["role"] == "write"
    assert token not in answer.text
    cookie = next(
        value
        for name, value in answer.headers.multi_items()
        if name == "set-cookie" and value.startswith(SESSION_COOKIE)
    )
    assert "HttpOnly" in cookie
    assert "SameSite=Strict" in cookie
    assert "Path=/" in cookie
    assert token not in cookie
    assert answer.headers["cache-control"] == "no-store"
    # The session works on the API, for reads and (with CSRF and Origin) for writes.
    assert browser.http.get("/v1/stores").status_code == 200
    assert browser.post("/v1/stores", {"name": "via_cookie"}).status_code == 201
    assert browser.session()["token"]["id"] == data["token"]["id"]


def test_sign_in_needs_the_form_csrf_token_and_the_same_origin(
    browser: Browser, served: Served
) -> None:
    browser.session()
    token = served.admin_token
    no_csrf = browser.http.post(
        "/dashboard/session", json={"token": token}, headers={"Origin": browser.origin}
    )
    assert no_csrf.status_code == 403
    other_site = browser.post("/dashboard/session", {"token": token}, Origin="http://evil.test")
    assert other_site.status_code == 403
    with served.client() as fresh:  # no sign-in cookie: the form was never loaded
        answer = fresh.post(
            "/dashboard/session",
            json={"token": token},
            headers={"Origin": served.url, "X-CSRF-Token": browser.csrf},
        )
    assert answer.status_code == 401
    assert SESSION_COOKIE not in browser.http.cookies


def test_cookie_writes_need_csrf_and_same_origin(browser: Browser, served: Served) -> None:
    assert browser.sign_in(served.admin_token).status_code == 200
    http = browser.http
    refused = [
        http.post("/v1/stores", json={"name": "x1"}),  # neither
        http.post("/v1/stores", json={"name": "x2"}, headers={"Origin": browser.origin}),
        http.post("/v1/stores", json={"name": "x3"}, headers={"X-CSRF-Token": browser.csrf}),
        browser.post("/v1/stores", {"name": "x4"}, Origin="http://127.0.0.1:1"),  # other port
        browser.post("/v1/stores", {"name": "x5"}, **{"X-CSRF-Token": "forged"}),
        http.delete(
            "/dashboard/session", headers={"Origin": browser.origin, "X-CSRF-Token": "forged"}
        ),
    ]
    for answer in refused:
        assert answer.status_code == 403, answer.text
        assert answer.json()["error"]["code"] == "forbidden"
    cross_read = http.get("/v1/stores", headers={"Sec-Fetch-Site": "same-site"})
    assert cross_read.status_code == 403
    names = {s["name"] for s in http.get("/v1/stores").json()["stores"]}
    assert not names & {"x1", "x2", "x3", "x4", "x5"}
    # Without Origin, a browser's Sec-Fetch-Site: same-origin will do.
    same = http.post(
        "/v1/stores",
        json={"name": "x6"},
        headers={"X-CSRF-Token": browser.csrf, "Sec-Fetch-Site": "same-origin"},
    )
    assert same.status_code == 201


def test_session_keeps_the_tokens_role_and_store_limit(browser: Browser, served: Served) -> None:
    assert browser.sign_in(served.token("read", stores=["only"])).status_code == 200
    assert browser.post("/v1/stores", {"name": "only"}).status_code == 403
    assert browser.http.get("/v1/stores/other/records").status_code == 403
    assert browser.http.get("/v1/tokens").status_code == 403


def test_sign_out_ends_the_session(browser: Browser, served: Served) -> None:
    assert browser.sign_in(served.admin_token).status_code == 200
    cookie = browser.http.cookies[SESSION_COOKIE]
    answer = browser.http.delete("/dashboard/session", headers=browser.headers())
    assert answer.status_code == 200
    assert f"{SESSION_COOKIE}=;" in answer.headers["set-cookie"]
    assert "Max-Age=0" in answer.headers["set-cookie"]
    assert browser.session()["signed_in"] is False
    with served.client() as replay:  # the old cookie, replayed, is refused
        replay.cookies.set(SESSION_COOKIE, cookie)
        assert replay.get("/v1/stores").status_code == 401


def test_revoking_the_token_ends_its_sessions(browser: Browser, served: Served) -> None:
    token = served.token("admin")
    data = browser.sign_in(token).json()
    with served.client(served.admin_token) as admin:
        assert admin.delete(f"/v1/tokens/{data['token']['id']}").status_code == 200
    answer = browser.http.get("/v1/stores")
    assert answer.status_code == 401
    assert browser.session()["signed_in"] is False


def test_forged_or_tampered_cookies_are_refused(served: Served) -> None:
    issued = Sessions(secret="another server's secret")
    _, value = issued.issue("0" * 64)
    with served.client() as http:
        for cookie in (value, "v1.a.b.c.d", "garbage", value.replace("v1.", "v1.x")):
            http.cookies.set(SESSION_COOKIE, cookie)
            assert http.get("/v1/stores").status_code == 401


def test_bearer_token_still_wins_over_a_cookie(browser: Browser, served: Served) -> None:
    assert browser.sign_in(served.token("read")).status_code == 200
    answer = browser.http.post(
        "/v1/stores",
        json={"name": "by_bearer"},
        headers={"Authorization": f"Bearer {served.admin_token}"},
    )
    assert answer.status_code == 201  # no CSRF needed: the bearer token authenticates


def test_session_expires(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1_000_000.0]
    sessions = Sessions(secret="s", clock=lambda: now[0])
    session, value = sessions.issue("a" * 64)
    assert sessions.read(value) == session
    now[0] += 12 * 3600 + 1
    assert sessions.read(value) is None


def test_static_files_ship_in_the_package() -> None:
    folder = Path(__file__).parent.parent / "src/runstate/server/dashboard/static"
    assert {p.name for p in folder.iterdir()} >= {"index.html", "app.js", "app.css", "icon.svg"}
