"""Zeek compatibility: each TCP connection as Zeek's conn.log would show it (``conn_state``,
``history``), from Zeek's own view of the capture.

``ZeekTracker`` runs beside the flow builder on the same batches (compiled loop in
``zeek_kernel.pyx``) and keeps Zeek's connection table, which splits 4-tuples differently from ours
(Zeek's reuse rule, removal timers, bad-checksum handling). ``finish`` returns

* ``rows``: one row per Zeek connection, like conn.log's TCP rows (``ZEEK_ROW_COLUMNS``);
* per *our* connection id: the ``conn_state`` and ``history`` of the Zeek connection that holds
  our connection's last packet, and whether Zeek's originator is our server (``flipped``).

What is emulated, the measured agreement with Zeek and the known differences:
``docs/zeek-compat.md``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from traceaudit.capture.batch import PacketBatch
from traceaudit.capture.times import epoch_seconds
from traceaudit.flows import assign as A
from traceaudit.flows.addresses import format_addresses
from traceaudit.flows.columns import Coded, Columns, first_seen_codes
from traceaudit.flows.table import Assignment, FlowBuilder
from traceaudit.tracking import zeek_kernel as ZK

if TYPE_CHECKING:
    import pandas as pd

#: Zeek's ``likely_server_ports`` (TCP) as filled by the base protocol scripts a default
#: (non ``-b``) Zeek loads: DCE-RPC, DNP3, DNS, Finger, FTP (+GridFTP), HTTP, IMAP, IRC, KRB,
#: LDAP, Modbus, MQTT, MySQL, POP3, PostgreSQL, RDP, Redis, SMB, SMTP, SOCKS, SSH, SSL/TLS, XMPP,
#: ... Zeek versions differ slightly; this is the set validated against the corpus.
FULL_MODE_LIKELY_SERVER_PORTS = frozenset({
    21, 22, 23, 25, 53, 79, 80, 81, 88, 110, 113, 135, 139, 143, 389, 443, 445, 502, 513, 543,
    544, 563, 585, 587, 614, 631, 636, 989, 990, 992, 993, 995, 1080, 1433, 1521, 1883, 2811,
    3128, 3268, 3306, 3389, 5222, 5223, 5269, 5432, 6379, 6666, 6667, 6668, 6669, 8000, 8080,
    8888, 20000})

#: HTTP's ports (base/protocols/http): what a ``-b`` run that loads the HTTP scripts adds.
HTTP_PORTS = frozenset({80, 81, 631, 1080, 3128, 8000, 8080, 8888})

#: ``Conn::port_inactivity_timeouts`` (base/protocols/conn/inactivity.zeek): 1 h for these.
FULL_MODE_LONG_INACTIVITY_PORTS = frozenset({21, 22, 23, 513})

#: Columns of ``ZeekResult.rows`` (conn.log names where conn.log has the field).
ZEEK_ROW_COLUMNS: dict[str, str] = {
    "orig_h": "Zeek's originator address (id.orig_h)",
    "orig_p": "originator port (id.orig_p)",
    "resp_h": "responder address (id.resp_h)",
    "resp_p": "responder port (id.resp_p)",
    "conn_state": "Zeek conn_state code (S0 S1 SF REJ S2 S3 RSTO RSTR RSTOS0 RSTRH SH SHR OTH)",
    "history": "Zeek history letters (upper case = originator); empty when Zeek logs '-'",
    "orig_pkts": "packets from the originator that Zeek's TCP analyzer processed",
    "resp_pkts": "packets from the responder",
    "start_ts": "time of the connection's first packet (conn.log ts), epoch seconds",
    "first_frame": "frame number of its first packet",
    "last_frame": "frame number of its last packet",
    "tunneled": "True when found inside a tunnel",
    "ip_version": "4 or 6",
    "start_ns": "conn.log ts in integer nanoseconds since the epoch (start_ts exactly)",
    "duration_ns": "Conn::last_time - start_time in ns: conn.log duration, which Zeek logs "
                   "(with orig_bytes and resp_bytes) only when it is > 0. last_time stops "
                   "moving once both sides have closed (Zeek's rule)",
    "orig_bytes": "TCP_Endpoint::Size() of the originator (uint64): payload bytes from "
                  "sequence-number progress, 32-bit wraps counted, SYN and FIN octets left out",
    "resp_bytes": "the same for the responder",
    "missed_bytes": "bytes of the content gaps Zeek reports (acked, never seen, both ends "
                    "established or closing cleanly): the sum of its content_gap events",
    "orig_ip_bytes": "sum of the IP total length fields of the originator's processed "
                     "packets (Zeek's ConnSize analyzer)",
    "resp_ip_bytes": "the same for the responder",
    "tcp_stream": "our connection id (Wireshark's tcp.stream) of the Zeek connection's first "
                  "packet",
}


@dataclass(frozen=True)
class ZeekConfig:
    """How the emulated Zeek is configured (defaults: a plain ``zeek -C -r`` run)."""

    ignore_checksums: bool = True        # -C; False: bad TCP checksums give C/c, packet dropped
    likely_server_ports: frozenset[int] = FULL_MODE_LIKELY_SERVER_PORTS
    long_inactivity_ports: frozenset[int] = FULL_MODE_LONG_INACTIVITY_PORTS
    long_inactivity_s: float = 3600.0    # Conn::port_inactivity_timeouts value
    tcp_inactivity_timeout_s: float = 300.0
    initial_inactivity_timeout_s: float = 60.0   # udp_inactivity_timeout, until the handshake
    tcp_attempt_delay_s: float = 5.0
    tcp_close_delay_s: float = 5.0
    tcp_partial_close_delay_s: float = 3.0
    tcp_reset_delay_s: float = 5.0
    tcp_SYN_timeout_s: float = 5.0
    tcp_session_timer_s: float = 6.0
    tcp_connection_linger_s: float = 5.0

    @classmethod
    def bare(cls, *, ignore_checksums: bool = True,
             likely_server_ports: frozenset[int] = frozenset()) -> ZeekConfig:
        """``zeek -b``: no protocol scripts, so no likely server ports and no port timeouts."""
        return cls(ignore_checksums=ignore_checksums, likely_server_ports=likely_server_ports,
                   long_inactivity_ports=frozenset())

    def params(self) -> np.ndarray:
        p = np.zeros(ZK.N_PRM, np.int64)

        def ns(s: float) -> int:
            return round(s * 1e9)

        p[ZK.PR_IGNORE_CSUM] = 1 if self.ignore_checksums else 0
        p[ZK.PR_ATTEMPT] = ns(self.tcp_attempt_delay_s)
        p[ZK.PR_CLOSE_DELAY] = ns(self.tcp_close_delay_s)
        p[ZK.PR_PARTIAL_CLOSE] = ns(self.tcp_partial_close_delay_s)
        p[ZK.PR_RESET_DELAY] = ns(self.tcp_reset_delay_s)
        p[ZK.PR_SYN_TIMEOUT] = ns(self.tcp_SYN_timeout_s)
        p[ZK.PR_SESSION_TIMER] = ns(self.tcp_session_timer_s)
        p[ZK.PR_LINGER] = ns(self.tcp_connection_linger_s)
        p[ZK.PR_INACT_TCP] = ns(self.tcp_inactivity_timeout_s)
        p[ZK.PR_INACT_INIT] = ns(self.initial_inactivity_timeout_s)
        p[ZK.PR_INACT_LONG] = ns(self.long_inactivity_s) if self.long_inactivity_ports else 0
        return p


#: Rows between two sweeps of the live table (a sweep scans all of it); a full live table is
#: swept before it is enlarged, so that it stays as small as the set Zeek holds.
SWEEP_ROWS = 1 << 18


def _port_mask(ports: frozenset[int]) -> np.ndarray:
    m = np.zeros(65536, np.bool_)
    if ports:
        m[np.fromiter(ports, np.int64)] = True
    return m


@dataclass
class ZeekResult:
    row_columns: Columns               # ZEEK_ROW_COLUMNS, one row per Zeek connection
    conn_state_code: np.ndarray        # per our connection id: index into CONN_STATE_LABELS
    history: Coded                     # per our connection id ("" where Zeek never saw it)
    flipped: np.ndarray                # per our connection id: Zeek's originator is our server
    zeek_row: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))  # its row

    @property
    def rows(self) -> pd.DataFrame:
        return self.row_columns.frame()

    @property
    def conn_state(self) -> np.ndarray:
        """Per our connection id (object: str; "" where Zeek never saw it)."""
        return CONN_STATE_LABELS[self.conn_state_code]


#: Zeek's conn_state codes, then "" (a connection Zeek's view never held).
CONN_STATE_LABELS = np.array(list(ZK.CONN_STATES) + [""], dtype=object)


class ZeekTracker:
    """Feeds each batch, after flow assignment, through ``zeek_kernel.zeek_batch``."""

    def __init__(self, config: ZeekConfig = ZeekConfig(), initial: int = 1 << 13) -> None:
        # (the live table at 1 << 13 rows is 5.3 MB: NumPy maps it in huge pages)
        self.config = config
        self._closed = False
        self.prm = config.params()
        self.likely = _port_mask(config.likely_server_ports)
        self.long_ports = _port_mask(config.long_inactivity_ports)
        self.zc = np.zeros((initial, ZK.NZ), np.int64)
        self.free = np.arange(initial - 1, -1, -1, dtype=np.int64)
        self.out = np.zeros((initial, ZK.NO), np.int64)
        self.out_hist = np.zeros((initial, ZK.HMAX), np.uint8)
        self.st = np.array([0, initial, 0], np.int64)   # rows used, free live rows, time
        self.slot_live = np.full(initial, -1, np.int64)
        self.our_zrow = np.full(initial, -1, np.int64)
        self._no_flags = np.zeros(1, np.uint8)
        self._unswept = 0                # rows since the last sweep

    @property
    def needs_checksum_marks(self) -> bool:
        return not self.config.ignore_checksums

    def add(self, batch: PacketBatch, assignment: Assignment, flows: FlowBuilder,
            seg_flags: np.ndarray | None = None,
            clock: tuple[int, int] | None = None) -> None:
        """``seg_flags``: optional uint8 per row, bits ``zeek_kernel.SEG_*`` (bad checksum,
        payload or header not captured, bad IPv4 header checksum).

        ``clock``: (rows, latest time) of the whole batch this one was taken from, when it
        holds only some of the capture's segments (a share, ``parallel.shares``): Zeek's
        timers run on the capture's clock and the sweeps come every ``SWEEP_ROWS`` rows of
        the capture, as in a read that keeps every segment."""
        self.slot_live = _grow_1d(self.slot_live, flows.n_slots, -1)
        self.our_zrow = _grow_1d(self.our_zrow, flows.n_conns, -1)
        b = batch.columns
        use = seg_flags is not None
        sf = seg_flags if use else self._no_flags
        row, n = 0, len(batch)
        while True:
            row = ZK.zeek_batch(assignment.conn, assignment.from_client, b["sport"], b["dport"],
                                b["flags"], b["seq"], b["ack"], b["payload_len"], b["ip_len"],
                                b["win"],
                                b["ts_ns"], b["frame"], sf, use, flows.conn, self.slot_live,
                                self.our_zrow, self.zc, self.free, self.out, self.out_hist,
                                self.st, self.likely, self.long_ports, self.prm, row)
            if row >= n:
                break
            self._grow()
        if clock is not None:
            n = clock[0]
            self.st[2] = max(int(self.st[2]), clock[1])
        self._unswept += n
        if n and self._unswept >= SWEEP_ROWS:
            self._unswept = 0
            ZK.sweep(self.zc, self.out, self.out_hist, self.slot_live, self.free, self.st,
                     self.prm)

    def _grow(self) -> None:
        if self.st[1] < 1:
            # live table full: first sweep out what timers removed, double it if that frees
            # less than a quarter (so memory follows the connections Zeek holds)
            self._unswept = 0
            ZK.sweep(self.zc, self.out, self.out_hist, self.slot_live, self.free, self.st,
                     self.prm)
            full = self.st[1] < max(1, len(self.zc) // 4)
        else:
            full = False
        if full:
            old = len(self.zc)
            zc = np.zeros((2 * old, ZK.NZ), np.int64)
            zc[:old] = self.zc
            self.zc = zc
            k = int(self.st[1])                 # rows the sweep freed stay on the free stack
            free = np.empty(2 * old, np.int64)
            free[:k] = self.free[:k]
            free[k:k + old] = np.arange(2 * old - 1, old - 1, -1)
            self.free = free
            self.st[1] = k + old
        if self.st[0] >= len(self.out):
            rows = 8 * len(self.out)           # untouched zero pages are not resident
            out = np.zeros((rows, ZK.NO), np.int64)
            out[:len(self.out)] = self.out
            hist = np.zeros((rows, ZK.HMAX), np.uint8)
            hist[:len(self.out_hist)] = self.out_hist
            self.out, self.out_hist = out, hist

    def close(self) -> None:
        """End of capture: Zeek's pending timers fire for every connection still held
        (compiled; done once, ``finish`` calls it if nobody did)."""
        if not self._closed:
            self._closed = True
            ZK.finish_all(self.zc, self.out, self.out_hist, self.slot_live, self.free, self.st)

    def finish(self, flows: FlowBuilder,
               flow_table: pd.DataFrame | Columns | None = None) -> ZeekResult:
        """All rows, and the per-connection view. ``flow_table`` (``flows.table()``, if already
        built) lends its formatted addresses."""
        self.close()
        n = int(self.st[0])
        out = self.out[:n]
        n_conns = flows.n_conns
        client_is_a = flows.conn[:n_conns, A.F_CLIENT_IS_A] == 1
        hist = history_codes(self.out_hist[:n])
        states = Coded(out[:, ZK.O_STATE], CONN_STATE_LABELS)
        rows = self._rows(flows, out, hist, states, client_is_a, flow_table)
        zrow = self.our_zrow[:n_conns]
        conn_state, flipped = self.conn_view(zrow, client_is_a)
        seen = zrow >= 0
        # our connections' histories: their Zeek rows' codes, "" (one more label) if none
        labels = np.append(hist.labels, np.array([""], object))
        codes = np.where(seen, hist.codes[np.where(seen, zrow, 0)], len(labels) - 1) if n \
            else np.full(n_conns, 0, np.int64)
        return ZeekResult(rows, conn_state, Coded(codes, labels), flipped, zrow)

    def conn_view(self, zrow: np.ndarray, client_is_a: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray]:
        """Per our connection, from the Zeek row holding its last packet (``zrow``, -1 none):
        conn_state code (``len(CONN_STATES)`` where Zeek never saw it) and whether Zeek's
        originator is our server."""
        seen = zrow >= 0
        conn_state = np.full(len(zrow), len(ZK.CONN_STATES), np.int64)
        flipped = np.zeros(len(zrow), bool)
        if seen.any():
            out = self.out[zrow[seen]]
            conn_state[seen] = out[:, ZK.O_STATE]
            flipped[seen] = (out[:, ZK.O_ORIG_IS_A] == 1) != client_is_a[seen]
        return conn_state, flipped

    def history_letters(self, zrow: np.ndarray) -> np.ndarray:
        """Per our connection, its Zeek history letters: uint8 rows of HMAX, NUL-padded."""
        letters = np.zeros((len(zrow), ZK.HMAX), np.uint8)
        seen = zrow >= 0
        letters[seen] = self.out_hist[zrow[seen]]
        return letters

    @staticmethod
    def _rows(flows: FlowBuilder, out: np.ndarray, hist: Coded, states: Coded,
              client_is_a: np.ndarray, flow_table: pd.DataFrame | Columns | None) -> Columns:
        orig_a = out[:, ZK.O_ORIG_IS_A] == 1
        ipv = out[:, ZK.O_IPV]
        s = flows.slots[out[:, ZK.O_SLOT]] if len(out) else np.zeros((0, A.N_SLOT_FIELDS),
                                                                       np.int64)
        client = flow_table.column("client_ip") if isinstance(flow_table, Columns) else None
        server = flow_table.column("server_ip") if isinstance(flow_table, Columns) else None
        if isinstance(client, Coded) and isinstance(server, Coded) and \
                client.labels is server.labels and len(out):   # as the flow builder makes them
            conn = out[:, ZK.O_CONN]
            orig_client = orig_a == client_is_a[conn]
            cc, sc = client.codes[conn], server.codes[conn]
            orig_h = Coded(np.where(orig_client, cc, sc), client.labels)
            resp_h = Coded(np.where(orig_client, sc, cc), client.labels)
        elif flow_table is not None and len(out):
            conn = out[:, ZK.O_CONN]
            orig_client = orig_a == client_is_a[conn]
            cip = np.asarray(flow_table["client_ip"], dtype=object)[conn]
            sip = np.asarray(flow_table["server_ip"], dtype=object)[conn]
            orig_h = np.where(orig_client, cip, sip)
            resp_h = np.where(orig_client, sip, cip)
        else:
            a_hi, a_lo, b_hi, b_lo = s[:, A.S_A_HI], s[:, A.S_A_LO], s[:, A.S_B_HI], s[:, A.S_B_LO]
            orig_h = format_addresses(np.where(orig_a, a_hi, b_hi), np.where(orig_a, a_lo, b_lo),
                                      ipv)
            resp_h = format_addresses(np.where(orig_a, b_hi, a_hi), np.where(orig_a, b_lo, a_lo),
                                      ipv)
        cols = {
            "orig_h": orig_h,
            "orig_p": np.where(orig_a, s[:, A.S_A_PORT], s[:, A.S_B_PORT]).astype(np.int32),
            "resp_h": resp_h,
            "resp_p": np.where(orig_a, s[:, A.S_B_PORT], s[:, A.S_A_PORT]).astype(np.int32),
            "conn_state": states,
            "history": hist,
            "orig_pkts": out[:, ZK.O_ORIG_PKTS],
            "resp_pkts": out[:, ZK.O_RESP_PKTS],
            "start_ts": epoch_seconds(out[:, ZK.O_START_TS]),
            "first_frame": out[:, ZK.O_FIRST_FRAME],
            "last_frame": out[:, ZK.O_LAST_FRAME],
            "tunneled": out[:, ZK.O_TUNNELED] == 1,
            "ip_version": ipv.astype(np.int8),
            "start_ns": out[:, ZK.O_START_TS].copy(),
            "duration_ns": out[:, ZK.O_LAST_T] - out[:, ZK.O_START_TS],
            "orig_bytes": out[:, ZK.O_ORIG_SIZE].view(np.uint64),
            "resp_bytes": out[:, ZK.O_RESP_SIZE].view(np.uint64),
            "missed_bytes": out[:, ZK.O_MISSED],
            "orig_ip_bytes": out[:, ZK.O_ORIG_IP_BYTES],
            "resp_ip_bytes": out[:, ZK.O_RESP_IP_BYTES],
            "tcp_stream": out[:, ZK.O_CONN],
        }
        return Columns({name: cols[name] for name in ZEEK_ROW_COLUMNS}, len(out))


def history_codes(hist: np.ndarray) -> Coded:
    """Rows of letter bytes (NUL-padded) → codes into their distinct strings.

    Few histories recur across many connections (a few hundred in 100,000), so each distinct
    one is made into a string once: rows are grouped by a 64-bit hash of their bytes, and the
    grouping is checked against every group's first row (exact grouping if two ever collide).
    """
    n = len(hist)
    if not n:
        return Coded(np.zeros(0, np.int64), np.zeros(0, object))
    rows = np.ascontiguousarray(hist)
    fixed = rows.view(f"S{rows.shape[1]}").ravel()
    words = rows.view(np.uint64)                       # (HMAX is a multiple of 8)
    key = words[:, 0] * _MIX
    for j in range(1, words.shape[1]):
        key = (key ^ words[:, j]) * _MIX
    _, first, codes = np.unique(key, return_index=True, return_inverse=True)
    if not np.array_equal(fixed[first][codes], fixed):
        codes, distinct = first_seen_codes(fixed.tolist())
        return Coded(codes, np.array([v.decode() for v in distinct], object))
    labels = np.array([v.decode() for v in fixed[first].tolist()], object)
    return Coded(codes.astype(np.int64).ravel(), labels)


_MIX = np.uint64(0x9E3779B97F4A7C15)


def _grow_1d(arr: np.ndarray, n: int, fill: int) -> np.ndarray:
    if n <= len(arr):
        return arr
    out = np.full(max(n, 2 * len(arr)), fill, arr.dtype)
    out[:len(arr)] = arr
    return out


def checksum_ok_frames(path: str | Path, *, reader: str = "native",
                       batch_rows: int | None = None) -> np.ndarray:
    """Stopgap until the reader marks bad checksums per row: the frames (sorted) of the TCP
    segments the reader keeps when it verifies checksums. A segment of the normal read whose
    frame is missing here has a wrong checksum. Costs a second read of the file."""
    from traceaudit.capture import open_capture
    from traceaudit.errors import CaptureError
    kw = {} if batch_rows is None else {"batch_rows": batch_rows}
    src = open_capture(path, reader=reader, verify_checksums=True, **kw)
    got = []
    try:
        for b in src.batches():
            got.append(b["frame"].copy())
    except CaptureError:
        pass
    return np.sort(np.concatenate(got)) if got else np.empty(0, np.int64)


def seg_flags_from_ok_frames(frame: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """SEG_BAD_CSUM for the rows whose frame is not in the sorted array ``ok``."""
    if not len(ok):
        return np.full(len(frame), ZK.SEG_BAD_CSUM, np.uint8)
    idx = np.minimum(np.searchsorted(ok, frame), len(ok) - 1)
    return np.where(ok[idx] == frame, 0, ZK.SEG_BAD_CSUM).astype(np.uint8)
