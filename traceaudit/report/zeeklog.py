"""Zeek conn.log writers for ``traceaudit flows --format zeek|zeek-json`` (pure: Zeek's rows in,
text out).

One row per connection *as Zeek splits them* (``CaptureAnalysis.zeek_table``, columns
``ZEEK_ROW_COLUMNS`` of ``tracking/zeek.py``), written the way Zeek's ASCII writer writes
``conn.log`` (``src/logging/writers/ascii/Ascii.cc``, formatter ``threading/formatters/Ascii.cc``)
or its JSON writer (``LogAscii::use_json``, ``threading/formatters/JSON.cc``). The columns are
those of the current default conn.log (``base/protocols/conn/main.zeek``, Zeek >= 7.1, which
added ``ip_proto``), plus ``tcp_stream`` at the end. How each field is computed, and where it
differs from Zeek: docs/zeek-compat.md, "conn.log output".
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import PurePath
from typing import TYPE_CHECKING, Iterator, Sequence

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

    from traceaudit.flows.columns import Columns

#: The columns of the log, with Zeek's type names (the ``#types`` line), in Zeek's order.
#: ``tcp_stream`` is ours: the traceaudit connection id (Wireshark's ``tcp.stream``).
CONN_LOG_FIELDS: tuple[tuple[str, str], ...] = (
    ("ts", "time"),                 # first packet of the Zeek connection
    ("uid", "string"),              # deterministic, not Zeek's random one (see uid())
    ("id.orig_h", "addr"),
    ("id.orig_p", "port"),
    ("id.resp_h", "addr"),
    ("id.resp_p", "port"),
    ("proto", "enum"),              # always tcp
    ("service", "string"),          # unset: no protocol detection
    ("duration", "interval"),       # unset unless > 0 (as the three below it)
    ("orig_bytes", "count"),
    ("resp_bytes", "count"),
    ("conn_state", "string"),
    ("local_orig", "bool"),         # unset: Site::local_nets is empty by default
    ("local_resp", "bool"),
    ("missed_bytes", "count"),
    ("history", "string"),          # unset when empty
    ("orig_pkts", "count"),
    ("orig_ip_bytes", "count"),
    ("resp_pkts", "count"),
    ("resp_ip_bytes", "count"),
    ("tunnel_parents", "set[string]"),  # unset: the encapsulating connections are not logged
    ("ip_proto", "count"),          # 6
    ("tcp_stream", "count"),        # ours: the connection id the row's first packet belongs to
)

SEPARATOR = "\t"
SET_SEPARATOR = ","
EMPTY_FIELD = "(empty)"
UNSET_FIELD = "-"
#: Zeek's #open/#close time format (``Ascii::Timestamp``, local time).
OPEN_FORMAT = "%Y-%m-%d-%H-%M-%S"
_UID_DIGITS = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


@dataclass(frozen=True)
class ZeekLog:
    """One capture's Zeek connections, to be written as one conn.log."""

    capture: str                            # its path (the file name seeds the uids)
    rows: Columns | pd.DataFrame            # ZEEK_ROW_COLUMNS
    written_at: datetime                    # #open and #close (injected: output is repeatable)


def conn_records(log: ZeekLog) -> Iterator[dict]:
    """The log's rows in ts order (then frame order), each a dict of CONN_LOG_FIELDS names to
    plain values; None = unset."""
    rows = log.rows
    cols = {name: np.asarray(rows[name]) for name in (
        "orig_h", "orig_p", "resp_h", "resp_p", "conn_state", "history", "orig_pkts",
        "resp_pkts", "first_frame", "start_ns", "duration_ns", "orig_bytes", "resp_bytes",
        "missed_bytes", "orig_ip_bytes", "resp_ip_bytes", "tcp_stream")}
    order = np.lexsort((cols["first_frame"], cols["start_ns"]))
    seed = PurePath(log.capture).name
    plain = {k: v[order].tolist() for k, v in cols.items()}
    for i in range(len(order)):
        r = {k: v[i] for k, v in plain.items()}
        timed = r["duration_ns"] > 0
        yield {
            "ts": r["start_ns"],
            "uid": uid(seed, r["orig_h"], r["orig_p"], r["resp_h"], r["resp_p"], r["start_ns"],
                       r["first_frame"]),
            "id.orig_h": r["orig_h"],
            "id.orig_p": r["orig_p"],
            "id.resp_h": r["resp_h"],
            "id.resp_p": r["resp_p"],
            "proto": "tcp",
            "service": None,
            "duration": r["duration_ns"] if timed else None,
            "orig_bytes": r["orig_bytes"] if timed else None,
            "resp_bytes": r["resp_bytes"] if timed else None,
            "conn_state": r["conn_state"],
            "local_orig": None,
            "local_resp": None,
            "missed_bytes": r["missed_bytes"],
            "history": r["history"] or None,
            "orig_pkts": r["orig_pkts"],
            "orig_ip_bytes": r["orig_ip_bytes"],
            "resp_pkts": r["resp_pkts"],
            "resp_ip_bytes": r["resp_ip_bytes"],
            "tunnel_parents": None,
            "ip_proto": 6,
            "tcp_stream": r["tcp_stream"],
        }


def uid(seed: str, orig_h: str, orig_p: int, resp_h: str, resp_p: int, start_ns: int,
        first_frame: int) -> str:
    """A Zeek-shaped uid ('C' + base62 of a 32-bit and a 64-bit word, as Zeek prints its 96
    random bits), but derived from the capture's file name, the 4-tuple, the start time and
    the first frame: the same capture always gives the same uids. Not Zeek's uids."""
    key = f"{seed}\0{orig_h}\0{orig_p}\0{resp_h}\0{resp_p}\0{start_ns}\0{first_frame}"
    digest = hashlib.blake2b(key.encode(), digest_size=12).digest()
    return "C" + _base62(int.from_bytes(digest[:4], "big")) + \
        _base62(int.from_bytes(digest[4:], "big"))


