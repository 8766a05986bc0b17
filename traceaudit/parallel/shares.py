"""One capture split across workers by flow hash, and merged back exactly (issue #18).

As Zeek's and Suricata's workers do, every worker reads the whole capture and keeps its share
of the connections. ``analyze_share`` decodes every record (so frame numbers, timestamps and
the capture's statistics are the file's, and IP fragments are reassembled before a segment's
ports are known) and keeps the TCP segments whose canonical 4-tuple hashes into its share
(``flows.assign.share_rows``). That 4-tuple is the flow table's key: both endpoints' addresses
(IPv4 mapped into IPv6 space, so the IP version is part of it) and ports, ordered so that
both directions give the same key. A connection, and every later incarnation of its 4-tuple,
is therefore wholly inside one share, and the per-connection stages (flows, trackers, Zeek's
view, excerpts, timelines) do in a share exactly what they do in one read. What is global
reaches every share: the capture's statistics and end time, and Zeek's clock (its sweeps run
on the latest time of every segment, kept or not, every ``SWEEP_ROWS`` rows of the capture).

``merge_shares`` numbers the connections of all shares by first frame, as one read numbers
them (each share's ids are already in that order: a k-way merge), and remaps and interleaves
every table that names a connection: the flow table, the tracker's facts (``prev`` names the
previous incarnation), the corrected events, Zeek's rows (``tcp_stream``) and the excerpts.
Coded string columns (addresses, Zeek histories) get the labels, in the order, one read
gives them. The result equals ``analyze_capture`` of the whole capture with one worker.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import numpy as np

from traceaudit.capture import CaptureSet
from traceaudit.capture.batch import PacketBatch
from traceaudit.flows.assign import share_rows
from traceaudit.flows.columns import Coded, Columns, Repeated
from traceaudit.pipeline import (CaptureAnalysis, ProgressHook, ReadOptions, _finished, _read,
                                 _Stages)
from traceaudit.tracking.connections import CODED_LABELS
from traceaudit.tracking.excerpts import P_CONN, Excerpts
from traceaudit.tracking.tracker import EV_CONN, EV_FRAME, Tracked
from traceaudit.tracking import zeek_kernel as ZK
from traceaudit.tracking.zeek import CONN_STATE_LABELS, history_codes

#: Flow-table and Zeek-row columns holding addresses (one set of labels in a read).
ADDRESS_COLUMNS = ("client_ip", "server_ip", "orig_h", "resp_h")


@dataclass
class ShareAnalysis(CaptureAnalysis):
    """The analysis of one share of a capture, with what ``merge_shares`` needs besides."""

    share: int = 0
    of: int = 1
    kept_segments: int = 0            # the capture's TCP segments that fell into this share
    address_keys: np.ndarray | None = None   # (labels, 3) uint64: the sort key of each
                                             # address label of the flow table (v6, hi, lo)
    csv_rows: CsvRows | None = None   # the flow table's CSV rows, when asked for


@dataclass
class CsvRows:
    """A share's flow-table rows as CSV text (no header), with where each row's text after
    its id starts (the comma) and where the row ends (after its newline): the merge puts the
    global id in front of each and interleaves them."""

    text: bytes
    after_id: np.ndarray          # int64 per row
    end: np.ndarray               # int64 per row

    @classmethod
    def of(cls, table: Columns) -> CsvRows | None:
        """None when the rows cannot be cut apart safely (a newline inside a field)."""
        from traceaudit.report.flows import render_csv
        if not len(table) or next(iter(table.data)) != "id":
            return None
        text = b"".join(render_csv([table], header=False))
        raw = np.frombuffer(text, np.uint8)
        end = np.flatnonzero(raw == 10) + 1
        if len(end) != len(table):
            return None
        start = np.concatenate([[0], end[:-1]])
        commas = np.flatnonzero(raw == 44)
        if not len(commas):
            return None
        after_id = commas[np.minimum(np.searchsorted(commas, start), len(commas) - 1)]
        # the first field is the share's own id, in digits (which also puts each row's first
        # comma inside the row)
        digits = np.char.str_len(np.arange(len(table)).astype(str))
        if not np.array_equal(after_id - start, digits):
            return None
        return cls(text, after_id, end)


def analyze_share(path: str | Path | CaptureSet, options: ReadOptions = ReadOptions(),
                  share: int = 0, of: int = 1, progress: ProgressHook | None = None, *,
                  csv: bool = False) -> ShareAnalysis:
    """Share ``share`` (0-based) of ``of`` of the capture: every record is read, only the
    connections whose 4-tuple hashes into the share are kept (module doc). Never raises for a
    bad file (``stats.error``), as ``analyze_capture``.

    The flow table is kept in memory (``options.retire`` is not used: a spilled table is a
    temporary file, which cannot be handed to another process). ``csv``: render the flow
    table's CSV rows here, in the worker (``flows --format csv``): the merged table carries
    them, and ``report.flows.render_csv`` writes them as they are."""
    if not 0 <= share < of:
        raise ValueError(f"share {share} of {of}: a share is 0 .. of - 1")
    files = path.files if isinstance(path, CaptureSet) else (path,)
    if of > 1 and any(Path(f).exists() and not Path(f).is_file() for f in files):
        raise ValueError(f"{path}: a pipe or device can be read only once, so not by "
                         "several workers: read it whole (analyze_capture)")
    options = replace(options, retire=None)
    stages = _ShareStages(path, options, share, of)
    _read(stages, progress)
    a = _finished(path, options, stages.source.stats, stages)
    return ShareAnalysis(a.stats, a.table, a.tracked, a.events, a.zeek_table, a.excerpts,
                         share=share, of=of, kept_segments=stages.kept,
                         address_keys=_address_keys(a.table),
                         csv_rows=CsvRows.of(a.table) if csv else None)


def analyze_in_shares(path: str | Path | CaptureSet, options: ReadOptions = ReadOptions(),
                      of: int = 2, executor=None, *, csv: bool = False,
                      flows_only: bool = False) -> CaptureAnalysis:
    """``analyze_capture(path, options)``, computed as ``of`` shares by ``executor`` (a
    ``concurrent.futures`` executor, e.g. a ``ProcessPoolExecutor``; None: one after another
    in this process) and merged. ``flows_only``: the workers send back only the flow table
    (``audit.slimmed``: what ``traceaudit flows`` writes); ``csv``: with its CSV rows."""
    args = [(path, options, k, of, csv, flows_only) for k in range(of)]
    if executor is None:
        return merge_shares([share_task(*a) for a in args])
    return merge_shares([f.result() for f in [executor.submit(share_task, *a) for a in args]])


def share_task(path: str | Path | CaptureSet, options: ReadOptions, share: int, of: int,
               csv: bool = False, flows_only: bool = False) -> ShareAnalysis:
    """One worker's task: ``analyze_share``, slimmed to the flow table if ``flows_only``."""
    analysis = analyze_share(path, options, share, of, csv=csv)
    if flows_only:
        from traceaudit.audit import slimmed
        analysis = slimmed(analysis, keep_excerpts=False, keep_events=False)
    return analysis


