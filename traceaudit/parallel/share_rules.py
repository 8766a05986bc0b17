"""One capture split by flow hash with the rules run in the shares (``analyze`` whose reports
read no timeline: the terminal summary, JUnit, SARIF, baselines).

Merging the shares and then running the rules on the merged analysis leaves both serial in
one process (6M packets: merge ~1 s, rules ~1.3 s, after ~1.4 s of reading). Here each share
runs the rules on its own connections, as a flat read's chunks do (``rules.parts``): with
the connections' global ids (the merge's order by first frame, ``shares.global_ids``, from
every share's first frames), and the whole capture's summaries (the rules' ``TOTALS``) merged
from every share's before the findings are made. Three rounds between this process (share
0) and each worker, which keeps its share between them (a pool of one worker a share, so
every round of a share reaches the process that holds it):

1. read the share (``read``): its first frames come back;
2. its summaries, its connections renumbered to global ids (``summarize``);
3. its findings with the merged summaries, and its flow table (``findings``).

The findings merge by ``rules.run_rules``' order; the flow tables merge as
``shares.merge_shares`` merges them. A capture a share could not read to its end is merged
and judged as before (``fallback``: each share's whole analysis is sent back).
"""

from __future__ import annotations

import heapq
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from traceaudit.parallel.shares import ShareAnalysis
    from traceaudit.pipeline import CaptureAnalysis
    from traceaudit.rules.config import RulesConfig

#: in a worker: its share between the rounds (share number -> analysis)
_held: dict[int, ShareAnalysis] = {}


def read(path, options, share: int, of: int) -> tuple[np.ndarray, bool]:
    """Round 1 (a worker's task): read share ``share`` and keep it; its connections' first
    frames, and whether it was read to its end without error."""
    from traceaudit.parallel.shares import analyze_share
    analysis = _held[share] = analyze_share(path, options, share, of)
    return first_frames(analysis), analysis.stats.error is None


def first_frames(analysis: CaptureAnalysis) -> np.ndarray:
    return np.asarray(analysis.table["first_frame"], np.int64)


def summarize(share: int, ids: np.ndarray, config: RulesConfig) -> dict:
    """Round 2: the held share's connections renumbered to ``ids``; its summaries."""
    return summaries(_globalised(share, ids), config)


def findings(share: int, totals: dict, final: bool, config: RulesConfig,
             handoff: str) -> str:
    """Round 3: the held share's findings (sorted) with the whole capture's ``totals``, and
    its flow table (what the reports read of it), left as a file in ``handoff``."""
    from traceaudit.parallel.alongside import left_in
    analysis = _held.pop(share)
    found = share_findings(analysis, totals, final, config)
    return left_in(handoff, f"share-{share}", (flow_table_only(analysis.original), found))


def fallback(share: int, handoff: str) -> str:
    """The held share whole (a damaged capture is merged and judged in one process)."""
    from traceaudit.parallel.alongside import left_in
    return left_in(handoff, f"share-{share}", _held.pop(share))


class Globalised:
    """A share's analysis as the rules read a flat read's chunk: its ``id`` column and the
    ``prev`` facts as global ids; ``original`` as it was read."""

    def __init__(self, original: ShareAnalysis, ids: np.ndarray) -> None:
        from traceaudit.flows.columns import Columns
        from traceaudit.pipeline import CaptureAnalysis
        table = original.table
        data = dict(table.data)
        data["id"] = np.asarray(ids, np.int64)
        conns = original.tracked.conns.copy()
        prev = conns["prev"]
        conns["prev"] = np.where(prev >= 0, ids[np.maximum(prev, 0)], prev)
        self.original = original
        self.chunk = CaptureAnalysis(original.stats, Columns(data, len(table)),
                                     replace(original.tracked, conns=conns), original.events)


def _globalised(share: int, ids: np.ndarray) -> Globalised:
    held = _held[share]
    g = held if isinstance(held, Globalised) else Globalised(held, ids)
    _held[share] = g
    return g


def summaries(g: Globalised, config: RulesConfig) -> dict:
    """The rules' whole-capture summaries (``TOTALS``) of one share's connections."""
    from traceaudit.rules.parts import summaries_of, summarized
    return summarized(g.chunk, summaries_of(config))


def merged_totals(parts: list[dict], config: RulesConfig) -> dict:
    """Every share's summaries as the whole capture's (in share order)."""
    from traceaudit.rules.parts import merged, summaries_of
    summaries, totals = summaries_of(config), {}
    for part in parts:
        totals = merged(totals, part, summaries)
    return totals


def applies(config: RulesConfig) -> bool:
    """Whether every selected rule says what it reads of other connections (``TOTALS``):
    else the rules must see the whole capture at once."""
    from traceaudit.rules.parts import summaries_of
    return summaries_of(config) is not None


def share_findings(g: Globalised, totals: dict, final: bool, config: RulesConfig) -> list:
    """One share's findings with the whole capture's ``totals`` (``final``: the share that
    reports what is said once for the whole capture), sorted as ``run_rules`` sorts."""
    from traceaudit.rules.parts import judged
    return judged(g.chunk, config, totals, final)


def flow_table_only(analysis: ShareAnalysis) -> ShareAnalysis:
    """What the reports read of a share: the terminal summary's columns of its flow table
    (``audit.SUMMARY_COLUMNS``), with the first frames the merge orders them by."""
    from traceaudit.audit import SUMMARY_COLUMNS, slimmed
    from traceaudit.flows.columns import Columns
    table = analysis.table
    kept = Columns({name: table.column(name) for name in (*SUMMARY_COLUMNS, "first_frame")},
                   len(table))
    return replace(slimmed(analysis, keep_excerpts=False, keep_events=False), table=kept)


def merged_findings(parts: list[list]) -> list:
    """Every share's sorted findings as one read sorts them (a connection's are all in one
    share; what is said for the whole capture comes from one share)."""
    from traceaudit.retire.findings import order
    return list(heapq.merge(*parts, key=order))


def counted(parts: list[list]):
    """``merged_findings``, counted (``CountedFindings``) without being merged whole."""
    from traceaudit.retire.findings import CountedFindings
    return CountedFindings.joined([CountedFindings.of(p) for p in parts])
