"""JSON report (pure: analyses in, text out).

FORMAT_VERSION history:
  1: captures, connections (with both endpoints' final_state and timeline); findings list.
     Times are epoch seconds: numbers that read as the double nearest the capture's time;
     timeline entries write it as exact decimal seconds (all nine digits of a nanosecond
     capture).
     Added since (fields only added, so the same version): each endpoint's rst_origin, null
     or who sent its first RST ({origin: endpoint|path, confidence, evidence, rst_ttl,
     usual_ttl}; tracking/rst_origin.py).
"""

from __future__ import annotations

import io
from itertools import islice
from typing import Iterable, Iterator

import numpy as np
import orjson

from traceaudit.capture.times import NS
from traceaudit.names import display_name
from traceaudit.flows.columns import Coded, Repeated, first_seen_codes
from traceaudit.pipeline import CaptureAnalysis
from traceaudit.report.json_text import INT, TEXT, TIMELINE, RowWriter, TextTable
from traceaudit.tracking.connections import state_names
from traceaudit.tracking.rst_origin import origin_entry, origin_keys
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
    read = a.read          # a capture that could not be opened has no counts, not zero ones
    return {
        "path": display_name(st.path),
        "read": read,
        "format": st.format,
        "link_types": list(st.link_types),
        "packets": st.packets if read else None,
        "tcp_packets": st.tcp_packets if read else None,
        "connections": len(a.table) if read else None,
        # (int / int: the double nearest the capture's time)
        "first_ts": None if st.first_ts_ns is None else st.first_ts_ns / NS,
        "last_ts": None if st.last_ts_ns is None else st.last_ts_ns / NS,
        "warnings": list(st.warnings),
        "error": None if st.error is None else str(st.error),
        **({"timeline": timeline_entry(st)} if st.parts else {}),
    }


def timeline_entry(st) -> dict:
    """A rotated set read as one timeline: why its files were joined, the files in order
    (the frames of file i are numbered after those of files 0 … i-1, as ``mergecap -a``
    numbers them: ``first_frame``), and the command that writes that merged capture."""
    from traceaudit.capture.chain import merge_command
    files, first = [], 1
    for p in st.parts:
        files.append({"path": display_name(p.path), "format": p.format, "packets": p.packets,
                      "tcp_packets": p.tcp_packets, "first_frame": first,
                      "first_ts": None if p.first_ts_ns is None else p.first_ts_ns / NS,
                      "last_ts": None if p.last_ts_ns is None else p.last_ts_ns / NS,
                      "error": None if p.error is None else str(p.error)})
        first += p.packets
    return {"joined_by": st.joined_by, "files": files, "merge_command": display_name(merge_command(st))}


def connection_entries(a: CaptureAnalysis) -> list[dict]:
    """One dict per connection, with both endpoints' timelines (plain Python values only)."""
    flows = a.flows
    if flows.empty:
        return []
    fields = [f for f in _CONN_FIELDS if f in flows.columns]
    columns = [flows[f].tolist() for f in fields]
    timelines = _timelines(a.events, len(flows))
    finals = {"client": flows["client_state"].tolist(), "server": flows["server_state"].tolist()}
    origins = _origins(a)
    out = []
    capture = display_name(a.stats.path)
    for i, values in enumerate(zip(*columns)):
        entry = dict(zip(fields, values))
        entry["capture"] = capture
        for e, side in enumerate(("client", "server")):
            entry[side] = {"final_state": finals[side][i], "timeline": timelines[i][e],
                           "rst_origin": None if origins is None else origin_entry(origins[i, e])}
        out.append(entry)
    return out


def _origins(a: CaptureAnalysis) -> np.ndarray | None:
    """Each endpoint's RST origin (tracking/rst_origin.py), None when not known."""
    from traceaudit.audit import rst_origins
    return rst_origins(a)


