"""A unit's results as Arrow tables: what a Dask worker sends back to the client.

Each analysis travels as compressed Arrow IPC streams, one table per kind: the flow table
(with the endpoints' inferred states and close roles), the timelines' events, the RST origins,
the tracker's endpoint and connection facts (when the step keeps them), Zeek's rows, the
packet excerpts (``--html``) and the findings; the capture's counts and errors as a small JSON
document beside them. Every table is columns by name (a structured NumPy table's fields, a
2-D array's columns as ``name.k``), so any Arrow reader can open what a worker sent
(``pyarrow.ipc.open_stream``). The client turns the columns back into the NumPy arrays and
``Finding`` objects its reports read: ``unpacked(packed(done)) == done``, tested for every
sample capture.

Strings of few values (states, roles, addresses) travel as dictionary arrays; a capture's path,
the same in every row, as one dictionary entry. A finding's ``details`` go as JSON text (the
report writes them as JSON anyway).
"""

from __future__ import annotations

from dataclasses import asdict, fields
from typing import TYPE_CHECKING, Any

import numpy as np

from traceaudit.parallel.units import Done, read_unit
from traceaudit.rules.model import Finding, Severity

if TYPE_CHECKING:
    import pyarrow as pa

    from traceaudit.parallel.steps import Step
    from traceaudit.pipeline import ReadOptions

#: IPC buffer compression. A 50,000-connection capture with its timelines and 17,556 findings:
#: 47 MB as plain Arrow, 14 MB with LZ4, 8.7 MB with Zstandard (its pickled analysis: 41 MB),
#: packed in ~0.1 s and read back in ~0.1 s either way: on a network the smallest pays
COMPRESSION = "zstd"

_EVENT_COLUMNS = ("conn", "endpoint", "ts_ns", "frame", "state", "reason")
_FINDING_FIELDS = tuple(f.name for f in fields(Finding) if f.name != "_fingerprint")


def read_unit_as_arrow(unit, options: ReadOptions, step: Step | None) -> list[dict[str, Any]]:
    """``units.read_unit`` on a worker, its results packed (the Dask task). A step that
    renders the JSON report's part (``steps.Audit.render_json``) renders it into a directory
    of this worker, whose text then travels in the payload."""
    if not getattr(step, "render_json", False):
        return [packed(done) for done in read_unit(unit, options, step)]
    import tempfile
    from dataclasses import replace
    with tempfile.TemporaryDirectory(prefix="traceaudit-json-") as where:
        return [packed(done) for done in read_unit(unit, options, replace(step, json_dir=where))]


# -- packing (the worker) ----------------------------------------------------------------------
def packed(done: Done) -> dict[str, Any]:
    """One analysis and its findings: ``{"meta": JSON bytes, table name: IPC stream}``."""
    import orjson

    from traceaudit.capture import memory
    from traceaudit.flows.columns import Columns
    memory.tune_arrow()     # (Arrow's own pool kept ~120 MB of 70,000 findings' batches)
    from traceaudit.retire.spill import SpilledTable
    a = done.analysis
    if isinstance(a.table, Columns):
        flows = {"flows": _stream(_columns_table(a.table))}
    elif isinstance(a.table, SpilledTable) and not a.table.with_facts:
        flows = {"flow_records": _records_stream(a.table)}
    else:
        raise TypeError(f"a {type(a.table).__name__} does not travel as Arrow tables")
    out: dict[str, Any] = {
        **flows,
        "events": _stream(_array_table(a.events, _EVENT_COLUMNS)),
        "endpoint_facts": _stream(_array_table(a.tracked.endpoints, ("client", "server"))),
        "connection_facts": _stream(_array_table(a.tracked.conns)),
        # (only the counts kept: the worst few travel as findings, the counts in ``meta``)
        "findings": _findings_stream(_listed_findings(done.findings)),
    }
    if a.json_text is not None:
        out["json_rows"] = _texts_stream(a.json_text.rows())
        out["json_findings"] = _texts_stream(a.json_text.finding_blocks())
    if a.rst_origins is not None:
        out["rst_origins"] = _stream(_array_table(a.rst_origins, ("client", "server")))
    if a.zeek_table is not None:
        out["zeek"] = _stream(_columns_table(a.zeek_table))
    if a.excerpts is not None:
        ex = a.excerpts
        out["excerpt_slots"] = _stream(_arrays_table(
            {"count": ex.count, "base": ex.base, **{f"slot_{k}": v for k, v in ex.slots.items()}}))
        out["excerpt_pool"] = _stream(_array_table(ex.pool))
        out["excerpt_pool_start"] = _stream(_array_table(ex.pool_start))
    out["meta"] = orjson.dumps({
        "stats": _stats_json(a.stats),
        "end_ts_ns": a.tracked.end_ts_ns, "tracker": asdict(a.tracked.config),
        "excerpt_slots": list(a.excerpts.slots) if a.excerpts is not None else None,
        "json_finding_count": a.json_text.finding_count if a.json_text is not None else None,
        "counted_findings": _counts_json(done.findings)})
    return out