def share_to_file(handoff: str, path: str | Path | CaptureSet, options: ReadOptions,
                  share: int, of: int, flows_only: bool = False) -> str:
    """A worker's task for ``runner._split``: ``share_task`` left as a file in the hand-off
    directory (``alongside.left_in``); its path."""
    from traceaudit.parallel.alongside import left_in
    return left_in(handoff, f"share-{share}", share_task(path, options, share, of,
                                                        flows_only=flows_only))


class _ShareStages(_Stages):
    """The pipeline's stages, fed only the share's rows of each batch."""

    def __init__(self, path: str | Path | CaptureSet, options: ReadOptions, share: int,
                 of: int) -> None:
        super().__init__(path, options)
        self.share, self.of = share, of
        self.kept = 0
        # Zeek drops a segment with a bad IPv4 header checksum unless told to ignore checksums
        # (-C): such a segment does not move its clock either
        self.zeek_drops_bad_ip = options.zeek is not None and not options.zeek.ignore_checksums

    def add(self, batch: PacketBatch, clock: tuple[int, int] | None = None):
        part = share_of_batch(batch, self.share, self.of)
        self.kept += len(part)
        return super().add(part, clock=self._clock(batch))

    def _clock(self, batch: PacketBatch) -> tuple[int, int]:
        """(rows, latest time) of the whole batch, as Zeek's view of one read sees it."""
        ts = batch["ts_ns"]
        seg = batch.columns.get("seg_flags")
        if self.zeek_drops_bad_ip and seg is not None:
            ts = ts[(seg & ZK.SEG_BAD_IP_CSUM) == 0]
        return len(batch), int(ts.max()) if len(ts) else 0