def _origin_values(a: CaptureAnalysis, table: TextTable) -> tuple[np.ndarray, np.ndarray]:
    """Per connection, the client's and the server's ``rst_origin`` as indices of their JSON
    texts in ``table`` (null for endpoints that sent no RST: one text for all of them)."""
    n = len(a.table)
    values = np.full(2 * n, table.add_texts([b"null"]), np.int64)    # [c * 2 + e]
    origins = _origins(a)
    if origins is not None:
        flat = origins.reshape(-1)
        rows = np.flatnonzero(flat["origin"] != 0)
        if len(rows):
            # few distinct entries (verdict, evidence, TTLs): each written once
            _, first_at, codes = np.unique(origin_keys(flat[rows]), return_index=True,
                                           return_inverse=True)
            first = table.add_texts([orjson.dumps(origin_entry(r))
                                     for r in flat[rows][first_at]])
            values[rows] = first + codes.reshape(-1)
    return values[0::2], values[1::2]


_EMPTY = orjson.Fragment(b"[]")


def _timelines(events: np.ndarray, n: int) -> list[list]:
    """Per connection, [client, server] timelines as pre-serialised JSON arrays.

    Events arrive sorted by (connection, endpoint, time); each entry is written once as text
    and the group is handed to orjson as a Fragment. Times are exact decimal seconds
    (``decimal_seconds``), which a float cannot carry for nanosecond captures.
    """
    result = [[_EMPTY, _EMPTY] for _ in range(n)]
    if not len(events):
        return result
    names = state_names(events[:, EV_STATE]).tolist()
    whys = [orjson.dumps(_REASONS.get(w, "")).decode() for w in events[:, EV_REASON].tolist()]
    items = [f'{{"ts":{decimal_seconds(t)},"frame":{fr if fr >= 0 else "null"},"state":"{st}",'
             f'"why":{why}}}'
             for t, fr, st, why in zip(events[:, EV_TS].tolist(), events[:, EV_FRAME].tolist(),
                                       names, whys)]
    group = events[:, EV_CONN] * 2 + events[:, EV_ENDPOINT]
    starts = np.flatnonzero(np.r_[True, group[1:] != group[:-1]]).tolist()
    ends = starts[1:] + [len(items)]
    for g, a, b in zip(group[starts].tolist(), starts, ends):
        result[g >> 1][g & 1] = orjson.Fragment(("[" + ",".join(items[a:b]) + "]").encode())
    return result


def decimal_seconds(ns: int) -> str:
    """A time in nanoseconds as exact decimal seconds, trailing zeros dropped (at least one
    fractional digit): 1700000000123456000 -> '1700000000.123456'. For a microsecond capture
    this is what ``repr`` writes of the nearest double (and what Wireshark shows); a JSON reader
    gets that double from either."""
    sign = "-" if ns < 0 else ""
    whole, frac = divmod(abs(ns), NS)
    return f"{sign}{whole}.{f'{frac:09d}'.rstrip('0') or '0'}"


