"""simultaneous-close: both FINs crossed on the wire (both endpoints go through CLOSING)."""

from __future__ import annotations

import numpy as np

from traceaudit.rules.common import View
from traceaudit.rules.model import Rule, Severity
from traceaudit.tracking.states import Closer


def check(analysis, params):
    v = View.of(analysis)
    hits = (np.flatnonzero(v.conn("closer") == Closer.SIMULTANEOUS) if v.n
            else np.zeros(0, np.int64))
    f0, t0 = v.take(hits, 0, "fin_frame", "fin_ns")
    f1, t1 = v.take(hits, 1, "fin_frame", "fin_ns")
    messages = [f"both endpoints sent FIN before seeing the other's (client frame {a}, "
                f"server frame {b}): a simultaneous close. Both go through CLOSING and "
                f"both end in TIME_WAIT, so each side holds a TIME_WAIT socket."
                for a, b in zip(f0, f1)]
    return v.findings(RULE, hits.tolist(), None, list(map(min, t0, t1)),
                      [list(f) for f in zip(f0, f1)], messages, [{} for _ in messages])


#: nothing of other connections: a flat read runs it a chunk at a time (``retire/flat.py``)
TOTALS: dict = {}


RULE = Rule(
    code="TA108",
    name="simultaneous-close",
    title="Simultaneous close: the FINs crossed",
    severity=Severity.INFO,
    rationale=("When both applications close at the same moment the FINs cross; RFC 9293 "
               "handles it (FIN_WAIT_1 → CLOSING → TIME_WAIT on both sides), but both hosts "
               "then hold TIME_WAIT. Frequent simultaneous closes point at a protocol where "
               "neither side is clearly responsible for closing."),
    remediation=("Usually nothing to fix. If TIME_WAIT pressure matters, let one side (the "
                 "client) close first by protocol, e.g. the server waits for the client's FIN."),
    check=check,
    references=("RFC 9293 §3.6 (simultaneous close, figure 13)",),
)
