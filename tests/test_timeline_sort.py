"""The timeline kernel's ordering: by endpoint (conn * 2 + endpoint), then time, then emission
order, exactly the lexsort it replaces; dropped rows are left out."""

from __future__ import annotations

import numpy as np

from traceaudit.tracking.facts import endpoint_table
from traceaudit.tracking.timeline import _corrected
from traceaudit.tracking.tracker import EV_CONN, EV_ENDPOINT, EV_TS


def random_events(rng, m, n_conns, ts_values=6):
    ev = np.zeros((m, 6), np.int64)
    ev[:, EV_CONN] = rng.integers(0, n_conns, m)
    ev[:, EV_ENDPOINT] = rng.integers(0, 2, m)
    ev[:, EV_TS] = rng.integers(0, ts_values, m)          # many ties on time
    ev[:, 3:] = rng.integers(0, 1000, (m, 3))
    return ev


def ordered(ev, keep, n_conns):
    flags = np.zeros(2 * n_conns, np.int64)               # nothing to correct
    return _corrected(ev, keep, flags, endpoint_table(n_conns), 0)


def test_unflagged_rows_come_out_in_lexsort_order():
    rng = np.random.default_rng(0)
    for _ in range(300):
        m = int(rng.integers(0, 400))
        n_conns = int(rng.integers(1, 25))
        ev = random_events(rng, m, n_conns)
        keep = rng.random(m) < 0.9
        rows = np.flatnonzero(keep)
        keys = ev[rows, EV_CONN] * 2 + ev[rows, EV_ENDPOINT]
        expected = ev[rows[np.lexsort((rows, ev[rows, EV_TS], keys))]]
        assert np.array_equal(ordered(ev, keep, n_conns), expected)


def test_reversed_groups():
    ev = np.zeros((1000, 6), np.int64)
    ev[:, EV_CONN] = np.repeat(np.arange(5), 200)
    ev[:, EV_TS] = np.tile(np.arange(200)[::-1], 5)
    ev[:, 3] = np.arange(1000)
    keys = ev[:, EV_CONN] * 2
    expected = ev[np.lexsort((np.arange(1000), ev[:, EV_TS], keys))]
    assert np.array_equal(ordered(ev, np.ones(1000, bool), 5), expected)