def render(analyses: Iterable[CaptureAnalysis], findings: Iterable[dict] | None = None,
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


def write(target, analyses: Iterable[CaptureAnalysis], findings: Iterable[dict] | None = None,
          *, tool_version: str, generated_at: str | None = None,
          skipped: list[str] | None = None,
          finding_texts: Iterable[Iterator[bytes]] | None = None) -> None:
    """Stream the report to ``target`` (``-`` = stdout; a file is written atomically): the
    text of at most CHUNK_CONNECTIONS connections is held in memory at a time."""
    from traceaudit.report.output import write_output
    write_output(target, render_chunks(analyses, findings, tool_version=tool_version,
                                       generated_at=generated_at, skipped=skipped,
                                       finding_texts=finding_texts))


#: Connections and findings rendered per chunk by ``render_chunks``.
CHUNK_CONNECTIONS = 1024
CHUNK_FINDINGS = 1024


def render_chunks(analyses: Iterable[CaptureAnalysis], findings: Iterable[dict] | None = None,
                  *, tool_version: str, generated_at: str | None = None,
                  skipped: list[str] | None = None,
                  finding_texts: Iterable[Iterator[bytes]] | None = None
                  ) -> Iterator[bytes | memoryview]:
    """The report as consecutive bytes-like pieces; joined they are byte for byte what
    ``orjson.dumps`` makes of the document ``{format, tool, generated_at, captures,
    connections (connection_entries of every analysis), findings}`` plus a newline.

    Connections are written by a compiled row writer (``json_text``) from texts prepared a
    column at a time (each distinct string, and each float column, serialised by orjson
    once), not as one dict per connection. An analysis whose part was rendered where it was
    read (``json_text``, ``report.json_pieces``) has its entries copied; ``finding_texts``,
    instead of ``findings``: the findings already as text (comma-separated JSON objects, a
    block per capture).
    """
    analyses = list(analyses)
    head = orjson.dumps({
        "format": FORMAT_VERSION,
        "tool": {"name": "traceaudit", "version": tool_version},
        "generated_at": generated_at,
        "captures": [capture_entry(a) for a in analyses],
        # files of the directories given that are not captures (only when there are some)
        **({"skipped": [{"path": display_name(p), "reason": "not a capture"}
                        for p in skipped]}
           if skipped else {}),
    })
    yield head[:-1] + b',"connections":['
    yield from _comma_joined(connection_text(a) for a in analyses)
    # findings too in pieces: their dicts are made as they are written (the caller may pass a
    # generator), so 35,000 of them are never all held as dicts and text at once
    yield b'],"findings":['
    if finding_texts is not None:
        yield from _comma_joined(finding_texts)
    else:
        yield from finding_text(findings or ())
    yield b"]}\n"


def connection_text(a: CaptureAnalysis) -> Iterator[bytes | memoryview]:
    """One capture's connection entries, comma-separated, in pieces of CHUNK_CONNECTIONS
    (nothing when it has none); copied when rendered where it was read (``json_text``)."""
    if a.json_text is not None:
        yield from a.json_text.rows()
        return
    first = True
    for chunk in _connection_chunks(a, CHUNK_CONNECTIONS):
        if not first:
            yield b","          # (its own piece: a chunk is megabytes, not copied again)
        yield chunk
        first = False


def finding_text(findings: Iterable[dict]) -> Iterator[bytes]:
    """The findings' JSON objects, comma-separated, CHUNK_FINDINGS made at a time."""
    pending = iter(findings)
    first = True
    while batch := list(islice(pending, CHUNK_FINDINGS)):
        if not first:
            yield b","
        yield orjson.dumps(batch)[1:-1]
        first = False


def _comma_joined(parts: Iterable[Iterator]) -> Iterator:
    """The pieces of every part, a comma between two parts (a part with none is left out)."""
    first = True
    for part in parts:
        head = next(part, None)
        if head is None or not len(head):
            continue
        if not first:
            yield b","
        yield head
        yield from part
        first = False


def _column_values(column, table: TextTable) -> tuple[int, np.ndarray]:
    """(kind, per-row values) of one flow-table column for the row writer: integers as they
    are, anything else as indices of its JSON texts in ``table`` (each distinct string, and
    each float as orjson writes it, made once)."""
    if isinstance(column, Coded):
        first = table.add_texts([orjson.dumps(label) for label in column.labels.tolist()])
        return TEXT, first + column.codes.astype(np.int64) % max(len(column.labels), 1)
    if isinstance(column, Repeated):
        first = table.add_texts([orjson.dumps(column.value)])
        return TEXT, np.full(column.n, first, np.int64)
    values = np.asarray(column)
    kind = values.dtype.kind
    if kind == "b":
        first = table.add_texts([b"false", b"true"])
        return TEXT, first + values.astype(np.int64)
    if kind == "i" or (kind == "u" and values.dtype.itemsize < 8):
        return INT, values.astype(np.int64)
    if kind in "uf":
        return TEXT, table.add_numbers(values.tolist()) + np.arange(len(values))
    return TEXT, _factorised(values.tolist(), table)


def _factorised(items: list, table: TextTable) -> np.ndarray:
    """Each value's index into ``table``, each distinct value's JSON text added once. Keyed
    by type as well unless every value is a string (1 and True hash alike but are written
    differently)."""
    plain = set(map(type, items)) <= {str}
    codes, distinct = first_seen_codes(items if plain else [(type(v), v) for v in items])
    texts = [orjson.dumps(k if plain else k[1]) for k in distinct]
    return table.add_texts(texts) + codes


def _connection_writer(a: CaptureAnalysis) -> RowWriter:
    """The row writer of one capture's connections (``connection_entries``' text)."""
    flows = a.table
    n = len(flows)
    fields = [f for f in _CONN_FIELDS if f in flows]
    capture = orjson.dumps(display_name(a.stats.path)).decode()
    # the literal text before each value of a row: the fields, then capture, client
    # {final_state, timeline}, server {...}
    labels = ["{" + f'"{fields[0]}":'] + [f',"{f}":' for f in fields[1:]] + [
        f',"capture":{capture},"client":{{"final_state":', ',"timeline":', ',"rst_origin":',
        '},"server":{"final_state":', ',"timeline":', ',"rst_origin":']
    table = TextTable()
    client_origin, server_origin = _origin_values(a, table)
    # each value's source: a column, an endpoint's timeline (0 client, 1 server), or the
    # per-row text indices of its rst_origin
    sources = [flows.column(f) for f in fields] + [
        flows.column("client_state"), 0, (TEXT, client_origin),
        flows.column("server_state"), 1, (TEXT, server_origin)]
    kinds = []
    values = np.zeros((len(sources), n), np.int64)
    for k, source in enumerate(sources):
        if isinstance(source, tuple):
            kinds.append(source[0])
            values[k] = source[1]
        elif isinstance(source, int):
            kinds.append(TIMELINE)
            values[k] = source
        else:
            kind, values[k] = _column_values(source, table)
            kinds.append(kind)
    ev = a.events
    # events are sorted by connection, endpoint: each timeline's first event by counting
    ev_first = np.zeros(2 * n + 1, np.int64)
    np.cumsum(np.bincount(ev[:, EV_CONN] * 2 + ev[:, EV_ENDPOINT], minlength=2 * n),
              out=ev_first[1:])
    # each event's state and reason, as one of the few distinct texts after the frame
    key = ev[:, EV_STATE] * 4096 + ev[:, EV_REASON]
    low = int(key.min()) if len(key) else 0           # (UNSEEN is -1)
    used = np.flatnonzero(np.bincount(key - low)) if len(key) else np.zeros(0, np.int64)
    slot = np.zeros(int(used[-1]) + 1 if len(used) else 0, np.int64)
    slot[used] = table.add_texts([_tail_memo[k + low] for k in used.tolist()]) \
        + np.arange(len(used))
    ev_tail = slot[key - low]
    # (the kernel reads times and frames from the events' rows: no column copies)
    return RowWriter(kinds, [x.encode() for x in labels], values, table, b"}}",
                     ev_first, ev[:, EV_TS], ev[:, EV_FRAME], ev_tail)


def _connection_chunks(a: CaptureAnalysis, size: int) -> Iterator[memoryview]:
    """``connection_entries(a)`` as JSON text, ``size`` connections (comma-separated) per
    piece."""
    from traceaudit.retire import flat
    if flat.is_flat(a):                 # on disk: a chunk of the capture at a time
        # (with the tracker's facts: each endpoint's rst_origin is made from them)
        for chunk in flat.chunks(a, facts=True, zeek=True):
            yield from _connection_chunks(chunk, size)
        return
    n = len(a.table)
    if not n:
        return
    writer = _connection_writer(a)
    for lo in range(0, n, size):
        yield writer.chunk(lo, min(n, lo + size))


class _TailMemo(dict):
    """state * 4096 + reason -> ',"state":"NAME","why":"TEXT"}' (as ``_timelines`` writes)."""

    def __missing__(self, key):
        state, reason = divmod(key, 4096)
        name = state_names(np.array([state], np.int64))[0]
        why = orjson.dumps(_REASONS.get(reason, "")).decode()
        text = self[key] = f',"state":"{name}","why":{why}}}'.encode()
        return text


_tail_memo = _TailMemo()