def share_of_batch(batch: PacketBatch, share: int, of: int) -> PacketBatch:
    """The rows of ``batch`` whose connection is in share ``share`` of ``of`` (in order)."""
    if of == 1:
        return batch
    b = batch.columns
    mine = np.empty(len(batch), np.uint8)
    kept = share_rows(*(np.ascontiguousarray(b[k]) for k in
                        ("src_hi", "src_lo", "dst_hi", "dst_lo", "sport", "dport")),
                      share, of, mine)
    if kept == len(batch):
        return batch
    rows = np.flatnonzero(mine)
    return PacketBatch({k: v.take(rows) for k, v in b.items()})


def _address_keys(table) -> np.ndarray | None:
    """Sort keys of the flow table's address labels, in the order ``address_codes`` sorts
    them (IPv4 by value, then IPv6 by value), so that the merge can order the union."""
    col = table.column("client_ip") if "client_ip" in table else None
    if not isinstance(col, Coded):
        return None
    keys = np.zeros((len(col.labels), 3), np.uint64)
    for i, text in enumerate(col.labels.tolist()):
        ip = ipaddress.ip_address(text)
        value = int(ip)
        if ip.version == 4:
            keys[i, 2] = value
        else:
            keys[i] = (1, value >> 64, value & 0xFFFF_FFFF_FFFF_FFFF)
    return keys


# -- the merge ------------------------------------------------------------------------------


def merge_shares(parts: Sequence[CaptureAnalysis]) -> CaptureAnalysis:
    """The analysis of the whole capture from the analyses of all its shares (any order):
    equal to ``analyze_capture`` of the capture (module doc)."""
    parts = _checked(parts)
    tables = [p.table.columns() if hasattr(p.table, "chunks") else p.table for p in parts]
    ids, n = _merge_order([np.asarray(t["first_frame"]) for t in tables])
    coded = _CodedMerge(parts, tables)
    zeek = _merge_zeek(parts, ids, coded)
    if zeek is None:
        _histories_of_flow_tables(tables, coded)
    table = _merge_table(tables, ids, n, coded)
    rows = [p.csv_rows for p in parts]
    if n and all(r is not None or not len(t) for r, t in zip(rows, tables)):
        table = RenderedColumns(table.data, n, _merged_csv(rows, ids, n))
    return CaptureAnalysis(parts[0].stats, table, _merge_tracked(parts, ids, n),
                           _merge_events([p.events for p in parts], ids), zeek,
                           _merge_excerpts(parts, ids, n))


def _checked(parts: Sequence[CaptureAnalysis]) -> list[ShareAnalysis]:
    """The shares in share order, after checking they are all the shares of one read."""
    if not parts:
        raise ValueError("merge_shares: no share given")
    if not all(isinstance(p, ShareAnalysis) for p in parts):
        raise TypeError("merge_shares takes the results of analyze_share")
    of = parts[0].of
    ordered = sorted(parts, key=lambda p: p.share)
    if [p.share for p in ordered] != list(range(of)) or any(p.of != of for p in ordered):
        raise ValueError(f"merge_shares: need shares 0 .. {of - 1} of {of} exactly once, got "
                         f"{[(p.share, p.of) for p in parts]}")
    s0 = ordered[0].stats
    for p in ordered[1:]:
        s = p.stats
        if (s.path, s.packets, s.tcp_packets, s.first_ts_ns, s.last_ts_ns, str(s.error)) != \
                (s0.path, s0.packets, s0.tcp_packets, s0.first_ts_ns, s0.last_ts_ns,
                 str(s0.error)):
            raise ValueError(f"merge_shares: the shares read {s0.path} differently (did the "
                             "file change between the reads?)")
    return ordered


def global_ids(first_frames: list[np.ndarray]) -> list[np.ndarray]:
    """Each share's connections' ids in the whole capture (one read numbers them by first
    frame), from every share's first frames (in share order)."""
    return _merge_order(first_frames)[0]


def _merge_order(keys: list[np.ndarray]) -> tuple[list[np.ndarray], int]:
    """Where each part's rows go in the stable merge of the parts' ``keys`` (each sorted;
    ties: the earlier part first), and the merged length."""
    for k in keys:
        if len(k) > 1 and bool((k[1:] < k[:-1]).any()):
            raise ValueError("merge_shares: a share's rows are not in order of first frame")
    out = []
    for i, k in enumerate(keys):
        pos = np.arange(len(k), dtype=np.int64)
        for j, other in enumerate(keys):
            if j != i and len(other) and len(k):
                pos += np.searchsorted(other, k, side="right" if j < i else "left")
        out.append(pos)
    return out, sum(len(k) for k in keys)


