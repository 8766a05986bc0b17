"""``traceaudit analyze`` with flat memory: the rules and the reports read a retiring read's
spill (``SpilledTable(with_facts=True)``) a bucket of connections at a time.

The rules are vectorised over a capture's connections. A chunk (one bucket of first frames,
``spill.BUCKET_FRAMES``) is given to them as a ``CaptureAnalysis`` of its own: its flow table
(ids those of the whole capture), tracker facts and corrected timelines. What a rule needs
of the *other* connections (a service's other connections, TIME_WAIT stays per host, ...) is
a summary its module declares in ``TOTALS``: ``{name: (summarize(view, params), merge)}``.
A first pass over the chunks sums those; the second runs every rule on every chunk with the
sums at hand (``View.totals``). A rule that reports for the whole capture does so on the last
chunk (``View.final``). Findings are the same, in the same order, as from a read that keeps
every connection (``tests/test_flat_analyze.py``).
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import replace
from typing import TYPE_CHECKING, Iterator

import numpy as np

from traceaudit.capture.memory import give_back, heap_reuse
from traceaudit.pipeline import CaptureAnalysis
from traceaudit.retire.findings import ParkedFindings, order
from traceaudit.retire.records import record_columns
from traceaudit.retire.spill import concat_columns
from traceaudit.tracking.tracker import EV_CONN, Tracked

if TYPE_CHECKING:
    from traceaudit.rules.config import RulesConfig
    from traceaudit.rules.model import Finding


#: The heap's free pages are given back every this many chunks of a pass that does not
#: reuse them (each time costs page faults again; never, and a large capture's peak grows
#: by the arrays of freed chunks)
TRIM_CHUNKS = 4


def is_flat(analysis: CaptureAnalysis) -> bool:
    """The analysis of a flat read: its connections are on disk, read a chunk at a time."""
    return getattr(analysis.table, "with_facts", False)


def chunks(analysis: CaptureAnalysis, facts: bool = True, zeek: bool | None = None,
           reuse: bool = False) -> Iterator[CaptureAnalysis]:
    """The connections of a flat read as consecutive analyses of their own, in id order
    (not ``facts``: flow table and timelines only). ``zeek``: with the Zeek columns (the
    JSON report's; default: only without ``facts``, the rules read none).

    ``reuse``: for a pass that keeps (almost) nothing of its chunks, each chunk's arrays
    reuse the heap blocks the previous one freed (``memory.heap_reuse``) instead of fresh
    mappings faulted in again (the rules' first pass: merge, sort and rewrite; 3M packets:
    87k page faults -> ~67k in all). Otherwise the heap's free pages are given back every
    ``TRIM_CHUNKS`` chunks: a pass that makes findings leaves objects among the chunks'
    freed blocks, and an untrimmed heap grew with the capture (30M packets: every pass reusing,
    345 MB, ~310 MB so).

    A connection's ``prev`` fact (its previous incarnation) is made an id: the spill keeps
    its first frame; every id so far is known by first frame (8 bytes a connection)."""
    with heap_reuse() if reuse else nullcontext():
        yield from _chunks(analysis, facts, zeek, trim=0 if reuse else TRIM_CHUNKS)


def parts(analysis: CaptureAnalysis, facts: bool = True,
          zeek: bool | None = None) -> Iterator[CaptureAnalysis]:
    """A report's way through an analysis: a flat read's ``chunks``, or the analysis itself
    (a read that kept everything is one chunk)."""
    if is_flat(analysis):
        return chunks(analysis, facts, zeek)
    return iter([analysis])


def _chunks(analysis: CaptureAnalysis, facts: bool, zeek: bool | None,
            trim: int) -> Iterator[CaptureAnalysis]:
    spill = analysis.table
    t = analysis.tracked
    known_frames: list[np.ndarray] = []
    known_ids: list[int] = []
    for k, (first_id, rows) in enumerate(spill.finished(facts)):
        first = rows.records["first_frame"]
        known_frames.append(first.copy())     # (a view would hold the whole chunk)
        known_ids.append(first_id)
        conns = rows.conns
        prev = conns["prev"]
        for i in np.flatnonzero(prev >= 0).tolist():
            prev[i] = _id_of(int(prev[i]), known_frames, known_ids)
        # (the rules read no Zeek column: only the JSON report's chunks have them)
        table = record_columns(rows.records, spill.capture, first_id,
                               spill.zeek and (not facts if zeek is None else zeek))
        tracked = Tracked(rows.ends, conns, np.empty((0, 6), np.int64), t.end_ts_ns, t.config)
        yield CaptureAnalysis(analysis.stats, table, tracked, rows.events)
        del rows, conns, prev, table, tracked
        if trim and k % trim == trim - 1:
            give_back()                 # the chunks' arrays (see capture/memory.py)


def _id_of(frame: int, frames: list[np.ndarray], ids: list[int]) -> int:
    """The id of the connection whose first frame is ``frame`` (an earlier one)."""
    for part, first_id in zip(reversed(frames), reversed(ids)):
        if len(part) and part[0] <= frame:
            i = int(np.searchsorted(part, frame))
            if i < len(part) and part[i] == frame:
                return first_id + i
            break
    return -1


def run_rules(analysis: CaptureAnalysis, config: "RulesConfig") -> list["Finding"]:
    """``rules.run_rules`` for a flat read, chunk by chunk: sorted, packed."""
    from traceaudit.rules.parts import merged, summaries_of, summarized
    give_back()                         # what the read freed (its working tables)
    summaries = summaries_of(config)
    if summaries is None:
        return _on_the_whole(analysis, config)
    totals: dict = {}
    n_chunks = 0
    for chunk in chunks(analysis, reuse=True) if summaries else ():
        totals = merged(totals, summarized(chunk, summaries), summaries)
        n_chunks += 1
        del chunk
    if not summaries:
        n_chunks = sum(1 for _ in analysis.table.finished(facts=False))
    # each chunk's findings, sorted, packed until a report reads them (hundreds of thousands
    # of objects would otherwise be most of the memory, and pin the heap under them)
    findings = ParkedFindings()
    for k, chunk in enumerate(chunks(analysis)):
        findings.add(_chunk_findings(chunk, analysis.table, config, totals,
                                     final=k == n_chunks - 1))
        del chunk
    return findings


def _on_the_whole(analysis: CaptureAnalysis, config: "RulesConfig") -> list["Finding"]:
    """The rules on every connection at once, as a keeping read runs them: for a rule that
    does not say what it reads of other connections (no ``TOTALS`` in its module), so the
    findings are right though the memory is not flat."""
    from traceaudit.rules import apply_rules
    parts = list(chunks(analysis))
    if not parts:
        return []
    events = []
    for chunk in parts:
        ev = chunk.events
        ev[:, EV_CONN] += int(chunk.table["id"][0])
        events.append(ev)
    t = analysis.tracked
    tracked = Tracked(np.concatenate([c.tracked.endpoints for c in parts]),
                      np.concatenate([c.tracked.conns for c in parts]),
                      np.empty((0, 6), np.int64), t.end_ts_ns, t.config)
    whole = CaptureAnalysis(analysis.stats, concat_columns([c.table for c in parts]), tracked,
                            np.concatenate(events))
    del parts, events
    found = apply_rules(whole, config)
    found.sort(key=order)
    if whole.stats.parts:
        from traceaudit.capture.chain import annotate
        annotate(found, whole.stats)
    return found


def _chunk_findings(chunk: CaptureAnalysis, spilled, config, totals: dict,
                    final: bool) -> list:
    """The findings of one chunk (``final``: the last), sorted."""
    from traceaudit.rules.parts import judged
    found = judged(chunk, config, totals, final)
    _name_endpoints(chunk, [f.connection for f in found if f.connection is not None], spilled)
    if chunk.stats.parts:
        # a rotated set read as one timeline: say which file holds each (merged) frame
        from traceaudit.capture.chain import annotate
        annotate(found, chunk.stats)
    return found


def _name_endpoints(chunk: CaptureAnalysis, ids: list[int], spilled) -> None:
    """Remember the connections ``ids`` (findings name them): the CI reports write their
    endpoints (``SpilledTable.endpoint_texts``)."""
    if ids:
        spilled.named_ids.append(np.asarray(ids, np.int64))


#: A flat read whose spill is at most this big is brought back into memory once its rules
#: ran (it is then as small as a few thousand connections): a batch of thousands of small
#: captures holds no open file each.
IN_MEMORY_BYTES = 8 << 20


def slimmed(analysis: CaptureAnalysis, in_memory: bool = False) -> CaptureAnalysis:
    """What the reports keep of a flat read once its rules ran: the spill (the JSON report
    reads it again), or, when small (or ``in_memory``), its flow table and timelines in
    memory."""
    spill = analysis.table
    if spill.size > IN_MEMORY_BYTES and not in_memory:
        return replace(analysis)
    from traceaudit.tracking.rst_origin import ORIGIN_DTYPE, origin_table
    tables, events, origins = [], [], []
    for chunk in chunks(analysis, facts=True, zeek=True):
        ev = chunk.events
        ev[:, EV_CONN] += int(chunk.table["id"][0])
        tables.append(chunk.table)
        events.append(ev)
        origins.append(origin_table(chunk.tracked.endpoints))   # (the JSON's rst_origin)
    table = concat_columns(tables) if tables else spill.columns()
    events = np.concatenate(events) if events else np.empty((0, 6), np.int64)
    spill.close()
    return replace(analysis, table=table, events=events,
                   rst_origins=np.concatenate(origins) if origins
                   else np.zeros((0, 2), ORIGIN_DTYPE))
