"""The timeline's compiled group sort gives exactly the 4-key lexsort order it replaces."""

from __future__ import annotations

import numpy as np

from traceaudit.tracking.timeline import _group_sort


def test_group_sort_is_lexsort():
    rng = np.random.default_rng(0)
    for _ in range(300):
        m = int(rng.integers(0, 400))
        n_keys = int(rng.integers(1, 50))
        keys = rng.integers(0, n_keys, m)
        ts = rng.integers(0, 6, m)                     # many ties on time
        order = rng.permutation(m).astype(np.float64)
        order[rng.random(m) < 0.1] -= 0.5              # added rows sort just before their copy
        assert np.array_equal(_group_sort(keys, ts, order, n_keys),
                              np.lexsort((order, ts, keys)))


def test_group_sort_reversed_groups():
    keys = np.repeat(np.arange(5), 200)
    ts = np.tile(np.arange(200)[::-1], 5)
    order = np.arange(1000, dtype=np.float64)
    assert np.array_equal(_group_sort(keys, ts, order, 5), np.lexsort((order, ts, keys)))
