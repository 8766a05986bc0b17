"""A table as named NumPy columns: the pipeline's tables before (or instead of) pandas.

The pipeline builds the flow table and Zeek's rows as plain arrays. pandas is imported and a
DataFrame made only when something asks for one (rules, reports, the terminal table); the CSV
and Parquet outputs go from the arrays to Arrow directly, so ``traceaudit flows --format csv``
never pays pandas' import (~0.2 s of one core) or a copy of the table.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import TYPE_CHECKING, Iterator

import numpy as np

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa


class Repeated:
    """One string value in every row (a capture's path): a categorical in pandas, plain
    strings in Arrow's files."""

    __slots__ = ("value", "n")

    def __init__(self, value: str, n: int) -> None:
        self.value = value
        self.n = n

    def __len__(self) -> int:
        return self.n


class Coded:
    """A column of few distinct strings as integer codes into ``labels`` (state names, close
    roles, Zeek's conn_state): an object array where one is asked for, a dictionary array
    for Arrow (no per-row string work)."""

    __slots__ = ("codes", "labels")

    def __init__(self, codes: np.ndarray, labels: np.ndarray) -> None:
        self.codes = codes
        self.labels = labels

    def __len__(self) -> int:
        return len(self.codes)

    def values(self) -> np.ndarray:
        return self.labels[self.codes]


Column = "np.ndarray | Repeated | Coded"


class _FrameColumns(Mapping):
    """A DataFrame's columns as NumPy arrays, made when asked for."""

    def __init__(self, frame: pd.DataFrame) -> None:
        self.frame = frame

    def __getitem__(self, name: str) -> np.ndarray:
        return self.frame[name].to_numpy()

    def __iter__(self) -> Iterator[str]:
        return iter(self.frame.columns)

    def __len__(self) -> int:
        return len(self.frame.columns)

    def __contains__(self, name: object) -> bool:
        return name in self.frame.columns


class Columns:
    """Named columns of one length, in order. ``frame()`` is the pandas view (made once; from
    then on the DataFrame holds the data and the arrays it was made from are let go)."""

    def __init__(self, data: Mapping[str, Column], n: int | None = None) -> None:
        self.data = data
        self.n = n if n is not None else (len(next(iter(data.values()))) if data else 0)
        self._frame: pd.DataFrame | None = None

    @classmethod
    def of_frame(cls, frame: pd.DataFrame) -> "Columns":
        """Wrap an existing DataFrame (tests, other readers): ``frame()`` returns it as is."""
        cols = cls(_FrameColumns(frame), len(frame))
        cols._frame = frame
        return cols

    def __len__(self) -> int:
        return self.n

    def __contains__(self, name: str) -> bool:
        return name in self.data

    def __getitem__(self, name: str) -> np.ndarray:
        return _plain(self.data[name])

    def at(self, name: str, rows: np.ndarray) -> np.ndarray:
        """Column ``name`` at ``rows`` only (codes and repeated values are not expanded for
        every row first)."""
        v = self.data[name]
        if isinstance(v, Coded):
            return v.labels[v.codes[rows]]
        if isinstance(v, Repeated):
            return np.full(len(rows), v.value, object)
        return np.asarray(v)[rows]

    def column(self, name: str) -> Column:
        """A column as stored: codes and labels, one repeated value, or an array (writers
        that handle those forms need not expand them)."""
        return self.data[name]

    def value_counts(self, name: str) -> dict:
        """How many rows hold each value of a column (codes counted without strings)."""
        v = self.data[name]
        if isinstance(v, Coded):
            counts = np.bincount(v.codes, minlength=len(v.labels))
            return {label: int(k) for label, k in zip(v.labels.tolist(), counts.tolist()) if k}
        if isinstance(v, Repeated):
            return {v.value: v.n} if v.n else {}
        return dict(Counter(_plain(v).tolist()))

    def __setitem__(self, name: str, values: Column) -> None:
        if len(values) != self.n:
            raise ValueError(f"column {name} has {len(values)} rows, expected {self.n}")
        if isinstance(self.data, _FrameColumns):
            self._frame[name] = _plain(values)
        else:
            self.data[name] = values

    def frame(self) -> pd.DataFrame:
        if self._frame is None:
            import pandas as pd
            cols = {name: (pd.Categorical([v.value] * v.n) if v.n else [])
                    if isinstance(v, Repeated) else _plain(v) for name, v in self.data.items()}
            self._frame = pd.DataFrame(cols, columns=list(self.data))
            self.data = _FrameColumns(self._frame)
        return self._frame

    def arrow(self) -> pa.Table:
        """The columns as an Arrow table (a repeated string becomes a plain string column;
        NaN and None become nulls, as pandas' conversion makes them)."""
        import pyarrow as pa

        from traceaudit.capture import memory
        memory.tune_arrow()
        arrays = [_arrow_array(v, self.n) for v in self.data.values()]
        return pa.Table.from_arrays(arrays, names=list(self.data))


def first_seen_codes(values: list) -> tuple[np.ndarray, list]:
    """Each value's number, distinct values numbered in order of first appearance (as
    ``pandas.factorize``, without pandas); and the distinct values."""
    ids = {v: i for i, v in enumerate(dict.fromkeys(values))}
    return np.fromiter(map(ids.__getitem__, values), np.int64, len(values)), list(ids)


def _plain(v: Column) -> np.ndarray:
    """A column as one NumPy array (strings as an object array)."""
    if isinstance(v, Repeated):
        return np.full(v.n, v.value, object)
    if isinstance(v, Coded):
        return v.values()
    return v


def _arrow_array(v: Column, n: int) -> pa.Array:
    """One column as an Arrow array, built from its buffers: ``pyarrow.array`` would import
    pandas (to recognise pandas inputs), the very cost these columns exist to avoid."""
    if isinstance(v, Repeated):
        value = v.value.encode()
        return _string_array(np.full(n, len(value), np.int64), value * n, None)
    if isinstance(v, Coded):
        return _coded_strings(v.codes, v.labels)
    if v.dtype == object:
        return strings_as_arrow(v)
    return numbers_as_arrow(v)


def numbers_as_arrow(v: np.ndarray, nan_is_null: bool = True) -> pa.Array:
    """A 1-D array of numbers or booleans as an Arrow array over its buffer (NaN a null, as
    pandas' conversion makes it, unless not ``nan_is_null``)."""
    import pyarrow as pa
    if v.dtype == np.bool_:
        data = pa.py_buffer(np.packbits(v, bitorder="little"))
        return pa.Array.from_buffers(pa.bool_(), len(v), [None, data])
    v = np.ascontiguousarray(v)
    valid = None
    if nan_is_null and v.dtype.kind == "f":
        missing = np.isnan(v)
        if missing.any():
            valid = pa.py_buffer(np.packbits(~missing, bitorder="little"))
    return pa.Array.from_buffers(pa.from_numpy_dtype(v.dtype), len(v),
                                 [valid, pa.py_buffer(v)])


def strings_as_arrow(v: np.ndarray) -> pa.Array:
    """An object array of str (None for missing) as an Arrow string array."""
    import pyarrow as pa
    present = None
    texts = v
    try:
        joined = "".join(texts)
    except TypeError:                       # None (missing) or other objects among them
        present = np.not_equal(v, None)
        texts = np.where(present, v, "")
        try:
            joined = "".join(texts)
        except TypeError:                   # not strings: Arrow converts them itself
            return pa.array(list(v), pa.string())
    if joined.isascii():
        lengths = np.fromiter(map(len, texts), np.int64, len(v))
        data = joined.encode("ascii")
    else:
        encoded = [t.encode() for t in texts]
        lengths = np.fromiter(map(len, encoded), np.int64, len(v))
        data = b"".join(encoded)
    valid = None if present is None else pa.py_buffer(np.packbits(present, bitorder="little"))
    return _string_array(lengths, data, valid)


def _coded_strings(codes: np.ndarray, labels: np.ndarray) -> pa.Array:
    """Rows ``labels[codes]`` as an Arrow string array, gathered as bytes by NumPy."""
    encoded = [(x if isinstance(x, str) else str(x)).encode() for x in labels]
    width = max((len(e) for e in encoded), default=0)
    table = np.zeros((len(labels), max(width, 1)), np.uint8)
    for i, e in enumerate(encoded):
        table[i, :len(e)] = np.frombuffer(e, np.uint8)
    label_len = np.array([len(e) for e in encoded], np.int64)
    lengths = label_len[codes]
    rows = table[codes]
    data = rows[np.arange(rows.shape[1]) < lengths[:, None]]      # row-major: rows in order
    return _string_array(lengths, data.tobytes(), None)


def _string_array(lengths: np.ndarray, data: bytes, valid) -> pa.Array:
    """An Arrow string array from each row's byte length and the rows' bytes, end to end
    (32-bit offsets, as Arrow's ``string``, unless the bytes need 64)."""
    import pyarrow as pa
    big = len(data) >= 2**31
    offsets = np.zeros(len(lengths) + 1, np.int64 if big else np.int32)
    np.cumsum(lengths, out=offsets[1:])
    arr = pa.Array.from_buffers(pa.large_string() if big else pa.string(), len(lengths),
                                [valid, pa.py_buffer(offsets), pa.py_buffer(data)])
    return arr.cast(pa.string()) if big else arr
