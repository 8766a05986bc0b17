"""Helpers for the HTML report's tests: an audit of some captures, and the report opened in
real headless Chromium (Debian's ``chromium`` driven by Playwright, no browser download) with
every non-file request blocked and recorded."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from conftest import ROOT
from traceaudit.audit import AuditReport
from traceaudit.capture import expand_paths
from traceaudit.pipeline import analyze_captures
from traceaudit.rules import run_rules
from traceaudit.rules.config import RulesConfig

ACTUAL = ROOT / "tests" / "actual"
CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser",
                                                "google-chrome")) if p), None)
VIEWPORT = {"width": 1280, "height": 900}


def audit(paths, findings_hook=None) -> AuditReport:
    cfg = RulesConfig()
    analyses = list(analyze_captures(expand_paths([str(p) for p in paths])))
    findings = [f for a in analyses for f in run_rules(a, cfg)]
    if findings_hook:
        findings = findings_hook(findings)
    rules = cfg.active_rules()
    return AuditReport(analyses, findings, rules, {r.name: cfg.params(r) for r in rules},
                       tool_version="test", generated_at="2026-11-21T12:00:00Z", elapsed_s=1.0)


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed "
                                   "(pip install -e '.[test]')")
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        yield b
        b.close()


class Page:
    """A report opened with the network blocked; console errors and requests recorded."""

    def __init__(self, browser, path: Path, **context) -> None:
        self.ctx = browser.new_context(viewport=VIEWPORT, **context)
        self.page = self.ctx.new_page()
        self.errors: list[str] = []
        self.requests: list[str] = []
        self.dialogs: list[str] = []
        self.page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("dialog", lambda d: (self.dialogs.append(d.message), d.dismiss()))
        self.page.route("**/*", self._route)
        self.page.goto(path.resolve().as_uri())
        if context.get("java_script_enabled", True):
            self.page.evaluate("window.traceaudit.ready")

    def _route(self, route):
        url = route.request.url
        if url.startswith("file:"):
            route.continue_()
        else:
            self.requests.append(url)
            route.abort()

    def rows(self) -> list[dict]:
        return self.page.eval_on_selector_all(
            "#findings-table tbody tr.row",
            "rs => rs.map(r => ({rule: r.dataset.rule, severity: r.dataset.severity}))")

    def js(self, expression: str, arg=None):
        return self.page.evaluate(expression, arg)

    def close(self) -> None:
        self.ctx.close()
