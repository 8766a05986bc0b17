"""A capture split into shares by flow hash (traceaudit.parallel.shares): the merge of every
share's analysis equals the analysis of one read, table by table (flows, facts, events, Zeek's
rows, excerpts) and in the rendered ``analyze --json`` and ``flows --format csv`` outputs."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

import pcapgen as g
from conftest import (CORPUS_TRACES, ROOT, SAMPLE_CAPTURES, SAMPLES, cli_run, needs_corpus,
                      needs_tshark)
from traceaudit.parallel import runner
from traceaudit.audit import slimmed
from traceaudit.capture import CaptureSet
from traceaudit.flows.columns import Coded, Columns, Repeated
from traceaudit.parallel.shares import ShareAnalysis, analyze_share, merge_shares
from traceaudit.pipeline import ReadOptions, analyze_capture
from traceaudit.tracking import zeek
from traceaudit.tracking.zeek import ZeekConfig

SHARES = (2, 3)


def shares_of(path, n, options=ReadOptions(), csv=False) -> list[ShareAnalysis]:
    return [analyze_share(path, options, k, n, csv=csv) for k in range(n)]


# -- comparing two analyses ------------------------------------------------------------------

def assert_same_column(a, b, name):
    if isinstance(a, Coded) or isinstance(b, Coded):
        assert isinstance(a, Coded) and isinstance(b, Coded), (name, type(a), type(b))
        assert a.labels.tolist() == b.labels.tolist(), name
        assert a.codes.tolist() == b.codes.tolist(), name
    elif isinstance(a, Repeated) or isinstance(b, Repeated):
        assert isinstance(a, Repeated) and isinstance(b, Repeated), name
        assert (a.value, a.n) == (b.value, b.n), name
    else:
        a, b = np.asarray(a), np.asarray(b)
        assert a.dtype == b.dtype, (name, a.dtype, b.dtype)
        assert np.array_equal(a, b, equal_nan=a.dtype.kind == "f"), name


def assert_same_columns(a: Columns | None, b: Columns | None):
    if a is None or b is None:
        assert a is None and b is None
        return
    assert list(a.data) == list(b.data) and len(a) == len(b)
    for name in a.data:
        assert_same_column(a.column(name), b.column(name), name)


def assert_same_analysis(whole, merged):
    for field in ("path", "format", "link_types", "packets", "tcp_packets", "first_ts_ns",
                  "last_ts_ns", "warnings"):
        assert getattr(whole.stats, field) == getattr(merged.stats, field), field
    assert str(whole.stats.error) == str(merged.stats.error)
    assert_same_columns(whole.table, merged.table)
    assert_same_columns(whole.zeek_table, merged.zeek_table)
    t, u = whole.tracked, merged.tracked
    assert t.endpoints.dtype == u.endpoints.dtype and t.endpoints.shape == u.endpoints.shape
    assert t.endpoints.tobytes() == u.endpoints.tobytes()
    assert t.conns.dtype == u.conns.dtype and t.conns.tobytes() == u.conns.tobytes()
    assert (t.end_ts_ns, t.config, t.events.shape) == (u.end_ts_ns, u.config, u.events.shape)
    assert whole.events.shape == merged.events.shape
    assert np.array_equal(whole.events, merged.events)
    x, y = whole.excerpts, merged.excerpts
    assert (x is None) == (y is None)
    if x is not None:
        for name in ("count", "pool", "pool_start", "base"):
            a, b = getattr(x, name), getattr(y, name)
            assert a.dtype == b.dtype and np.array_equal(a, b), name
        assert list(x.slots) == list(y.slots)
        for name in x.slots:
            assert x.slots[name].dtype == y.slots[name].dtype
            assert np.array_equal(x.slots[name], y.slots[name]), name


def assert_shares_merge_exactly(path, options=ReadOptions(), shares=SHARES):
    """For 2 and 3 shares: the merge equals one read, and every connection (all of its
    segments) is in exactly one share. Returns the one read."""
    whole = analyze_capture(path, options)
    for n in shares:
        parts = shares_of(path, n, options)
        assert sum(p.kept_segments for p in parts) == whole.stats.tcp_packets
        assert sum(len(p.table) for p in parts) == len(whole.table)
        firsts = np.concatenate([np.asarray(p.table["first_frame"]) for p in parts])
        assert sorted(firsts.tolist()) == np.asarray(whole.table["first_frame"]).tolist()
        owners = [tuples(p.table) for p in parts]
        for i in range(n):
            for j in range(i + 1, n):
                assert not owners[i] & owners[j], "a 4-tuple in two shares"
        assert_same_analysis(whole, merge_shares(parts))
        assert_same_analysis(whole, merge_shares(parts[::-1]))     # any order of the shares
        # shares slimmed to their flow tables (what `flows` sends back) give the same table
        slim = [slimmed(p, keep_excerpts=False, keep_events=False) for p in parts]
        assert_same_columns(whole.table, merge_shares(slim).table)
    return whole


def tuples(table) -> set:
    """The 4-tuples of a flow table, direction-independent."""
    rows = zip(table["client_ip"].tolist(), table["client_port"].tolist(),
               table["server_ip"].tolist(), table["server_port"].tolist())
    return {tuple(sorted([(a, p), (b, q)])) for a, p, b, q in rows}


# -- captures --------------------------------------------------------------------------------

def conversation(c, s, cport, sport, t0_ns, *, isn_c=1000, isn_s=5000, data=b"x" * 40,
                 end="fin", gap_ns=1_000_000):
    """(ts, IP packet, version) of one connection: handshake, a request and its answer, and
    a FIN close (``end="fin"``) or a client RST (``"rst"``) or nothing (``"open"``)."""
    seg = []
    t = t0_ns

    def add(src, dst, sp, dp, seq, ack, flags, payload=b""):
        nonlocal t
        pkt, ver = g.tcp_segment(src, dst, sp, dp, seq=seq, ack=ack, flags=flags,
                                 payload=payload)
        seg.append((t, pkt, ver))
        t += gap_ns

    A, S, F, R, P = g.ACK, g.SYN, g.FIN, g.RST, g.PSH
    c_seq, s_seq = isn_c + 1, isn_s + 1
    add(c, s, cport, sport, isn_c, 0, S)
    add(s, c, sport, cport, isn_s, c_seq, S | A)
    add(c, s, cport, sport, c_seq, s_seq, A)
    add(c, s, cport, sport, c_seq, s_seq, P | A, data)
    c_seq += len(data)
    add(s, c, sport, cport, s_seq, c_seq, P | A, data * 2)
    s_seq += 2 * len(data)
    add(c, s, cport, sport, c_seq, s_seq, A)
    if end == "fin":
        add(c, s, cport, sport, c_seq, s_seq, F | A)
        add(s, c, sport, cport, s_seq, c_seq + 1, F | A)
        add(c, s, cport, sport, c_seq + 1, s_seq + 1, A)
    elif end == "rst":
        add(c, s, cport, sport, c_seq, s_seq, R | A)
    return seg


def write_frames(path, frames):
    frames = sorted(frames, key=lambda f: f.ts_ns)
    path.write_bytes(g.pcap_bytes(frames))
    return path


def plain(conv):
    return [g.Frame(t, g.ethernet(pkt, ver)) for t, pkt, ver in conv]


def vxlan(conv):
    """Each packet in Ethernet inside VXLAN (UDP 4789) inside IPv4."""
    head = bytes.fromhex("0800000000123400")
    return [g.Frame(t, g.outer_ipv4(g.udp(40000, 4789, head + g.ethernet(pkt, ver)), 17))
            for t, pkt, ver in conv]


def in_gre(conv):
    return [g.Frame(t, g.outer_ipv4(g.gre(pkt, 0x0800 if ver == 4 else 0x86DD), 47))
            for t, pkt, ver in conv]


def fragmented(conv, ident):
    """Packets with payload cut into IP fragments (v4 or v6), one frame each."""
    out = []
    for k, (t, pkt, ver) in enumerate(conv):
        if len(pkt) > 80:
            parts = (g.ipv4_fragments(pkt, 16, ident=ident + k) if ver == 4 else
                     g.ipv6_fragments(pkt, 16, ident=ident + k))
            out += [g.Frame(t + i, g.ethernet(p, ver)) for i, p in enumerate(parts)]
        else:
            out.append(g.Frame(t, g.ethernet(pkt, ver)))
    return out


def mixed_frames():
    """Interleaved connections: plain IPv4 and IPv6, tunnelled (GRE, VXLAN; one with the
    4-tuple of a plain one), IP fragments (v4, v6), and one 4-tuple used by three
    incarnations (the last while the second is in TIME_WAIT)."""
    ms = 1_000_000
    frames = []
    for k in range(14):
        frames += plain(conversation(f"10.0.{k % 3}.{k + 1}", "10.9.0.1", 40000 + k, 80,
                                     k * 3 * ms, end=("fin", "rst", "open")[k % 3]))
    for k in range(5):
        frames += plain(conversation(f"2001:db8::{k + 1}", "2001:db8::99", 50000 + k, 443,
                                     k * 5 * ms + 2 * ms))
    for k in range(3):
        frames += in_gre(conversation(f"172.16.0.{k + 1}", "172.16.9.9", 41000 + k, 8080,
                                      k * 4 * ms + ms))
        frames += vxlan(conversation(f"192.168.5.{k + 1}", "192.168.9.9", 42000 + k, 22,
                                     k * 4 * ms + 3 * ms))
    frames += vxlan(conversation("10.0.1.2", "10.9.0.1", 40001, 80, 200 * ms))   # a plain one's
    for k in range(3):
        frames += fragmented(conversation(f"10.7.0.{k + 1}", "10.7.9.9", 43000 + k, 25,
                                          k * 6 * ms + 4 * ms, data=b"y" * 100), 0x100 * k)
    frames += fragmented(conversation("2001:db8:7::1", "2001:db8:7::9", 43100, 25, 9 * ms,
                                      data=b"z" * 100), 0x7000)
    for isn, t0 in ((1000, 0), (90_000, 400 * ms), (7_000_000, 800 * ms)):
        frames += plain(conversation("10.3.3.3", "10.9.0.1", 45555, 80, t0, isn_c=isn,
                                     isn_s=isn + 77))
    return frames


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    return write_frames(tmp_path_factory.mktemp("shares") / "mixed.pcap", mixed_frames())


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """A slice of the benchmark's synthetic capture: the same generator, 2,000 connections."""
    out = tmp_path_factory.mktemp("synthetic") / "synthetic-2k.pcap"
    subprocess.run([sys.executable, str(ROOT / "tests" / "benchmarks" / "make_synthetic.py"),
                    str(out), "--connections", "2000", "--duration", "20", "-q"], check=True)
    return out


