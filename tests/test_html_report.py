"""HTML report: rendered for the sample captures and opened in real headless Chromium.

The browser tests drive Debian's ``chromium`` through Playwright (no browser download) with
every non-file request blocked and recorded (``htmltest``). Screenshots go to tests/actual/
(git-ignored). The page's layout (its height, the table's width, the census selector, the
capture sections) is tested in test_html_layout.py.
"""

from __future__ import annotations

import re
import shutil
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

import pcapgen as g
from conftest import SAMPLES
from htmltest import ACTUAL, Page, audit, browser  # noqa: F401  (browser: a fixture)
from pcapgen import ACK, FIN, PSH
from traceaudit.audit import AuditReport
from traceaudit.pipeline import analyze_capture
from traceaudit.report import census as C
from traceaudit.report import html as H
from traceaudit.report.ladder import connection_changes, ladder_svg
from traceaudit.tracking.states import EndpointState
from traceaudit.tracking.tracker import EV_CONN, EV_ENDPOINT, EV_STATE, EV_TS

EVIL = 'x<script>window.__pwned=1<\\script><img src=x onerror="window.__pwned=2">.pcap'


@pytest.fixture(scope="module")
def sample_report() -> tuple[AuditReport, Path]:
    report = audit([SAMPLES])
    ACTUAL.mkdir(parents=True, exist_ok=True)
    out = ACTUAL / "report-sample_pcaps.html"
    out.write_bytes(H.render_html(report))
    return report, out


# -- static ----------------------------------------------------------------------------------
def test_sample_report_is_small_and_complete(sample_report):
    report, out = sample_report
    html = out.read_text()
    assert len(out.read_bytes()) < 2_000_000
    assert report.findings, "the sample captures should produce findings"
    for i in range(len(report.findings)):
        article = re.search(rf'<article[^>]* id="f{i}".*?</article>', html, re.S)
        assert article, f"finding {i} has no evidence section"
        assert '<svg class="ladder"' in article.group(0), f"finding {i} has no ladder"
    assert "http://" not in html.replace("http://www.w3.org", "") and "https://" not in html
    for name in ("CLOSE_WAIT", "time-wait-pileup.pcap", "Services: which ones leak"):
        assert name in html


def test_cli_writes_the_html_report(tmp_path):
    from click.testing import CliRunner
    from traceaudit.cli import main
    out = tmp_path / "reports" / "leak.html"
    result = CliRunner().invoke(main, ["analyze", str(SAMPLES / "close-wait-leak.pcap"),
                                       "--html", str(out)])
    assert result.exit_code == 1, result.output          # a CLOSE_WAIT leak: findings
    html = out.read_text()
    assert html.startswith("<!DOCTYPE html>") and "half-closed-leak" in html
    assert '<svg class="ladder"' in html


def test_ladder_marks_elided_packets_and_states(tmp_path):
    conv = g.Conversation().handshake().send("c", FIN | ACK).send("s", ACK)
    for _ in range(20):
        conv.send("s", ACK | PSH, b"z" * 5).send("c", ACK)
    p = tmp_path / "t.pcap"
    p.write_bytes(g.pcap_bytes(conv.frames))
    a = analyze_capture(p)
    ex = a.excerpts
    svg = str(ladder_svg(ex.packets(0), connection_changes(a.events), int(ex.count[0]), "c", "s",
                         {4}))
    n = len(conv.frames)                       # kept: 1-4 (the FIN from the pool), last 8
    assert f"{n - 12} packets not kept, frames 5–{n - 8} ⋯" in svg
    for state in ("SYN_SENT", "FIN_WAIT_1", "FIN_WAIT_2", "CLOSE_WAIT"):
        assert state in svg
    assert "[FIN, ACK] Seq=1 Ack=1" in svg and "lad-hit" in svg


