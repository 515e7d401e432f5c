"""Screenshots of the dashboard's main pages for the docs: ``docs/img/dashboard-*.png``.

    .venv/bin/python tests/dashboard_screenshots.py [OUTPUT_DIR]

Serves a database with a few example stores in-process (as the tests do) and photographs it
with Debian's chromium through Playwright, at 1280 px and at a phone's 390 px.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import httpx
from playwright.sync_api import Page, expect, sync_playwright

from http_server import Served, quote_key, start_server

ROOT = Path(__file__).resolve().parent.parent


def seed(http: httpx.Client) -> None:
    def put(store: str, key: str, value: object, **extra: object) -> None:
        path = f"/v1/stores/{store}/records/{quote_key(key)}"
        http.put(path, json={"value": value, **extra}).raise_for_status()

    http.post("/v1/stores", json={"name": "orders", "default_ttl": 86400}).raise_for_status()
    for i in range(1, 138):
        put(
            "orders",
            f"order:{10000 + i}",
            {
                "id": 10000 + i,
                "customer": f"cus_{i * 7919 % 100000:05d}",
                "total": round(19.99 * (i % 7 + 1), 2),
                "currency": "EUR",
                "items": [{"sku": f"SKU-{i % 13}", "qty": i % 3 + 1}],
                "status": ["paid", "shipped", "refunded"][i % 3],
            },
        )
    put("orders", "cursor", {"page": 14, "since": "2026-11-24T08:00:00Z"}, ttl=3600)
    put("orders", "last_seen_id", 10137)
    http.put("/v1/stores/orders/dependents/wf_shopify_sync").raise_for_status()
    http.put("/v1/stores/orders/dependents/wf_daily_report").raise_for_status()
    put("dedupe", "emails", ["ada@example.com", "grace@example.com", "linus@example.com"])
    put("counters", "runs", 4821)
    put("counters", "errors", 3)
    put("instance:acme", "oauth", {"expires_at": "2026-11-25T10:00:00Z", "scopes": ["read"]})
    http.post("/v1/tokens", json={"role": "read"}).raise_for_status()
    http.post("/v1/tokens", json={"role": "write", "stores": ["orders"]}).raise_for_status()


def shoot(page: Page, out: Path, name: str) -> None:
    page.wait_for_timeout(150)  # let the focus ring and fonts settle
    page.screenshot(path=str(out / f"dashboard-{name}.png"))
    print(f"wrote {out / f'dashboard-{name}.png'}")


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as directory:
        served: Served = start_server(directory)
        try:
            with served.client(served.admin_token) as http:
                seed(http)
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True)
                page = browser.new_page(viewport={"width": 1280, "height": 800})
                page.goto(served.url + "/")
                page.fill("#token", served.admin_token[:24])
                shoot(page, out, "sign-in")
                page.fill("#token", served.admin_token)
                page.keyboard.press("Enter")
                expect(page.locator("tr[data-store='orders']")).to_be_visible()
                shoot(page, out, "stores")
                page.goto(served.url + "/#/stores/orders")
                expect(page.locator("table.records")).to_be_visible()
                shoot(page, out, "records")
                page.get_by_role("button", name="Edit order:10002").click()
                page.locator("dialog textarea").fill('{\n  "id": 10002,\n  "status": "paid",\n}')
                shoot(page, out, "edit")
                page.keyboard.press("Escape")
                page.goto(served.url + "/#/tokens")
                expect(page.locator("table.tokens")).to_be_visible()
                shoot(page, out, "tokens")
                phone = browser.new_page(viewport={"width": 390, "height": 844})
                phone.goto(served.url + "/")
                phone.fill("#token", served.admin_token)
                phone.keyboard.press("Enter")
                phone.goto(served.url + "/#/stores/orders")
                expect(phone.locator("table.records")).to_be_visible()
                shoot(phone, out, "phone")
                browser.close()
        finally:
            served.close()


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "img")
