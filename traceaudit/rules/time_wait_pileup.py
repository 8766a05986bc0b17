"""time-wait-pileup: per host, how many sockets sat in TIME_WAIT at once."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from traceaudit.rules.common import NS, View
from traceaudit.rules.model import Finding, Rule, Severity
from traceaudit.tracking.states import EndpointState
from traceaudit.tracking.tracker import EV_CONN, EV_ENDPOINT, EV_FRAME, EV_STATE, EV_TS

if TYPE_CHECKING:
    import pandas as pd


class Stays:
    """TIME_WAIT stays: per stay its connection id and endpoint, host and peer address (codes
    into ``labels``), peer port, start, end (the next event, else capture end) and frame.
    Sums over the chunks of a flat read (``add``)."""

    FIELDS = ("conn", "endpoint", "host", "peer_ip", "peer_port", "start", "end", "frame")

    def __init__(self, labels: list[str], **columns: np.ndarray) -> None:
        self.labels = list(labels)
        self._index = {text: i for i, text in enumerate(self.labels)}
        self._parts = [columns] if columns and len(columns["conn"]) else []

    @classmethod
    def of_view(cls, v: View, params=None) -> "Stays":
        ev = v.analysis.events
        if not len(ev) or not v.n:
            return cls([])
        tw = np.flatnonzero(ev[:, EV_STATE] == EndpointState.TIME_WAIT)
        nxt = tw + 1
        same = nxt < len(ev)
        same[same] = ((ev[nxt[same], EV_CONN] == ev[tw[same], EV_CONN]) &
                      (ev[nxt[same], EV_ENDPOINT] == ev[tw[same], EV_ENDPOINT]))
        end = np.full(len(tw), v.end_ns, np.int64)
        end[same] = ev[nxt[same], EV_TS]
        conn, e = ev[tw, EV_CONN], ev[tw, EV_ENDPOINT]
        cip, sip = v.ip_codes
        cport, sport = v.columns["client_port"], v.columns["server_port"]
        client = e == 0
        return cls(v._hosts[1], conn=v.ids[conn], endpoint=e,
                   host=np.where(client, cip[conn], sip[conn]).astype(np.int64),
                   peer_ip=np.where(client, sip[conn], cip[conn]).astype(np.int64),
                   peer_port=np.where(client, sport[conn], cport[conn]).astype(np.int64),
                   start=ev[tw, EV_TS], end=end, frame=ev[tw, EV_FRAME])

    def add(self, other: "Stays") -> "Stays":
        codes = np.array([self._index.setdefault(text, len(self._index))
                          for text in other.labels] or [0], np.int64)
        self.labels = list(self._index)
        for part in other._parts:
            self._parts.append({**part, "host": codes[part["host"]],
                                "peer_ip": codes[part["peer_ip"]]})
        return self

    def column(self, name: str) -> np.ndarray:
        if not self._parts:
            return np.zeros(0, np.int64)
        return np.concatenate([p[name] for p in self._parts])

    def __len__(self) -> int:
        return sum(len(p["conn"]) for p in self._parts)

    def frame(self) -> pd.DataFrame:
        """One row per stay: conn, endpoint, host, peer (ip:port), start/end ns, frame."""
        import pandas as pd
        labels = np.asarray(self.labels, object)
        host = labels[self.column("host")] if len(self) else np.zeros(0, object)
        peer_ip = labels[self.column("peer_ip")] if len(self) else np.zeros(0, object)
        peer = [f"[{ip}]:{p}" if ":" in ip else f"{ip}:{p}"
                for ip, p in zip(peer_ip, self.column("peer_port").tolist())]
        return pd.DataFrame({"conn": self.column("conn"), "endpoint": self.column("endpoint"),
                             "host": host, "peer": peer, "start": self.column("start"),
                             "end": self.column("end"), "frame": self.column("frame")})


#: whole-capture summaries a flat read (``retire/flat.py``) sums over its chunks
TOTALS = {"time_wait_stays": (Stays.of_view, lambda a, b: a.add(b))}


def time_wait_intervals(analysis) -> pd.DataFrame:
    """One row per TIME_WAIT stay: conn, endpoint, host, peer (ip:port), start/end ns, frame."""
    return Stays.of_view(View.of(analysis)).frame()


def peaks(intervals: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Per group: the most stays open at once, when that was first reached, and its frame."""
    import pandas as pd
    n = len(intervals)
    steps = pd.DataFrame({
        **{k: np.concatenate([intervals[k].to_numpy(), intervals[k].to_numpy()]) for k in by},
        "t": np.concatenate([intervals["start"].to_numpy(), intervals["end"].to_numpy()]),
        "d": np.concatenate([np.ones(n, np.int64), -np.ones(n, np.int64)]),
        "frame": np.concatenate([intervals["frame"].to_numpy(), np.full(n, -1)]),
    })
    steps = steps.sort_values(by + ["t", "d"], kind="stable")     # leave before enter
    steps["open"] = steps.groupby(by, sort=False)["d"].cumsum()
    top = steps.loc[steps.groupby(by, sort=False)["open"].idxmax()]
    return top.rename(columns={"open": "peak", "t": "peak_ns"})[by + ["peak", "peak_ns",
                                                                       "frame"]]


