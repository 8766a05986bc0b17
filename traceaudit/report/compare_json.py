"""``traceaudit compare --json FILE``: the whole comparison as one JSON document (pure:
comparison in, bytes out; the layout is in docs/compare.md).

FORMAT_VERSION history:
  1: captures, clock, summary, connections (matched pairs with their dropped and created
     packets), unmatched, exit_code.
"""

from __future__ import annotations

import orjson

from traceaudit.compare import Comparison, ConnectionPair, PathPacket
from traceaudit.names import display_name
from traceaudit.report.compare_text import frames_filter, translation
from traceaudit.report.ladder import flag_text

FORMAT_VERSION = 1


def render(c: Comparison, *, tool_version: str, generated_at: str, elapsed_s: float) -> bytes:
    al = c.alignment
    doc = {
        "format": FORMAT_VERSION,
        "kind": "compare",
        "tool": {"name": "traceaudit", "version": tool_version},
        "generated_at": generated_at,
        "elapsed_s": round(elapsed_s, 3),
        "captures": {side: _capture(v) for side, v in (("a", c.a), ("b", c.b))},
        "clock": {"offset_ns": al.offset_ns, "samples": al.offset_samples,
                  "one_way_delay_ns": al.delay_ns if al.delay_ns >= 0 else None,
                  "pairing_tolerance_ns": al.tolerance_ns},
        "summary": {"matched": len(c.pairs), "unmatched_a": len(c.unmatched_a),
                    "unmatched_b": len(c.unmatched_b), "translated":
                    sum(1 for p in c.pairs if p.translated),
                    "with_differences": len(c.differing), "dropped": c.dropped,
                    "created": c.created},
        "connections": [_pair(p) for p in c.pairs],
        "unmatched": {side: [{"connection": u.conn, "client": u.client, "server": u.server,
                              "packets": u.packets, "first_frame": u.first_frame,
                              "start_ts": u.start_ts,
                              "display_filter": f"tcp.stream eq {u.conn}"} for u in left]
                      for side, left in (("a", c.unmatched_a), ("b", c.unmatched_b))},
        "exit_code": c.exit_code,
    }
    return orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)


def _capture(v) -> dict:
    st = v.stats
    return {"path": display_name(v.path), "packets": st.packets, "tcp_packets": st.tcp_packets,
            "connections": len(v.flows), "first_ts_ns": st.first_ts_ns,
            "last_ts_ns": st.last_ts_ns, "error": str(st.error) if st.error else None}


def _pair(p: ConnectionPair) -> dict:
    return {
        "a": {"connection": p.conn_a, "client": p.client_a, "server": p.server_a,
              "packets": p.packets_a, "display_filter": frames_filter(p, "a")},
        "b": {"connection": p.conn_b, "client": p.client_b, "server": p.server_b,
              "packets": p.packets_b, "display_filter": frames_filter(p, "b")},
        "translation": translation(p) or None,
        "matched_by": list(p.evidence),
        "client_side": p.client_side,
        "client_side_from": p.client_side_from,
        "seen_at_both": p.seen_both,
        "not_judged": p.not_judged,
        "resegmented": p.resegmented,
        "dropped": [_packet(x) for x in p.dropped],
        "created": [_packet(x) for x in p.created],
    }


def _packet(x: PathPacket) -> dict:
    return {"seen_in": x.seen_in, "frame": x.frame,
            "after_frame_in_other": x.after_other_frame, "ts": x.ts_ns / 1e9, "ts_ns": x.ts_ns,
            "direction": x.direction, "flags": flag_text(x.flags), "seq": x.seq,
            "ack": x.ack, "len": x.payload_len, "tsval": x.tsval, "tsecr": x.tsecr,
            "after_other_capture_end": x.after_other_end}