def _listed_findings(findings):
    from traceaudit.retire.findings import CountedFindings
    return findings.worst_candidates() if isinstance(findings, CountedFindings) else findings


def _counts_json(findings) -> dict | None:
    """A ``CountedFindings``'s counts: how many, and per (rule, severity)."""
    from traceaudit.retire.findings import CountedFindings
    if not isinstance(findings, CountedFindings):
        return None
    return {"count": len(findings),
            "rule_severities": [[rule, int(severity), n]
                                for (rule, severity), n in findings.rule_severities.items()]}


def _batches_stream(schema: pa.Schema, batches) -> pa.Buffer:
    """Record batches, made one at a time, as one compressed IPC stream (an Arrow buffer:
    pickled out of band, as Dask sends results, without a copy)."""
    import pyarrow as pa
    sink = pa.BufferOutputStream()
    options = pa.ipc.IpcWriteOptions(compression=COMPRESSION, use_threads=False)
    with pa.ipc.new_stream(sink, schema, options=options) as writer:
        for batch in batches:
            writer.write_batch(batch)
    return sink.getvalue()


#: JSON text travels in batches of at least this many bytes (a large capture's connection
#: entries are gigabytes: never held whole, uncompressed)
TEXT_BATCH_BYTES = 8 << 20

#: findings travel (and are parked on arrival) this many at a time
FINDINGS_BATCH = 4096


def _texts_stream(blocks) -> pa.Buffer:
    """Blocks of text (the JSON report's part) as a table of one binary column."""
    import pyarrow as pa
    schema = pa.schema([("text", pa.large_binary())])

    def batches():
        held, size = [], 0
        for block in blocks:
            held.append(bytes(block))
            size += len(block)
            if size >= TEXT_BATCH_BYTES:
                yield pa.record_batch([pa.array(held, pa.large_binary())], schema=schema)
                held, size = [], 0
        yield pa.record_batch([pa.array(held, pa.large_binary())], schema=schema)
    return _batches_stream(schema, batches())


def _findings_stream(findings) -> pa.Buffer:
    """The findings, ``FINDINGS_BATCH`` at a time (a flat read's are parked: never all
    objects at once)."""
    from itertools import islice
    findings = iter(findings)
    first = _findings_table(list(islice(findings, FINDINGS_BATCH)))

    def batches():
        yield first
        while chunk := list(islice(findings, FINDINGS_BATCH)):
            yield _findings_table(chunk)
    return _batches_stream(first.schema, batches())


def _stream(batch: pa.RecordBatch) -> pa.Buffer:
    """One batch as an IPC stream (a batch, not a table: an empty table would be written
    without its batch, and so without the dictionaries of its coded columns)."""
    return _batches_stream(batch.schema, [batch])


def _records_stream(spill) -> pa.Buffer:
    """A flat read's flow table (``retire.spill``, without facts) as one record batch a bucket
    of its rows: columns ``retire.records.FIELDS``, the table flat in memory on both sides.
    The worker's spill is closed then (nothing reads it again there)."""
    import pyarrow as pa

    from traceaudit.retire.records import FIELDS
    schema = pa.schema([(name, pa.int64()) for name in FIELDS],
                       metadata={"capture": spill.capture, "zeek": str(int(spill.zeek))})
    data = _batches_stream(schema, (pa.record_batch(list(map(_numeric, part.data)),
                                                    schema=schema)
                                    for part in spill.records()))
    spill.close()
    return data


