"""Sort-based set operations on integer keys. (NumPy 2.3's ``unique`` and ``isin`` hash
unsorted keys, which is several times slower than sorting for millions of 64-bit keys.)"""

from __future__ import annotations

import numpy as np


def unique_counts(x: np.ndarray, presorted: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The distinct values of ``x``, sorted, and how often each occurs."""
    s = x if presorted else np.sort(x)
    if not len(s):
        return s, np.zeros(0, np.int64)
    starts = np.flatnonzero(np.concatenate([[True], s[1:] != s[:-1]]))
    return s[starts], np.diff(np.concatenate([starts, [len(s)]]))


def unique_inverse(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct values of ``x``, sorted, and each element's index among them."""
    order = np.argsort(x, kind="stable")
    s = x[order]
    if not len(s):
        return s, np.zeros(0, np.int64)
    new = np.concatenate([[True], s[1:] != s[:-1]])
    inverse = np.empty(len(x), np.int64)
    inverse[order] = np.cumsum(new) - 1
    return s[new], inverse


def member(x: np.ndarray, sorted_set: np.ndarray) -> np.ndarray:
    """Per element of ``x``: is it in ``sorted_set`` (sorted, distinct)?"""
    if not len(sorted_set):
        return np.zeros(len(x), np.bool_)
    pos = np.minimum(np.searchsorted(sorted_set, x), len(sorted_set) - 1)
    return sorted_set[pos] == x