def _base62(v: int) -> str:
    out = []
    while True:
        v, d = divmod(v, 62)
        out.append(_UID_DIGITS[d])
        if not v:
            return "".join(reversed(out))


def _seconds(ns: int) -> str:
    """Zeek's time/interval rendering: fixed, 6 decimals (rounded to the microsecond)."""
    us = (ns + 500) // 1000
    sign = "-" if us < 0 else ""
    whole, frac = divmod(abs(us), 1_000_000)
    return f"{sign}{whole}.{frac:06d}"


def _tsv_value(name: str, value) -> str:
    if value is None:
        return UNSET_FIELD
    if name in ("ts", "duration"):
        return _seconds(value)
    if isinstance(value, str):
        return _escaped(value)
    return str(value)


def _escaped(text: str) -> str:
    """Zeek's ASCII formatter: a string equal to the unset or empty marker has its first
    character hex-escaped, as does the separator anywhere in it."""
    if not text:
        return EMPTY_FIELD
    if text in (UNSET_FIELD, EMPTY_FIELD):
        text = f"\\x{ord(text[0]):02x}" + text[1:]
    return text.replace(SEPARATOR, "\\x09")


def header_lines(written_at: datetime) -> list[str]:
    """The ASCII writer's header (``Ascii::WriteHeader``): #separator is the one line written
    with a space, and with the separator escaped."""
    opened = written_at.astimezone().strftime(OPEN_FORMAT)
    names = SEPARATOR.join(name for name, _ in CONN_LOG_FIELDS)
    types = SEPARATOR.join(kind for _, kind in CONN_LOG_FIELDS)
    return ["#separator \\x09",
            f"#set_separator{SEPARATOR}{SET_SEPARATOR}",
            f"#empty_field{SEPARATOR}{EMPTY_FIELD}",
            f"#unset_field{SEPARATOR}{UNSET_FIELD}",
            f"#path{SEPARATOR}conn",
            f"#open{SEPARATOR}{opened}",
            f"#fields{SEPARATOR}{names}",
            f"#types{SEPARATOR}{types}"]


def render_tsv(logs: Sequence[ZeekLog]) -> Iterator[bytes]:
    """Zeek's ASCII conn.log, one complete log (header to #close) per capture, in the order
    given; zeek-cut reads such a concatenation, taking each header as it comes."""
    for log in logs:
        lines = header_lines(log.written_at)
        yield ("\n".join(lines) + "\n").encode()
        chunk = []
        for rec in conn_records(log):
            chunk.append(SEPARATOR.join(_tsv_value(k, rec[k]) for k, _ in CONN_LOG_FIELDS))
            if len(chunk) >= 4096:
                yield ("\n".join(chunk) + "\n").encode()
                chunk = []
        if chunk:
            yield ("\n".join(chunk) + "\n").encode()
        closed = log.written_at.astimezone().strftime(OPEN_FORMAT)
        yield f"#close{SEPARATOR}{closed}\n".encode()


def render_json(logs: Sequence[ZeekLog]) -> Iterator[bytes]:
    """Zeek's JSON logs (``LogAscii::use_json=T``): one object per line, no header, keys in
    field order, unset fields left out, ts and duration as numbers of seconds."""
    keys = [(name, json.dumps(name) + ":", kind) for name, kind in CONN_LOG_FIELDS]
    for log in logs:
        chunk = []
        for rec in conn_records(log):
            parts = []
            for name, key, kind in keys:
                value = rec[name]
                if value is None:
                    continue
                if kind in ("time", "interval"):
                    parts.append(key + json_double(value / 10**9))
                elif kind in ("count", "port"):
                    parts.append(key + str(value))
                else:
                    parts.append(key + json.dumps(value))
            chunk.append("{" + ",".join(parts) + "}")
            if len(chunk) >= 4096:
                yield ("\n".join(chunk) + "\n").encode()
                chunk = []
        if chunk:
            yield ("\n".join(chunk) + "\n").encode()


def json_double(x: float) -> str:
    """A double as Zeek's JSON writer (rapidjson's ``Writer::Double``) writes it: the shortest
    digits that read back the same value, placed as rapidjson's ``Prettify`` places them
    (``0.00001`` where Python writes ``1e-05``; always a decimal point)."""
    text = repr(x)
    if "e" not in text and "n" not in text:
        return text         # 1e-4 <= |x| < 1e16 (or 0): Python places the digits the same way
    if x != x or x in (float("inf"), float("-inf")):
        return "null"
    sign, digits, exp = Decimal(text).as_tuple()
    ds = "".join(map(str, digits)).rstrip("0") or "0"
    exp += len(digits) - len(ds)            # value = ds * 10**exp
    length, kk = len(ds), len(ds) + exp     # kk: where the decimal point goes
    neg = "-" if sign else ""
    if ds == "0":
        return neg + "0.0"
    if 0 <= exp and kk <= 21:
        return f"{neg}{ds}{'0' * exp}.0"
    if 0 < kk <= 21:
        return f"{neg}{ds[:kk]}.{ds[kk:]}"
    if -6 < kk <= 0:
        return f"{neg}0.{'0' * -kk}{ds}"
    if length == 1:
        return f"{neg}{ds}e{kk - 1}"
    return f"{neg}{ds[0]}.{ds[1:]}e{kk - 1}"
