"""`traceaudit analyze --json` shape, `traceaudit states --at`, and `flows` tracking columns."""

from __future__ import annotations

import json

from click.testing import CliRunner

import pcapgen as g
from pcapgen import ACK, FIN, PSH
from traceaudit.cli import main, parse_moment


def capture(tmp_path):
    """Connection 0 closes by the client; connection 1 is left in CLOSE_WAIT by the server."""
    a = g.Conversation().handshake().send("c", ACK | PSH, b"hi").send("s", ACK).close_by("c")
    b = g.Conversation(cport=40001, t0_ns=a.t + 10**9).handshake()
    b.send("c", FIN | ACK).send("s", ACK)
    frames = sorted(a.frames + b.frames, key=lambda f: f.ts_ns)
    p = tmp_path / "two.pcap"
    p.write_bytes(g.pcap_bytes(frames))
    return p, a, b


def test_analyze_json_has_the_documented_shape(tmp_path):
    p, _, _ = capture(tmp_path)
    out = tmp_path / "r.json"
    result = CliRunner().invoke(main, ["analyze", str(p), "--json", str(out)])
    assert result.exit_code == 1, result.output        # connection 1 is a CLOSE_WAIT leak
    doc = json.loads(out.read_text())
    assert doc["format"] == 1
    (cap,) = doc["captures"]
    assert {"path", "packets", "tcp_packets", "first_ts", "last_ts", "warnings"} <= set(cap)
    assert cap["packets"] == cap["tcp_packets"] == 13
    c0, c1 = doc["connections"]
    for c in (c0, c1):
        assert {"id", "capture", "client_ip", "client_port", "server_ip", "server_port",
                "start_ts", "end_ts", "close_role", "close_kind", "client", "server"} <= set(c)
        for side in ("client", "server"):
            assert {"final_state", "timeline"} <= set(c[side])
            assert all({"ts", "frame", "state"} <= set(e) for e in c[side]["timeline"])
    assert c0["client"]["final_state"] == "TIME_WAIT" and c0["close_kind"] == "graceful"
    # Zeek's view: the server sent no data on connection 0 (no 'd'); connection 1 is S2 (the
    # originator closed, the responder is still established)
    assert (c0["conn_state"], c0["history"], c0["zeek_flipped"]) == ("SF", "ShADaFf", False)
    assert (c1["conn_state"], c1["history"]) == ("S2", "ShAFa")
    assert c1["server"]["final_state"] == "CLOSE_WAIT" and c1["client"]["final_state"] == \
        "FIN_WAIT_2"
    assert c1["close_role"] == "client" and c1["close_kind"] == "half_closed"
    assert [e["state"] for e in c1["server"]["timeline"]] == ["SYN_RECEIVED", "ESTABLISHED",
                                                              "CLOSE_WAIT"]
    leak, hang = sorted(doc["findings"], key=lambda f: f["rule"], reverse=True)
    for f in (leak, hang):
        assert {"rule", "code", "severity", "connection", "endpoint", "ts", "frames", "message",
                "remediation"} <= set(f)
        assert f["connection"] == 1 and f["capture"] == str(p)
    # the capture ends right after the FIN was acknowledged: a leak the capture cannot time
    assert (leak["rule"], leak["endpoint"], leak["severity"], leak["confidence"]) == (
        "half-closed-leak", "server", "warning", "low")
    assert (hang["rule"], hang["endpoint"]) == ("fin-wait-2-hang", "client")
    cw = next(e for e in c1["server"]["timeline"] if e["state"] == "CLOSE_WAIT")
    assert cw["frame"] in leak["frames"] and abs(leak["ts"] - cw["ts"]) < 1e-6


def test_states_at_a_moment(tmp_path):
    p, a, b = capture(tmp_path)
    ts = b.frames[-1].ts_ns + 1000
    moment = f"{ts // 10**9}.{ts % 10**9:09d}"
    result = CliRunner().invoke(main, ["states", str(p), "--at", moment])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert any(ln.startswith("CLOSE_WAIT") and "10.0.0.2:80" in ln and "10.0.0.1:40001" in ln
               for ln in lines)
    assert any(ln.startswith("FIN_WAIT_2") and "10.0.0.1:40001" in ln for ln in lines)
    assert any(ln.startswith("TIME_WAIT") and "10.0.0.1:40000" in ln for ln in lines)
    assert lines[-1] == "census: CLOSE_WAIT 1, FIN_WAIT_2 1, TIME_WAIT 1"
    # relative seconds: before anything happened, nobody holds state
    early = CliRunner().invoke(main, ["states", str(p), "--at", "0"])
    assert "SYN_SENT" in early.output and "ESTABLISHED" not in early.output


def test_parse_moment():
    assert parse_moment("1.5", 10**18) == 10**18 + 1_500_000_000
    assert parse_moment("1700000000.25", None) == 1_700_000_000_250_000_000
    assert parse_moment("2023-11-14T22:13:20Z", None) == 1_700_000_000 * 10**9


def test_flows_gain_tracking_columns(tmp_path):
    p, _, _ = capture(tmp_path)
    result = CliRunner().invoke(main, ["flows", str(p), "--format", "csv"])
    header = result.output.splitlines()[0].split(",")
    for col in ("client_state", "server_state", "close_role", "close_kind"):
        assert col in header


def test_report_on_standard_output_is_one_document(tmp_path):
    """`--json -` writes only the report on standard output (the summary goes to standard
    error), so it pipes into jq; to a file, the summary stays on standard output."""
    import subprocess
    import sys
    p, _, _ = capture(tmp_path)
    run = [sys.executable, "-m", "traceaudit.cli", "analyze", str(p)]
    piped = subprocess.run(run + ["--json", "-"], capture_output=True, text=True)
    assert piped.returncode == 1, piped.stderr
    doc = json.loads(piped.stdout)                        # nothing but the document
    assert len(doc["connections"]) == 2
    assert "Findings by rule" in piped.stderr
    to_file = subprocess.run(run + ["--json", str(tmp_path / "r.json")], capture_output=True,
                             text=True)
    assert "Findings by rule" in to_file.stdout
