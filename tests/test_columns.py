"""Columns: the NumPy tables the pipeline builds before pandas, and their Arrow conversion."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from traceaudit.flows.columns import Coded, Columns, Repeated

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = sorted((ROOT / "sample_pcaps").glob("*.pcap*"))[0]


def odd_columns() -> Columns:
    return Columns({
        "id": np.arange(4, dtype=np.int64),
        "capture": Repeated("caps/ünï.pcap", 4),
        "port": np.array([1, 2, 3, 65535], np.int32),
        "ts": np.array([0.5, np.nan, 1e17, 5e-9]),
        "flag": np.array([True, False, True, True]),
        "addr": np.array(["10.0.0.1", None, "::1", "fe80::ü"], object),
        "state": Coded(np.array([0, 2, 1, 2]), np.array(["A", "B", ""], object)),
    })


def test_arrow_matches_pandas_conversion():
    """Built from buffers (no pandas), the Arrow table equals pyarrow's own conversion of the
    DataFrame: NaN and None are nulls, strings keep their non-ASCII letters."""
    cols = odd_columns()
    ours = cols.arrow()
    frame = cols.frame()
    theirs = pa.Table.from_pandas(frame, preserve_index=False)
    # (pandas 3 gives large strings and schema metadata: the values are what must agree)
    theirs = theirs.replace_schema_metadata(None).cast(ours.schema)
    assert ours.equals(theirs)
    assert ours.column("ts").null_count == 1 and ours.column("addr").null_count == 1
    assert ours.column("state").to_pylist() == ["A", "", "B", ""]


def test_frame_and_getitem_decode_coded_and_repeated_columns():
    cols = odd_columns()
    frame = cols.frame()
    assert isinstance(frame["capture"].dtype, pd.CategoricalDtype)
    assert frame["state"].tolist() == ["A", "", "B", ""]
    assert cols["capture"].tolist() == ["caps/ünï.pcap"] * 4
    assert cols.frame() is frame                       # made once
    cols["extra"] = np.zeros(4)
    assert "extra" in cols.frame().columns


def test_of_frame_round_trip():
    frame = pd.DataFrame({"a": [1, 2], "b": ["x", "y"]})
    cols = Columns.of_frame(frame)
    assert len(cols) == 2 and cols.frame() is frame
    assert cols.arrow().column("b").to_pylist() == ["x", "y"]


def test_flows_csv_does_not_import_pandas():
    """The CSV path goes from arrays to Arrow: pandas' import is the cost it exists to avoid."""
    code = ("import sys\n"
            "from traceaudit.cli import main\n"
            f"try: main(['flows', {str(SAMPLE)!r}, '--format', 'csv', '-o', '/dev/null'])\n"
            "except SystemExit as e: code = e.code\n"
            "print(code, 'pandas' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, timeout=120)
    assert out.stdout.split() == ["0", "False"], out.stderr


def test_value_counts_of_each_column_form():
    import numpy as np
    from traceaudit.flows.columns import Coded, Columns, Repeated
    cols = Columns({"kind": Coded(np.array([2, 0, 2, 2]), np.array(["a", "b", "c"], object)),
                    "path": Repeated("x.pcap", 4),
                    "ip": np.array(["1.1.1.1", "2.2.2.2", "1.1.1.1", "1.1.1.1"], object)})
    assert cols.value_counts("kind") == {"a": 1, "c": 3}
    assert cols.value_counts("path") == {"x.pcap": 4}
    assert cols.value_counts("ip") == {"1.1.1.1": 3, "2.2.2.2": 1}
    assert cols.column("path").value == "x.pcap"
    frame = cols.frame()                                   # the same counts from a DataFrame
    assert Columns.of_frame(frame).value_counts("kind") == {"a": 1, "c": 3}


def test_first_seen_codes_number_values_in_order_of_appearance():
    from traceaudit.flows.columns import first_seen_codes
    codes, values = first_seen_codes(["b", "a", "b", "c", "a"])
    assert codes.tolist() == [0, 1, 0, 2, 1] and values == ["b", "a", "c"]
    codes, values = first_seen_codes([])
    assert codes.tolist() == [] and values == []


def test_values_at_rows_equal_the_expanded_column_at_those_rows():
    cols = odd_columns()
    rows = np.array([3, 0, 3, 1])
    for name in cols.data:
        expected = cols[name][rows].tolist()
        got = cols.at(name, rows).tolist()
        assert [str(x) for x in got] == [str(x) for x in expected], name
    frame_cols = Columns.of_frame(cols.frame())
    assert frame_cols.at("port", rows).tolist() == [65535, 1, 65535, 2]
