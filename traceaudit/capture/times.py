"""Capture times: integer nanoseconds since the epoch, and the float seconds tables carry.

``float(ns) / 1e9`` rounds twice (an epoch time in nanoseconds has more digits than a double
holds), and for about a quarter of microsecond timestamps lands one step off the nearest
double: 1700000000.1234559 where the capture says 1700000000.123456. Whole seconds and the
fraction are converted apart instead, which gives the nearest double (as Python's
``ns / 10**9`` does), so a table's time prints as Wireshark shows it.
"""

from __future__ import annotations

import numpy as np

NS = 1_000_000_000


def epoch_seconds(ns: np.ndarray) -> np.ndarray:
    """Float seconds, the double nearest each time (whole seconds are exact below 2**53)."""
    ns = np.asarray(ns, np.int64)
    whole, frac = np.divmod(np.abs(ns), NS)
    seconds = whole.astype(np.float64) + frac / 1e9
    return np.where(ns < 0, -seconds, seconds)      # (before 1970: a clock set wrong)
