"""Flow-table renderers for ``traceaudit flows`` (pure: DataFrame in, text or bytes out)."""

from __future__ import annotations

import json
from typing import Iterator

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

FORMATS = ("table", "csv", "json", "parquet")
CSV_ROWS = 16_384

#: Columns the terminal table shows (the other formats carry every column).
TABLE_COLUMNS = ["id", "client_ip", "client_port", "server_ip", "server_port", "start_ts",
                 "end_ts", "client_packets", "server_packets", "client_bytes", "server_bytes",
                 "orientation_guessed"]


def render_table(flows: pd.DataFrame) -> str:
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


def render_csv(flows: pd.DataFrame) -> Iterator[bytes]:
    """CSV via Arrow's writer (an order of magnitude faster than pandas for 100k rows), in
    pieces of ``CSV_ROWS`` rows so the whole text is never held at once."""
    import pyarrow as pa
    import pyarrow.csv as pa_csv
    table = _arrow_table(flows)
    header = True
    for start in range(0, max(table.num_rows, 1), CSV_ROWS):
        buf = pa.BufferOutputStream()
        options = pa_csv.WriteOptions(quoting_style="needed", quoting_header="none",
                                      include_header=header)
        pa_csv.write_csv(table.slice(start, CSV_ROWS), buf, options)
        header = False
        yield buf.getvalue().to_pybytes()


def render_json(flows: pd.DataFrame) -> str:
    records = []
    cols = list(flows.columns)
    for row in flows.itertuples(index=False, name=None):
        records.append({c: _plain(v) for c, v in zip(cols, row)})
    return json.dumps(records, indent=1) + "\n"


def render_parquet(flows: pd.DataFrame) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pa_parquet
    buf = pa.BufferOutputStream()
    pa_parquet.write_table(_arrow_table(flows), buf)
    return buf.getvalue().to_pybytes()


def _arrow_table(flows: pd.DataFrame) -> pa.Table:
    import pyarrow as pa
    table = pa.Table.from_pandas(flows, preserve_index=False)
    if "capture" in table.column_names:         # a categorical: plain strings in the files
        i = table.column_names.index("capture")
        table = table.set_column(i, "capture", table.column(i).cast(pa.string()))
    return table


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