def _columns_table(table) -> pa.RecordBatch:
    """A ``flows.columns.Columns`` table, every column as stored (codes stay codes)."""
    import pyarrow as pa

    from traceaudit.flows.columns import Coded, Repeated, strings_as_arrow
    arrays, names, kinds = [], [], {}
    for name, v in table.data.items():
        if isinstance(v, Repeated):
            arrays.append(pa.DictionaryArray.from_arrays(
                pa.array(np.zeros(v.n, np.int8)), pa.array([v.value], pa.string())))
            kinds[name] = "repeated"
        elif isinstance(v, Coded):
            arrays.append(pa.DictionaryArray.from_arrays(pa.array(v.codes),
                                                         _labels(v.labels)))
        elif v.dtype == object:
            arrays.append(strings_as_arrow(v))
        else:
            arrays.append(_numeric(v))
        names.append(name)
    return pa.RecordBatch.from_arrays(arrays, names=names, metadata={
        "rows": str(len(table)), **{f"kind:{k}": v for k, v in kinds.items()}})


def _labels(labels: np.ndarray) -> pa.Array:
    import pyarrow as pa
    values = labels.tolist()
    if all(isinstance(x, str) for x in values):
        return pa.array(values, pa.string())
    return pa.array(values)


def _numeric(v: np.ndarray) -> pa.Array:
    """A 1-D array of numbers or booleans as an Arrow array (NaN stays NaN, not null)."""
    from traceaudit.flows.columns import numbers_as_arrow
    return numbers_as_arrow(v, nan_is_null=False)


def _array_table(a: np.ndarray, axis_names: tuple[str, ...] = ()) -> pa.RecordBatch:
    """A 1-D or 2-D array, plain or structured, as columns: a structured array's fields by
    name, a 2-D array's columns by ``axis_names`` (else their numbers), joined by a dot."""
    return _arrays_table({"": a}, axis_names)


def _arrays_table(arrays: dict[str, np.ndarray],
                  axis_names: tuple[str, ...] = ()) -> pa.RecordBatch:
    """Arrays of one length as one table; the metadata ``array:NAME`` says how each is made
    again (shape, dtype, and its columns' names field by field)."""
    import orjson
    import pyarrow as pa
    columns, names, meta = [], [], {}
    for name, a in arrays.items():
        if a.ndim not in (1, 2):
            raise TypeError(f"an array of shape {a.shape} has no columns")
        layout = {}
        for field in a.dtype.names or ("",):
            part = a[field] if field else a
            prefix = ".".join(x for x in (name, field) if x)
            if part.ndim == 1:
                parts, labels = [part], [prefix or "value"]
            else:
                parts = [part[:, k] for k in range(part.shape[1])]
                labels = [".".join(x for x in (prefix, axis_names[k] if k < len(axis_names)
                                                 else str(k)) if x)
                          for k in range(part.shape[1])]
            columns += map(_numeric, parts)
            names += labels
            layout[field] = labels
        meta[f"array:{name}"] = orjson.dumps({
            "shape": a.shape, "dtype": np.lib.format.dtype_to_descr(a.dtype),
            "columns": layout})
    return pa.RecordBatch.from_arrays(columns, names=names, metadata=meta)


def _findings_table(findings) -> pa.RecordBatch:
    import orjson
    import pyarrow as pa
    findings = list(findings)
    col = {name: [getattr(f, name) for f in findings] for name in _FINDING_FIELDS}
    col["severity"] = np.array([int(s) for s in col["severity"]], np.int8)
    col["details"] = [orjson.dumps(d).decode() for d in col["details"]]
    col["fingerprint"] = [f.fingerprint for f in findings]
    types = {"ts": pa.float64(), "frames": pa.list_(pa.int64()), "connection": pa.int64(),
             "severity": pa.int8()}
    arrays = [pa.array(v, types.get(name, pa.string())) for name, v in col.items()]
    return pa.RecordBatch.from_arrays(arrays, names=list(col),
                                      metadata={"rows": str(len(findings))})


