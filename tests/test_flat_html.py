"""``analyze --html`` on a flat read (``retire/excerpt_spill.py``, ``report/html_evidence.py``):
the packet excerpts retire with their connections and only those of the connections drawn
are read back; the page is made from sums over the spill's chunks. It must be the page of a
read that keeps every connection, byte for byte, and its table lists a bounded number of
findings per rule (the most severe first, then in order), saying so."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from conftest import CORPUS_TRACES, SAMPLE_CAPTURES
from htmltest import Page, browser  # noqa: F401  (browser: a fixture)
from test_flat_analyze import EAGER
from test_retire import FAST
from traceaudit.audit import build_report, slimmed
from traceaudit.pipeline import ReadOptions, analyze_capture
from traceaudit.report.html import render_html
from traceaudit.retire import flat, spill
from traceaudit.retire.excerpt_spill import SpilledExcerpts
from traceaudit.rules import run_rules
from traceaudit.rules.config import make_config


def _read(path, retire, batch_rows=1 << 16):
    return analyze_capture(path, ReadOptions(batch_rows=batch_rows, excerpts=True,
                                             frames_soon=False, retire=retire, **FAST))


def report_of(paths, retire, batch_rows=1 << 16):
    """The ``AuditReport`` ``analyze --html`` makes of ``paths`` (one capture each)."""
    config = make_config(None)
    analyses, findings = [], []
    for path in paths:
        a = _read(path, retire, batch_rows)
        findings += run_rules(a, config)
        analyses.append(slimmed(a, keep_excerpts=True))
    return build_report(analyses, config, None, findings=findings, tool_version="t",
                        generated_at="t", elapsed_s=1.0)


@pytest.fixture
def small_buckets(monkeypatch):
    """Chunks of 16 frames: a sample capture is read back in many chunks."""
    monkeypatch.setattr(spill, "BUCKET_FRAMES", 16)


@pytest.mark.parametrize("on_disk", [True, False], ids=["spilled", "small-spills-in-memory"])
def test_flat_html_equals_the_keeping_read_on_every_sample(on_disk, small_buckets, counted,
                                                           monkeypatch):
    """Every sample capture (and, spilled, every Zeek corpus trace where ../shared is
    present), retiring after every 64 packets (repairs forced by a tiny Bloom filter): the
    same page, ladders and all, read from the spill a chunk at a time (or, for a small
    spill, from the table and excerpts it is brought back to)."""
    monkeypatch.setattr(flat, "IN_MEMORY_BYTES", -1 if on_disk else 1 << 30)
    assert SAMPLE_CAPTURES
    differ, ladders = [], 0
    for path in SAMPLE_CAPTURES + (CORPUS_TRACES if on_disk else []):
        flat_page = render_html(report_of([path], EAGER, batch_rows=64))
        kept_page = render_html(report_of([path], None))
        ladders += flat_page.count(b'<svg class="ladder"')
        if flat_page != kept_page:
            differ.append(path.name)
    assert differ == []
    assert ladders > 30
    assert counted["retired"] > 300 and counted["repaired"] > 50


def test_several_captures_on_one_page(small_buckets, monkeypatch):
    """One page for several captures (findings, services and census of each)."""
    monkeypatch.setattr(flat, "IN_MEMORY_BYTES", -1)
    paths = SAMPLE_CAPTURES[:8]
    assert render_html(report_of(paths, EAGER, batch_rows=64)) == \
        render_html(report_of(paths, None))


def test_spilled_excerpts_are_those_kept_in_memory(small_buckets):
    """Each connection's kept packets, read back from the excerpt spill by first frame, are
    those of the keeping read (the recorder's rows moved by every retirement sweep)."""
    for path in SAMPLE_CAPTURES:
        kept = _read(path, None)
        spilled = _read(path, EAGER, batch_rows=64)
        assert isinstance(spilled.excerpts, SpilledExcerpts)
        first = kept.table["first_frame"]
        back = spilled.excerpts.load(first.tolist())
        ex = kept.excerpts
        for c in range(len(first)):
            assert back.packets(c) == ex.packets(c), f"{path.name} connection {c}"
        assert np.array_equal(back.count, ex.count)
        spilled.excerpts.close()
        spilled.table.close()


def _table(page: bytes) -> dict:
    text = re.search(rb'<script type="application/json" id="ta-data">(.*?)</script>', page,
                     re.S).group(1)
    return json.loads(text)


def test_a_rule_with_more_findings_than_listed(small_buckets, monkeypatch):
    """The table lists N of a rule's M findings: exactly N rows, the first N by severity then
    the report's order, and the page says "showing N of M"; the evidence is drawn for at
    most ``max_per_rule``. A flat read makes the same page."""
    monkeypatch.setattr(flat, "IN_MEMORY_BYTES", -1)
    n_list, n_draw = 3, 2
    kept = report_of(SAMPLE_CAPTURES, None)
    pages = [render_html(r, max_per_rule=n_draw, max_listed=n_list)
             for r in (kept, report_of(SAMPLE_CAPTURES, EAGER, batch_rows=64))]
    assert pages[0] == pages[1]
    page, findings = pages[0], list(kept.findings)
    by_rule: dict[str, list[int]] = {}
    for i, f in enumerate(findings):
        by_rule.setdefault(f.rule, []).append(i)
    big = {rule: ix for rule, ix in by_rule.items() if len(ix) > n_list}
    assert big, "a sample rule should have more findings than listed"
    data = _table(page)
    rules = [r[1] for r in data["rules"]]
    assert data["all"] == len(findings)
    for rule, ix in by_rule.items():
        shown = [i for i, r in zip(data["rows"]["id"], data["rows"]["rule"])
                 if rules[r] == rule]
        top = sorted(ix, key=lambda i: (-findings[i].severity, i))[:n_list]
        assert shown == sorted(top), rule
        drawn = len(re.findall(rf'<article [^>]*data-rule="{re.escape(rule)}"'.encode(), page))
        assert drawn == min(n_draw, len(ix)), rule
        if rule in big:
            assert f"{rule}: showing {n_list} of {len(ix)}".encode() in page
    assert f"Showing {len(data['rows']['id'])} of {len(findings)} findings".encode() in page


def test_captures_on_one_clock(tmp_path, small_buckets, monkeypatch):
    """Pieces of one capture read each on its own (as ``--no-merge`` reads them) follow one
    another: the census sums them on one clock, from each piece's chunks."""
    import shutil
    import subprocess
    if not shutil.which("editcap"):
        pytest.skip("editcap (wireshark-common) is not installed")
    monkeypatch.setattr(flat, "IN_MEMORY_BYTES", -1)
    sample = next(p for p in SAMPLE_CAPTURES if p.name == "time-wait-pileup.pcap")
    subprocess.run(["editcap", "-c", "3000", str(sample), str(tmp_path / "piece.pcap")],
                   check=True)
    pieces = sorted(tmp_path.glob("piece*.pcap"))
    assert len(pieces) >= 3
    page = render_html(report_of(pieces, EAGER, batch_rows=64))
    assert f"all {len(pieces)} captures, one clock".encode() in page
    assert page == render_html(report_of(pieces, None))


def test_sums_over_chunks_are_the_whole_tables_figures(small_buckets, monkeypatch):
    """What the page sums over a flat read's chunks (``html_evidence.gather``) against the
    figures computed from the whole tables of a keeping read (``census.census``,
    ``census.per_service``): endings, census, services with their sparklines and findings."""
    from traceaudit.report import census as C
    from traceaudit.report.html_evidence import Wants, gather
    monkeypatch.setattr(flat, "IN_MEMORY_BYTES", -1)
    config = make_config(None)
    checked = 0
    for path in SAMPLE_CAPTURES:
        kept = _read(path, None)
        if not len(kept.table):
            continue
        findings = run_rules(kept, config)
        conns = np.array([-1 if f.connection is None else f.connection for f in findings],
                         np.int64)
        a = _read(path, EAGER, batch_rows=64)
        run_rules(a, config)
        got = gather(slimmed(a, keep_excerpts=True), Wants(conns, np.zeros(len(conns),
                                                                           np.uint8)), None)
        st = kept.stats
        ch = C.Changes(kept.events, st.first_ts_ns, st.last_ts_ns)
        whole = C.census(ch)
        assert got.kinds == kept.table.value_counts("close_kind")
        assert got.roles == kept.table.value_counts("close_role")
        assert got.census.final == whole.final and got.census.peak == whole.peak
        for k, v in whole.levels.items():
            assert np.array_equal(got.census.levels[k], v), (path.name, k)
        per_conn = np.bincount(conns[conns >= 0], minlength=len(kept.table))
        expected = C.per_service(kept.table, ch, st.last_ts_ns, per_conn)
        assert len(got.services) == len(expected)
        for mine, theirs in zip(got.services, expected):
            assert mine.keys() == theirs.keys()
            assert np.array_equal(mine.pop("spark"), theirs.pop("spark")), path.name
            assert mine == theirs, path.name
        checked += 1
    assert checked > 20


def test_a_capped_table_in_chromium(browser, tmp_path):  # noqa: F811
    """The page with a capped table, opened: the count says how many of all it lists, and
    each drawn row's link leads to its finding's evidence (anchors are findings' indices,
    not rows')."""
    report = report_of(SAMPLE_CAPTURES, None)
    out = tmp_path / "capped.html"
    out.write_bytes(render_html(report, max_per_rule=2, max_listed=3))
    page = Page(browser, out)
    try:
        pg = page.page
        listed = len(_table(out.read_bytes())["rows"]["id"])
        assert listed < len(report.findings)
        assert len(page.rows()) == listed
        assert f"the table lists {listed} of {len(report.findings)}" in \
            pg.inner_text("#findings-count")
        drawn = pg.locator("article.finding")
        assert drawn.count() > 0
        for k in reversed(range(len(page.rows()))):        # (the last: row k is not finding k)
            pg.click(f"#findings-table tbody tr.row >> nth={k}")
            link = pg.locator("#findings-table tr.more a[href^='#f']")
            if link.count():
                target = link.get_attribute("href")
                link.click()
                i = int(target[2:])
                assert i != k
                assert pg.locator(f"{target} .msg").inner_text() == report.findings[i].message
                break
            pg.click(f"#findings-table tbody tr.row >> nth={k}")     # (closes it again)
        else:
            raise AssertionError("no listed row links to its evidence")
        assert page.errors == [] and page.requests == []
    finally:
        page.close()
