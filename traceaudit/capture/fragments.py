"""IP fragment reassembly (IPv4 and IPv6) for the built-in reader, bounded as Linux bounds it.

The compiled decoder does not decode an IP fragment that may carry TCP (TCP itself, or UDP,
GRE, IP-in-IP that may tunnel it) and is whole in its record: it hands over where it lies
(``decode_records(..., frags=)``). Fragments are rare, so they are put together here, in
Python, off the hot path; a datagram made whole is decoded by the same compiled decoder (as a
raw IP packet) and its TCP segment, if any, is reported at the frame of the fragment that
completed it, as tshark does. A fragment cut by the snap length is not reassembled (tshark does
not either): the first one is decoded as it is, the others are counted and skipped.

Policy, with tshark as the oracle of the flow table:

- a datagram is keyed by (source, destination, identification, protocol) for IPv4 and
  (source, destination, identification) for IPv6;
- an exact duplicate of a fragment (same offset, same bytes) of a datagram in progress is
  ignored; a fragment arriving after its datagram was completed starts a new one (as tshark
  and Linux do: the same identification may be reused), which a late copy never completes;
- overlapping fragments: the bytes are laid out in order of offset and, at one offset, of
  arrival; a fragment only adds the bytes beyond those laid out before it (so the lower
  offset, then the earlier fragment, wins: what tshark shows). Each reassembled datagram
  with an overlap is counted (a "weird"; Linux would drop it, RFC 5722);
- bounds as Linux's defaults: a datagram not complete ``IPFRAG_TIME_NS`` (30 s,
  net.ipv4.ipfrag_time) after its first fragment is dropped; when the bytes held exceed
  ``IPFRAG_HIGH_THRESH`` (4 MB, net.ipv4.ipfrag_high_thresh; each fragment counting its data
  and ``FRAGMENT_OVERHEAD``) the oldest datagrams are dropped
  until they are within ``IPFRAG_LOW_THRESH`` (3 MB); a datagram longer than 65,535 bytes is
  dropped. All dropped and unfinished datagrams are counted in the reader's warnings.
"""

from __future__ import annotations

import struct
from bisect import bisect_left
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np

from traceaudit.capture import decode, linktypes
from traceaudit.capture.batch import COLUMNS

IPFRAG_TIME_NS = 30 * 1_000_000_000     # net.ipv4.ipfrag_time (net.ipv6.ip6frag_time): 30 s
IPFRAG_HIGH_THRESH = 4 << 20            # net.ipv4.ipfrag_high_thresh: 4 MB
IPFRAG_LOW_THRESH = 3 << 20             # net.ipv4.ipfrag_low_thresh: 3 MB
MAX_PAYLOAD = 65535                     # an IPv4 datagram's (or IPv6 payload's) largest size
MAX_NESTING = 4                         # fragments inside a reassembled datagram, and so on
#: bytes a held fragment counts beyond its data (Linux counts a buffer's true size, not its
#: data alone): so that a flood of tiny fragments is bounded by count as well as by bytes
FRAGMENT_OVERHEAD = 512


@dataclass
class _Datagram:
    first_ts: int
    tunneled: bool
    header: bytes | None = None          # IPv4: the offset-0 fragment's header; IPv6: base header
    total: int | None = None             # payload length, known from the last fragment
    parts: list[tuple[int, int, bytes]] = field(default_factory=list)   # offset, arrival, data
    covered: list[list[int]] = field(default_factory=list)              # disjoint [start, end)
    at_offset: dict[int, list[bytes]] = field(default_factory=dict)     # data seen per offset
    size: int = 0


