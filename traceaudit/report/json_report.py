"""JSON report (pure: analyses in, text out).

FORMAT_VERSION history:
  1: captures, connections (with both endpoints' final_state and timeline); findings list.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Iterable, Iterator

import numpy as np
import orjson

from traceaudit.pipeline import CaptureAnalysis
from traceaudit.tracking.connections import state_names
from traceaudit.tracking.states import REASON_TEXT, Reason
from traceaudit.tracking.tracker import EV_CONN, EV_ENDPOINT, EV_FRAME, EV_REASON, EV_STATE, EV_TS

if TYPE_CHECKING:
    import pandas as pd

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
    """The whole report as one JSON document (what ``render_chunks`` yields, joined).

    The pieces are appended to one growing buffer as they come, so the document is not held
    twice (pieces and their join); ``write`` streams it to a file without holding it at all.
    """
    buf = io.BytesIO()
    for piece in render_chunks(analyses, findings, tool_version=tool_version,
                               generated_at=generated_at):
        buf.write(piece)
    return buf.getvalue()


def write(target, analyses: Iterable[CaptureAnalysis], findings: list[dict] | None = None,
          *, tool_version: str, generated_at: str | None = None) -> None:
    """Stream the report to ``target`` (``-`` = stdout; a file is written atomically): the
    text of at most CHUNK_CONNECTIONS connections is held in memory at a time."""
    from traceaudit.report.output import write_output
    write_output(target, render_chunks(analyses, findings, tool_version=tool_version,
                                       generated_at=generated_at))


#: Connections rendered per chunk by ``render_chunks``.
CHUNK_CONNECTIONS = 4096


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
    """value -> ``prefix`` + its JSON text, each distinct value serialised once."""

    def __init__(self, prefix: bytes = b"") -> None:
        super().__init__()
        self.prefix = prefix

    def __missing__(self, value):
        text = self[value] = self.prefix + orjson.dumps(value)
        return text


def _tokens(values: list, numeric: bool, memo: _Memo | None = None,
            prefix: bytes = b"") -> list[bytes]:
    """``prefix`` + the JSON text of each value, as orjson writes it inside any container
    (``memo``, when given, supplies the prefix)."""
    if not values:
        return []
    if numeric:          # numbers, booleans, null: no commas (nor NULs) inside
        body = orjson.dumps(values)[1:-1]
        if not prefix:
            return body.split(b",")
        return (prefix + body.replace(b",", b"\0" + prefix)).split(b"\0")
    return list(map((memo if memo is not None else _Memo(prefix)).__getitem__, values))


class _Column:
    """One flow-table column's values as ``label`` + JSON text, for a range of rows at a time:
    numbers serialised by orjson a range at a time, anything else factorised once (each
    distinct value serialised once; missing values as their own ``tolist`` value is)."""

    def __init__(self, series: pd.Series, label: bytes) -> None:
        import pandas as pd
        self.label = label
        self.numeric = series.dtype.kind in "biuf"
        self.series = series
        # factorising is exact for strings only (an object column may hold 1 and True, which
        # hash alike but are written differently)
        self.factorised = not self.numeric and pd.api.types.is_string_dtype(series)
        if self.numeric:
            self.values = series.to_numpy()
        elif not self.factorised:
            self.memo = _Memo(label)
        else:
            codes, uniques = pd.factorize(series, use_na_sentinel=True)
            memo = _Memo(label)
            self.codes = codes
            self.text = np.array([memo[u] for u in list(uniques)] + [b""], dtype=object)
            self.missing = np.flatnonzero(codes < 0)
            self.memo = memo

    def tokens(self, lo: int, hi: int) -> list[bytes]:
        if hi <= lo:
            return []
        if self.numeric:
            return _tokens(self.values[lo:hi].tolist(), True, prefix=self.label)
        if not self.factorised:
            return _tokens(self.series.iloc[lo:hi].tolist(), False, self.memo)
        out = self.text[self.codes[lo:hi]].tolist()
        a, b = np.searchsorted(self.missing, [lo, hi])
        for i in self.missing[a:b].tolist():
            out[i - lo] = self.memo[self.series.iloc[i:i + 1].tolist()[0]]
        return out


def _connection_chunks(a: CaptureAnalysis, size: int) -> Iterator[bytes]:
    """``connection_entries(a)`` as JSON text, ``size`` connections (comma-separated) per
    piece."""
    flows = a.flows
    n = len(flows)
    if not n:
        return
    fields = [f for f in _CONN_FIELDS if f in flows.columns]
    capture = orjson.dumps(a.stats.path).decode()
    # the literal text before each value of a row: the fields, then capture, client
    # {final_state, timeline}, server {...}; each value's token carries its literal
    labels = [p.encode() for p in ["{" + f'"{fields[0]}":'] + [f',"{f}":' for f in fields[1:]]]
    client_state = f',"capture":{capture},"client":{{"final_state":'.encode()
    timeline = b',"timeline":'
    server_state = b'},"server":{"final_state":'
    columns = [_Column(flows[f], label) for f, label in zip(fields, labels)]
    client_col = _Column(flows["client_state"], client_state)
    server_col = _Column(flows["server_state"], server_state)
    ev = a.events
    ev_conn = ev[:, EV_CONN]
    for lo in range(0, n, size):
        hi = min(n, lo + size)
        values = [col.tokens(lo, hi) for col in columns]
        e0, e1 = np.searchsorted(ev_conn, [lo, hi])
        tl = _timeline_texts(ev[e0:e1], lo, hi - lo, timeline)
        values.append(client_col.tokens(lo, hi))
        values.append(tl[0::2])
        values.append(server_col.tokens(lo, hi))
        values.append(tl[1::2])
        # row r: its value tokens, then the closing '}},' (no comma after the chunk's last)
        m = hi - lo
        width = len(values) + 1
        out: list[bytes] = [b""] * (width * m)
        for k, tokens in enumerate(values):
            out[k::width] = tokens
        out[width - 1::width] = [b"}},"] * m
        out[-1] = b"}}"
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


def _timeline_texts(events: np.ndarray, first: int, n: int, prefix: bytes = b"") -> list[bytes]:
    """``prefix`` + [client, server] timeline JSON text of connections first .. first+n-1,
    flattened (index 2 * (conn - first) + endpoint): each entry
    ``{"ts":repr(seconds),"frame":frame or null,"state":"NAME","why":"text"}``."""
    out = [prefix + _EMPTY_TEXT] * (2 * n)
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
        toks[5 * i] = prefix + b'[{"ts":'
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
