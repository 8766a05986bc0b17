"""The HTML report's layout, measured in real Chromium at 1280 px: the page for sample_pcaps/
is short before anything is opened, the findings table keeps its width when a row opens, the
census shows one chart that a selector switches, capture sections open and close.
"""

from __future__ import annotations

import re
import struct
from pathlib import Path

import pytest

from conftest import SAMPLE_CAPTURES, SAMPLES
from htmltest import ACTUAL, VIEWPORT, Page, audit, browser  # noqa: F401  (browser: a fixture)
from traceaudit.pipeline import analyze_capture
from traceaudit.report import census as C
from traceaudit.report import html as H
from traceaudit.report import html_census as HC
from traceaudit.tracking.timeline import states_at

MAX_HEIGHT = 8000           # px, the sample captures' page before anything is opened


@pytest.fixture(scope="module")
def samples_page(tmp_path_factory):
    report = audit([SAMPLES])
    out = tmp_path_factory.mktemp("layout") / "sample_pcaps.html"
    out.write_bytes(H.render_html(report))
    return report, out


def split_pcap(src: Path, at: int, dest: Path) -> tuple[Path, Path]:
    """A classic pcap cut in two files after record ``at``, as a ring buffer would."""
    data = src.read_bytes()
    head, pos, cuts = data[:24], 24, []
    while pos < len(data):
        cuts.append(pos)
        pos += 16 + struct.unpack_from("<I", data, pos + 8)[0]
    first, second = dest / "ring-0.pcap", dest / "ring-1.pcap"
    first.write_bytes(data[:cuts[at]])
    second.write_bytes(head + data[cuts[at]:])
    return first, second


# -- in the browser --------------------------------------------------------------------------
def test_sample_page_is_short_and_the_table_keeps_its_width(browser, samples_page):
    report, out = samples_page
    page = Page(browser, out)
    try:
        pg = page.page
        height = page.js("document.documentElement.scrollHeight")
        print(f"page height before anything is opened: {height} px")
        assert height <= MAX_HEIGHT
        assert page.js("document.documentElement.scrollWidth") <= VIEWPORT["width"]
        table = pg.locator("#findings-table")
        width = table.bounding_box()["width"]
        assert width <= VIEWPORT["width"]
        rows = pg.locator("#findings-table tbody tr.row")
        assert rows.count() == len(report.findings) > 0
        for k in range(rows.count()):          # every row, opened and closed again
            rows.nth(k).click()
            opened = pg.locator("#findings-table tr.more")
            assert opened.count() == 1
            assert table.bounding_box()["width"] == width, f"row {k} widened the table"
            # "what happened" stays in view, and the opened row stays inside the table
            head = pg.locator("#findings-table th[data-sort=msg]").bounding_box()
            assert head["x"] + head["width"] <= VIEWPORT["width"]
            box = opened.bounding_box()
            assert box["x"] + box["width"] <= VIEWPORT["width"]
            assert page.js("document.documentElement.scrollWidth") <= VIEWPORT["width"]
            rows.nth(k).click()
        rows.nth(0).click()
        ACTUAL.mkdir(parents=True, exist_ok=True)
        pg.screenshot(path=str(ACTUAL / "html-layout-row-open.png"))
        assert page.errors == [] and page.requests == []
    finally:
        page.close()


def test_census_selector_switches_the_chart(browser, samples_page):
    report, out = samples_page
    page = Page(browser, out)
    try:
        pg = page.page
        shown = "figure.census:visible"
        options = pg.eval_on_selector_all("#census-capture option", "os => os.map(o => o.value)")
        assert len(options) == min(len(SAMPLE_CAPTURES), HC.MAX_CHARTS) and "all" not in options     # no common clock: one by one
        assert pg.locator(shown).count() == 1
        # the capture with findings and the most connections is shown first
        assert "time-wait-pileup.pcap" in pg.locator(shown).inner_text()
        assert "TIME_WAIT peak 2,000" in pg.locator(shown).inner_text()
        labels = pg.eval_on_selector_all("#census-capture option",
                                         "os => os.map(o => [o.value, o.textContent])")
        leak = next(v for v, text in labels if text.startswith("close-wait-leak.pcap "))
        pg.select_option("#census-capture", leak)
        assert pg.locator(shown).count() == 1
        text = pg.locator(shown).inner_text()
        assert "close-wait-leak.pcap" in text and "CLOSE_WAIT peak 1, at end 1" in text
        assert page.js("document.documentElement.scrollHeight") <= MAX_HEIGHT
        assert page.errors == [] and page.requests == []
    finally:
        page.close()
    # without a script, every chart is shown and the selector is not
    page = Page(browser, out, java_script_enabled=False)
    try:
        assert page.page.locator("figure.census:visible").count() == min(len(SAMPLE_CAPTURES),
                                                                         HC.MAX_CHARTS)
        assert not page.page.locator("#census-capture").is_visible()
    finally:
        page.close()