class Reassembler:
    """Fragments held across batches of one capture, and what became of them."""

    def __init__(self) -> None:
        self.pending: OrderedDict[tuple, _Datagram] = OrderedDict()
        self.held = 0                    # bytes held: fragment data + FRAGMENT_OVERHEAD each
        self.duplicates = 0              # exact duplicates ignored
        self.arrivals = 0
        self.fragments = 0               # fragments handed over
        self.reassembled = 0             # datagrams made whole
        self.overlapping = 0             # ... of which had overlapping fragments
        self.timed_out = 0               # datagrams dropped after IPFRAG_TIME_NS
        self.evicted = 0                 # datagrams dropped for memory
        self.oversized = 0               # datagrams dropped for a length past 65,535

    # -- one fragment ------------------------------------------------------------------------
    def add(self, pkt: bytes, at: int, ts_ns: int, tunneled: bool) -> bytes | None:
        """Add the fragment whose IP packet is ``pkt`` (``at``: its payload for IPv4, its
        fragment header for IPv6, from the packet's start). Returns the reassembled IP packet
        when this fragment completes one, else None."""
        self.fragments += 1
        self._expire(ts_ns)
        if pkt[0] >> 4 == 4:
            ihl = (pkt[0] & 0x0F) * 4
            total_len, = struct.unpack_from("!H", pkt, 2)
            ident, frag = struct.unpack_from("!HH", pkt, 4)
            key = (4, pkt[12:16], pkt[16:20], ident, pkt[9])
            offset, more, data = (frag & 0x1FFF) * 8, bool(frag & 0x2000), pkt[ihl:total_len]
            header = pkt[:ihl] if offset == 0 else None
        else:
            plen, = struct.unpack_from("!H", pkt, 4)
            nxt = pkt[at]
            frag, ident = struct.unpack_from("!HI", pkt, at + 2)
            key = (6, pkt[8:24], pkt[24:40], ident)
            offset, more, data = frag & 0xFFF8, bool(frag & 1), pkt[at + 8:40 + plen]
            header = pkt[:6] + bytes([nxt]) + pkt[7:40] if offset == 0 else None
        dgram = self.pending.get(key)
        if dgram is None:
            dgram = self.pending[key] = _Datagram(ts_ns, tunneled)
        elif data in dgram.at_offset.get(offset, ()):
            self.duplicates += 1
            return None
        if header is not None and dgram.header is None:
            dgram.header = header
        if not more and dgram.total is None:
            dgram.total = offset + len(data)
        if offset + len(data) > MAX_PAYLOAD or (dgram.total or 0) > MAX_PAYLOAD:
            self.oversized += 1
            self._drop(key)
            return None
        self.arrivals += 1
        dgram.parts.append((offset, self.arrivals, data))
        dgram.at_offset.setdefault(offset, []).append(data)
        dgram.size += len(data) + FRAGMENT_OVERHEAD
        self.held += len(data) + FRAGMENT_OVERHEAD
        _cover(dgram.covered, offset, offset + len(data))
        if dgram.total is not None and dgram.header is not None and dgram.covered[0][0] == 0 \
                and dgram.covered[0][1] >= dgram.total:
            self._drop(key)
            if dgram.header[0] >> 4 == 4 and len(dgram.header) + dgram.total > MAX_PAYLOAD:
                self.oversized += 1         # an IPv4 datagram's length is 16 bits, header too
                return None
            return self._build(dgram)
        if self.held > IPFRAG_HIGH_THRESH:
            while self.pending and self.held > IPFRAG_LOW_THRESH:
                self.evicted += 1
                self._drop(next(iter(self.pending)))
        return None

    def _build(self, dgram: _Datagram) -> bytes:
        total = dgram.total
        out = bytearray(total)
        laid = 0
        overlap = False
        for offset, _, data in sorted(dgram.parts, key=lambda p: (p[0], p[1])):
            end = min(offset + len(data), total)
            if offset < laid:
                overlap = True
            if end > laid:
                start = max(offset, laid)
                out[start:end] = data[start - offset:end - offset]
                laid = end
        self.reassembled += 1
        self.overlapping += overlap
        head = bytearray(dgram.header)
        if head[0] >> 4 == 4:
            struct.pack_into("!H", head, 2, len(head) + total)
            struct.pack_into("!H", head, 6, struct.unpack_from("!H", head, 6)[0] & 0x4000)
            struct.pack_into("!H", head, 10, 0)
            struct.pack_into("!H", head, 10, _checksum(bytes(head)))
        else:
            struct.pack_into("!H", head, 4, total)
        return bytes(head) + bytes(out)

    # -- bounds --------------------------------------------------------------------------------
    def _expire(self, now_ns: int) -> None:
        while self.pending:
            key, dgram = next(iter(self.pending.items()))
            if now_ns - dgram.first_ts <= IPFRAG_TIME_NS:
                break
            self.timed_out += 1
            self._drop(key)

    def _drop(self, key: tuple) -> None:
        dgram = self.pending.pop(key)
        self.held -= dgram.size

    def warnings(self) -> list[str]:
        """What the reader reports at the end of the capture: overlaps, datagrams dropped."""
        out = []        # (datagrams reassembled cleanly are no warning)
        if self.overlapping:
            out.append(f"{self.overlapping} reassembled IP datagram(s) had overlapping "
                       "fragments (resolved as tshark does: lower offset, then earlier "
                       "fragment, wins)")
        unfinished = len(self.pending)
        if unfinished or self.timed_out:
            out.append(f"{unfinished + self.timed_out} IP datagram(s) never completed "
                       f"({self.timed_out} of them timed out after "
                       f"{IPFRAG_TIME_NS // 1_000_000_000} s; a late copy of a fragment "
                       "starts one too): their fragments were skipped")
        if self.evicted:
            out.append(f"{self.evicted} incomplete IP datagram(s) dropped: fragments held "
                       f"passed {IPFRAG_HIGH_THRESH >> 20} MB")
        if self.oversized:
            out.append(f"{self.oversized} IP datagram(s) dropped: fragments reach past "
                       f"{MAX_PAYLOAD} bytes")
        return out