# -- the tables ------------------------------------------------------------------------------

@pytest.mark.parametrize("path", SAMPLE_CAPTURES, ids=lambda p: p.name)
def test_sample_captures_merge_exactly(path):
    assert_shares_merge_exactly(path)


@needs_corpus
@pytest.mark.corpus
def test_zeek_corpus_traces_merge_exactly():
    assert CORPUS_TRACES
    for path in CORPUS_TRACES:
        assert_shares_merge_exactly(path)


@needs_corpus
@pytest.mark.corpus
@pytest.mark.parametrize("name", ["chksums.localhost-bad-chksum.pcap", "tunnels.gre-sample.pcap",
                                  "tcp.handshake-reorder.pcap"])
def test_zeek_view_verifying_checksums_merges_exactly(name):
    """Zeek's view without -C drops segments with a bad IPv4 header checksum (they do not move
    its clock either)."""
    path = next((p for p in CORPUS_TRACES if p.name == name), None)
    if path is None:
        pytest.skip(f"{name} is not in this corpus")
    assert_shares_merge_exactly(path, ReadOptions(zeek=ZeekConfig(ignore_checksums=False)))
    assert_shares_merge_exactly(path, ReadOptions(verify_checksums=True))   # the reader drops


def test_tunnels_fragments_and_reused_tuples_merge_exactly(mixed):
    whole = assert_shares_merge_exactly(mixed)
    flows = whole.table
    # (the VXLAN copy of a plain 4-tuple, same ISN, joins the plain connection)
    assert flows["tunneled"].sum() == 6
    assert whole.stats.tcp_packets > 0
    # the three incarnations of one 4-tuple are three connections, each naming the one before
    prev = whole.tracked.conns["prev"]
    assert (prev >= 0).sum() >= 2
    for i in np.flatnonzero(prev >= 0):
        assert tuples(_rows(flows, [i])) == tuples(_rows(flows, [int(prev[i])]))
        assert flows["first_frame"][int(prev[i])] < flows["first_frame"][i]


