"""JSON report (pure: analyses in, text out).

FORMAT_VERSION history:
  1: captures, connections (with both endpoints' final_state and timeline); findings list.
"""

from __future__ import annotations

from typing import Iterable, Iterator

import numpy as np
import orjson

from traceaudit.pipeline import CaptureAnalysis
from traceaudit.tracking.connections import state_names
from traceaudit.tracking.states import REASON_TEXT, Reason
from traceaudit.tracking.tracker import EV_CONN, EV_ENDPOINT, EV_FRAME, EV_REASON, EV_STATE, EV_TS

FORMAT_VERSION = 1

_REASONS = {int(r): REASON_TEXT[r] for r in Reason}
_CONN_FIELDS = ["id", "client_ip", "client_port", "server_ip", "server_port", "ip_version",
                "start_ts", "end_ts", "first_frame", "last_frame", "client_packets",
                "server_packets", "client_bytes", "server_bytes", "client_payload",
                "server_payload", "orientation_guessed", "tunneled", "midstream", "close_role",
                "close_kind", "conn_state", "history", "zeek_flipped"]


def capture_entry(a: CaptureAnalysis) -> dict:
    st = a.stats
    return {
        "path": st.path,
        "format": st.format,
        "link_types": list(st.link_types),
        "packets": st.packets,
        "tcp_packets": st.tcp_packets,
        "connections": len(a.flows),
        "first_ts": None if st.first_ts_ns is None else st.first_ts_ns / 1e9,
        "last_ts": None if st.last_ts_ns is None else st.last_ts_ns / 1e9,
        "warnings": list(st.warnings),
        "error": None if st.error is None else str(st.error),
    }


def connection_entries(a: CaptureAnalysis) -> list[dict]:
    """One dict per connection, with both endpoints' timelines (plain Python values only)."""
    flows = a.flows
    if flows.empty:
        return []
    fields = [f for f in _CONN_FIELDS if f in flows.columns]
    columns = [flows[f].tolist() for f in fields]
    timelines = _timelines(a.events, len(flows))
    finals = {"client": flows["client_state"].tolist(), "server": flows["server_state"].tolist()}
    out = []
    capture = a.stats.path
    for i, values in enumerate(zip(*columns)):
        entry = dict(zip(fields, values))
        entry["capture"] = capture
        entry["client"] = {"final_state": finals["client"][i], "timeline": timelines[i][0]}
        entry["server"] = {"final_state": finals["server"][i], "timeline": timelines[i][1]}
        out.append(entry)
    return out


_EMPTY = orjson.Fragment(b"[]")


def _timelines(events: np.ndarray, n: int) -> list[list]:
    """Per connection, [client, server] timelines as pre-serialised JSON arrays.

    Events arrive sorted by (connection, endpoint, time); each entry is written once as text
    and the group is handed to orjson as a Fragment (no dict per event: 850k events for 100k
    connections otherwise dominate the report time).
    """
    result = [[_EMPTY, _EMPTY] for _ in range(n)]
    if not len(events):
        return result
    names = state_names(events[:, EV_STATE]).tolist()
    whys = [orjson.dumps(_REASONS.get(w, "")).decode() for w in events[:, EV_REASON].tolist()]
    items = [f'{{"ts":{t!r},"frame":{fr if fr >= 0 else "null"},"state":"{st}","why":{why}}}'
             for t, fr, st, why in zip((events[:, EV_TS] / 1e9).tolist(),
                                       events[:, EV_FRAME].tolist(), names, whys)]
    group = events[:, EV_CONN] * 2 + events[:, EV_ENDPOINT]
    starts = np.flatnonzero(np.r_[True, group[1:] != group[:-1]]).tolist()
    ends = starts[1:] + [len(items)]
    for g, a, b in zip(group[starts].tolist(), starts, ends):
        result[g >> 1][g & 1] = orjson.Fragment(("[" + ",".join(items[a:b]) + "]").encode())
    return result


def render(analyses: Iterable[CaptureAnalysis], findings: list[dict] | None = None,
           *, tool_version: str, generated_at: str | None = None) -> bytes:
    """The whole report as one JSON document (what ``render_chunks`` yields, joined)."""
    return b"".join(render_chunks(analyses, findings, tool_version=tool_version,
                                  generated_at=generated_at))


def write(target, analyses: Iterable[CaptureAnalysis], findings: list[dict] | None = None,
          *, tool_version: str, generated_at: str | None = None) -> None:
    """Stream the report to ``target`` (``-`` = stdout; a file is written atomically): the
    text of at most CHUNK_CONNECTIONS connections is held in memory at a time."""
    from traceaudit.report.output import write_output
    write_output(target, render_chunks(analyses, findings, tool_version=tool_version,
                                       generated_at=generated_at))


#: Connections rendered per chunk by ``render_chunks``.
CHUNK_CONNECTIONS = 16384


def render_chunks(analyses: Iterable[CaptureAnalysis], findings: list[dict] | None = None,
                  *, tool_version: str, generated_at: str | None = None) -> Iterator[bytes]:
    """The report as consecutive pieces of bytes; joined they are byte for byte what
    ``orjson.dumps`` makes of the document ``{format, tool, generated_at, captures,
    connections (connection_entries of every analysis), findings}`` plus a newline.

    Connections are written as text column by column (each distinct string, and each number
    column, serialised by orjson once), not as one dict per connection.
    """
    analyses = list(analyses)
    head = orjson.dumps({
        "format": FORMAT_VERSION,
        "tool": {"name": "traceaudit", "version": tool_version},
        "generated_at": generated_at,
        "captures": [capture_entry(a) for a in analyses],
    })
    yield head[:-1] + b',"connections":['
    first = True
    for a in analyses:
        for chunk in _connection_chunks(a, CHUNK_CONNECTIONS):
            yield chunk if first else b"," + chunk
            first = False
    yield b'],"findings":' + orjson.dumps(findings or []) + b"}\n"