def _scatter(arrays: list[np.ndarray], positions: list[np.ndarray], n: int) -> np.ndarray:
    """One array of ``n`` rows with ``arrays[k]`` at rows ``positions[k]``."""
    dtype = arrays[0].dtype
    if any(a.dtype != dtype for a in arrays):
        dtype = np.result_type(*arrays) if all(a.dtype != object for a in arrays) else object
    out = np.empty((n,) + arrays[0].shape[1:], dtype)
    if dtype != object and (out.ndim > 1 or dtype.fields):
        # a row of a matrix or of records as one opaque item: NumPy then copies it whole
        # (30 times faster than field by field or element by element)
        width = int(np.prod(out.shape[1:], dtype=np.int64))
        row = np.dtype((np.void, width * dtype.itemsize))
        out_rows = out.reshape(n, width).view(row).reshape(n)
        for a, pos in zip(arrays, positions):
            a = np.ascontiguousarray(a, dtype).reshape(len(a), width)
            out_rows[pos] = a.view(row).reshape(len(a))
        return out
    for a, pos in zip(arrays, positions):
        out[pos] = a
    return out


def _plain(column) -> np.ndarray:
    if isinstance(column, Repeated):
        return np.full(column.n, column.value, object)
    if isinstance(column, Coded):
        return column.values()
    return np.asarray(column)


class _CodedMerge:
    """Merged labels of the coded string columns, and each share's code → merged code maps.

    Addresses: one set of labels for client, server, originator and responder, ordered as
    ``address_codes`` orders them. Labels fixed in advance (state names, roles, kinds,
    conn_state) stay the module's own arrays. Zeek histories are merged with Zeek's rows
    (``_merge_zeek``), since their order follows the rows' letters."""

    _FIXED = [*CODED_LABELS.values(), CONN_STATE_LABELS]

    def __init__(self, parts: list[ShareAnalysis], tables: list[Columns]) -> None:
        self.address_labels: np.ndarray | None = None
        self.address_maps: list[np.ndarray] = []
        cols = [t.column("client_ip") if "client_ip" in t else None for t in tables]
        if all(isinstance(c, Coded) for c in cols) and \
                all(p.address_keys is not None for p in parts):
            self._merge_addresses([c.labels for c in cols], [p.address_keys for p in parts])
        self.history_labels: np.ndarray | None = None
        self.history_maps: list[np.ndarray] = []

    def set_histories(self, merged: np.ndarray, zeek_labels: list[np.ndarray]) -> None:
        """The flow table's ``history`` labels: Zeek's (``merged``), then "" for a connection
        Zeek never held; each share's map from its own (``zeek_labels[k]``, then "")."""
        code_of = {label: i for i, label in enumerate(merged.tolist())}
        self.history_labels = np.append(merged, np.array([""], object))
        self.history_maps = [
            np.array([code_of[label] for label in labels.tolist()] + [len(merged)], np.int64)
            for labels in zeek_labels]

    def _merge_addresses(self, labels: list[np.ndarray], keys: list[np.ndarray]) -> None:
        self.share_address_labels = labels
        all_keys = np.concatenate(keys) if keys else np.zeros((0, 3), np.uint64)
        all_labels = np.concatenate(labels) if labels else np.zeros(0, object)
        order = np.lexsort((all_keys[:, 2], all_keys[:, 1], all_keys[:, 0]))
        sk = all_keys[order]
        new = np.ones(len(sk), np.bool_)
        new[1:] = (sk[1:] != sk[:-1]).any(axis=1)
        code = np.empty(len(sk), np.int64)
        code[order] = np.cumsum(new) - 1
        self.address_labels = np.asarray(all_labels[order[new]], dtype=object)
        bounds = np.cumsum([0] + [len(k) for k in keys])
        self.address_maps = [code[a:b] for a, b in zip(bounds[:-1], bounds[1:])]

    def column(self, name: str, columns: list, positions: list[np.ndarray], n: int):
        """The merged column ``name`` from each share's column."""
        if not n:
            return columns[0]           # what a read with no row makes
        # (a share without rows may hold another form, e.g. Zeek's addresses as plain text)
        live = [k for k, c in enumerate(columns) if len(c)]
        if all(isinstance(columns[k], Repeated) for k in live):
            if len({columns[k].value for k in live}) == 1:
                return Repeated(columns[live[0]].value, n)
        if all(isinstance(columns[k], Coded) for k in live):
            merged = self._coded(name, columns, live, positions, n)
            if merged is not None:
                return merged
        return _scatter([_plain(columns[k]) for k in live], [positions[k] for k in live], n)

    def _coded(self, name: str, columns: list[Coded], live: list[int],
               positions: list[np.ndarray], n: int) -> Coded | None:
        pos = [positions[k] for k in live]
        if name in ADDRESS_COLUMNS:
            if self.address_labels is None or not all(
                    _same_labels(columns[k].labels, self.share_address_labels[k])
                    for k in live):
                return None
            codes = [self.address_maps[k][columns[k].codes] for k in live]
            return Coded(_scatter(codes, pos, n), self.address_labels)
        if name == "history" and self.history_labels is not None:
            codes = [self.history_maps[k][columns[k].codes] for k in live]
            return Coded(_scatter(codes, pos, n), self.history_labels)
        first = columns[live[0]].labels
        if all(_same_labels(columns[k].labels, first) for k in live):
            labels = next((f for f in self._FIXED if _same_labels(f, first)), first)
            return Coded(_scatter([columns[k].codes for k in live], pos, n), labels)
        return None