def _stats_json(stats) -> dict:
    out = {f.name: getattr(stats, f.name) for f in fields(stats)}
    out["parts"] = [_stats_json(p) for p in stats.parts]
    out["error"] = _error_json(stats.error)
    return out


def _error_json(error) -> dict | None:
    if error is None:
        return None
    state = dict(error.__dict__)
    if isinstance(error, OSError):
        state.update(errno=error.errno, strerror=error.strerror, filename=error.filename)
    return {"class": type(error).__name__, "args": list(error.args), "state": state}


# -- unpacking (the client) -------------------------------------------------------------------
def unpacked_all(payload: list[dict[str, Any]], json_dir: str | None = None) -> list[Done]:
    return [unpacked(p, json_dir) for p in payload]


def unpacked(p: dict[str, Any], json_dir: str | None = None) -> Done:
    """What ``packed`` made, as the analysis and findings it was made of; a rendered JSON
    part's connection entries go to a file of ``json_dir``, as a local reader leaves them."""
    import orjson

    from traceaudit.capture import memory
    from traceaudit.pipeline import CaptureAnalysis
    from traceaudit.tracking.excerpts import Excerpts
    memory.tune_arrow()
    from traceaudit.tracking.tracker import Tracked, TrackerConfig
    meta = orjson.loads(p["meta"])
    tracked = Tracked(_array(_read(p["endpoint_facts"])), _array(_read(p["connection_facts"])),
                      np.empty((0, 6), np.int64), meta["end_ts_ns"],
                      TrackerConfig(**meta["tracker"]))
    excerpts = None
    if "excerpt_slots" in p:
        slots = _arrays(_read(p["excerpt_slots"]))
        excerpts = Excerpts(count=slots.pop("count"), base=slots.pop("base"),
                            slots={k: slots[f"slot_{k}"] for k in meta["excerpt_slots"]},
                            pool=_array(_read(p["excerpt_pool"])),
                            pool_start=_array(_read(p["excerpt_pool_start"])))
    table = _columns(_read(p["flows"])) if "flows" in p else _spilled(p["flow_records"])
    analysis = CaptureAnalysis(
        stats=_stats(meta["stats"]), table=table, tracked=tracked,
        events=np.ascontiguousarray(_array(_read(p["events"]))),
        zeek_table=_columns(_read(p["zeek"])) if "zeek" in p else None,
        excerpts=excerpts,
        rst_origins=_array(_read(p["rst_origins"])) if "rst_origins" in p else None,
        json_text=_rendered(p, meta, json_dir) if "json_rows" in p else None)
    counted = meta.get("counted_findings")
    if counted is None:
        return Done(analysis, _parked_findings(p["findings"]))
    from collections import Counter

    from traceaudit.retire.findings import CountedFindings
    from traceaudit.rules.model import Severity
    return Done(analysis, CountedFindings(
        counted["count"], Counter({(rule, Severity(sev)): n
                                   for rule, sev, n in counted["rule_severities"]}),
        _findings(_read(p["findings"]))))


def _rendered(p: dict[str, Any], meta: dict, json_dir: str | None):
    """A rendered JSON part, its two texts written to files of ``json_dir``."""
    from traceaudit.report.json_pieces import RenderedJson, written_to
    if json_dir is None:
        raise ValueError("a rendered JSON part came back, and no directory to put it in")
    return RenderedJson(written_to(json_dir, _texts(p["json_rows"])),
                        written_to(json_dir, _texts(p["json_findings"])),
                        meta["json_finding_count"])


def _texts(data: pa.Buffer):
    """The blocks of a ``_texts_stream``, in order, a batch at a time."""
    import pyarrow as pa
    for batch in pa.ipc.open_stream(pa.py_buffer(data)):
        yield from (block for block in batch.column(0).to_pylist() if block)


