"""Findings of a flat read kept compact: beyond the first ``KEPT_FINDINGS`` (kept as they
are), pickled in batches (compressed too beyond ``PLAIN_BYTES``), unpacked a batch at a time
whenever they are read, in order.

A large capture has hundreds of thousands of findings (~1.15 KB each as objects, ~530 bytes
pickled, ~120 compressed). ``ParkedFindings`` holds each chunk's findings, sorted, as packed
batches, and reads them back merged in the order ``rules.run_rules`` sorts them (time, code,
connection; for equal keys, chunk order, as a stable sort of them all). A report that reads
them (JSON, JUnit, SARIF) holds a batch per chunk at a time; the terminal summary reads none
back (``rule_severities``, ``worst_candidates``).
"""

from __future__ import annotations

import heapq
import pickle
import zlib
from collections import Counter
from dataclasses import fields
from itertools import chain, islice, starmap
from operator import attrgetter
from typing import Iterable, Iterator, Sequence

import numpy as np

from traceaudit.rules.model import Finding

BATCH = 256

#: A finding is packed as the tuple of its fields, made again with ``Finding(*values)``:
#: half the time both ways of pickling the objects (whose state is a dict each)
_values = attrgetter(*(f.name for f in fields(Finding)))

#: Batches are compressed (zlib: a quarter of the bytes, twice the CPU time to pack and read
#: them) only once this many bytes are parked: a capture with fewer than ~85,000 findings
#: (``KEPT_FINDINGS`` and ~45,000 more) does not pay for it, a larger one keeps ~120 bytes a
#: finding beyond that
PLAIN_BYTES = 24 << 20

#: The first chunks' findings, up to this many in all, are kept as objects (~1.15 KB each,
#: ~45 MB at most): a capture with fewer findings pays nothing for parking them (pickling
#: and reading back 35,000 findings took ~0.15 s of a 3M-packet read's ~2.3 s); beyond, the
#: memory grows ~530 bytes a finding (~120 compressed), not 1.15 KB
KEPT_FINDINGS = 40_000

#: Per chunk, the most severe findings kept unpacked beside the batches, so that the terminal
#: summary's "worst findings" (``report.summary_report``, at most half this many shown) need
#: not read every finding back
TOP_KEPT = 16


def order(f) -> tuple:
    """How ``rules.run_rules`` orders a capture's findings."""
    return (f.ts, f.code, f.connection if f.connection is not None else -1)


