"""Real headless Chromium (Debian's package) through Playwright: the API docs render offline."""

from __future__ import annotations


import pytest


pytestmark = pytest.mark.browser


def test_api_docs_render_without_any_cdn(browser, live_server):
    page = browser.new_page()
    outside: list[str] = []
    page.on("request", lambda r: outside.append(r.url) if not r.url.startswith(live_server) else None)
    page.goto(f"{live_server}/api/v1/docs")
    page.wait_for_selector(".opblock-summary-path", timeout=15_000)
    assert page.locator(".opblock-summary-path", has_text="/api/v1/reports/{report_id}/status").count() == 1
    assert "civicmap" in page.locator(".info .title").inner_text()
    assert outside == [], f"the docs page fetched from outside the server: {outside}"
    page.close()