def _same_labels(a: np.ndarray, b: np.ndarray) -> bool:
    return a is b or (len(a) == len(b) and a.tolist() == b.tolist())


def _merge_table(tables: list[Columns], ids: list[np.ndarray], n: int,
                 coded: _CodedMerge) -> Columns:
    """The flow table: every column interleaved by the global ids, ``id`` renumbered."""
    names = list(tables[0].data)
    if any(list(t.data) != names for t in tables[1:]):
        raise ValueError("merge_shares: the shares' flow tables have different columns")
    data = {}
    for name in names:
        if name == "id":
            data[name] = np.arange(n, dtype=np.int64)
        else:
            data[name] = coded.column(name, [t.column(name) for t in tables], ids, n)
    return Columns(data, n)


class RenderedColumns(Columns):
    """A merged flow table with its CSV rows (``csv_rows``) rendered by the share workers;
    changing a column drops them."""

    def __init__(self, data, n: int, csv_rows: bytes) -> None:
        super().__init__(data, n)
        self.csv_rows: bytes | None = csv_rows

    def __setitem__(self, name: str, values) -> None:
        self.csv_rows = None
        super().__setitem__(name, values)


def _merged_csv(rows: list[CsvRows | None], ids: list[np.ndarray], n: int) -> bytes:
    """The shares' CSV rows in global order, each after its global id."""
    pieces = np.empty(2 * n, object)
    pieces[0::2] = [b"%d" % i for i in range(n)]
    for r, pos in zip(rows, ids):
        if r is not None:
            text = r.text
            pieces[2 * pos + 1] = [text[a:b] for a, b in zip(r.after_id.tolist(),
                                                              r.end.tolist())]
    return b"".join(pieces.tolist())


def _merge_zeek(parts: list[ShareAnalysis], ids: list[np.ndarray],
                coded: _CodedMerge) -> Columns | None:
    """Zeek's rows in order of first frame, ``tcp_stream`` renumbered. Sets the merged
    history labels (``coded``) that the flow table's ``history`` column shares."""
    tables = [p.zeek_table for p in parts]
    if all(t is None for t in tables):
        return None
    if any(t is None for t in tables):
        raise ValueError("merge_shares: some shares have Zeek's view and some not")
    rows, n = _merge_order([np.asarray(t["first_frame"]) for t in tables])
    names = list(tables[0].data)
    data = {}
    for name in names:
        columns = [t.column(name) for t in tables]
        if name == "tcp_stream":
            data[name] = _scatter([m[np.asarray(c)] for c, m in zip(columns, ids)], rows, n)
        elif name == "history":
            data[name] = _merge_histories(columns, rows, n, parts, coded)
        else:
            data[name] = coded.column(name, columns, rows, n)
    return Columns(data, n)


def _merge_histories(columns: list, rows: list[np.ndarray], n: int,
                     parts: list[ShareAnalysis], coded: _CodedMerge):
    """Zeek's history column coded as one read codes it (``history_codes`` over every row's
    letters); sets the labels and maps of the flow table's ``history`` too."""
    if not all(isinstance(c, Coded) for c in columns):
        return _scatter([_plain(c) for c in columns], rows, n)
    letters = [_letters(c.labels)[c.codes] for c in columns]
    merged = history_codes(_scatter(letters, rows, n))
    coded.set_histories(merged.labels, [c.labels for c in columns])
    return merged