class ParkedFindings(Sequence):
    """One capture's findings, added a chunk at a time (``add``: sorted by ``order``)."""

    def __init__(self, keep: int = KEPT_FINDINGS) -> None:
        self.keep = keep        # how many of the first findings stay objects (``KEPT_FINDINGS``)
        # every batch in one buffer (one growing block, not thousands of small ones among a
        # chunk's arrays); per chunk the (start, end) of its batches
        self._data = bytearray()
        self._runs: list[list[tuple[int, int, bool]]] = []     # (start, end, compressed)
        self._kept: list[list | None] = []     # per chunk: its findings, if kept as they are
        # per chunk, each finding's ``order`` key as arrays: (time, code number, connection)
        self._keys: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []     # (20 bytes each)
        self._codes: dict[str, int] = {}
        self._n = 0
        self.severities: Counter = Counter()
        self.rule_severities: Counter = Counter()      # (rule, severity) -> findings
        # per chunk, in its order: each rule's first most severe finding and the TOP_KEPT
        # first most severe of all, as (position in the chunk, finding)
        self._worst: list[list[tuple[int, object]]] = []

    def add(self, findings: list) -> None:
        if not findings:
            return
        run = []
        kept = findings if self._n + len(findings) <= self.keep else None
        for i in range(0, len(findings), BATCH) if kept is None else ():
            packed = pickle.dumps(list(map(_values, findings[i:i + BATCH])),
                                  pickle.HIGHEST_PROTOCOL)
            compress = len(self._data) >= PLAIN_BYTES
            if compress:
                packed = zlib.compress(packed, 1)
            run.append((len(self._data), len(self._data) + len(packed), compress))
            self._data += packed
        self._runs.append(run)
        self._kept.append(kept)
        self._n += len(findings)
        codes = self._codes
        self._keys.append((
            np.fromiter(map(attrgetter("ts"), findings), np.float64, len(findings)),
            np.fromiter((codes.setdefault(f.code, len(codes)) for f in findings), np.int32,
                        len(findings)),
            np.fromiter((-1 if f.connection is None else f.connection for f in findings),
                        np.int64, len(findings))))
        pairs = Counter(zip(map(attrgetter("rule"), findings),
                            map(attrgetter("severity"), findings)))
        self.rule_severities.update(pairs)
        for (_, severity), n in pairs.items():
            self.severities[severity] += n
        self._worst.append(_most_severe(findings))

    def worst_candidates(self) -> list:
        """A subsequence of the findings, in their order, holding each rule's first most
        severe and the first ``TOP_KEPT`` most severe of all (ranked by severity, then time,
        then order): what ``summary_report`` picks from."""
        runs = [[(order(f), k, i, f) for i, f in worst] for k, worst in enumerate(self._worst)]
        return [t[3] for t in heapq.merge(*runs, key=lambda t: t[:3])]

    def _batches(self, k: int) -> Iterator:
        """Chunk ``k``'s findings, in order."""
        if self._kept[k] is not None:
            yield from self._kept[k]
            return
        for a, b, compressed in self._runs[k]:
            packed = self._data[a:b]
            yield from starmap(Finding, pickle.loads(zlib.decompress(packed) if compressed
                                                     else packed))

    def __len__(self) -> int:
        return self._n

    def __iter__(self) -> Iterator:
        runs = [self._batches(k) for k in range(len(self._runs))]
        if len(runs) <= 1:
            return iter(runs[0] if runs else ())
        # the next finding of which chunk, as a stable sort of them all by ``order`` takes
        # them (a merge comparing keys in Python took ~1 s for 350,000 findings)
        return map(next, map(runs.__getitem__, self._chunk_order().tolist()))

    def _chunk_order(self) -> np.ndarray:
        """Each finding's chunk, in the order of a stable sort of them all by ``order``."""
        ts, code, conn = (np.concatenate(part) for part in zip(*self._keys))
        names = sorted(self._codes)             # codes compare as their texts do
        rank = np.zeros(len(names), np.int64)
        rank[[self._codes[c] for c in names]] = np.arange(len(names))
        chunk = np.repeat(np.arange(len(self._keys)), [len(k[0]) for k in self._keys])
        return chunk[np.lexsort((conn, rank[code], ts))]      # (lexsort is stable)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return list(self)[i]
        if i < 0:
            i += self._n
        if not 0 <= i < self._n:
            raise IndexError(i)
        return next(islice(iter(self), i, None))

    def __add__(self, other: Iterable) -> list:
        return [*self, *other]

    def __radd__(self, other: Iterable) -> list:
        return [*other, *self]


def _most_severe(findings: list) -> list[tuple[int, object]]:
    """Of findings in order: each rule's first most severe and the first ``TOP_KEPT`` most
    severe, as (position, finding) in order."""
    best: dict[str, tuple] = {}
    for i, f in enumerate(findings):
        key = (-f.severity, f.ts, i)
        if f.rule not in best or key < best[f.rule]:
            best[f.rule] = key
    top = heapq.nsmallest(TOP_KEPT, ((-f.severity, f.ts, i) for i, f in enumerate(findings)))
    kept = sorted({key[2] for key in (*best.values(), *top)})
    return [(i, findings[i]) for i in kept]


class FindingsNotKept(TypeError):
    """The findings of a ``CountedFindings`` were asked for: only their counts were kept."""


