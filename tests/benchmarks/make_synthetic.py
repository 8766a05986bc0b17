#!/usr/bin/env python3
"""Deterministic synthetic large capture for benchmarks and close-lifecycle count checks.

    python3 tests/benchmarks/make_synthetic.py OUT.pcap [--connections 100000] [--seed 1]
                                                       [--duration 600] [--truth]

Writes a classic pcap (microsecond magic, little-endian, linktype 1 Ethernet, snaplen 128:
caplen = min(frame length, 128), orig_len = full frame length) with about 30 packets per TCP
connection (3,000,000 packets for the default 100,000 connections), 95% IPv4 and 5% IPv6, all
connections interleaved in one global time order.  Next to it, OUT.plan.json holds the exact
number of connections of each kind (and other exact counts); with --truth, OUT.truth.csv holds
one row per connection (4-tuple, kind, packet count) for tests that match connections one by one.

Everything is vectorised with NumPy (no per-packet Python loop), and the output is byte-identical
for the same (connections, seed, duration).

Wire details, for whoever checks a tool against this file:
  * Ethernet II, IPv4 (IHL 5, DF set, per-direction incrementing IP ID, valid header checksum)
    or IPv6 (hop limit 64, per-direction flow label), TCP with valid data offset.
  * TCP checksums are VALID: payload bytes are all zero, so the checksum over the full segment
    (even the bytes beyond the 128-byte snaplen that are not in the file) is computable from the
    header and the pseudo-header alone.  Ethernet frames are not padded to 60 bytes (as a capture
    on the sending host shows them).
  * SYN and SYN-ACK carry MSS, SACK-permitted, timestamps, NOP, window scale 7 (Linux order);
    every other segment carries NOP NOP timestamps, except the RSTs a stack sends for a segment
    that has no socket (connection refused, the RST answering a FIN in a skipped TIME_WAIT),
    which carry no options, as on Linux.
  * Random ISNs; seq advances by payload, SYN and FIN consume one; acks acknowledge exactly what
    the acking side has received by then (a lost segment is not acknowledged until its
    retransmission); a retransmission repeats the original's seq.  TSval is a per-connection,
    per-direction random offset plus the capture time in milliseconds; TSecr echoes the last
    TSval received from the peer.
  * Aborts (SO_LINGER 0 and close with unread data) are RST|ACK with timestamps, as Linux sends
    them; a refused SYN gets RST|ACK with seq 0 and ack = ISN + 1; the RST answering a
    retransmitted FIN after a skipped TIME_WAIT is a bare RST with seq = the FIN's ack.
  * Full-size segments carry 1448 bytes (IPv4, MSS 1460 minus 12 bytes of timestamps) or 1428
    bytes (IPv6, MSS 1440 minus 12).
  * The vantage point is the client side: server replies arrive one RTT after what triggered
    them, the client's own replies leave within microseconds.
  * Every connection has a unique 4-tuple (client IP, client port are drawn without
    replacement), so tshark's ``-z conv,tcp`` reports exactly one conversation per connection.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np

FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10
C, S = 0, 1                      # direction: client -> server, server -> client
OPT_NONE, OPT_TS, OPT_SYN = 0, 1, 2
SEQ_NORMAL, SEQ_ZERO, SEQ_SAME = 0, 1, 2   # SEQ_SAME: repeat the previous same-direction seq
SNAPLEN = 128
MSS4, MSS6 = 1460, 1440
TS_LEN = 12
EPHEMERAL_LO, EPHEMERAL_HI = 32768, 60999      # Linux ip_local_port_range, inclusive
SERVER_PORTS = np.array([443, 80, 8080, 8443, 9000], dtype=np.uint16)
N_SERVERS = 16
CHUNK = 1 << 19                  # packets written per vectorised chunk (bounds memory)

# kind -> (share, description).  Order matters for determinism; shares sum to 1.
KINDS: dict[str, tuple[float, str]] = {
    "graceful_client": (0.45, "client closes first: FIN, FIN, ACK (30% as FIN, ACK, FIN, ACK)"),
    "graceful_server": (0.15, "server closes first: FIN, FIN, ACK (30% as FIN, ACK, FIN, ACK)"),
    "simultaneous_close": (0.01, "both FINs cross on the wire, each side then ACKs the other's"),
    "rst_client": (0.05, "client aborts with RST|ACK after data, no FIN (SO_LINGER 0)"),
    "rst_server": (0.03, "server aborts with RST|ACK after data, no FIN (SO_LINGER 0)"),
    "unread_data_rst": (0.03, ("server sends data, client answers RST|ACK at once, no FIN "
                              "(close with unread data)")),
    "refused": (0.05, "SYN answered by RST|ACK (connection refused)"),
    "half_open": (0.02, "SYN, SYN-ACK then 1-5 SYN-ACK retransmissions, never a final ACK"),
    "close_wait_leak": (0.03, ("client FIN acked by the server, server never sends FIN until "
                              "capture end (server stuck in CLOSE_WAIT)")),
    "fin_wait_2_hang": (0.03, ("server FIN acked by the client, client never sends FIN until "
                              "capture end (server stuck in FIN_WAIT_2)")),
    "half_close": (0.03, ("client FIN (SHUT_WR), server keeps sending data the client ACKs, then "
                         "server FIN, client ACK")),
    "lost_final_ack": (0.02, ("client FIN, server FIN, client ACK lost, server retransmits FIN, "
                             "client ACKs it again")),
    "time_wait_skipped": (0.01, ("client FIN, server FIN, client ACK lost, server retransmits "
                                "FIN, client answers RST (no TIME_WAIT)")),
    "open_at_end": (0.09, "handshake and data, no FIN or RST before capture end"),
}
KIND_NAMES = list(KINDS)
K = {name: i for i, name in enumerate(KIND_NAMES)}

# Close templates: per kind, rows of (dir, flags, options, gap kind, special).
#   gap kinds: "think" (idle before closing), "reply" (dir-dependent reaction), "rto"
#   (retransmission timeout), "cross" (a few microseconds: the crossing FIN), "quick" (client's
#   immediate RST), "burst"
#   special: "" | "lost" (not delivered) | "retx" (retransmission of the previous same-dir
#   segment, not delivered again) | "lag1" (its ack does not yet cover the peer's FIN)
CLOSE_TEMPLATES: dict[str, list[tuple[int, int, int, str, str]]] = {
    "graceful_client_3": [(C, FIN | ACK, OPT_TS, "think", ""), (S, FIN | ACK, OPT_TS, "reply", ""),
                          (C, ACK, OPT_TS, "reply", "")],
    "graceful_client_4": [(C, FIN | ACK, OPT_TS, "think", ""), (S, ACK, OPT_TS, "reply", ""),
                          (S, FIN | ACK, OPT_TS, "burst", ""), (C, ACK, OPT_TS, "reply", "")],
    "graceful_server_3": [(S, FIN | ACK, OPT_TS, "think", ""), (C, FIN | ACK, OPT_TS, "reply", ""),
                          (S, ACK, OPT_TS, "reply", "")],
    "graceful_server_4": [(S, FIN | ACK, OPT_TS, "think", ""), (C, ACK, OPT_TS, "reply", ""),
                          (C, FIN | ACK, OPT_TS, "burst", ""), (S, ACK, OPT_TS, "reply", "")],
    "simultaneous_close": [(C, FIN | ACK, OPT_TS, "think", ""),
                           (S, FIN | ACK, OPT_TS, "cross", "lag1"),
                           (C, ACK, OPT_TS, "reply", ""), (S, ACK, OPT_TS, "reply", "")],
    "rst_client": [(C, RST | ACK, OPT_TS, "think", "")],
    "rst_server": [(S, RST | ACK, OPT_TS, "think", "")],
    "unread_data_rst": [(C, RST | ACK, OPT_TS, "quick", "")],
    "close_wait_leak": [(C, FIN | ACK, OPT_TS, "think", ""), (S, ACK, OPT_TS, "reply", "")],
    "fin_wait_2_hang": [(S, FIN | ACK, OPT_TS, "think", ""), (C, ACK, OPT_TS, "reply", "")],
    "half_close": [(S, FIN | ACK, OPT_TS, "think", ""), (C, ACK, OPT_TS, "reply", "")],
    "lost_final_ack": [(C, FIN | ACK, OPT_TS, "think", ""), (S, FIN | ACK, OPT_TS, "reply", ""),
                       (C, ACK, OPT_TS, "reply", "lost"), (S, FIN | ACK, OPT_TS, "rto", "retx"),
                       (C, ACK, OPT_TS, "reply", "")],
    "time_wait_skipped": [(C, FIN | ACK, OPT_TS, "think", ""), (S, FIN | ACK, OPT_TS, "reply", ""),
                          (C, ACK, OPT_TS, "reply", "lost"), (S, FIN | ACK, OPT_TS, "rto", "retx"),
                          (C, RST, OPT_NONE, "reply", "")],
}
TEMPLATE_NAMES = list(CLOSE_TEMPLATES)
FOUR_WAY_SHARE = 0.30
DATA_RETX_P = 0.03               # share of data segments lost and retransmitted


def _concat(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    parts = [p for p in parts if len(p["conn"])]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _rows(conn, dir_, flags, plen, gap, opt, seqmode, lost, retx, lag, phase) -> dict:
    n = len(conn)

    def full(v, dt):
        a = np.asarray(v)
        return np.broadcast_to(a, (n,)).astype(dt) if a.ndim == 0 else a.astype(dt, copy=False)

    return {"conn": full(conn, np.int32), "dir": full(dir_, np.uint8),
            "flags": full(flags, np.uint8), "plen": full(plen, np.int32),
            "gap": full(gap, np.int64), "opt": full(opt, np.uint8),
            "seqmode": full(seqmode, np.uint8), "lost": full(lost, bool),
            "retx": full(retx, bool), "lag": full(lag, np.uint8),
            "phase": full(phase, np.uint8)}


class Generator:
    def __init__(self, connections: int, seed: int, duration: float):
        self.n = int(connections)
        self.seed = int(seed)
        self.duration_us = int(duration * 1e6)
        self.rng = np.random.default_rng(seed)

    # ---- per-connection attributes ---------------------------------------------------------
    def connections(self) -> None:
        rng, n = self.rng, self.n
        shares = np.array([KINDS[k][0] for k in KIND_NAMES])
        exact = shares / shares.sum() * n
        counts = np.floor(exact).astype(np.int64)
        rest = n - counts.sum()
        counts[np.argsort(-(exact - counts), kind="stable")[:rest]] += 1
        self.kind_counts = {k: int(c) for k, c in zip(KIND_NAMES, counts)}
        self.kind = rng.permutation(np.repeat(np.arange(len(KIND_NAMES)), counts)).astype(np.int8)

        self.v6 = np.zeros(n, bool)
        self.v6[rng.permutation(n)[: int(round(n * 0.05))]] = True
        n_cip = max(64, -(-n // 500))
        n_ports = EPHEMERAL_HI - EPHEMERAL_LO + 1
        pair = rng.choice(n_cip * n_ports, size=n, replace=False)
        self.cip = (pair // n_ports).astype(np.int64)
        self.cport = (EPHEMERAL_LO + pair % n_ports).astype(np.uint16)
        self.sip = rng.integers(0, N_SERVERS, n)
        self.sport = SERVER_PORTS[self.sip % len(SERVER_PORTS)]
        self.isn = rng.integers(0, 2**32, (n, 2), dtype=np.uint64)
        self.tsbase = rng.integers(0, 2**31, (n, 2), dtype=np.uint64)
        self.ipid = rng.integers(0, 2**16, (n, 2), dtype=np.uint64)
        self.flowlabel = rng.integers(1, 2**20, (n, 2), dtype=np.uint32)
        self.win = np.stack([rng.integers(250, 3000, n), rng.integers(250, 3000, n)], 1)
        self.ttl_s = np.array([64, 57, 117, 52], np.uint8)[rng.integers(0, 4, n)]
        self.start = np.sort(rng.integers(0, self.duration_us, n))[rng.permutation(n)]
        # RTT between client and server, microseconds: 0.2 ms .. ~300 ms, median ~ 8 ms
        self.rtt = np.clip(rng.lognormal(np.log(8000), 1.2, n), 200, 300_000).astype(np.int64)
        self.mss_eff = np.where(self.v6, MSS6 - TS_LEN, MSS4 - TS_LEN).astype(np.int64)
        self.template = np.full(n, -1, np.int16)
        for name in ("simultaneous_close", "rst_client", "rst_server", "unread_data_rst",
                     "close_wait_leak", "fin_wait_2_hang", "half_close", "lost_final_ack",
                     "time_wait_skipped"):
            self.template[self.kind == K[name]] = TEMPLATE_NAMES.index(name)
        four = rng.random(n) < FOUR_WAY_SHARE
        for side in ("client", "server"):
            sel = self.kind == K[f"graceful_{side}"]
            self.template[sel & ~four] = TEMPLATE_NAMES.index(f"graceful_{side}_3")
            self.template[sel & four] = TEMPLATE_NAMES.index(f"graceful_{side}_4")

    # ---- gap helpers (microseconds; all >= 1) ------------------------------------------------
    def g_reply(self, conn, dir_):
        """Reaction to the previous packet: server's arrive one RTT later, client's at once."""
        rng = self.rng
        far = (self.rtt[conn] * rng.uniform(0.95, 1.25, len(conn))).astype(np.int64)
        near = rng.integers(8, 300, len(conn))
        return np.where(np.asarray(dir_) == S, far, near)

    def g_burst(self, conn, dir_):
        rng = self.rng
        return np.where(np.asarray(dir_) == S, rng.integers(12, 130, len(conn)),
                        rng.integers(2, 40, len(conn)))

    def g_think(self, n, median_us, sigma=1.3, cap=5_000_000):
        return np.clip(self.rng.lognormal(np.log(median_us), sigma, n), 1, cap).astype(np.int64)

    def g_rto(self, conn):
        return (np.maximum(200_000, self.rtt[conn] * 2)
                + self.rng.integers(0, 200_000, len(conn))).astype(np.int64)

    # ---- phase 0: handshakes -------------------------------------------------------------------
    def handshakes(self) -> dict:
        rng = self.rng
        ids = np.arange(self.n)
        refused = ids[self.kind == K["refused"]]
        half = ids[self.kind == K["half_open"]]
        normal = ids[(self.kind != K["refused"]) & (self.kind != K["half_open"])]
        parts = []
        # normal: SYN, SYN-ACK, ACK
        c3 = np.repeat(normal, 3)
        pos = np.tile(np.arange(3), len(normal))
        d = np.array([C, S, C])[pos]
        gap = np.where(pos == 0, 0, self.g_reply(c3, d))
        parts.append(_rows(c3, d, np.array([SYN, SYN | ACK, ACK])[pos], 0, gap,
                           np.array([OPT_SYN, OPT_SYN, OPT_TS])[pos], SEQ_NORMAL, False, False, 0, 0))
        # refused: SYN, RST|ACK (seq 0, no options, window 0)
        c2 = np.repeat(refused, 2)
        pos = np.tile(np.arange(2), len(refused))
        d = pos.astype(np.uint8)
        gap = np.where(pos == 0, 0, self.g_reply(c2, d))
        parts.append(_rows(c2, d, np.array([SYN, RST | ACK])[pos], 0, gap,
                           np.array([OPT_SYN, OPT_NONE])[pos],
                           np.array([SEQ_NORMAL, SEQ_ZERO])[pos], False, False, 0, 0))
        # half-open: SYN, SYN-ACK, r SYN-ACK retransmissions at 1, 2, 4, ... s
        r = rng.integers(1, 6, len(half))
        cnt = 2 + r
        ch = np.repeat(half, cnt)
        pos = np.arange(len(ch)) - np.repeat(np.cumsum(cnt) - cnt, cnt)
        d = np.where(pos == 0, C, S)
        backoff = (1_000_000 << np.maximum(pos - 2, 0)) + rng.integers(0, 5000, len(ch))
        gap = np.where(pos == 0, 0, np.where(pos == 1, self.g_reply(ch, d), backoff))
        is_retx = pos >= 2
        is_lost = (pos >= 1) & (pos < np.repeat(cnt, cnt) - 1)
        parts.append(_rows(ch, d, np.where(pos == 0, SYN, SYN | ACK), 0, gap, OPT_SYN,
                           np.where(is_retx, SEQ_SAME, SEQ_NORMAL), is_lost, is_retx, 0, 0))
        self.synack_retx = int(r.sum())
        return _concat(parts)

    # ---- transfers: a sender's segments, the receiver ACKing every second one ---------------
    def transfers(self, conn, sender, nbytes, final_ack, first_gap, phase) -> dict:
        """Expand transfers (one row each, in order) into packet rows, in the same order."""
        mss = self.mss_eff[conn]
        m = np.maximum(1, -(-nbytes // mss))
        full_len = m + (m + 1) // 2
        length = full_len - (~final_ack).astype(np.int64)
        t = np.repeat(np.arange(len(conn)), length)
        k = np.arange(len(t)) - np.repeat(np.cumsum(length) - length, length)
        last = np.repeat(full_len - 1, length)
        is_ack = (k % 3 == 2) | (k == last)
        seg = k - k // 3
        mt, snd = m[t], sender[t]
        last_seg = (~is_ack) & (seg == mt - 1)
        pl = np.where(is_ack, 0, np.where(last_seg, nbytes[t] - (mt - 1) * mss[t], mss[t]))
        d = np.where(is_ack, 1 - snd, snd).astype(np.uint8)
        flags = np.where(last_seg, ACK | PSH, ACK)
        ct = conn[t]
        gap = np.where(is_ack, self.g_reply(ct, d), self.g_burst(ct, d))
        gap = np.where(k == 0, first_gap[t], gap)
        rows = _rows(ct, d, flags, pl, gap, OPT_TS, SEQ_NORMAL, False, False, 0, phase)
        # lose and retransmit a few data segments: duplicate them right after the original
        hit = (~is_ack) & (self.rng.random(len(t)) < DATA_RETX_P)
        self.data_retx += int(hit.sum())
        rep = 1 + hit.astype(np.int64)
        out = {key: np.repeat(v, rep) for key, v in rows.items()}
        second = np.zeros(len(out["conn"]), bool)
        second[np.cumsum(rep)[hit] - 1] = True
        first = np.zeros_like(second)
        first[np.cumsum(rep)[hit] - 2] = True
        out["lost"] = first
        out["retx"] = second
        out["seqmode"] = np.where(second, SEQ_SAME, SEQ_NORMAL).astype(np.uint8)
        out["gap"] = np.where(second, self.g_rto(out["conn"]), out["gap"])
        return out

    # ---- phase 1: request/response exchanges ----------------------------------------------
    def exchanges(self) -> dict:
        rng = self.rng
        ids = np.arange(self.n)
        talk = ids[(self.kind != K["refused"]) & (self.kind != K["half_open"])]
        nx = rng.integers(1, 6, len(talk))                 # 1..5 exchanges, mean 3
        conn = np.repeat(talk, nx)
        e = len(conn)
        first = np.r_[True, conn[1:] != conn[:-1]]
        mss = self.mss_eff[conn]
        # request: 20..1400 bytes, 10% of them 2-4 segments.  A last segment is never 1 byte
        # (tshark would take the retransmission of a 1-byte segment for a keep-alive).
        req = rng.integers(20, 1400, e)
        big = rng.random(e) < 0.10
        req = np.where(big, rng.integers(1, 4, e) * mss + rng.integers(2, 1400, e), req)
        # response: segments ~ 1 + geometric, heavy-ish tail, capped at 40 segments
        mseg = np.minimum(1 + rng.geometric(0.29, e), 40)
        resp = (mseg - 1) * mss + rng.integers(2, 1449, e).clip(max=mss)
        req_gap = np.where(first, rng.integers(20, 400, e), self.g_think(e, 30_000))
        resp_gap = (self.rtt[conn] + self.g_think(e, 2_000, 1.5, 2_000_000)).astype(np.int64)
        tc = np.stack([conn, conn], 1).ravel()
        sender = np.tile(np.array([C, S]), e)
        nbytes = np.stack([req, resp], 1).ravel()
        final_ack = np.stack([rng.random(e) < 0.3, np.ones(e, bool)], 1).ravel()
        first_gap = np.stack([req_gap, resp_gap], 1).ravel()
        return self.transfers(tc, sender, nbytes, final_ack, first_gap, 1)

    # ---- phases 2-3: unread data, half-close data ------------------------------------------
    def extras(self) -> list[dict]:
        rng = self.rng
        ids = np.arange(self.n)
        parts = []
        # unread data: server pushes 1..3 segments, nobody ACKs them (the client RSTs at once)
        u = ids[self.kind == K["unread_data_rst"]]
        m = rng.integers(1, 4, len(u))
        cu = np.repeat(u, m)
        k = np.arange(len(cu)) - np.repeat(np.cumsum(m) - m, m)
        lastseg = k == np.repeat(m - 1, m)
        pl = np.where(lastseg, rng.integers(2, 1449, len(cu)).clip(max=self.mss_eff[cu]),
                      self.mss_eff[cu])
        gap = np.where(k == 0, self.g_think(len(cu), 50_000), self.g_burst(cu, np.full(len(cu), S)))
        parts.append(_rows(cu, S, np.where(lastseg, ACK | PSH, ACK), pl, gap, OPT_TS,
                           SEQ_NORMAL, False, False, 0, 2))
        # half-close: client FIN (SHUT_WR), server ACK; then server data the client ACKs
        h = ids[self.kind == K["half_close"]]
        ch = np.repeat(h, 2)
        pos = np.tile(np.arange(2), len(h))
        d = pos.astype(np.uint8)
        gap = np.where(pos == 0, self.g_think(len(ch), 1_000), self.g_reply(ch, d))
        parts.append(_rows(ch, d, np.where(pos == 0, FIN | ACK, ACK), 0, gap, OPT_TS,
                           SEQ_NORMAL, False, False, 0, 2))
        nb = rng.integers(1, 12, len(h)) * self.mss_eff[h] - rng.integers(0, 1000, len(h))
        parts.append(self.transfers(h, np.full(len(h), S), nb, np.ones(len(h), bool),
                                    self.g_think(len(h), 5_000), 3))
        return parts

    # ---- phase 4: closes -------------------------------------------------------------------
    def closes(self) -> dict:
        parts = []
        ids = np.arange(self.n)
        for ti, name in enumerate(TEMPLATE_NAMES):
            tpl = CLOSE_TEMPLATES[name]
            sel = ids[self.template == ti]
            if not len(sel):
                continue
            L = len(tpl)
            c = np.repeat(sel, L)
            pos = np.tile(np.arange(L), len(sel))
            d, flags, opt, gk, sp = (np.array([row[i] for row in tpl])[pos] for i in range(5))
            gap = np.zeros(len(c), np.int64)
            for kind_name, fn in (
                    ("think", lambda cc, dd: self.g_think(len(cc), 20_000, 1.8)),
                    ("reply", self.g_reply), ("burst", self.g_burst),
                    ("rto", lambda cc, dd: self.g_rto(cc)),
                    ("cross", lambda cc, dd: self.rng.integers(1, 60, len(cc))),
                    ("quick", lambda cc, dd: self.rng.integers(20, 2000, len(cc)))):
                m = gk == kind_name
                if m.any():
                    gap[m] = fn(c[m], d[m])
            parts.append(_rows(c, d, flags, 0, gap, opt,
                               np.where(sp == "retx", SEQ_SAME, SEQ_NORMAL),
                               (sp == "lost") | (sp == "retx"), sp == "retx",
                               (sp == "lag1").astype(np.uint8), 4))
        return _concat(parts)

    # ---- assemble and derive seq / ack / timestamps ----------------------------------------
    def build(self) -> dict:
        self.data_retx = 0
        self.connections()
        parts = [self.handshakes(), self.exchanges(), *self.extras(), self.closes()]
        p = _concat(parts)
        del parts
        order = np.argsort(p["conn"].astype(np.int64) * 8 + p["phase"], kind="stable")
        p = {k: v[order] for k, v in p.items()}
        del order
        n = len(p["conn"])
        conn = p["conn"]
        cnt = np.bincount(conn, minlength=self.n)
        cstart = np.cumsum(cnt) - cnt                     # first row of each connection
        row0 = cstart[conn]
        d = p["dir"].astype(np.int64)
        flags = p["flags"]

        def seg_cumsum(x):
            """Inclusive cumulative sum of x within each connection."""
            cs = np.cumsum(x)
            base = np.concatenate(([0], cs))[cstart]
            return cs - base[conn]

        # time
        gap = np.maximum(p["gap"], 1)
        gap[cstart[cnt > 0]] = 0
        t = self.start[conn] + seg_cumsum(gap)
        del gap
        # sequence space consumed by each segment, and what the receiver got
        consume = (p["plen"] + ((flags & SYN) > 0) + ((flags & FIN) > 0)).astype(np.int64)
        consume[p["retx"]] = 0
        retx = p["retx"]
        retx_idx = np.flatnonzero(retx)
        prev = self._prev_same_dir(conn, d, cstart)
        orig_of = prev[retx_idx]                  # the transmission just before (maybe a retx)
        assert (orig_of >= row0[retx_idx]).all()
        head = orig_of.copy()                     # the first transmission of the chain
        while True:
            again = retx[head]
            if not again.any():
                break
            head[again] = prev[head[again]]
        # seq = ISN + what this direction sent before; a retransmission repeats the first's
        sent_before = np.empty(n, np.int64)
        for dd in (C, S):
            m = d == dd
            x = np.where(m, consume, 0)
            sent_before[m] = (seg_cumsum(x) - x)[m]
        seq = self.isn[conn, d].astype(np.int64) + sent_before
        seq[retx_idx] = seq[head]
        seq[p["seqmode"] == SEQ_ZERO] = 0
        # what the receiver got: nothing from a lost segment; a retransmission delivers the
        # chain's sequence space if the transmission before it was lost, else nothing new
        delivered = np.where(p["lost"], 0, consume)
        delivered[retx_idx] = np.where(p["lost"][orig_of], consume[head], 0)
        del prev
        # ack = peer ISN + everything the peer's segments delivered so far (minus 'lag')
        got = np.empty(n, np.int64)
        for dd in (C, S):
            m = d == dd
            got[m] = seg_cumsum(np.where(d != dd, delivered, 0))[m]
        ack = self.isn[conn, 1 - d].astype(np.int64) + got - p["lag"]
        ack[(flags & ACK) == 0] = 0
        del got, sent_before, consume, delivered
        # TSval: per-connection, per-direction offset + capture time in ms
        tsval = (self.tsbase[conn, d].astype(np.int64) + t // 1000)
        # TSecr: TSval of the last packet the sender received from its peer (0 if none yet)
        idx = np.arange(n)
        tsecr = np.zeros(n, np.int64)
        for dd in (C, S):
            arrived = (d != dd) & ~p["lost"]
            last = np.maximum.accumulate(np.where(arrived, idx, -1))
            ok = (d == dd) & (last >= row0)
            tsecr[ok] = tsval[last[ok]]
        # IP id: per-direction counter
        ipid = np.empty(n, np.int64)
        for dd in (C, S):
            m = d == dd
            ipid[m] = (seg_cumsum(m.astype(np.int64)) - 1)[m]
        ipid = self.ipid[conn, d].astype(np.int64) + ipid
        self.per_conn_packets = cnt
        self.retx_lost_segments = int(len(retx_idx))
        return {"conn": conn, "dir": p["dir"], "flags": flags, "plen": p["plen"], "opt": p["opt"],
                "t": t, "seq": (seq & 0xFFFFFFFF).astype(np.uint32),
                "ack": (ack & 0xFFFFFFFF).astype(np.uint32),
                "tsval": (tsval & 0xFFFFFFFF).astype(np.uint32),
                "tsecr": (tsecr & 0xFFFFFFFF).astype(np.uint32),
                "ipid": (ipid & 0xFFFF).astype(np.uint16)}

    @staticmethod
    def _prev_same_dir(conn, d, cstart):
        """For every row, the previous row of the same connection and direction (or -1)."""
        n = len(conn)
        idx = np.arange(n)
        out = np.full(n, -1, np.int64)
        for dd in (C, S):
            m = d == dd
            last = np.maximum.accumulate(np.where(m, idx, -1))
            prev = np.r_[-1, last[:-1]]
            out[m] = prev[m]
        out[out < cstart[conn]] = -1
        return out

    # ---- writing ---------------------------------------------------------------------------
    def write(self, pk: dict, path: Path) -> dict:
        n = len(pk["conn"])
        order = np.argsort(pk["t"], kind="stable")
        sha = hashlib.sha256()
        total_bytes = 24
        with open(path, "wb") as f:
            hdr = np.array([0xA1B2C3D4], "<u4").tobytes() + np.array([2, 4], "<u2").tobytes() \
                + np.array([0, 0, SNAPLEN, 1], "<u4").tobytes()
            f.write(hdr)
            sha.update(hdr)
            for lo in range(0, n, CHUNK):
                sel = order[lo:lo + CHUNK]
                buf = self._records({k: v[sel] for k, v in pk.items()})
                f.write(buf)
                sha.update(buf)
                total_bytes += len(buf)
        return {"sha256": sha.hexdigest(), "bytes": total_bytes,
                "first_ts_us": int(pk["t"][order[0]]), "last_ts_us": int(pk["t"][order[-1]])}

    def _records(self, pk: dict) -> bytes:
        n = len(pk["conn"])
        conn = pk["conn"]
        d = pk["dir"].astype(np.int64)
        v6 = self.v6[conn]
        opt = pk["opt"]
        hlen = np.where(opt == OPT_SYN, 40, np.where(opt == OPT_TS, 32, 20))
        l3 = np.where(v6, 40, 20)
        frame = 14 + l3 + hlen + pk["plen"]
        caplen = np.minimum(frame, SNAPLEN)
        W = 16 + SNAPLEN
        rows = np.zeros((n, W), np.uint8)

        def put(col, values, nbytes, mask=None):
            b = np.asarray(values).astype(f">u{nbytes}").view(np.uint8).reshape(-1, nbytes)
            if mask is None:
                rows[:, col:col + nbytes] = b
            else:
                rows[mask, col:col + nbytes] = b[mask] if len(b) == n else b

        # pcap record header (little-endian)
        t = pk["t"]
        rec = np.stack([t // 1_000_000, t % 1_000_000, caplen, frame], 1).astype("<u4")
        rows[:, :16] = rec.view(np.uint8).reshape(n, 16)
        # Ethernet
        mac_client = np.frombuffer(bytes.fromhex("020000a10001"), np.uint8)
        mac_gw = np.frombuffer(bytes.fromhex("020000b20001"), np.uint8)
        to_c = d == S
        rows[:, 16:22] = np.where(to_c[:, None], mac_client, mac_gw)
        rows[:, 22:28] = np.where(to_c[:, None], mac_gw, mac_client)
        put(28, np.where(v6, 0x86DD, 0x0800), 2)
        # addresses (client/server), per packet src/dst
        cip, sip = self.cip[conn], self.sip[conn]
        c4 = (10 << 24) | (1 << 16) | ((cip // 250) << 8) | (cip % 250 + 1)
        s4 = np.full(n, (10 << 24) | (2 << 16), np.int64) | (sip + 1)
        src4, dst4 = np.where(to_c, s4, c4), np.where(to_c, c4, s4)
        tcp_len = hlen + pk["plen"]
        # TCP header (40 bytes: header + options; zeros beyond are payload zeros)
        tcp = np.zeros((n, 40), np.uint8)

        def tput(col, values, nbytes):
            tcp[:, col:col + nbytes] = np.asarray(values).astype(f">u{nbytes}").view(
                np.uint8).reshape(-1, nbytes)

        cport, sport = self.cport[conn], self.sport[conn]
        tput(0, np.where(to_c, sport, cport), 2)
        tput(2, np.where(to_c, cport, sport), 2)
        tput(4, pk["seq"], 4)
        tput(8, pk["ack"], 4)
        tput(12, ((hlen // 4) << 12) | pk["flags"], 2)
        flags = pk["flags"]
        win = np.where(flags & SYN, np.where(to_c, 65160, 64240), self.win[conn, d])
        win = np.where(flags & RST, 0, win)
        tput(14, win, 2)
        syn = opt == OPT_SYN
        ts = opt == OPT_TS
        if syn.any():
            mss = np.where(v6, MSS6, MSS4)
            o = np.zeros((n, 20), np.uint8)
            o[:, 0:2] = (2, 4)
            o[:, 2:4] = mss.astype(">u2").view(np.uint8).reshape(n, 2)
            o[:, 4:8] = (4, 2, 8, 10)
            o[:, 8:12] = pk["tsval"].astype(">u4").view(np.uint8).reshape(n, 4)
            o[:, 12:16] = pk["tsecr"].astype(">u4").view(np.uint8).reshape(n, 4)
            o[:, 16:20] = (1, 3, 3, 7)
            tcp[syn, 20:40] = o[syn]
        if ts.any():
            o = np.zeros((n, 12), np.uint8)
            o[:, 0:4] = (1, 1, 8, 10)
            o[:, 4:8] = pk["tsval"].astype(">u4").view(np.uint8).reshape(n, 4)
            o[:, 8:12] = pk["tsecr"].astype(">u4").view(np.uint8).reshape(n, 4)
            tcp[ts, 20:32] = o[ts]
        # TCP checksum over header + options (payload is zeros) + pseudo-header
        words = tcp.reshape(n, 20, 2).astype(np.int64)
        s = (words[:, :, 0] * 256 + words[:, :, 1]).sum(1) + 6 + tcp_len
        s4sum = ((src4 >> 16) + (src4 & 0xFFFF) + (dst4 >> 16) + (dst4 & 0xFFFF))
        c6 = self._v6_words(0x20010DB8, 1, cip + 1)
        sv6 = self._v6_words(0x20010DB8, 2, sip + 1)
        s6sum = c6.sum(1) + sv6.sum(1)
        s = s + np.where(v6, s6sum, s4sum)
        csum = self._fold(s)
        tput(16, csum, 2)
        # IPv4 header at 30
        ip4 = np.zeros((n, 20), np.uint8)
        ip4[:, 0] = 0x45
        ip4[:, 2:4] = (20 + tcp_len).astype(">u2").view(np.uint8).reshape(n, 2)
        ip4[:, 4:6] = pk["ipid"].astype(">u2").view(np.uint8).reshape(n, 2)
        ip4[:, 6] = 0x40
        ip4[:, 8] = np.where(to_c, self.ttl_s[conn], 64)
        ip4[:, 9] = 6
        ip4[:, 12:16] = src4.astype(">u4").view(np.uint8).reshape(n, 4)
        ip4[:, 16:20] = dst4.astype(">u4").view(np.uint8).reshape(n, 4)
        w4 = ip4.reshape(n, 10, 2).astype(np.int64)
        ip4[:, 10:12] = self._fold((w4[:, :, 0] * 256 + w4[:, :, 1]).sum(1)).astype(
            ">u2").view(np.uint8).reshape(n, 2)
        m4 = ~v6
        rows[m4, 30:50] = ip4[m4]
        rows[m4, 50:90] = tcp[m4]
        if v6.any():
            ip6 = np.zeros((n, 40), np.uint8)
            vtf = (6 << 28) | self.flowlabel[conn, d].astype(np.int64)
            ip6[:, 0:4] = vtf.astype(">u4").view(np.uint8).reshape(n, 4)
            ip6[:, 4:6] = tcp_len.astype(">u2").view(np.uint8).reshape(n, 2)
            ip6[:, 6] = 6
            ip6[:, 7] = np.where(to_c, self.ttl_s[conn], 64)
            ca = c6.astype(">u2").view(np.uint8).reshape(n, 16)
            sa = sv6.astype(">u2").view(np.uint8).reshape(n, 16)
            ip6[:, 8:24] = np.where(to_c[:, None], sa, ca)
            ip6[:, 24:40] = np.where(to_c[:, None], ca, sa)
            rows[v6, 30:70] = ip6[v6]
            rows[v6, 70:110] = tcp[v6]
        keep = np.arange(W)[None, :] < (16 + caplen)[:, None]
        return rows[keep].tobytes()

    @staticmethod
    def _v6_words(prefix32: int, subnet: int, host: np.ndarray) -> np.ndarray:
        """The 8 16-bit words of 2001:db8:<subnet>::<host> (host < 2**32)."""
        n = len(host)
        w = np.zeros((n, 8), np.int64)
        w[:, 0] = prefix32 >> 16
        w[:, 1] = prefix32 & 0xFFFF
        w[:, 2] = subnet
        w[:, 6] = host >> 16
        w[:, 7] = host & 0xFFFF
        return w

    @staticmethod
    def _fold(s: np.ndarray) -> np.ndarray:
        s = (s & 0xFFFF) + (s >> 16)
        s = (s & 0xFFFF) + (s >> 16)
        s = (s & 0xFFFF) + (s >> 16)
        return (~s) & 0xFFFF

    # ---- plan ------------------------------------------------------------------------------
    def plan(self, pk: dict, written: dict, path: Path) -> dict:
        flags, d, conn = pk["flags"], pk["dir"], pk["conn"]
        per_kind_packets = np.bincount(self.kind[conn], minlength=len(KIND_NAMES))
        return {
            "generator": "tests/benchmarks/make_synthetic.py",
            "format": {"container": "pcap", "magic": "0xa1b2c3d4 (microseconds)",
                       "byte_order": "little", "linktype": 1, "snaplen": SNAPLEN},
            "capture": path.name,
            "seed": self.seed,
            "connections": self.n,
            "packets": int(len(conn)),
            "bytes": written["bytes"],
            "sha256": written["sha256"],
            "first_ts_us": written["first_ts_us"],
            "last_ts_us": written["last_ts_us"],
            "duration_s": round((written["last_ts_us"] - written["first_ts_us"]) / 1e6, 6),
            "start_window_s": self.duration_us / 1e6,
            "ipv4_connections": int((~self.v6).sum()),
            "ipv6_connections": int(self.v6.sum()),
            "tcp_conversations": self.n,
            "kinds": self.kind_counts,
            "packets_by_kind": {k: int(v) for k, v in zip(KIND_NAMES, per_kind_packets)},
            "kind_descriptions": {k: v[1] for k, v in KINDS.items()},
            "four_way_graceful": {
                "graceful_client": int((self.template == TEMPLATE_NAMES.index(
                    "graceful_client_4")).sum()),
                "graceful_server": int((self.template == TEMPLATE_NAMES.index(
                    "graceful_server_4")).sum())},
            "retransmitted_data_segments": self.data_retx,
            "retransmitted_synacks": self.synack_retx,
            "retransmitted_fins": self.kind_counts["lost_final_ack"]
            + self.kind_counts["time_wait_skipped"],
            "retransmissions_total": self.retx_lost_segments,
            "packets_with_syn": int(((flags & SYN) > 0).sum()),
            "packets_with_fin": int(((flags & FIN) > 0).sum()),
            "packets_with_rst": int(((flags & RST) > 0).sum()),
            "client_to_server_packets": int((d == C).sum()),
            "server_to_client_packets": int((d == S).sum()),
            "payload_bytes": int(pk["plen"].sum()),
            "tcp_checksums": "valid (payload bytes are zero)",
        }

    def truth(self, path: Path) -> None:
        import csv
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["conn", "ip_version", "client_ip", "client_port", "server_ip",
                        "server_port", "kind", "packets"])
            for i in range(self.n):
                ci, si = int(self.cip[i]), int(self.sip[i])
                if self.v6[i]:
                    cs, ss = f"2001:db8:1::{ci + 1:x}", f"2001:db8:2::{si + 1:x}"
                    if ci + 1 > 0xFFFF:
                        cs = f"2001:db8:1::{(ci + 1) >> 16:x}:{(ci + 1) & 0xFFFF:x}"
                else:
                    cs, ss = f"10.1.{ci // 250}.{ci % 250 + 1}", f"10.2.0.{si + 1}"
                w.writerow([i, 6 if self.v6[i] else 4, cs, int(self.cport[i]), ss,
                            int(self.sport[i]), KIND_NAMES[self.kind[i]],
                            int(self.per_conn_packets[i])])


def generate(out: Path, connections: int = 100_000, seed: int = 1, duration: float = 600.0,
             truth: bool = False, quiet: bool = True) -> dict:
    """Write OUT and OUT.plan.json (and OUT.truth.csv); return the plan."""
    t0 = time.perf_counter()
    g = Generator(connections, seed, duration)
    pk = g.build()
    t1 = time.perf_counter()
    written = g.write(pk, out)
    t2 = time.perf_counter()
    plan = g.plan(pk, written, out)
    plan_path = plan_path_for(out)
    plan_path.write_text(json.dumps(plan, indent=2) + "\n")
    if truth:
        g.truth(out.with_name(out.name + ".truth.csv") if out.suffix != ".pcap"
                else out.with_suffix(".truth.csv"))
    if not quiet:
        print(f"{out}: {plan['packets']:,} packets, {plan['connections']:,} connections, "
              f"{plan['bytes'] / 1e6:.1f} MB; build {t1 - t0:.1f} s, write {t2 - t1:.1f} s",
              file=sys.stderr)
    return plan


def plan_path_for(out: Path) -> Path:
    """OUT.pcap -> OUT.plan.json (any other name: NAME.plan.json)."""
    out = Path(out)
    return out.with_suffix(".plan.json") if out.suffix == ".pcap" else \
        out.with_name(out.name + ".plan.json")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path, help="pcap file to write")
    ap.add_argument("--connections", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--duration", type=float, default=600.0,
                    help="connections start uniformly over this many seconds (default 600)")
    ap.add_argument("--truth", action="store_true",
                    help="also write OUT.truth.csv, one row per connection")
    ap.add_argument("-q", "--quiet", action="store_true")
    a = ap.parse_args(argv)
    if a.connections < 1:
        ap.error("--connections must be >= 1")
    a.out.parent.mkdir(parents=True, exist_ok=True)
    generate(a.out, a.connections, a.seed, a.duration, a.truth, a.quiet)
    return 0


if __name__ == "__main__":
    sys.exit(main())
