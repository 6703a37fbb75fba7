"""The page in a real headless Chromium (Debian's package, driven by Playwright)."""

from __future__ import annotations

import os
import shutil

import pytest

from .conftest import TOKEN, small_config

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"

pytestmark = pytest.mark.skipif(
    not os.path.exists(CHROMIUM),
    reason="Debian's chromium is not installed (scripts/install.sh dev installs it)",
)


def test_page_submits_config_and_follows_rows_live(service, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(service.url + "/")
            page.fill("#token", TOKEN)
            page.click("#login-form button")
            page.wait_for_selector("#app:not([hidden])")
            page.evaluate("window.sameDocument = true")
            # a bad config: problems inline, with their line numbers
            bad = small_config().replace("spatial_res: 0.01", "spatial_res: -1")
            page.fill("#config", bad)
            page.click("#submit")
            problem = page.wait_for_selector("#problems li")
            line = next(i + 1 for i, text in enumerate(bad.splitlines()) if "spatial_res" in text)
            assert problem.get_attribute("data-line") == str(line)
            assert "grid_mappings[0].spatial_res" in problem.inner_text()
            # a good one: the row reaches completed without a reload, the quick-look shows
            page.fill("#config", small_config())
            page.click("#submit")
            status = 'tr[data-dataset="landcover"] td.status'
            page.wait_for_selector(f"{status}:has-text('completed')", timeout=45_000)
            image = page.wait_for_selector('img[data-quicklook="landcover"]', timeout=15_000)
            page.wait_for_function(
                "img => img.complete && img.naturalWidth > 0", arg=image, timeout=10_000
            )
            assert page.evaluate("window.sameDocument") is True
            assert page.inner_text("#job-status") == "completed"
            assert (
                page.locator('tr[data-dataset="landcover"] a')
                .get_attribute("href")
                .endswith("/landcover.zarr")
            )
            assert page.locator("#jobs tbody tr").count() == 1
            page.screenshot(path=str(tmp_path / "service-page.png"), full_page=True)
            assert (tmp_path / "service-page.png").stat().st_size > 10_000
            assert TOKEN not in page.content()
        finally:
            browser.close()