class CountedFindings(Sequence):
    """One capture's findings as the terminal summary reads them, the findings themselves
    not kept: how many there are by rule and severity, and the few the summary could show
    as the worst (``worst_candidates``: each rule's first most severe and the first
    ``TOP_KEPT`` most severe).

    ``analyze`` keeps findings so when no report lists them (``parallel.steps.Audit``): a
    batch then holds no capture's findings until its summary (~1.15 KB each as objects:
    ~20 MB a capture of the batch benchmark), and a worker sends back a few kilobytes
    instead of parking ~500 bytes a finding (~0.04 s of its time a capture). Reading the
    findings themselves raises ``FindingsNotKept``: a report that lists them must keep them."""

    def __init__(self, count: int, rule_severities: Counter, worst: list) -> None:
        self._n = count
        self.rule_severities = rule_severities          # (rule, severity) -> findings
        self.severities: Counter = Counter()
        for (_, severity), n in rule_severities.items():
            self.severities[severity] += n
        self._worst = worst

    @classmethod
    def of(cls, findings) -> CountedFindings:
        """``findings`` (a list in ``run_rules`` order, or parked) counted."""
        if isinstance(findings, CountedFindings):
            return findings
        if isinstance(findings, ParkedFindings):
            return cls(len(findings), Counter(findings.rule_severities),
                       findings.worst_candidates())
        return cls(len(findings), rule_severities(findings),
                   [f for _, f in _most_severe(findings)])

    @classmethod
    def joined(cls, parts: list[CountedFindings]) -> CountedFindings:
        """The counts of several parts of one capture's findings (the shares of a split by
        flow hash, each in ``order``), as the counts of all of them."""
        counts: Counter = Counter()
        for part in parts:
            counts.update(part.rule_severities)
        worst = list(heapq.merge(*(p.worst_candidates() for p in parts), key=order))
        return cls(sum(map(len, parts)), counts, worst)

    def worst_candidates(self) -> list:
        return list(self._worst)

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, i):
        raise FindingsNotKept("only the counts of these findings were kept")

    def __iter__(self) -> Iterator:
        raise FindingsNotKept("only the counts of these findings were kept")


#: a capture's findings whose counts are kept apart (``rule_severities``, ``severities``)
_COUNTED = (ParkedFindings, CountedFindings)


def worst_candidates(findings) -> list | Sequence:
    """What the terminal summary ranks its worst findings from: ``findings`` themselves, or
    of a chain of captures' findings with parked or counted parts, each such part's
    candidates (``ParkedFindings.worst_candidates``), in order."""
    if not isinstance(findings, FindingChain) or \
            not any(isinstance(p, _COUNTED) for p in findings.parts):
        return findings
    return [f for p in findings.parts
            for f in (p.worst_candidates() if isinstance(p, _COUNTED) else p)]


def rule_severities(findings) -> Counter:
    """(rule, severity) -> number of findings, without reading parked findings back."""
    if isinstance(findings, FindingChain):
        counts: Counter = Counter()
        for part in findings.parts:
            counts.update(rule_severities(part))
        return counts
    if isinstance(findings, _COUNTED):
        return findings.rule_severities
    return Counter(zip(map(attrgetter("rule"), findings), map(attrgetter("severity"), findings)))


class FindingChain(Sequence):
    """Several captures' findings one after the other (lists or ``ParkedFindings``)."""

    def __init__(self, parts: list) -> None:
        self.parts = parts

    def __len__(self) -> int:
        return sum(len(p) for p in self.parts)

    def __iter__(self) -> Iterator:
        return chain.from_iterable(self.parts)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return list(self)[i]
        if i < 0:
            i += len(self)
        for part in self.parts:
            if i < len(part):
                return part[i]
            i -= len(part)
        raise IndexError(i)

    def __add__(self, other: Iterable) -> list:
        return [*self, *other]

    def __radd__(self, other: Iterable) -> list:
        return [*other, *self]

    def severities(self) -> Counter:
        counts: Counter = Counter()
        for part in self.parts:
            counts.update(part.severities if isinstance(part, _COUNTED)
                          else Counter(f.severity for f in part))
        return counts


def joined(parts: list) -> list | FindingChain:
    """Captures' findings as one sequence: a plain list unless some are parked."""
    if all(isinstance(p, list) for p in parts):
        return [f for p in parts for f in p]
    return FindingChain(parts)


class AtOrAbove(Sequence):
    """The findings of a ``FindingChain`` at or above a severity, read as they are asked for
    (``AuditReport.failing``)."""

    def __init__(self, findings: FindingChain, severity) -> None:
        self.findings, self.severity = findings, severity
        self._n = sum(n for s, n in findings.severities().items() if s >= severity)

    def __len__(self) -> int:
        return self._n

    def __iter__(self) -> Iterator:
        return (f for f in self.findings if f.severity >= self.severity)

    def __getitem__(self, i):
        return list(self)[i]
