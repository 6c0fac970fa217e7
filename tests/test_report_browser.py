"""The HTML report in a real browser: Debian's Chromium, headless, driven by Playwright.

Every figure must have loaded (an embedded PNG that decodes has naturalWidth > 0), the metrics table must
have one row per system, the importance table one row per source of maps, and nothing may be fetched from
outside the file. A screenshot is saved.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from drawgap.report.html import write_report
from tests.test_report import _write_ink_reports, results, results_dir  # noqa: F401  (fixtures: a real five-system results directory)

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's Chromium (/usr/bin/chromium) is not installed "
                                "(apt-get install chromium; .ci/run does it)")


def test_report_renders_in_chromium(results, tmp_path):
    from playwright.sync_api import sync_playwright

    _write_ink_reports(results)  # importance maps and their ink reports, as the demo writes them
    report = write_report(results, tmp_path / "report.html")
    requests, problems = [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("request", lambda req: requests.append(req.url))
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.goto(report.resolve().as_uri())
            page.wait_for_load_state("load")
            widths = page.eval_on_selector_all("img", "imgs => imgs.map(i => i.complete ? i.naturalWidth : 0)")
            rows = page.eval_on_selector_all("#metrics tbody tr", "rows => rows.map(r => r.dataset.system)")
            sources = page.eval_on_selector_all("#importance-ink tbody tr", "rows => rows.map(r => r.dataset.source)")
            finding = page.inner_text("#findings")
            page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        finally:
            browser.close()
    assert len(widths) == 5 and all(w > 0 for w in widths), widths  # plane, Fig. 3, guidance sweep, samples, importance
    assert rows == ["human", "CFGDM g=0", "CFGDM g=1", "CFGDM g=2", "DDPM"]
    assert sources == ["CFGDM g=1 guided score", "strokes-protonet saliency", "strokes-simclr saliency"]
    assert "is closest to humans" in finding
    # only the file itself and its embedded images: nothing from the network
    assert all(u.startswith(("file://", "data:")) for u in requests), requests
    assert not problems
    assert (tmp_path / "report.png").read_bytes()[:4] == b"\x89PNG"