def _rows(table, rows):
    return {name: np.asarray(table[name])[rows] for name in
            ("client_ip", "client_port", "server_ip", "server_port")}


def test_synthetic_slice_merges_exactly(synthetic):
    whole = assert_shares_merge_exactly(synthetic)
    assert len(whole.table) == 2000


def test_small_batches_and_zeek_sweeps_merge_exactly(synthetic, monkeypatch):
    """Many batches, and Zeek's view swept every 5,000 rows of the capture (a share sweeps at
    the same rows, at the capture's latest time, though it holds a third of them)."""
    monkeypatch.setattr(zeek, "SWEEP_ROWS", 5000)
    assert_shares_merge_exactly(synthetic, ReadOptions(batch_rows=3000))


def test_a_clock_that_steps_back_merges_exactly(tmp_path, monkeypatch):
    """Time going backwards by more than Zeek's timeouts: what a sweep removed depends on the
    latest time of the whole capture, which every share sees."""
    monkeypatch.setattr(zeek, "SWEEP_ROWS", 8)
    ms, s = 1_000_000, 1_000_000_000
    frames = []
    for k in range(6):
        frames += plain(conversation(f"10.1.0.{k + 1}", "10.9.0.1", 46000 + k, 80,
                                     k * ms, end="open"))
    # a late connection, in another share than the first one for 2 and for 3 shares
    port = next(q for q in range(47000, 47100)
                if all(owner(tmp_path, ("10.2.0.1", q), n) !=
                       owner(tmp_path, ("10.1.0.1", 46000), n) for n in SHARES))
    late = plain(conversation("10.2.0.1", "10.9.0.1", port, 80, 4000 * s))
    # the first connection again, 100 s in: within Zeek's 300 s inactivity timeout of its
    # last packet, but long after the sweep at the capture's latest time (4000 s)
    back = plain(conversation("10.1.0.1", "10.9.0.1", 46000, 80, 100 * s))[3:]
    path = tmp_path / "steps-back.pcap"
    path.write_bytes(g.pcap_bytes(sorted(frames, key=lambda f: f.ts_ns) + late + back))
    assert_shares_merge_exactly(path, ReadOptions(batch_rows=4))


