"""Flow-table renderers for ``traceaudit flows`` (pure: tables in, text or bytes out).

Each renderer takes the flow tables of the captures, in order (``Columns``, one per capture,
or DataFrames). CSV and Parquet go from the arrays to Arrow without pandas."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Iterator, Sequence

import numpy as np

from traceaudit.flows.columns import Columns

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

    from traceaudit.retire.spill import SpilledTable

    Tables = Sequence[Columns | SpilledTable | pd.DataFrame]

FORMATS = ("table", "csv", "json", "parquet", "zeek", "zeek-json")
#: Formats written from Zeek's own rows (report/zeeklog.py), not from the flow table.
ZEEK_FORMATS = ("zeek", "zeek-json")
CSV_ROWS = 16_384

#: Columns the terminal table shows (the other formats carry every column).
TABLE_COLUMNS = ["id", "client_ip", "client_port", "server_ip", "server_port", "start_ts",
                 "end_ts", "client_packets", "server_packets", "client_bytes", "server_bytes",
                 "orientation_guessed"]


def render_table(tables: Tables) -> str:
    flows = _frame(tables)
    if flows.empty:
        return "no TCP connections\n"
    shown = [c for c in TABLE_COLUMNS if c in flows.columns] + \
        [c for c in ("close_role", "close_kind", "conn_state", "history") if c in flows.columns]
    df = flows[shown].copy()
    for col in ("start_ts", "end_ts"):
        df[col] = df[col].map(lambda t: f"{t:.6f}")
    df["orientation_guessed"] = df["orientation_guessed"].map({True: "guessed", False: ""})
    df = df.rename(columns={"orientation_guessed": "orientation"})
    parts = []
    for capture, group in flows.groupby("capture", sort=False, observed=True):
        parts.append(f"== {capture}: {len(group)} connection(s)\n")
        parts.append(df.loc[group.index].to_string(index=False) + "\n")
    return "".join(parts)


def render_csv(tables: Tables, header: bool = True) -> Iterator[bytes]:
    """CSV via Arrow's writer (an order of magnitude faster than pandas for 100k rows), one
    capture at a time in pieces of ``CSV_ROWS`` rows, so the whole text is never held.

    A table whose rows were rendered already (``csv_rows``: their CSV text, as a merge of
    shares rendered by worker processes carries it, ``parallel.shares``) is written as is."""
    import pyarrow as pa
    import pyarrow.csv as pa_csv
    for t in tables:
        if getattr(t, "csv_rows", None) is not None:
            yield from _rendered(tables, header)
            return
    for chunks in _arrow_tables(tables):
        pieces = _Pieces()
        writer = None
        for table in chunks:
            if writer is None:
                options = pa_csv.WriteOptions(quoting_style="needed", quoting_header="none",
                                              include_header=header)
                writer = pa_csv.CSVWriter(pa.PythonFile(pieces, mode="w"), table.schema,
                                          write_options=options)
                header = False
            for start in range(0, table.num_rows, CSV_ROWS):
                writer.write_table(table.slice(start, CSV_ROWS))
                yield from pieces.take()
        if writer is not None:
            writer.close()
        yield from pieces.take()


def _rendered(tables: Tables, header: bool) -> Iterator[bytes]:
    """``render_csv`` where some tables carry their rows' text already."""
    for t in tables:
        rows = getattr(t, "csv_rows", None)
        if rows is None:
            yield from render_csv([t], header)
        else:
            if header:                  # (Arrow writes the names unquoted: quoting_header)
                yield (",".join(t.data) + "\n").encode()
            yield rows
        header = False


class _Pieces:
    """A write-only file for Arrow's writer that hands back what was written so far."""

    closed = False

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def write(self, data) -> int:
        self.parts.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass

    def take(self) -> list[bytes]:
        parts, self.parts = self.parts, []
        return parts


def render_json(tables: Tables) -> str:
    flows = _frame(tables)
    records = []
    cols = list(flows.columns)
    for row in flows.itertuples(index=False, name=None):
        records.append({c: _plain(v) for c, v in zip(cols, row)})
    return json.dumps(records, indent=1) + "\n"


def render_parquet(tables: Tables) -> Iterator[bytes]:
    """Parquet written chunk by chunk (a row group each), handed out as it is written."""
    import pyarrow as pa
    import pyarrow.parquet as pa_parquet
    pieces = _Pieces()
    writer = None
    for chunks in _arrow_tables(tables):
        for table in chunks:
            if writer is None:
                writer = pa_parquet.ParquetWriter(pa.PythonFile(pieces, mode="w"), table.schema)
            writer.write_table(table)
            yield from pieces.take()
    writer.close()
    yield from pieces.take()


def _arrow_tables(tables: Tables) -> Iterator[Iterator[pa.Table]]:
    """Per capture, its Arrow tables (one, or a chunk at a time from a spilled table); with no
    capture, an empty table of the flow columns."""
    if not tables:
        yield iter([_empty_columns().arrow()])
    for t in tables:
        if hasattr(t, "chunks"):
            yield (c.arrow() for c in t.chunks())
        else:
            yield iter([(t if isinstance(t, Columns) else Columns.of_frame(t)).arrow()])


def _frame(tables: Tables) -> pd.DataFrame:
    import pandas as pd
    frames = [t if isinstance(t, pd.DataFrame) else t.frame() for t in tables]
    if not frames:
        return _empty_columns().frame()
    return frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)


def _empty_columns() -> Columns:
    """A flow table with no row (the flow columns; arrays of no particular type)."""
    from traceaudit.flows import FLOW_COLUMNS
    return Columns({c: np.empty(0, object) for c in FLOW_COLUMNS}, 0)


def _plain(v):
    """A JSON-safe plain Python value (no numpy scalars, NaN → null)."""
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating, float)):
        return None if np.isnan(v) else float(v)
    if isinstance(v, np.bool_):
        return bool(v)
    return v


RENDERERS = {"table": render_table, "csv": render_csv, "json": render_json,
             "parquet": render_parquet}
