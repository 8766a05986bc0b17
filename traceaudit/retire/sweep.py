"""The retirement sweep: between batches, rows that may retire are written out as records and
compacted away from the flow builder, the trackers and the Zeek view."""

from __future__ import annotations

import numpy as np

from traceaudit.capture.batch import PacketBatch
from traceaudit.flows import assign as A
from traceaudit.flows.table import Assignment, FlowBuilder
from traceaudit.retire import RetireOptions
from traceaudit.retire import kernels as RK
from traceaudit.retire.records import Records, make_records
from traceaudit.retire.spill import Finished, SpilledTable, fact_words, take_facts
from traceaudit.tracking import zeek_kernel as ZK
from traceaudit.tracking.timeline import corrected_events
from traceaudit.tracking.tracker import EV_CONN, ConnectionTracker, Tracked
from traceaudit.tracking.zeek import ZeekTracker


class Retirer:
    """Runs the sweeps of one capture and remembers what retired."""

    def __init__(self, spill: SpilledTable, options: RetireOptions = RetireOptions()) -> None:
        self.spill = spill
        self.options = options
        self.grace = int(options.grace_s * 1e9)
        self.bits = np.zeros(max(1, options.bloom_bits // 64), np.uint64)
        self.suspects: list[np.ndarray] = []      # slot-shaped rows of returning 4-tuples
        self.retired = 0
        self.now = np.iinfo(np.int64).min
        self._next_sweep = options.sweep_conns
        # first frame of a live connection -> its previous incarnation's, once that retired
        # (the tracker's ``prev`` row is gone then; the flat read reports it)
        self.lost_prev: dict[int, int] = {}
        # the flat read's packet excerpts (``excerpt_spill.ExcerptRetirer``), with --html
        self.excerpts = None

    def after_batch(self, batch: PacketBatch, assignment: Assignment, builder: FlowBuilder,
                    slots_before: int, conns_before: int, tracker: ConnectionTracker,
                    zeek: ZeekTracker | None) -> None:
        """Call once a batch went through every stage."""
        if not len(batch):
            return
        self.now = max(self.now, int(batch["ts_ns"].max()))
        if self.retired and builder.n_slots > slots_before:
            hit = RK.returning_slots(self.bits, assignment.conn, assignment.from_client,
                                     batch["flags"], batch["seq"], builder.conn, builder.slots,
                                     slots_before, conns_before, builder.n_conns)
            if hit.any():
                conns = np.flatnonzero(hit) + conns_before
                self.suspects.append(builder.slots[builder.conn[conns, A.F_SLOT]].copy())
        if builder.n_conns >= self._next_sweep:
            self.sweep(builder, tracker, zeek)
            self._next_sweep = max(self.options.sweep_conns, 2 * builder.n_conns)

    def sweep(self, builder: FlowBuilder, tracker: ConnectionTracker,
              zeek: ZeekTracker | None) -> None:
        n, ns = builder.n_conns, builder.n_slots
        if not n:
            return
        if zeek is not None:            # Zeek's timers up to now first: its rows must be done
            ZK.sweep(zeek.zc, zeek.out, zeek.out_hist, zeek.slot_live, zeek.free, zeek.st,
                     zeek.prm)
        tracker.reserve_events(2 * n)
        retire = np.zeros(n, np.bool_)
        freed = np.zeros(ns, np.bool_)
        empty = np.empty(0, np.int64)
        tracker._n_ev = RK.select_retirable(
            builder.conn, n, builder.slots, ns, tracker.ends, tracker.conns,
            zeek.our_zrow if zeek is not None else empty,
            zeek.out if zeek is not None else np.empty((0, ZK.NO), np.int64),
            zeek.slot_live if zeek is not None else empty, self.now, self.grace,
            tracker.msl2, tracker._ev, tracker._n_ev, retire, freed)
        rows = np.flatnonzero(retire)
        if not len(rows):
            return
        RK.remember_retired(self.bits, builder.conn, builder.slots, np.flatnonzero(freed))
        ev = tracker.events()
        gone = retire[ev[:, EV_CONN]]
        self.spill.append(records_of(rows, builder, tracker, zeek, self.now, ev[gone],
                                     self.lost_prev if self.spill.with_facts else None))
        self.retired += len(rows)
        tracker.keep_events(ev[~gone])
        if self.spill.with_facts:
            self._keep_prev_links(retire, builder, tracker)
        if self.excerpts is not None:
            self.excerpts.retire(retire, builder)
        _compact(retire, freed, builder, tracker, zeek)

    def _keep_prev_links(self, retire: np.ndarray, builder: FlowBuilder,
                         tracker: ConnectionTracker) -> None:
        """Live connections whose previous incarnation retires now: remember its first frame
        (compaction forgets the row)."""
        n = builder.n_conns
        prev = tracker.conns["prev"][:n]
        lost = np.flatnonzero(~retire & (prev >= 0))
        lost = lost[retire[prev[lost]]]
        first = builder.conn[:n, A.F_FIRST_FRAME]
        for row, p in zip(first[lost].tolist(), first[prev[lost]].tolist()):
            self.lost_prev[row] = p


def records_of(rows: np.ndarray, builder: FlowBuilder, tracker: ConnectionTracker,
               zeek: ZeekTracker | None, end_ts_ns: int, ev: np.ndarray,
               lost_prev: dict[int, int] | None = None) -> Records | Finished:
    """Output records of connections ``rows`` (ascending) from their raw events ``ev`` (a
    copy unless ``rows`` are every row; TIME_WAITs must have been expired by the caller),
    sorted by first frame. With ``lost_prev`` (a flat read: ``Retirer.lost_prev``) their
    facts and corrected events too, as ``Finished`` rows, to be written out at once (at
    capture end they may be views of the tracker's tables)."""
    n = builder.n_conns
    every = len(rows) == n
    # rows in first-frame order from the start (compaction leaves the table unordered), so
    # that each table below is gathered once, already in output order
    first = builder.conn[rows, A.F_FIRST_FRAME]
    if len(first) > 1 and (first[1:] < first[:-1]).any():
        rows = rows[np.argsort(first, kind="stable")]
        every = False
        ev = ev.copy() if len(rows) == n else ev
    if not every:
        at = np.empty(n, np.int64)
        at[rows] = np.arange(len(rows))
        ev[:, EV_CONN] = at[ev[:, EV_CONN]]
    take = slice(0, n) if every else rows
    facts = lost_prev is not None
    # (a plain-row gather: NumPy copies structured records a field at a time)
    ends = tracker.ends[:n] if every else take_facts(tracker.ends, rows)
    conns = tracker.conns[:n] if every else take_facts(tracker.conns, rows)
    if facts and every:
        conns = conns.copy()            # (``prev`` is rewritten below)
    tracked = Tracked(ends, conns, ev, end_ts_ns, tracker.config)
    view = None
    if zeek is not None:
        zrow = zeek.our_zrow[take]
        conn_state, flipped = zeek.conn_view(zrow, builder.conn[take, A.F_CLIENT_IS_A] == 1)
        view = conn_state, zeek.history_letters(zrow), flipped
    events = corrected_events(tracked)
    rec = make_records(builder.raw(take), tracked, events, view, sort=False)
    if not facts:
        return rec
    # ``prev`` as the previous incarnation's first frame: rows are renumbered by retirement
    prev = conns["prev"]
    known = prev >= 0
    prev[known] = builder.conn[prev[known], A.F_FIRST_FRAME]
    if lost_prev:
        first = rec["first_frame"]
        for i in np.flatnonzero(~known).tolist():
            prev[i] = lost_prev.pop(int(first[i]), -1)
    return Finished(rec, ends, conns, events)


def _remap(values: np.ndarray, new: np.ndarray) -> np.ndarray:
    """Old row numbers → new ones (-1 stays -1; so does a row that went)."""
    return np.where(values >= 0, new[np.maximum(values, 0)], -1)


def live_moves(retire: np.ndarray) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
    """How compaction moves rows, ``retire`` a mask of them: ``(k, holes, movers, new)``, k
    the rows kept; the live rows beyond k (``movers``) move into the retired rows' places
    below k (``holes``): O(retired) copies, not O(live); row order is not creation order
    afterwards (records are sorted by first frame anyway). ``new``: each row's new index, -1
    for a retired one."""
    n = len(retire)
    k = n - int(retire.sum())
    holes = np.flatnonzero(retire[:k])
    movers = np.flatnonzero(~retire[k:]) + k
    new = np.arange(n)
    new[retire] = -1
    new[movers] = holes
    return k, holes, movers, new


def _compact(retire: np.ndarray, freed: np.ndarray, builder: FlowBuilder,
             tracker: ConnectionTracker, zeek: ZeekTracker | None) -> None:
    """Remove the retired rows and freed slots from every working table, keeping order, and
    renumber every reference to them."""
    n, ns = builder.n_conns, builder.n_slots
    k, holes, movers, new = live_moves(retire)
    builder.conn[holes] = builder.conn[movers]
    for facts in (tracker.ends, tracker.conns):      # (as plain rows: see ``fact_words``)
        words = fact_words(facts)
        words[holes] = words[movers]
    builder.conn[:k, A.F_PREV] = _remap(builder.conn[:k, A.F_PREV], new)
    prev = tracker.conns["prev"]                # (field views: assignments write the table)
    prev[:k] = _remap(prev[:k], new)
    tracker.conns["initialised"][k:n] = 0       # the kernel initialises (zeroes) a row it reuses
    ev = tracker.events()                       # the retired rows' events are gone already
    ev[:, EV_CONN] = new[ev[:, EV_CONN]]

    slot_keep = ~freed
    snew = np.cumsum(slot_keep) - 1
    snew[freed] = -1
    ks = int(slot_keep.sum())
    slots = builder.slots[:ns][slot_keep]
    slots[:, A.S_CONN] = _remap(slots[:, A.S_CONN], new)
    builder.slots[:ks] = slots
    builder.conn[:k, A.F_SLOT] = snew[builder.conn[:k, A.F_SLOT]]
    builder.ht.fill(-1)
    A.rebuild_table(builder.ht, builder.slots, ks)
    builder.n_conns, builder.n_slots = k, ks
    if zeek is not None:
        _compact_zeek(zeek, holes, movers, new, k, n, slot_keep, snew, ks, ns)


def _compact_zeek(zeek: ZeekTracker, holes: np.ndarray, movers: np.ndarray, new: np.ndarray,
                  k: int, n: int, slot_keep: np.ndarray, snew: np.ndarray, ks: int,
                  ns: int) -> None:
    """The Zeek view's part: output rows still live or read by a kept connection stay."""
    zeek.our_zrow[holes] = zeek.our_zrow[movers]
    our = zeek.our_zrow[:k]
    used = int(zeek.st[0])
    out = zeek.out[:used]
    live = out[:, ZK.O_LIVE] >= 0
    okeep = live.copy()
    okeep[our[our >= 0]] = True
    onew = np.cumsum(okeep) - 1
    ko = int(okeep.sum())
    z_live = out[live, ZK.O_LIVE]
    zeek.zc[z_live, ZK.Z_ROW] = onew[zeek.zc[z_live, ZK.Z_ROW]]
    zeek.zc[z_live, ZK.Z_SLOT] = snew[zeek.zc[z_live, ZK.Z_SLOT]]
    kept_out = out[okeep]
    kept_out[:, ZK.O_SLOT] = snew[kept_out[:, ZK.O_SLOT]]
    kept_out[:, ZK.O_CONN] = _remap(kept_out[:, ZK.O_CONN], new)
    kept_hist = zeek.out_hist[:used][okeep]
    zeek.out[:ko] = kept_out
    zeek.out[ko:used] = 0
    zeek.out_hist[:ko] = kept_hist
    zeek.out_hist[ko:used] = 0          # a new row's history is read up to its first NUL
    zeek.st[0] = ko
    zeek.our_zrow[:k] = _remap(our, onew)
    zeek.our_zrow[k:n] = -1
    slot_live = zeek.slot_live[:ns][slot_keep]
    zeek.slot_live[:ks] = slot_live
    zeek.slot_live[ks:ns] = -1


def finish_live(retirer: Retirer, builder: FlowBuilder, tracker: ConnectionTracker,
                zeek: ZeekTracker | None, end_ts_ns: int, repair: bool = False) -> None:
    """Capture end: the rows still live are finished as in a normal read and spilled."""
    n = builder.n_conns
    tracked = tracker.finish(n, end_ts_ns)
    if zeek is not None:
        zeek.close()
    if n:
        lost = ({} if repair else retirer.lost_prev) if retirer.spill.with_facts else None
        retirer.spill.append(records_of(np.arange(n), builder, tracker, zeek, end_ts_ns,
                                        tracked.events, lost), repair=repair)


class TupleSet:
    """A set of 4-tuples (slot-shaped rows), tested a batch or a record array at a time."""

    def __init__(self, tuples: np.ndarray) -> None:
        self.tuples = np.unique(tuples, axis=0)
        size = 1 << max(4, int(2 * len(self.tuples)).bit_length())
        self.ht = np.full(size, -1, np.int64)
        A.rebuild_table(self.ht, self.tuples, len(self.tuples))

    def __len__(self) -> int:
        return len(self.tuples)

    def batch_rows(self, batch: PacketBatch) -> np.ndarray:
        return RK.tuple_rows(self.ht, self.tuples, batch["src_hi"], batch["src_lo"],
                             batch["sport"], batch["dst_hi"], batch["dst_lo"], batch["dport"])

    def record_rows(self, rec: Records) -> np.ndarray:
        return RK.tuple_rows(self.ht, self.tuples, rec["c_hi"], rec["c_lo"],
                             rec["client_port"], rec["s_hi"], rec["s_lo"], rec["server_port"])