def test_census_counts_endpoints_per_state():
    # one connection: client ESTABLISHED at 0, CLOSE_WAIT at 10 s; server ESTABLISHED at 0,
    # FIN_WAIT_1 at 10 s, FIN_WAIT_2 at 11 s
    S = EndpointState
    ev = np.array([[0, 0, 0, 1, S.ESTABLISHED, 0], [0, 0, 10 * 10**9, 5, S.CLOSE_WAIT, 0],
                   [0, 1, 0, 1, S.ESTABLISHED, 0], [0, 1, 10 * 10**9, 5, S.FIN_WAIT_1, 0],
                   [0, 1, 11 * 10**9, 6, S.FIN_WAIT_2, 0]], np.int64)
    ch = C.Changes(ev, 0, 20 * 10**9, samples=21)        # one sample a second
    c = C.census(ch)
    assert c.levels["ESTABLISHED"].tolist() == [2] * 10 + [0] * 11
    assert c.levels["CLOSE_WAIT"].tolist() == [0] * 10 + [1] * 11
    assert c.levels["FIN_WAIT_1"].tolist() == [0] * 10 + [1] + [0] * 10
    assert c.final == {**{s.name: 0 for s in C.CENSUS_STATES}, "CLOSE_WAIT": 1, "FIN_WAIT_2": 1}
    held = C.held(ev, 20 * 10**9, ch.nxt)
    assert (held // 10**9).tolist() == [10, 10, 10, 1, 9]


@pytest.mark.parametrize("sample, min_hold_s", [
    ("close-wait-leak.pcap", 0.0), ("fin-wait-2-hang.pcap", 0.0), ("time-wait-pileup.pcap", 0.0),
    ("time-wait-pileup.pcap", 0.05)])
def test_service_table_counts_endpoints_held_in_a_state_and_in_time_wait_at_the_end(
        sample, min_hold_s):
    """per_service's counts, made in one compiled pass, against the same counts from ``held``
    and the event rows directly."""
    a = analyze_capture(SAMPLES / sample)
    ev, end = a.events, a.stats.last_ts_ns
    ch = C.Changes(ev, a.stats.first_ts_ns, end)
    codes, names = C.service_codes(a.table)
    rows = C.per_service(a.table, ch, end, top=len(names), min_hold_s=min_hold_s)
    assert len(rows) == len(names) and len(ev)
    long = C.held(ev, end, ch.nxt) >= int(min_hold_s * 1e9)
    last = ~ch.nxt
    service = codes[ev[:, EV_CONN]]
    checked = 0
    for row in rows:
        k = names.index(row["service"])
        for e, who in ((1, "server"), (0, "client")):
            mine = (service == k) & (ev[:, EV_ENDPOINT] == e)
            for s in C.LEAK_STATES:
                want = int((mine & long & (ev[:, EV_STATE] == s)).sum())
                assert row[f"{who}_{s.name}_held"] == want
                checked += want
            assert row[f"{who}_TIME_WAIT_end"] == \
                int((mine & last & (ev[:, EV_STATE] == EndpointState.TIME_WAIT)).sum())
            checked += row[f"{who}_TIME_WAIT_end"]
    assert checked > 0


def test_census_equals_the_states_at_each_grid_time():
    """On a real capture's thousands of events: each grid point's census is the count of
    endpoints whose timeline puts them in that state at that moment."""
    from traceaudit.tracking.timeline import states_at
    a = analyze_capture(SAMPLES / "time-wait-pileup.pcap")
    ev = a.events
    t0, t1 = int(ev[:, EV_TS].min()), int(ev[:, EV_TS].max())
    ch = C.Changes(ev, t0, t1, samples=50)
    c = C.census(ch)
    assert len(ev) > 5000
    for i, t in enumerate(ch.times.tolist()):
        states = states_at(ev, len(a.table), t)
        for s in C.CENSUS_STATES:
            assert c.levels[s.name][i] == int((states == s).sum()), (s.name, t)
    assert max(c.peak.values()) > 1000


@pytest.mark.parametrize("others", [[], ["close-wait-leak-rst.pcap"]])
def test_escaping_of_capture_names_static(tmp_path, others):
    """Alone, and beside another capture (then its name is also in the census selector)."""
    evil = tmp_path / EVIL
    shutil.copy(SAMPLES / "close-wait-leak.pcap", evil)
    html = H.render_html(audit([evil] + [SAMPLES / o for o in others])).decode()
    assert "<script>window.__pwned" not in html and "<img src=x" not in html
    assert "&lt;script&gt;window.__pwned=1" in html
    assert ('id="census-capture"' in html) == bool(others)


def test_many_findings_render_fast_and_capped(sample_report, tmp_path):
    report, _ = sample_report
    many = [replace(report.findings[i % len(report.findings)], ts=report.findings[0].ts + i)
            for i in range(10_000)]
    big = replace(report, findings=many)
    t = time.perf_counter()
    html = H.render_html(big)
    elapsed = time.perf_counter() - t
    assert elapsed < 5.0
    assert len(html) < 6_000_000
    text = html.decode()
    assert text.count("<article") <= H.MAX_DETAILS
    assert 'data-encoding="deflate-base64"' in text
    assert "Showing the evidence for" in text
    (tmp_path / "many.html").write_bytes(html)


# -- in the browser --------------------------------------------------------------------------
def test_report_in_chromium(browser, sample_report):
    report, out = sample_report
    page = Page(browser, out)
    try:
        pg = page.page
        n = len(report.findings)
        assert len(page.rows()) == n
        # filter by rule
        rule = report.findings[0].rule
        expected = sum(1 for f in report.findings if f.rule == rule)
        pg.select_option("#filter-rule", rule)
        rows = page.rows()
        assert len(rows) == expected and {r["rule"] for r in rows} == {rule}
        assert f"{expected} of {n} findings" in pg.inner_text("#findings-count")
        pg.select_option("#filter-rule", "")
        # severity, search and sort
        pg.select_option("#filter-severity", "2")
        assert {r["severity"] for r in page.rows()} == {"error"}
        pg.select_option("#filter-severity", "")
        pg.fill("#filter-search", "TIME_WAIT")
        pg.wait_for_timeout(300)
        assert 0 < len(page.rows()) < n
        pg.fill("#filter-search", "")
        pg.wait_for_timeout(300)
        pg.click("#findings-table th[data-sort=rule]")
        codes = pg.eval_on_selector_all("#findings-table tbody tr.row td:nth-child(2) code",
                                        "cs => cs.map(c => c.textContent)")
        assert codes == sorted(codes)
        # a row expands to its frames and filter; its link leads to the evidence, opening
        # the (closed) section of its capture on the way
        pg.click("#findings-table tbody tr.row >> nth=0")
        assert pg.locator("#findings-table tr.more code.filter").count() == 1
        ACTUAL.mkdir(parents=True, exist_ok=True)
        pg.screenshot(path=str(ACTUAL / "html-report.png"))
        link = pg.locator("#findings-table tr.more a[href^='#f']")
        target = link.get_attribute("href")
        assert not pg.locator(target).is_visible()
        link.click()
        assert pg.evaluate("location.hash") == target
        assert pg.locator(f"{target} svg.ladder").is_visible()
        assert pg.locator(target).evaluate("a => a.closest('details.capture').open")
        # every finding's ladder is drawn
        assert pg.locator("article.finding").count() == n
        assert pg.locator("article.finding svg.ladder").count() == n
        # the copy button copies the filter
        page.ctx.grant_permissions(["clipboard-read", "clipboard-write"])
        copy = pg.locator(f"{target} button.copy").first
        copy.click()
        pg.wait_for_timeout(200)
        assert pg.evaluate("navigator.clipboard.readText()") == copy.get_attribute("data-copy")
        pg.locator(target).screenshot(path=str(ACTUAL / "html-finding.png"))
        assert page.errors == [] and page.requests == [] and page.dialogs == []
    finally:
        page.close()


def test_capture_named_with_script_runs_nothing(browser, tmp_path):
    evil = tmp_path / EVIL
    shutil.copy(SAMPLES / "close-wait-leak.pcap", evil)
    out = tmp_path / "evil.html"
    out.write_bytes(H.render_html(audit([evil, SAMPLES / "close-wait-leak-rst.pcap"])))
    page = Page(browser, out)
    try:
        pg = page.page
        pg.select_option("#census-capture", "0")              # the evil capture's census
        page.js("document.querySelectorAll('details').forEach(d => { d.open = true; })")
        assert pg.evaluate("window.__pwned") is None
        assert pg.locator("img").count() == 0
        assert pg.evaluate("document.scripts.length") == 2     # the page's own and its data
        assert EVIL in pg.inner_text("body")                   # shown as text, verbatim
        assert EVIL in pg.inner_text("figure.census:visible figcaption")
        assert page.errors == [] and page.dialogs == [] and page.requests == []
    finally:
        page.close()


def test_ten_thousand_findings_stay_fast_in_chromium(browser, sample_report, tmp_path):
    report, _ = sample_report
    many = [replace(report.findings[i % len(report.findings)], ts=report.findings[0].ts + i)
            for i in range(10_000)]
    out = tmp_path / "many.html"
    out.write_bytes(H.render_html(replace(report, findings=many), max_listed=10_000))
    page = Page(browser, out)
    try:
        pg = page.page
        assert len(page.rows()) == 200                          # paged
        rule = many[0].rule
        expected = sum(1 for f in many if f.rule == rule)
        ms = pg.evaluate("""(rule) => { const t = performance.now();
            const s = document.getElementById('filter-rule'); s.value = rule;
            s.dispatchEvent(new Event('change')); return performance.now() - t; }""", rule)
        assert ms < 500
        assert f"{expected:,} of 10,000 findings" in pg.inner_text("#findings-count")
        assert {r["rule"] for r in page.rows()} == {rule}
        pg.click("#findings-more")
        assert len(page.rows()) == min(expected, 400)
        assert page.errors == [] and page.requests == []
    finally:
        page.close()
