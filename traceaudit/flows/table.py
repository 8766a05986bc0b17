"""The flow table: one pandas row per TCP connection, built incrementally from PacketBatches."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from traceaudit.capture.batch import PacketBatch
from traceaudit.flows import assign as A
from traceaudit.flows.columns import Columns, Repeated
from traceaudit.flows.addresses import format_addresses

if TYPE_CHECKING:
    import pandas as pd

#: Flow-table columns, documented where declared (Zeek style). Times are epoch seconds (float).
FLOW_COLUMNS: dict[str, str] = {
    "id": "connection number within its capture, in order of first packet (0-based); equals "
          "Wireshark's tcp.stream wherever the groupings agree, so `tcp.stream eq ID` shows it",
    "capture": "path of the capture file the connection was read from",
    "client_ip": "address of the client: the SYN sender (or the guessed side, see "
                 "orientation_guessed)",
    "client_port": "client TCP port",
    "server_ip": "address of the server: the SYN receiver / SYN-ACK sender",
    "server_port": "server TCP port",
    "ip_version": "4 or 6",
    "orientation_guessed": "True when no SYN or SYN-ACK was captured and client/server were "
                           "guessed from the ports (below 1024, then non-ephemeral, then lower "
                           "port = server)",
    "tunneled": "True when the connection was found inside a tunnel (GRE, VXLAN, Geneve, ...)",
    "start_ts": "time of the connection's first packet",
    "end_ts": "time of its last packet",
    "first_frame": "frame number of the first packet (as Wireshark numbers frames)",
    "last_frame": "frame number of the last packet",
    "client_packets": "packets sent by the client",
    "server_packets": "packets sent by the server",
    "client_bytes": "bytes of whole frames (on-the-wire length) sent by the client",
    "server_bytes": "bytes of whole frames sent by the server",
    "client_payload": "TCP payload bytes sent by the client (from IP lengths, retransmissions "
                      "included)",
    "server_payload": "TCP payload bytes sent by the server",
    "client_first_ts": "time of the client's first packet (NaN when it sent none)",
    "client_last_ts": "time of the client's last packet",
    "client_first_frame": "frame of the client's first packet (-1 when none)",
    "client_last_frame": "frame of the client's last packet (-1 when none)",
    "server_first_ts": "time of the server's first packet (NaN when it sent none)",
    "server_last_ts": "time of the server's last packet",
    "server_first_frame": "frame of the server's first packet (-1 when none)",
    "server_last_frame": "frame of the server's last packet (-1 when none)",
}


@dataclass(frozen=True, slots=True, eq=False)
class Assignment:
    """Per-row result of assigning one batch: which connection, and which direction."""

    conn: np.ndarray          # int64 connection index (the flow table's id)
    from_client: np.ndarray   # bool: True when the row was sent by that connection's client


class FlowBuilder:
    """Assigns batches to connections in capture order; ``table()`` renders the flow table."""

    def __init__(self, initial: int = 1 << 12) -> None:
        self.ht = np.full(initial * 2, -1, np.int64)
        self.slots = np.zeros((initial, A.N_SLOT_FIELDS), np.int64)
        self.conn = np.zeros((initial, A.N_FIELDS), np.int64)
        self.n_slots = 0
        self.n_conns = 0

    def _grow_tables(self) -> None:
        """Double whatever the assignment kernel ran out of (amortised O(1) per connection)."""
        if 2 * (self.n_slots + 1) > len(self.ht):
            self.ht = np.full(len(self.ht) * 2, -1, np.int64)
            A.rebuild_table(self.ht, self.slots, self.n_slots)
        if self.n_slots >= len(self.slots):
            self.slots = _grow(self.slots, self.n_slots + 1)
        if self.n_conns >= len(self.conn):
            self.conn = _grow(self.conn, self.n_conns + 1)

    def add(self, batch: PacketBatch) -> Assignment:
        n = len(batch)
        conn_ids = np.empty(n, np.int64)
        from_client = np.empty(n, np.bool_)
        b = batch.columns
        row = 0
        while True:
            self.n_slots, self.n_conns, row = A.assign_batch(
                b["src_hi"], b["src_lo"], b["dst_hi"], b["dst_lo"], b["sport"], b["dport"],
                b["flags"], b["seq"], b["ack"], b["ts_ns"], b["frame"], b["frame_len"],
                b["payload_len"], b["ip_version"], b["tunneled"], self.ht, self.slots,
                self.n_slots, self.conn, self.n_conns, conn_ids, from_client, row)
            if row >= n:
                return Assignment(conn_ids, from_client)
            self._grow_tables()

    def table(self, capture: str) -> pd.DataFrame:
        """The flow table so far (one row per connection, ``FLOW_COLUMNS``)."""
        return self.columns(capture).frame()

    def columns(self, capture: str) -> Columns:
        """The flow table so far as NumPy columns (``FLOW_COLUMNS``, in order)."""
        c = self.conn[:self.n_conns]
        s = self.slots[c[:, A.F_SLOT]]
        client_is_a = c[:, A.F_CLIENT_IS_A] == 1
        a_hi, a_lo = s[:, A.S_A_HI], s[:, A.S_A_LO]
        b_hi, b_lo = s[:, A.S_B_HI], s[:, A.S_B_LO]
        ipv = c[:, A.F_IPV]
        c_hi = np.where(client_is_a, a_hi, b_hi)
        c_lo = np.where(client_is_a, a_lo, b_lo)
        s_hi = np.where(client_is_a, b_hi, a_hi)
        s_lo = np.where(client_is_a, b_lo, a_lo)
        cols: dict[str, np.ndarray | Repeated] = {
            "id": np.arange(self.n_conns, dtype=np.int64),
            "capture": Repeated(capture, self.n_conns),
            "client_ip": format_addresses(c_hi, c_lo, ipv),
            "client_port": np.where(client_is_a, s[:, A.S_A_PORT], s[:, A.S_B_PORT]).astype(
                np.int32),
            "server_ip": format_addresses(s_hi, s_lo, ipv),
            "server_port": np.where(client_is_a, s[:, A.S_B_PORT], s[:, A.S_A_PORT]).astype(
                np.int32),
            "ip_version": ipv.astype(np.int8),
            "orientation_guessed": c[:, A.F_GUESSED] == 1,
            "tunneled": c[:, A.F_TUNNELED] == 1,
            "start_ts": _seconds(c[:, A.F_FIRST_TS]),
            "end_ts": _seconds(c[:, A.F_LAST_TS]),
            "first_frame": c[:, A.F_FIRST_FRAME],
            "last_frame": c[:, A.F_LAST_FRAME],
        }
        for d, side in enumerate(("client", "server")):
            cols[f"{side}_packets"] = c[:, A.F_PKTS + d]
            cols[f"{side}_bytes"] = c[:, A.F_BYTES + d]
            cols[f"{side}_payload"] = c[:, A.F_PAYLOAD + d]
        for d, side in enumerate(("client", "server")):
            sent = c[:, A.F_DIR_FIRST_FRAME + d] >= 0
            cols[f"{side}_first_ts"] = np.where(sent, _seconds(c[:, A.F_DIR_FIRST_TS + d]), np.nan)
            cols[f"{side}_last_ts"] = np.where(sent, _seconds(c[:, A.F_DIR_LAST_TS + d]), np.nan)
            cols[f"{side}_first_frame"] = c[:, A.F_DIR_FIRST_FRAME + d]
            cols[f"{side}_last_frame"] = np.where(sent, c[:, A.F_DIR_LAST_FRAME + d], -1)
        return Columns({name: cols[name] for name in FLOW_COLUMNS}, self.n_conns)


def _grow(arr: np.ndarray, rows: int) -> np.ndarray:
    size = max(rows, len(arr) * 8)      # untouched zero pages are not resident; fewer copies
    out = np.zeros((size,) + arr.shape[1:], arr.dtype)
    out[:len(arr)] = arr
    return out


def _seconds(ns: np.ndarray) -> np.ndarray:
    return ns.astype(np.float64) / 1e9


def build_flow_table(path: str | Path, **reader_options) -> pd.DataFrame:
    """Read one capture and return its flow table (damage is ignored; see the pipeline)."""
    from traceaudit.capture import open_capture
    source = open_capture(path, **reader_options)
    builder = FlowBuilder()
    for batch in source.batches():
        builder.add(batch)
    return builder.table(str(path))
