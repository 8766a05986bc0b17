"""Float seconds from capture nanoseconds: the nearest double, as Python's int / int."""

from __future__ import annotations

import numpy as np

from traceaudit.capture.times import NS, epoch_seconds


def test_epoch_seconds_is_the_nearest_double():
    rng = np.random.default_rng(3)
    us = (1_600_000_000 + rng.integers(0, 4 * 10**8, 100_000)) * NS \
        + rng.integers(0, 10**6, 100_000) * 1000
    ns = rng.integers(0, 2**62, 100_000)
    edge = np.array([0, 1, NS - 1, NS, 2**53, 2**53 + 1, 2**62 + 12345, -1, -NS - 1], np.int64)
    for values in (us, ns, edge):
        got = epoch_seconds(values)
        assert got.tolist() == [v / NS for v in values.tolist()]
    # the plain conversion (float, then divide) is off for many microsecond times
    assert (us.astype(np.float64) / 1e9 != epoch_seconds(us)).sum() > 10_000
