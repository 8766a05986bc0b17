"""The flow table: one pandas row per TCP connection, built incrementally from PacketBatches."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from traceaudit.capture.batch import PacketBatch
from traceaudit.capture.times import epoch_seconds
from traceaudit.flows import assign as A
from traceaudit.flows.columns import Coded, Columns, Repeated
from traceaudit.flows.addresses import address_codes
from traceaudit.names import display_name

if TYPE_CHECKING:
    import pandas as pd

#: Flow-table columns, documented where declared (Zeek style). Times are epoch seconds (float).
FLOW_COLUMNS: dict[str, str] = {
    "id": "connection number within its capture, in order of first packet (0-based); equals "
          "Wireshark's tcp.stream wherever the groupings agree, so `tcp.stream eq ID` shows it",
    "capture": "path of the capture file the connection was read from (as every report writes "
               "it: names.display_name)",
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

    def __init__(self, initial: int = 1 << 15) -> None:
        # (the connection table at 1 << 15 rows is 7.6 MB: NumPy maps it in huge pages)
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
        return flow_columns(self.raw(slice(0, self.n_conns)), capture, 0)

    def raw(self, rows: np.ndarray | slice) -> dict[str, np.ndarray]:
        """``RAW_FIELDS`` of connections ``rows``: integers only, a fixed-width record each."""
        # one transposing copy, so that every field below is a contiguous row (reading a
        # column of the row-major matrix would touch a cache line per connection per field)
        c = np.ascontiguousarray(self.conn[rows].T)
        s = np.ascontiguousarray(self.slots[c[A.F_SLOT]].T)
        a = c[A.F_CLIENT_IS_A] == 1
        b = ~a
        raw = {
            "c_hi": np.where(a, s[A.S_A_HI], s[A.S_B_HI]),
            "c_lo": np.where(a, s[A.S_A_LO], s[A.S_B_LO]),
            "s_hi": np.where(b, s[A.S_A_HI], s[A.S_B_HI]),
            "s_lo": np.where(b, s[A.S_A_LO], s[A.S_B_LO]),
            "client_port": np.where(a, s[A.S_A_PORT], s[A.S_B_PORT]),
            "server_port": np.where(a, s[A.S_B_PORT], s[A.S_A_PORT]),
        }
        for name, field in _RAW_CONN_FIELDS.items():
            raw[name] = c[field]
        return raw


#: Raw per-connection fields (int64) a flow row is made from; ``flow_columns`` formats them.
_RAW_CONN_FIELDS = {
    "ipv": A.F_IPV, "guessed": A.F_GUESSED, "tunneled": A.F_TUNNELED,
    "first_ts": A.F_FIRST_TS, "last_ts": A.F_LAST_TS,
    "first_frame": A.F_FIRST_FRAME, "last_frame": A.F_LAST_FRAME,
    **{f"{name}{d}": base + d for d in (0, 1) for name, base in (
        ("pkts", A.F_PKTS), ("bytes", A.F_BYTES), ("payload", A.F_PAYLOAD),
        ("dir_first_ts", A.F_DIR_FIRST_TS), ("dir_last_ts", A.F_DIR_LAST_TS),
        ("dir_first_frame", A.F_DIR_FIRST_FRAME), ("dir_last_frame", A.F_DIR_LAST_FRAME))},
}
RAW_FIELDS = ["c_hi", "c_lo", "s_hi", "s_lo", "client_port", "server_port",
              *_RAW_CONN_FIELDS]


def flow_columns(raw, capture: str, first_id: int) -> Columns:
    """``FLOW_COLUMNS`` from raw fields (a dict of arrays or a record array), ids counted from
    ``first_id``."""
    n = len(raw["first_frame"])
    ipv = raw["ipv"]
    # both sides' addresses as codes into one set of texts: a host is one code whichever side
    # it is on (rules group by host), and writers need not hash 2 strings a connection
    codes, labels = address_codes(np.concatenate([raw["c_hi"], raw["s_hi"]]),
                                  np.concatenate([raw["c_lo"], raw["s_lo"]]),
                                  np.concatenate([ipv, ipv]))
    cols: dict[str, np.ndarray | Repeated | Coded] = {
        "id": np.arange(first_id, first_id + n, dtype=np.int64),
        "capture": Repeated(display_name(capture), n),
        "client_ip": Coded(codes[:n], labels),
        "client_port": raw["client_port"].astype(np.int32),
        "server_ip": Coded(codes[n:], labels),
        "server_port": raw["server_port"].astype(np.int32),
        "ip_version": ipv.astype(np.int8),
        "orientation_guessed": raw["guessed"] == 1,
        "tunneled": raw["tunneled"] == 1,
        "start_ts": epoch_seconds(raw["first_ts"]),
        "end_ts": epoch_seconds(raw["last_ts"]),
        "first_frame": raw["first_frame"],
        "last_frame": raw["last_frame"],
    }
    for d, side in enumerate(("client", "server")):
        cols[f"{side}_packets"] = raw[f"pkts{d}"]
        cols[f"{side}_bytes"] = raw[f"bytes{d}"]
        cols[f"{side}_payload"] = raw[f"payload{d}"]
    for d, side in enumerate(("client", "server")):
        sent = raw[f"dir_first_frame{d}"] >= 0
        cols[f"{side}_first_ts"] = np.where(sent, epoch_seconds(raw[f"dir_first_ts{d}"]), np.nan)
        cols[f"{side}_last_ts"] = np.where(sent, epoch_seconds(raw[f"dir_last_ts{d}"]), np.nan)
        cols[f"{side}_first_frame"] = raw[f"dir_first_frame{d}"]
        cols[f"{side}_last_frame"] = np.where(sent, raw[f"dir_last_frame{d}"], -1)
    return Columns({name: cols[name] for name in FLOW_COLUMNS}, n)


def _grow(arr: np.ndarray, rows: int) -> np.ndarray:
    size = max(rows, len(arr) * 8)      # untouched zero pages are not resident; fewer copies
    out = np.zeros((size,) + arr.shape[1:], arr.dtype)
    out[:len(arr)] = arr
    return out


def build_flow_table(path: str | Path, **reader_options) -> pd.DataFrame:
    """Read one capture and return its flow table (damage is ignored; see the pipeline)."""
    from traceaudit.capture import open_capture
    source = open_capture(path, **reader_options)
    builder = FlowBuilder()
    for batch in source.batches():
        builder.add(batch)
    return builder.table(str(path))