def test_capture_sections_open_and_close(browser, samples_page):
    report, out = samples_page
    page = Page(browser, out)
    try:
        pg = page.page
        sections = pg.locator("details.capture")
        assert sections.count() == len(SAMPLE_CAPTURES)
        assert page.js("[...document.querySelectorAll('details.capture')].filter(d => d.open)"
                       ".length") == 0        # 20 captures with findings: all start closed
        names = pg.eval_on_selector_all("details.capture .cap-name",
                                        "ns => ns.map(n => n.textContent)")
        with_findings = {Path(f.capture).name for f in report.findings}
        k = len(with_findings)                 # the captures with findings come first
        assert set(names[:k]) == with_findings and not set(names[k:]) & with_findings
        assert pg.locator("article.finding").count() == len(report.findings)
        assert pg.locator("article.finding:visible").count() == 0
        before = page.js("document.documentElement.scrollHeight")
        # a capture with findings: its facts and each finding's evidence, ladder and all
        first = sections.nth(0)
        first.locator("summary").first.click()
        assert first.evaluate("d => d.open")
        articles = first.locator("article.finding")
        assert articles.count() >= 1
        assert articles.locator("svg.ladder:visible").count() == articles.count()
        assert page.js("document.documentElement.scrollHeight") > before
        first.locator("summary").first.click()
        assert not first.evaluate("d => d.open")
        assert page.js("document.documentElement.scrollHeight") == before
        # a capture without findings says so, and opens to its facts
        assert k < sections.count(), "the samples include captures without findings"
        last = sections.nth(sections.count() - 1)
        assert "no findings" in last.locator("summary").first.inner_text()
        last.locator("summary").first.click()
        assert last.locator("dl.facts").is_visible()
        assert "how connections ended" in last.inner_text()
        # printing opens everything; then no rule text shows its backticks (they are <code>)
        page.js("window.dispatchEvent(new Event('beforeprint'))")
        assert page.js("[...document.querySelectorAll('details')].every(d => d.open)")
        pg.click("#findings-table tbody tr.row >> nth=0")
        assert "`" not in page.js("document.body.innerText")
        assert pg.locator("details.rule code").count() > 0
        assert page.errors == [] and page.requests == []
    finally:
        page.close()


# -- without a browser -----------------------------------------------------------------------
def test_one_capture_opens_its_section_and_few_findings_their_evidence():
    html = H.render_html(audit([SAMPLES / "close-wait-leak-rst.pcap"])).decode()
    assert re.search(r'<details class="capture" id="cap-0" open>', html)
    assert html.count('<details class="evidence" open>') == html.count("<article") == 3
    assert 'id="census-capture"' not in html            # one capture, one chart: no selector


def test_one_clock_only_for_captures_that_follow_one_another():
    s = 10**9
    assert HC.one_clock([(0, 10 * s), (10 * s + 1000, 20 * s)])           # ring files
    assert HC.one_clock([(10 * s + 1000, 20 * s), (0, 10 * s)])           # in any order
    assert not HC.one_clock([(0, 10 * s)])                                # one capture
    assert not HC.one_clock([(0, 10 * s), (0, 10 * s)])                   # two vantage points
    assert not HC.one_clock([(0, 10 * s), (5 * s, 15 * s)])               # overlapping
    assert not HC.one_clock([(0, 1 * s), (10 * s, 11 * s)])               # mostly gap
    analyses = [analyze_capture(p) for p in sorted(SAMPLES.glob("*.pcap*"))]
    assert not HC.one_clock([(a.stats.first_ts_ns, a.stats.last_ts_ns) for a in analyses])


def test_ring_buffer_files_get_one_census_on_one_clock(tmp_path):
    """time-wait-pileup.pcap cut in two: the report offers (and first shows) both files on one
    clock, and that census is, at every grid time, the count of endpoints in each state in the
    file whose span holds that time."""
    parts = split_pcap(SAMPLES / "time-wait-pileup.pcap", 9000, tmp_path)
    analyses = [analyze_capture(p) for p in parts]
    spans = [(a.stats.first_ts_ns, a.stats.last_ts_ns) for a in analyses]
    assert HC.one_clock(spans)
    t0, t1 = spans[0][0], spans[1][1]
    levels = HC.merged_levels([(a.events, *sp) for a, sp in zip(analyses, spans)], t0, t1,
                              samples=60)
    times = HC.grid_times(t0, t1, 60)
    assert times[-1] == t1
    for i, t in enumerate(times.tolist()):
        want = {s.name: 0 for s in C.CENSUS_STATES}
        for a, (first, last) in zip(analyses, spans):
            if first <= t <= last:
                states = states_at(a.events, len(a.table), t)
                for s in C.CENSUS_STATES:
                    want[s.name] += int((states == s).sum())
        assert {k: int(v[i]) for k, v in levels.items()} == want, t
    assert max(int(v.max()) for v in levels.values()) > 900
    html = H.render_html(audit(parts)).decode()
    options = re.findall(r'<option value="([^"]*)"[^>]*>[^<]*</option>',
                         html.split('id="census-capture"')[1].split("</select>")[0])
    assert options == ["all", "0", "1"]
    assert '<figure class="census" data-census="all">' in html          # shown first
    assert '<figure class="census" data-census="0" hidden>' in html
    chart = html.split('data-census="all"')[1].split("</figure>")[0]
    assert chart.count('class="mark"') == 1                  # where one file ends


def test_findings_about_a_capture_not_in_the_run_get_a_section_of_their_own():
    from dataclasses import replace
    report = audit([SAMPLES / "close-wait-leak.pcap", SAMPLES / "fin-wait-2-hang.pcap"],
                   lambda fs: [replace(fs[0], capture="elsewhere.pcap")] + fs[1:])
    html = H.render_html(report).decode()
    section = html.split('id="cap--1"')[1].split("</details>\n  <details")[0]
    assert "findings about captures not in this run" in section
    assert section.count("<article") == 1 and "elsewhere.pcap" in section
    assert html.count("<article") == len(report.findings)