def busiest_host_peak(analysis, floor: int = 0) -> int:
    """The most TIME_WAIT stays any one host had open at once (integer codes, no strings),
    among the hosts with at least ``floor`` stays in all: no other can have had ``floor`` open
    at once, so only those are swept (0 when there are none)."""
    return _busiest(Stays.of_view(View.of(analysis)), floor)


def _busiest(stays: Stays, floor: int = 0) -> int:
    if not len(stays):
        return 0
    host, start, end = stays.column("host"), stays.column("start"), stays.column("end")
    if floor > 1:
        keep = np.bincount(host)[host] >= floor
        if not keep.any():
            return 0
        host, start, end = host[keep], start[keep], end[keep]
    t = np.concatenate([start, end])
    d = np.concatenate([np.ones(len(host), np.int64), -np.ones(len(host), np.int64)])
    h = np.concatenate([host, host])
    order = np.lexsort((d, t, h))                       # by host, time; leave before enter
    open_now = np.cumsum(d[order])
    hs = h[order]
    first = np.flatnonzero(np.r_[True, hs[1:] != hs[:-1]])
    base = np.repeat(open_now[first] - d[order][first], np.diff(np.r_[first, len(hs)]))
    return int((open_now - base).max())


def check(analysis, params):
    v = View.of(analysis)
    if not v.final:
        return []                       # a flat read: the last chunk reports for them all
    stays = v.whole("time_wait_stays", Stays.of_view)
    if _busiest(stays, int(params["min_sockets"])) < params["min_sockets"]:
        return []                                       # the common case, without strings
    intervals = stays.frame()
    if intervals.empty:
        return []
    low, high = int(params["port_range_low"]), int(params["port_range_high"])
    ports = max(high - low + 1, 1)
    by_host = peaks(intervals, ["host"])
    by_peer = peaks(intervals, ["host", "peer"]).sort_values("peak", ascending=False)
    worst_peer = by_peer.drop_duplicates("host").set_index("host")
    out = []
    # (records, not itertuples: that makes a namedtuple class per call, a reference cycle)
    for row in by_host.to_dict("records"):
        if row['peak'] < params["min_sockets"]:
            continue
        w = worst_peer.loc[row['host']]
        share = w.peak / ports
        span = intervals[intervals["host"] == row['host']]
        message = (f"host {row['host']} held {row['peak']:,} sockets in TIME_WAIT at once "
                   f"(peak reached at frame {row['frame']}); at most {int(w.peak):,} of them toward "
                   f"one peer ({w['peer']}): {share:.1%} of the ephemeral port range "
                   f"{low}–{high} ({ports:,} ports) that a client needs for that peer. "
                   f"{len(span):,} TIME_WAIT sockets in all in this capture.")
        frames = sorted(set(span.nlargest(3, "start")["frame"].tolist() + [int(row['frame'])]))
        out.append(Finding(
            rule=RULE.name, code=RULE.code, severity=RULE.severity,
            capture=analysis.stats.path, ts=row['peak_ns'] / NS, frames=[f for f in frames if f >= 0],
            message=message, remediation=RULE.remediation, host=str(row['host']),
            display_filter=f"ip.addr == {row['host']} && tcp.flags.fin == 1"
            if ":" not in row['host'] else f"ipv6.addr == {row['host']} && tcp.flags.fin == 1",
            details={"peak": int(row['peak']), "peak_peer": w["peer"], "peak_peer_count": int(w.peak),
                     "port_range": [low, high], "port_range_share": round(float(share), 6),
                     "time_wait_sockets": int(len(span))},
            key=str(row['host'])))
    return out


RULE = Rule(
    code="TA111",
    name="time-wait-pileup",
    title="TIME_WAIT pile-up on a host",
    severity=Severity.WARNING,
    rationale=("Every connection a host closes first leaves a TIME_WAIT socket for 2×MSL "
               "(60 s on Linux). A client's TIME_WAIT sockets toward one server each hold an "
               "ephemeral port: at a few hundred connections per second the range "
               "(32768–60999 by default, 28,232 ports) runs out and connect() fails with "
               "EADDRNOTAVAIL; past net.ipv4.tcp_max_tw_buckets the kernel destroys TIME_WAIT "
               "early (see rst-after-premature-close)."),
    remediation=("Reuse connections (keep-alive, pools) instead of one per request; widen "
                 "net.ipv4.ip_local_port_range; enable net.ipv4.tcp_tw_reuse for outgoing "
                 "connections; spread load over more server addresses/ports; let the server "
                 "rather than the client close only if the server can afford the TIME_WAIT."),
    check=check,
    thresholds={"min_sockets": 1000, "port_range_low": 32768, "port_range_high": 60999},
    threshold_help={"min_sockets": "TIME_WAIT sockets at once on one host that make a pile-up",
                    "port_range_low": "first port of the ephemeral range "
                                      "(net.ipv4.ip_local_port_range)",
                    "port_range_high": "last port of the ephemeral range"},
    references=("RFC 9293 §3.6.1", "RFC 6191", "Linux ip-sysctl: ip_local_port_range, "
                "tcp_max_tw_buckets, tcp_tw_reuse"),
)