def _histories_of_flow_tables(tables: list[Columns], coded: _CodedMerge) -> None:
    """Without Zeek's rows (a share slimmed to its flow table): the flow table's ``history``
    labels from the shares' own (each holds its share's Zeek labels, then "" for a
    connection Zeek never held), ordered by ``history_codes`` as one read orders them."""
    cols = [t.column("history") if "history" in t else None for t in tables]
    if not all(isinstance(c, Coded) and len(c.labels) and c.labels[-1] == "" for c in cols):
        return
    zeek_labels = [c.labels[:-1] for c in cols]
    distinct = list(dict.fromkeys(label for labels in zeek_labels for label in labels.tolist()))
    merged = history_codes(_letters(np.array(distinct, object)))
    coded.set_histories(merged.labels, zeek_labels)


def _letters(labels: np.ndarray) -> np.ndarray:
    """History labels as the NUL-padded letter rows the Zeek view keeps."""
    table = np.zeros((len(labels), ZK.HMAX), np.uint8)
    for i, text in enumerate(labels.tolist()):
        raw = text.encode()[:ZK.HMAX]
        table[i, :len(raw)] = np.frombuffer(raw, np.uint8)
    return table


def _merge_tracked(parts: list[ShareAnalysis], ids: list[np.ndarray], n: int) -> Tracked:
    """The tracker's facts by global id; ``prev`` (an id) renumbered. Shares whose facts were
    dropped (``audit.slimmed``) merge into no facts."""
    t0 = parts[0].tracked
    if all(len(p.tracked.conns) == 0 for p in parts):
        return replace(t0, endpoints=t0.endpoints[:0].copy(), conns=t0.conns[:0].copy(),
                       events=t0.events[:0].copy())
    if any(len(p.tracked.conns) != len(pos) for p, pos in zip(parts, ids)):
        raise ValueError("merge_shares: facts of some shares only, or not one a connection")
    ends = _scatter([p.tracked.endpoints for p in parts], ids, n)
    conns = _scatter([p.tracked.conns for p in parts], ids, n)
    for p, pos in zip(parts, ids):
        prev = p.tracked.conns["prev"]
        conns["prev"][pos] = np.where(prev >= 0, pos[np.maximum(prev, 0)], prev)
    raw = [p.tracked.events for p in parts]
    if any(len(e) for e in raw):       # (the pipeline empties them: kept only for callers
        remapped = [_renumbered(e, EV_CONN, m) for e, m in zip(raw, ids)]   # that do not)
        ev = np.concatenate(remapped)
        ev = ev[np.argsort(ev[:, EV_FRAME], kind="stable")]
    else:
        ev = raw[0][:0].copy()
    return Tracked(ends, conns, ev, t0.end_ts_ns, t0.config)


def _renumbered(matrix: np.ndarray, column: int, ids: np.ndarray) -> np.ndarray:
    out = matrix.copy()
    out[:, column] = ids[matrix[:, column]]
    return out


def _merge_events(events: list[np.ndarray], ids: list[np.ndarray]) -> np.ndarray:
    """Corrected events: sorted by connection (then endpoint, time), as each share's are;
    a connection's rows all come from one share."""
    remapped = [_renumbered(e, EV_CONN, m) for e, m in zip(events, ids)]
    rows, n = _merge_order([e[:, EV_CONN] for e in remapped])
    return _scatter(remapped, rows, n) if n else events[0][:0].copy()


def _merge_excerpts(parts: list[ShareAnalysis], ids: list[np.ndarray],
                    n: int) -> Excerpts | None:
    ex = [p.excerpts for p in parts]
    if all(e is None for e in ex):
        return None
    if any(e is None for e in ex):
        raise ValueError("merge_shares: some shares kept excerpts and some not")
    pools = [_renumbered(e.pool, P_CONN, m) for e, m in zip(ex, ids)]
    rows, m = _merge_order([p[:, P_CONN] for p in pools])
    pool = _scatter(pools, rows, m) if m else ex[0].pool[:0].copy()
    return Excerpts(
        count=_scatter([e.count for e in ex], ids, n),
        slots={k: _scatter([e.slots[k] for e in ex], ids, n) for k in ex[0].slots},
        pool=pool,
        pool_start=np.searchsorted(pool[:, P_CONN], np.arange(n + 1)),
        base=_scatter([e.base for e in ex], ids, n))