def _cover(covered: list[list[int]], start: int, end: int) -> None:
    """Add [start, end) to the sorted disjoint intervals ``covered``, merging neighbours."""
    if end <= start:
        return
    i = bisect_left(covered, [start, start])
    if i and covered[i - 1][1] >= start:
        i -= 1
    j = i
    while j < len(covered) and covered[j][0] <= end:
        start = min(start, covered[j][0])
        end = max(end, covered[j][1])
        j += 1
    covered[i:j] = [[start, end]]


def _checksum(data: bytes) -> int:
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


class FragmentDecoder:
    """Feeds the fragments of a ``decode_records`` call to a Reassembler and decodes what it
    completes into TCP rows (column arrays in ``COLUMNS`` order, plus ``seg_flags``)."""

    def __init__(self, reassembler: Reassembler, warn: np.ndarray, verify: bool,
                 marks: bool) -> None:
        self.reasm = reassembler
        self.warn = warn
        self.verify = verify
        self.marks = marks
        self._scratch = np.zeros(decode.N_COLS, np.int64)
        self._frags = np.empty((1, 4), np.int64)

    def rows(self, buf: np.ndarray, frags: np.ndarray, rec_off: np.ndarray,
             rec_caplen: np.ndarray, rec_origlen: np.ndarray, rec_ts: np.ndarray,
             first_frame: int) -> dict[str, np.ndarray] | None:
        """TCP rows of the datagrams the ``frags`` rows (record, IP position, payload or
        fragment header position, tunneled) complete; None when there are none."""
        found = []
        for i, ip_pos, at, tun in frags.tolist():
            end = int(rec_off[i] + rec_caplen[i])
            pkt = bytes(buf[ip_pos:end])
            self._add(pkt, at - ip_pos, int(rec_ts[i]), bool(tun), int(rec_origlen[i]),
                      first_frame + i, found, 0)
        if not found:
            return None
        return {k: np.concatenate([r[k] for r in found]) for k in found[0]}

    def _add(self, pkt: bytes, at: int, ts: int, tun: bool, origlen: int, frame: int,
             found: list, depth: int) -> None:
        dgram = self.reasm.add(pkt, at, ts, tun)
        if dgram is None:
            return
        data = np.frombuffer(dgram, np.uint8)
        cols = {name: np.empty(1, dtype) for name, dtype in COLUMNS.items()}
        seg = np.zeros(1, np.uint8)
        one = np.zeros(1, np.int64)
        got, nf = decode.decode_records(
            data, one, np.array([len(dgram)], np.int64), np.array([origlen], np.int64),
            np.array([ts], np.int64), np.array([linktypes.RAW], np.int64), frame,
            self._scratch, self.warn, self.verify, self.marks, seg, *cols.values(),
            frags=self._frags)
        if got:
            cols["tunneled"] |= tun
            if self.marks:
                cols["seg_flags"] = seg
            found.append(cols)
        elif nf and depth < MAX_NESTING:        # a fragment inside the datagram
            _, ip_pos, inner_at, inner_tun = self._frags[0].tolist()
            self._add(dgram[ip_pos:], inner_at - ip_pos, ts, tun or bool(inner_tun), origlen,
                      frame, found, depth + 1)


def merge(cols: dict[str, np.ndarray], extra: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The rows of ``cols`` and ``extra`` together, in frame order."""
    both = {k: np.concatenate([v, extra[k]]) for k, v in cols.items()}
    order = np.argsort(both["frame"], kind="stable")
    return {k: v[order] for k, v in both.items()}
