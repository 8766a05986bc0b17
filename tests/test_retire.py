"""Retiring finished connections while reading (``traceaudit flows --format csv|parquet``):
the rows must be exactly those of a read that keeps every connection."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import pcapgen as g
from conftest import CORPUS_TRACES, SAMPLE_CAPTURES
from pcapgen import ACK, FIN, RST, SYN
from traceaudit.cli import main
from traceaudit.pipeline import ReadOptions, analyze_capture
from traceaudit.report.flows import render_csv, render_parquet
from traceaudit.retire import RetireOptions
from traceaudit.tracking.tracker import TrackerConfig
from traceaudit.tracking.zeek import ZeekConfig

#: Retire as eagerly as possible: every batch of 64 packets, no grace period, and a Bloom
#: filter so small that most new 4-tuples look like returning ones (false positives are
#: repaired by the second read, so they must not change anything either).
EAGER = RetireOptions(grace_s=0.0, sweep_conns=0, bloom_bits=64)
#: Short timers, so that connections finish (and may retire) within these short traces.
FAST = dict(tracker=TrackerConfig(msl2_s=0.001),
            zeek=ZeekConfig(tcp_inactivity_timeout_s=0.5, initial_inactivity_timeout_s=0.5,
                            long_inactivity_s=0.5, tcp_attempt_delay_s=0.01,
                            tcp_close_delay_s=0.01, tcp_partial_close_delay_s=0.01))


def csv_of(path, retire, batch_rows=1 << 16, **options) -> bytes:
    a = analyze_capture(path, ReadOptions(batch_rows=batch_rows, excerpts=False,
                                          frames_soon=False, retire=retire, **options))
    return b"".join(render_csv([a.table] if len(a.table) else []))


@pytest.mark.parametrize("options", [FAST, dict(FAST, zeek=None)], ids=["zeek", "no-zeek"])
def test_retiring_read_equals_full_read_on_every_capture(options, counted):
    paths = CORPUS_TRACES + SAMPLE_CAPTURES
    assert paths
    differ = [p.name for p in paths
              if csv_of(p, EAGER, batch_rows=64, **options) != csv_of(p, None, **options)]
    print(f"{len(paths)} captures, {counted['retired']} rows retired, "
          f"{counted['repaired']} 4-tuples re-read")
    assert differ == []
    assert counted["retired"] > 1000 and counted["repaired"] > 100


def late_capture(tmp_path, tail) -> str:
    """A closed connection; 100 s later another connection (its packets let the first one
    retire); 200 s after the close ``tail(conversation)`` on the first 4-tuple."""
    c = g.Conversation().handshake().send("c", ACK | 0x08, b"hi")
    c.close_by("c")
    other = g.Conversation(cport=40001, t0_ns=c.t + 100 * 10**9).handshake().close_by("s")
    c.gap_ns = 200 * 10**9
    tail(c)
    path = tmp_path / "late.pcap"
    path.write_bytes(g.pcap_bytes(sorted(c.frames + other.frames, key=lambda f: f.ts_ns)))
    return str(path)


CASES = {
    # a continuation: the 4-tuple comes back without a new SYN (must be re-read)
    "late-rst": (lambda c: c.send("s", RST | ACK), 1),
    "late-fin-retransmission": (lambda c: c.send("c", FIN | ACK, seq=c.nxt["c"] - 1), 1),
    # a SYN with the old ISN is a retransmission, not a new incarnation (re-read)
    "same-isn-syn": (lambda c: c.send("c", SYN, seq=c.cisn), 1),
    # a new ISN starts a new incarnation: exact without a second read
    "port-reuse": (lambda c: c.send("c", SYN, seq=777_777).send("s", SYN | ACK, seq=1, ack=777_778)
                   .send("c", ACK, seq=777_778, ack=2), 0),
}


@pytest.mark.parametrize("case", CASES)
def test_a_returning_4_tuple(tmp_path, case, counted):
    tail, rereads = CASES[case]
    path = late_capture(tmp_path, tail)
    options = RetireOptions(grace_s=0.0, sweep_conns=0)
    got = csv_of(path, options, batch_rows=2)
    assert got == csv_of(path, None)
    assert counted["retired"] >= 1
    assert counted["repaired"] == rereads


def test_cli_csv_and_parquet_from_a_retiring_read(tmp_path):
    path = late_capture(tmp_path, lambda c: c.send("s", RST | ACK))
    full = analyze_capture(path, ReadOptions(excerpts=False, frames_soon=False))
    out = tmp_path / "flows.parquet"
    result = CliRunner().invoke(main, ["flows", path, "--format", "parquet", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert pq.read_table(out).equals(full.table.arrow())
    result = CliRunner().invoke(main, ["flows", path, "--format", "csv"])
    assert result.stdout_bytes == b"".join(render_csv([full.table]))
    assert b"".join(render_parquet([full.table])) == out.read_bytes()


def test_spilled_table_as_a_dataframe(tmp_path, monkeypatch):
    """The in-memory view of a spilled table (terminal table and JSON formats) equals the full
    read's flow table, across several buckets of first frames."""
    from traceaudit.retire import spill
    monkeypatch.setattr(spill, "BUCKET_FRAMES", 4)     # a few frames a bucket: several chunks
    path = late_capture(tmp_path, lambda c: c.send("s", RST | ACK))
    full = analyze_capture(path, ReadOptions(excerpts=False, frames_soon=False))
    spilled = analyze_capture(path, ReadOptions(
        batch_rows=2, excerpts=False, frames_soon=False,
        retire=RetireOptions(grace_s=0.0, sweep_conns=0)))
    assert len(list(spilled.table.chunks())) > 1
    assert spilled.table.frame().equals(full.flows)
    spilled.table.close()


def test_retired_table_in_memory_equals_full_read_across_buckets(tmp_path, monkeypatch):
    """The in-memory form of a spilled table (terminal table, JSON) joins its buckets: each
    bucket codes its addresses into its own texts, and the join must keep every row's address
    (a join that reused the first bucket's texts would rename hosts)."""
    from traceaudit.retire import spill
    frames = []
    for k in range(40):
        c = g.Conversation(client=f"10.0.{k}.1", server=f"10.1.{k % 3}.2", cport=40000 + k,
                           t0_ns=1_700_000_000_000_000_000 + k * 10**9)
        frames += c.handshake().send("c", ACK | 0x08, b"hi").close_by("c").frames
    path = tmp_path / "hosts.pcap"
    path.write_bytes(g.pcap_bytes(sorted(frames, key=lambda f: f.ts_ns)))
    monkeypatch.setattr(spill, "BUCKET_FRAMES", 16)      # a few connections a bucket
    options = dict(batch_rows=64, excerpts=False, frames_soon=False, **FAST)
    retired = analyze_capture(str(path), ReadOptions(retire=EAGER, **options)).table
    full = analyze_capture(str(path), ReadOptions(retire=None, **options)).table
    assert len(list(retired.chunks())) > 5
    joined = retired.columns()
    assert len(joined) == len(full) == 40
    for name in ("client_ip", "server_ip", "client_port", "close_role", "conn_state"):
        assert joined[name].tolist() == full[name].tolist(), name
    assert sorted(set(joined["client_ip"].tolist())) == sorted(f"10.0.{k}.1" for k in range(40))
