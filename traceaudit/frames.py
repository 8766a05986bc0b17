"""The Python API's DataFrames, built from one run's analyses and findings (``api.Audit``).

Each builder stacks one part per capture and puts a ``capture`` column in front: a categorical
whose categories are the captures in reading order. Columns are documented on the ``Audit``
properties that return them (``docs/api.md``); this module is imported (with pandas) only
when a table is asked for.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from traceaudit.pipeline import CaptureAnalysis
from traceaudit.report.json_report import capture_entry
from traceaudit.rules.model import Finding, Severity
from traceaudit.tracking.classify import (KIND_LABELS, ROLE_LABELS, close_kind_codes,
                                          close_role_codes)
from traceaudit.tracking.connections import STATE_NAMES
from traceaudit.tracking.facts import CONN_FIELDS
from traceaudit.tracking.states import REASON_TEXT, Reason
from traceaudit.tracking.timeline import final_states
from traceaudit.tracking.tracker import EV_CONN, EV_ENDPOINT, EV_FRAME, EV_REASON, EV_STATE, EV_TS
from traceaudit.tracking.zeek import ZEEK_ROW_COLUMNS

COUNT_COLUMNS = ("packets", "tcp_packets", "connections")
#: The findings frame's columns before the rules' own fields (``cause``, ``confidence``, ...).
FINDING_COLUMNS = ["capture", "code", "rule", "severity", "connection", "endpoint", "host",
                   "ts", "frames", "message", "remediation", "display_filter", "fingerprint"]
#: Connection facts added to the flows: all but the tracker's bookkeeping (``initialised``)
#: and those the flow table has already (``closer`` is its close_role; ``midstream``).
FLOW_FACTS = [f for f in CONN_FIELDS if f not in ("initialised", "closer", "midstream")]
#: Endpoint facts holding an ``EndpointState``: written as its name.
STATE_FACTS = ("state", "rst_from_state")
SEVERITY = pd.CategoricalDtype([s.label for s in Severity], ordered=True)
_SIDES = np.array(["client", "server"], dtype=object)
_REASON_VALUES = frozenset(map(int, Reason))


def captures_frame(analyses: list[CaptureAnalysis]) -> pd.DataFrame:
    """One row per capture: the JSON report's ``captures`` entries (``path`` as ``capture``);
    counts are nullable integers (missing for a file that could not be opened)."""
    rows = []
    for a in analyses:
        entry = capture_entry(a)
        rows.append({"capture": entry.pop("path"), **entry})
    frame = pd.DataFrame(rows)
    for column in COUNT_COLUMNS:
        frame[column] = frame[column].astype("Int64")
    frame["capture"] = capture_column(analyses, [1] * len(rows))
    return frame


def flows_frame(analyses: list[CaptureAnalysis]) -> pd.DataFrame:
    """One row per connection: the flow table, then ``FLOW_FACTS``."""
    parts = []
    for a in analyses:
        table = a.flows.drop(columns="capture")
        conns = a.tracked.conns[:len(table)]
        facts = pd.DataFrame({f: conns[f] for f in FLOW_FACTS}, index=table.index)
        parts.append(pd.concat([table, facts], axis=1))
    return stacked(parts, capture_column(analyses, [len(p) for p in parts]), at=1)


def endpoints_frame(analyses: list[CaptureAnalysis]) -> pd.DataFrame:
    """Two rows per connection (client, server): who, final state, close role and kind, facts.

    The few-valued columns are made as categoricals straight from the tracker's codes (no
    string per row to hash: 200,000 endpoints in a fraction of a second)."""
    parts = []
    for a in analyses:
        flows = a.flows
        n = len(flows)
        ends2 = a.tracked.endpoints[:n]
        conns = a.tracked.conns[:n]
        ends = ends2.reshape(-1)                         # conn 0 client, conn 0 server, ...
        head = {
            "connection": np.repeat(flows["id"].to_numpy(), 2),
            "endpoint": coded(np.tile([0, 1], n), _SIDES),
            "ip": interleaved(flows["client_ip"], flows["server_ip"]),
            "port": interleaved(flows["client_port"], flows["server_port"]),
            "final_state": coded(final_states(a.events, n).reshape(-1) + 1, STATE_NAMES),
            "close_role": coded(np.repeat(close_role_codes(conns), 2), ROLE_LABELS),
            "close_kind": coded(np.repeat(close_kind_codes(ends2, conns), 2), KIND_LABELS),
        }
        facts = {name: coded(ends[name] + 1, STATE_NAMES) if name in STATE_FACTS
                 else ends[name] for name in ends.dtype.names}
        parts.append(pd.DataFrame({**head, **facts}))
    return stacked(parts, capture_column(analyses, [len(p) for p in parts]))


def timelines_frame(analyses: list[CaptureAnalysis]) -> pd.DataFrame:
    """One row per corrected transition event (the analyses' ``events``, in their order)."""
    size = max(map(int, Reason)) + 1
    names = np.array([Reason(i).name if i in _REASON_VALUES else f"reason {i}"
                      for i in range(size)], dtype=object)
    texts = [REASON_TEXT.get(Reason(i), "") if i in _REASON_VALUES else "" for i in range(size)]
    why_labels = np.array(list(dict.fromkeys(texts)), dtype=object)
    why_codes = np.array([list(why_labels).index(t) for t in texts], np.int64)
    parts = []
    for a in analyses:
        ev = a.events
        parts.append(pd.DataFrame({
            "connection": ev[:, EV_CONN], "endpoint": coded(ev[:, EV_ENDPOINT], _SIDES),
            "ts_ns": ev[:, EV_TS], "frame": ev[:, EV_FRAME],
            "state": coded(ev[:, EV_STATE] + 1, STATE_NAMES),
            "reason": coded(ev[:, EV_REASON], names),
            "why": coded(why_codes[ev[:, EV_REASON]], why_labels),
        }))
    return stacked(parts, capture_column(analyses, [len(p) for p in parts]))


def findings_frame(analyses: list[CaptureAnalysis], findings: list[Finding]) -> pd.DataFrame:
    """One row per finding: ``Finding.to_dict`` (the JSON report's entry)."""
    rows = [f.to_dict() for f in findings]
    extra = list(dict.fromkeys(k for row in rows for k in row if k not in FINDING_COLUMNS))
    frame = pd.DataFrame(rows, columns=FINDING_COLUMNS + extra)
    frame["connection"] = frame["connection"].astype("Int64")
    frame["severity"] = frame["severity"].astype(SEVERITY)
    if extra:
        # a rule's own fields are missing where another rule made the row: nullable types
        # keep its integers integers and its flags booleans
        frame[extra] = frame[extra].convert_dtypes()
    frame["capture"] = pd.Categorical(frame["capture"], categories=_paths(analyses))
    return frame


def zeek_frame(analyses: list[CaptureAnalysis]) -> pd.DataFrame:
    """One row per Zeek connection: the analyses' ``zeek_rows``."""
    parts = []
    for a in analyses:
        rows = a.zeek_rows
        parts.append(rows.drop(columns="capture", errors="ignore") if rows is not None
                     else pd.DataFrame(columns=list(ZEEK_ROW_COLUMNS)))
    return stacked(parts, capture_column(analyses, [len(p) for p in parts]))


def capture_column(analyses: list[CaptureAnalysis], lengths: list[int]) -> pd.Categorical:
    """The ``capture`` column of a frame stacked from one part per analysis, ``lengths`` rows
    each."""
    categories = _paths(analyses)
    index = {p: i for i, p in enumerate(categories)}
    codes = np.repeat(np.array([index[a.stats.path] for a in analyses], np.int64),
                      np.asarray(lengths, np.int64))
    return pd.Categorical.from_codes(codes, categories=categories)


def _paths(analyses: list[CaptureAnalysis]) -> list[str]:
    """The captures in reading order, each once."""
    return list(dict.fromkeys(a.stats.path for a in analyses))


def stacked(parts: list[pd.DataFrame], capture: pd.Categorical, at: int = 0) -> pd.DataFrame:
    """One frame of every capture's part, with ``capture`` inserted at column ``at``."""
    frame = pd.concat(parts, ignore_index=True) if len(parts) > 1 else \
        parts[0].reset_index(drop=True) if parts else pd.DataFrame()
    frame.insert(at, "capture", capture)
    return frame


def interleaved(client: pd.Series, server: pd.Series) -> np.ndarray:
    """Two columns as one, alternating rows: client 0, server 0, client 1, ..."""
    a, b = client.to_numpy(), server.to_numpy()
    out = np.empty(2 * len(a), dtype=np.result_type(a.dtype, b.dtype))
    out[0::2] = a
    out[1::2] = b
    return out


def coded(codes: np.ndarray, labels: np.ndarray) -> pd.Categorical:
    """``labels[codes]`` as a categorical (labels distinct), without a string per row."""
    return pd.Categorical.from_codes(np.asarray(codes, np.int64), categories=list(labels))