@pytest.mark.skipif(shutil.which("editcap") is None, reason="needs editcap (wireshark-common)")
def test_rotated_set_merges_exactly(tmp_path):
    """A capture split into pieces by editcap, read as one timeline (a CaptureSet)."""
    from traceaudit.capture import group_captures, scan_paths
    subprocess.run(["editcap", "-c", "700", str(SAMPLES / "time-wait-pileup.pcap"),
                    str(tmp_path / "ring.pcap")], check=True, capture_output=True)
    (rotated,) = group_captures(scan_paths([tmp_path]).files)
    assert isinstance(rotated, CaptureSet) and len(rotated.files) > 3
    whole = assert_shares_merge_exactly(rotated)
    assert len(whole.table) == 2000


@needs_tshark
def test_tshark_reader_merges_exactly():
    """Batches from the tshark reader (no per-row checksum marks: Zeek's view without -C
    reads the capture a second time for them)."""
    path = SAMPLES / "linger-zero-service.pcap"
    assert_shares_merge_exactly(path, ReadOptions(reader="tshark",
                                                  zeek=ZeekConfig(ignore_checksums=False)),
                                shares=(2,))


def test_a_pipe_is_not_split(tmp_path):
    import os
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match="read only once"):
        analyze_share(fifo, ReadOptions(), 0, 2)
    missing = analyze_share(tmp_path / "missing.pcap", ReadOptions(), 0, 2)
    assert missing.stats.error is not None          # a bad file is told, as in one read


