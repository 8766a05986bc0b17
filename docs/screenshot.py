#!/usr/bin/env python3
"""Refresh the README's screenshots of the HTML report (needs chromium and playwright).

    traceaudit analyze sample_pcaps/ --html reports/sample_pcaps.html
    python3 docs/screenshot.py reports/sample_pcaps.html
"""

import shutil
import sys
from pathlib import Path

from playwright.sync_api import sync_playwright

HERE = Path(__file__).resolve().parent


def main(report: str) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1200, "height": 860})
        page.goto(Path(report).resolve().as_uri())
        page.evaluate("window.traceaudit.ready")
        page.screenshot(path=str(HERE / "report.png"))
        page.add_style_tag(content="header.top { position: static; }")
        first = page.locator("article.finding").first          # (its capture's section and
        first.evaluate("a => { a.closest('details.capture').open = true; "   # evidence may
                       "a.querySelector('details').open = true; }")          # start closed)
        first.screenshot(path=str(HERE / "report-finding.png"))
        browser.close()


if __name__ == "__main__":
    main(sys.argv[1])