def _parked_findings(data: pa.Buffer):
    """The findings, parked a batch at a time as they are read (as a local worker's arrive:
    a batch keeps every capture's findings until its reports are written, ~530 bytes each
    so instead of ~1.15 KB as objects)."""
    import pyarrow as pa

    from traceaudit.retire.findings import ParkedFindings
    findings = ParkedFindings(keep=0)
    for batch in pa.ipc.open_stream(pa.py_buffer(data)):
        findings.add(_findings(pa.Table.from_batches([batch])))
    return findings


def _read(data: pa.Buffer) -> pa.Table:
    import pyarrow as pa
    return pa.ipc.open_stream(pa.py_buffer(data)).read_all()


def _spilled(data: pa.Buffer):
    """``_records_stream``'s table spilled again here, a bucket at a time."""
    import pyarrow as pa

    from traceaudit.retire.records import Records
    from traceaudit.retire.spill import SpilledTable
    reader = pa.ipc.open_stream(pa.py_buffer(data))
    meta = reader.schema.metadata
    parts = (Records(np.stack([c.to_numpy() for c in batch.columns]))
             for batch in reader)
    return SpilledTable.of_records(meta[b"capture"].decode(), meta[b"zeek"] == b"1", parts)


def _plain(column: pa.ChunkedArray) -> np.ndarray:
    """A numeric or boolean column as a writable NumPy array of its own."""
    return np.array(column.to_numpy())


def _columns(table: pa.Table):
    import pyarrow as pa

    from traceaudit.flows.columns import Coded, Columns, Repeated
    meta = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}
    n = int(meta["rows"])
    data = {}
    for name, column in zip(table.column_names, table.columns):
        kind = meta.get(f"kind:{name}")
        if kind == "repeated":
            values = column.chunk(0).dictionary.to_pylist() if column.num_chunks else []
            data[name] = Repeated(values[0] if values else "", n)
        elif pa.types.is_dictionary(column.type):
            chunk = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
            data[name] = Coded(np.array(chunk.indices.to_numpy()),
                               np.array(chunk.dictionary.to_pylist(), object))
        elif pa.types.is_string(column.type):
            data[name] = column.to_numpy(zero_copy_only=False)
        else:
            data[name] = _plain(column)
    return Columns(data, n)


def _arrays(table: pa.Table) -> dict[str, np.ndarray]:
    """The arrays ``_arrays_table`` wrote, by name."""
    import orjson
    out = {}
    for key, value in (table.schema.metadata or {}).items():
        key = key.decode()
        if not key.startswith("array:"):
            continue
        layout = orjson.loads(value)
        dtype = np.lib.format.descr_to_dtype(_descr(layout["dtype"]))
        a = np.empty(tuple(layout["shape"]), dtype)
        for field, labels in layout["columns"].items():
            part = a[field] if field else a
            if part.ndim == 1:
                part[:] = table.column(labels[0]).to_numpy()
            else:
                for k, label in enumerate(labels):
                    part[:, k] = table.column(label).to_numpy()
        out[key[len("array:"):]] = a
    return out


def _array(table: pa.Table) -> np.ndarray:
    return _arrays(table)[""]


def _descr(descr):
    """A dtype description as JSON gave it back (its tuples as lists)."""
    if isinstance(descr, list):
        return [tuple(_descr(x) for x in field) for field in descr]
    return descr


def _findings(table: pa.Table) -> list:
    import orjson

    col = {name: table.column(name).to_pylist() for name in table.column_names}
    by_value = list(Severity)
    col["severity"] = [by_value[s] for s in col["severity"]]
    # (one JSON document of them all: less than half the time of one ``loads`` each)
    col["details"] = orjson.loads("[" + ",".join(col["details"]) + "]")
    prints = col.pop("fingerprint")
    return [Finding(*values, _fingerprint=fp)
            for *values, fp in zip(*(col[name] for name in _FINDING_FIELDS), prints)]


def _stats(d: dict):
    from traceaudit.capture import CaptureStats
    d = dict(d, parts=[_stats(p) for p in d["parts"]], error=_error(d["error"]))
    return CaptureStats(**d)


def _error(d: dict | None):
    if d is None:
        return None
    from traceaudit import errors
    return errors.rebuilt(getattr(errors, d["class"]), tuple(d["args"]), d["state"])