class _Memo(dict):
    """value -> its JSON text, each distinct value serialised once."""

    def __missing__(self, value):
        text = self[value] = orjson.dumps(value)
        return text


def _tokens(values: list, numeric: bool, memo: _Memo | None = None) -> list[bytes]:
    """JSON text of each value, as orjson writes it inside any container."""
    if not values:
        return []
    if numeric:          # numbers, booleans, null: no commas inside, one serialisation
        return orjson.dumps(values)[1:-1].split(b",")
    return list(map((memo if memo is not None else _Memo()).__getitem__, values))


def _connection_chunks(a: CaptureAnalysis, size: int) -> Iterator[bytes]:
    """``connection_entries(a)`` as JSON text, ``size`` connections (comma-separated) per
    piece."""
    flows = a.flows
    n = len(flows)
    if not n:
        return
    fields = [f for f in _CONN_FIELDS if f in flows.columns]
    numeric = [flows[f].dtype.kind in "biuf" for f in fields]
    capture = orjson.dumps(a.stats.path).decode()
    # the literal text around each value of a row: the fields, then capture, client
    # {final_state, timeline}, server {...}
    pieces = [p.encode() for p in ["{" + f'"{fields[0]}":'] + [f',"{f}":' for f in fields[1:]] + [
        f',"capture":{capture},"client":{{"final_state":', ',"timeline":',
        '},"server":{"final_state":', ',"timeline":', "}}"]]
    n_val = len(pieces) - 1
    memos = {f: _Memo() for f in fields}
    state_memo = _Memo()
    ev = a.events
    ev_conn = ev[:, EV_CONN]
    for lo in range(0, n, size):
        hi = min(n, lo + size)
        rows = flows.iloc[lo:hi]
        values = [_tokens(rows[f].tolist(), num, memos[f]) for f, num in zip(fields, numeric)]
        e0, e1 = np.searchsorted(ev_conn, [lo, hi])
        tl = _timeline_texts(ev[e0:e1], lo, hi - lo)
        values.append(_tokens(rows["client_state"].tolist(), False, state_memo))
        values.append(tl[0::2])
        values.append(_tokens(rows["server_state"].tolist(), False, state_memo))
        values.append(tl[1::2])
        # interleave literal pieces and values: row r occupies 2 * n_val + 1 slots
        m = hi - lo
        width = 2 * n_val + 1
        out: list[bytes] = [b""] * (width * m)
        out[0::width] = [pieces[0]] * m
        for k in range(n_val):
            out[2 * k + 1::width] = values[k]
            lit = pieces[k + 1]
            out[2 * k + 2::width] = [lit] * m if k + 1 < n_val else [lit + b","] * m
        out[-1] = pieces[-1]                         # no comma after the chunk's last row
        yield b"".join(out)


_EMPTY_TEXT = b"[]"


def _float_texts(values: np.ndarray) -> list[bytes]:
    """``repr`` of each float, as bytes. orjson writes the same shortest round-trip digits in
    the same positional form wherever repr is positional (0 and 1e-4 <= x < 1e16, checked on
    millions of values); repr is kept for anything else."""
    out = orjson.dumps(values.tolist())[1:-1].split(b",") if len(values) else []
    odd = np.flatnonzero(~((values == 0) | ((values >= 1e-4) & (values < 1e16))))
    for i in odd.tolist():
        out[i] = repr(float(values[i])).encode()
    return out


def _timeline_texts(events: np.ndarray, first: int, n: int) -> list[bytes]:
    """[client, server] timeline JSON text of connections first .. first+n-1, flattened
    (index 2 * (conn - first) + endpoint): each entry
    ``{"ts":repr(seconds),"frame":frame or null,"state":"NAME","why":"text"}``."""
    out = [_EMPTY_TEXT] * (2 * n)
    m = len(events)
    if not m:
        return out
    ts = _float_texts(events[:, EV_TS] / 1e9)
    frames = events[:, EV_FRAME]
    fr = orjson.dumps(frames.tolist())[1:-1].split(b",")
    for i in np.flatnonzero(frames < 0).tolist():
        fr[i] = b"null"
    key = events[:, EV_STATE] * 4096 + events[:, EV_REASON]
    tail = list(map(_tail_memo.__getitem__, key.tolist()))
    group = (events[:, EV_CONN] - first) * 2 + events[:, EV_ENDPOINT]
    starts = np.flatnonzero(np.r_[True, group[1:] != group[:-1]])
    # each event: sep '{"ts":' ts ',"frame":' frame tail; the group's first sep opens '['
    toks: list[bytes] = [b""] * (5 * m)
    toks[0::5] = [b',{"ts":'] * m
    for i in starts.tolist():
        toks[5 * i] = b'[{"ts":'
    toks[1::5] = ts
    toks[2::5] = [b',"frame":'] * m
    toks[3::5] = fr
    toks[4::5] = tail
    ends = np.r_[starts[1:], m]
    for g, a, b in zip(group[starts].tolist(), (5 * starts).tolist(), (5 * ends).tolist()):
        out[g] = b"".join(toks[a:b]) + b"]"
    return out


class _TailMemo(dict):
    """state * 4096 + reason -> ',"state":"NAME","why":"TEXT"}' (as ``_timelines`` writes)."""

    def __missing__(self, key):
        state, reason = divmod(key, 4096)
        name = state_names(np.array([state], np.int64))[0]
        why = orjson.dumps(_REASONS.get(reason, "")).decode()
        text = self[key] = f',"state":"{name}","why":{why}}}'.encode()
        return text


_tail_memo = _TailMemo()
