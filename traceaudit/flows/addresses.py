"""Addresses as the batches carry them (two uint64 halves) ↔ the text people read."""

from __future__ import annotations

import ipaddress

import numpy as np

V4_MAPPED = 0xFFFF_0000_0000


def format_address(hi: int, lo: int, version: int) -> str:
    if version == 4:
        return str(ipaddress.IPv4Address(int(lo) & 0xFFFF_FFFF))
    return str(ipaddress.IPv6Address((int(hi) << 64) | int(lo)))


def format_addresses(hi: np.ndarray, lo: np.ndarray, version: np.ndarray) -> np.ndarray:
    """Vectorised over rows: each distinct address is formatted once."""
    codes, labels = address_codes(hi, lo, version)
    return labels[codes]


def address_codes(hi: np.ndarray, lo: np.ndarray,
                  version: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row's address as a code into the distinct addresses' texts (an object array):
    (codes, labels), equal addresses equal codes. IPv4 rows are keyed by their 32 bits alone,
    which is much cheaper than a row-wise unique."""
    n = len(hi)
    codes = np.zeros(n, np.int64)
    labels: list[str] = []
    v4 = np.asarray(version) == 4
    rows = np.flatnonzero(v4)
    if len(rows):
        keys = np.asarray(lo)[rows].astype(np.uint64) & np.uint64(0xFFFF_FFFF)
        uniq, inverse = np.unique(keys, return_inverse=True)
        labels += [_text(k, k, 4) for k in uniq.tolist()]
        codes[rows] = inverse.reshape(-1)
    rows = np.flatnonzero(~v4)
    if len(rows):
        keys = np.stack([np.asarray(hi)[rows].astype(np.uint64),
                         np.asarray(lo)[rows].astype(np.uint64),
                         np.asarray(version)[rows].astype(np.uint64)], axis=1)
        uniq, inverse = np.unique(keys, axis=0, return_inverse=True)
        codes[rows] = len(labels) + inverse.reshape(-1)
        labels += [_text(h, lo_, v) for h, lo_, v in uniq.tolist()]
    return codes, np.array(labels, dtype=object)


#: texts of addresses seen lately: a flat read builds the table of every chunk two or three
#: times, and the same hosts recur from chunk to chunk (``ipaddress`` takes ~2 µs an address)
_TEXTS: dict[tuple[int, int, int], str] = {}
_TEXTS_KEPT = 1 << 12                  # (~1 MB at most)


def _text(hi: int, lo: int, version: int) -> str:
    key = (hi, lo, version)
    text = _TEXTS.get(key)
    if text is None:
        if len(_TEXTS) >= _TEXTS_KEPT:
            _TEXTS.clear()
        text = _TEXTS[key] = format_address(hi, lo, version)
    return text


def parse_address(text: str) -> tuple[int, int, int]:
    """(hi, lo, version) for an address string, in the batch layout."""
    ip = ipaddress.ip_address(text.strip("[]"))
    if ip.version == 4:
        return 0, V4_MAPPED | int(ip), 4
    return int(ip) >> 64, int(ip) & 0xFFFF_FFFF_FFFF_FFFF, 6