def owner(tmp_path, client, n):
    """The share of ``n`` that the 4-tuple (client, 10.9.0.1:80) falls into."""
    from traceaudit.capture import read_all
    from traceaudit.parallel.shares import share_of_batch
    path = write_frames(tmp_path / "one.pcap",
                        plain(conversation(client[0], "10.9.0.1", client[1], 80, 0)))
    batch, _ = read_all(path)
    return next(k for k in range(n) if len(share_of_batch(batch, k, n)))


def test_damaged_capture_merges_exactly(tmp_path):
    data = (SAMPLES / "time-wait-pileup.pcap").read_bytes()
    path = tmp_path / "cut.pcap"
    path.write_bytes(data[:len(data) * 2 // 3] + b"\xff" * 40)
    whole = assert_shares_merge_exactly(path)
    assert whole.stats.error is not None and len(whole.table)


def test_merge_refuses_missing_or_foreign_shares():
    path = SAMPLES / "linger-zero-service.pcap"
    parts = shares_of(path, 3)
    with pytest.raises(ValueError, match="exactly once"):
        merge_shares(parts[:2])
    with pytest.raises(ValueError, match="exactly once"):
        merge_shares([parts[0], parts[0], parts[2]])
    with pytest.raises(TypeError):
        merge_shares([analyze_capture(path)])
    other = analyze_share(SAMPLES / "time-wait-pileup.pcap", ReadOptions(), 1, 3)
    with pytest.raises(ValueError, match="differently"):
        merge_shares([parts[0], other, parts[2]])
    with pytest.raises(ValueError):
        analyze_share(path, ReadOptions(), 3, 3)


# -- the rendered outputs --------------------------------------------------------------------

def read_in_shares(n, merged: list, csv: bool):
    """``pipeline.analyze_captures`` with every capture read as ``n`` shares and merged (each
    merge is appended to ``merged``); ``csv``: the shares render their CSV rows."""
    from traceaudit.capture.chain import remainder

    def analyze_captures(paths, options=ReadOptions(), progress=None):
        for path in paths:
            while path is not None:
                analysis = merge_shares(shares_of(path, n, options, csv))
                merged.append(analysis)
                yield analysis
                path = remainder(path, analysis.stats) if isinstance(path, CaptureSet) else None
    return analyze_captures


def outputs(paths, out_dir):
    """(analyze --json, flows --format csv) bytes of a run over ``paths``."""
    out_dir.mkdir()
    # (--jobs 1: read in this process, where the test's stand-in reader is)
    cli_run("analyze", *paths, "--json", out_dir / "a.json", "--exit-zero", "--jobs", "1")
    cli_run("flows", *paths, "--format", "csv", "-o", out_dir / "f.csv", "--jobs", "1")
    doc = (out_dir / "a.json").read_bytes()
    return re.sub(rb'"generated_at":"[^"]*"', b'"generated_at":""', doc), \
        (out_dir / "f.csv").read_bytes()


def test_rendered_outputs_are_byte_identical(tmp_path, monkeypatch, mixed, synthetic):
    paths = [SAMPLES, mixed, synthetic]
    want = outputs(paths, tmp_path / "one")
    assert len(want[0]) > 10_000 and want[1].count(b"\n") > 2000
    for n, csv in ((2, True), (3, True), (3, False)):
        merged = []
        monkeypatch.setattr(runner, "analyze_captures", read_in_shares(n, merged, csv))
        got = outputs(paths, tmp_path / f"shares-{n}-{csv}")
        assert len(merged) == 2 * (len(SAMPLE_CAPTURES) + 2)     # both commands, every capture
        # (the rows rendered by the shares were used, where there were rows)
        assert all(getattr(a.table, "csv_rows", None) is not None
                   for a in merged if len(a.table)) == csv
        assert got[0] == want[0], f"analyze --json differs with {n} shares"
        assert got[1] == want[1], f"flows --format csv differs with {n} shares (csv {csv})"


def test_rows_rendered_by_shares_are_the_csv_of_one_read(synthetic):
    from traceaudit.report.flows import render_csv
    want = b"".join(render_csv([analyze_capture(synthetic).table]))
    for n in SHARES:
        merged = merge_shares(shares_of(synthetic, n, csv=True))
        assert merged.table.csv_rows is not None
        assert b"".join(render_csv([merged.table])) == want
        assert b"".join(render_csv([merged.table, merged.table])).count(b"\nid,") == 0
        merged.table["id"] = np.asarray(merged.table["id"])     # a change drops them
        assert merged.table.csv_rows is None
        assert b"".join(render_csv([merged.table])) == want


def test_share_rows_filter_matches_the_flow_key():
    """The compiled filter keeps both directions of a 4-tuple together, and splits distinct
    4-tuples across shares (not all in one)."""
    from traceaudit.capture import read_all
    from traceaudit.parallel.shares import share_of_batch
    batch, _ = read_all(SAMPLES / "time-wait-pileup.pcap")
    owner = np.full(len(batch), -1)
    for k in range(3):
        rows = np.isin(batch["frame"], share_of_batch(batch, k, 3)["frame"])
        assert (owner[rows] == -1).all()
        owner[rows] = k
    assert (owner >= 0).all()
    key = {}
    for i, (a, p, b, q) in enumerate(zip(batch["src_lo"].tolist(), batch["sport"].tolist(),
                                         batch["dst_lo"].tolist(), batch["dport"].tolist())):
        assert key.setdefault(tuple(sorted([(a, p), (b, q)])), owner[i]) == owner[i]
    counts = np.bincount(list(key.values()), minlength=3)
    assert counts.min() > len(key) / 5, counts        # 2,000 4-tuples, ~667 a share


def test_shares_cross_processes_by_pickle(tmp_path):
    """A share is sent back by a worker process: it pickles, a damaged capture's error too
    (its class, message and attributes), and the unpickled shares merge the same."""
    import pickle

    data = (SAMPLES / "close-wait-leak-rst.pcap").read_bytes()
    path = tmp_path / "cut.pcap"
    path.write_bytes(data[:len(data) // 2] + b"\xff" * 40)
    parts = shares_of(path, 2)
    assert parts[0].stats.error is not None
    back = [pickle.loads(pickle.dumps(p, protocol=pickle.HIGHEST_PROTOCOL)) for p in parts]
    assert type(back[0].stats.error) is type(parts[0].stats.error)
    assert back[0].stats.error.offset == parts[0].stats.error.offset
    assert_same_analysis(analyze_capture(path), merge_shares(back))
    # (every kind of capture error pickles: test_parallel.py)


def test_shares_in_worker_processes(synthetic):
    """``analyze_in_shares`` with a forkserver process pool, as ``--jobs`` runs it."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from traceaudit.parallel.shares import analyze_in_shares
    from traceaudit.report.flows import render_csv
    options = ReadOptions(read_ahead=False)
    whole = analyze_capture(synthetic, options)
    ctx = multiprocessing.get_context("forkserver")
    with ProcessPoolExecutor(2, mp_context=ctx) as pool:
        assert_same_analysis(whole, analyze_in_shares(synthetic, options, 2, pool))
        flows = analyze_in_shares(synthetic, options, 3, pool, csv=True, flows_only=True)
    assert len(flows.tracked.conns) == 0 and flows.zeek_table is None
    assert flows.table.csv_rows is not None
    assert b"".join(render_csv([flows.table])) == b"".join(render_csv([whole.table]))
    assert_same_columns(whole.table, flows.table)
