"""idle-timeout-reset: a connection idle for a while, then its next segment answered by RST.

Stateful boxes (conntrack firewalls, NAT gateways, cloud load balancers) forget a connection
that has been idle longer than their timeout and answer its next segment with a reset. The
tracker measures, per connection, the idle time before each endpoint's turn (``run_idle_ns``)
and keeps the one its first RST came right after (``rst_idle_ns``) and the longest one the
connection survived (``idle_survived_ns``); across one service (server address:port) the
smallest idle that was reset and the largest that survived bracket the timeout.

How it relates to middlebox-reset: that rule says who sent a reset, this one why it came. A
reset that is both forged on the path and follows an idle gap gets both findings (two
findings for one RST, each with its own fix); an idle reset the endpoint itself sent is
reported here only when the service's connections show a clean threshold.
"""

from __future__ import annotations

import numpy as np

from traceaudit.rules.common import ENDPOINTS, NS, View, seconds
from traceaudit.rules.model import Rule, Severity
from traceaudit.tracking.rst_origin import evidence_names
from traceaudit.tracking.states import EndpointState, RstOrigin


def _idle_resets(v: View, params) -> list[np.ndarray]:
    """Per endpoint, the connections whose first RST by that endpoint answered the peer's
    first segment after an idle of ``min_idle`` or more."""
    min_ns = int(params["min_idle"] * NS)
    # the other facts are read for these rows only
    rows = [np.flatnonzero(v.ep(e, "rst_idle_ns") >= min_ns) for e in (0, 1)]
    return [rows[e][_candidates(v, e, rows[e])] for e in (0, 1)]


def idle_per_service(v: View, params) -> dict[str, list[int]]:
    """The ``TOTALS`` summary: per service (server address:port) with connections in this
    view, ``[smallest idle that was reset, resets, largest idle survived]`` (services
    with neither a reset nor a survived idle are left out)."""
    resets = _idle_resets(v, params)
    codes = v.service_codes(1)
    if not len(codes):
        return {}
    uniq, first, group = np.unique(codes, return_index=True, return_inverse=True)
    group = group.reshape(-1)
    reset_from = np.full(len(uniq), np.iinfo(np.int64).max)
    n_reset = np.zeros(len(uniq), np.int64)
    for e in (0, 1):
        np.minimum.at(reset_from, group[resets[e]], v.take(resets[e], e, "rst_idle_ns")[0])
        np.add.at(n_reset, group[resets[e]], 1)
    survived = np.zeros(len(uniq), np.int64)
    np.maximum.at(survived, group, v.conn("idle_survived_ns"))
    keep = np.flatnonzero((n_reset > 0) | (survived > 0))
    names = v.addresses(first[keep].tolist(), 1)
    return {name: [a, b, c] for name, a, b, c in zip(
        names, reset_from[keep].tolist(), n_reset[keep].tolist(), survived[keep].tolist())}


def _merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for name, (reset_from, n_reset, survived) in b.items():
        was = out.get(name)
        out[name] = [reset_from, n_reset, survived] if was is None else [
            min(was[0], reset_from), was[1] + n_reset, max(was[2], survived)]
    return out


#: whole-capture summaries a flat read (``retire/flat.py``) sums over its chunks
TOTALS = {"idle_per_service": (idle_per_service, _merge)}


def check(analysis, params):
    v = View.of(analysis)
    if not v.n:
        return []
    resets = _idle_resets(v, params)
    if not any(len(r) for r in resets):
        return []
    # per service (server address:port): the smallest idle that was reset, the largest that
    # survived, how many were reset — over the whole capture
    per_service = v.whole("idle_per_service", lambda v: idle_per_service(v, params))
    out = []
    for e in (0, 1):
        services = v.addresses(resets[e], 1)
        stats = [per_service[name] for name in services]
        reset_from = np.array([x[0] for x in stats], np.int64)
        n_reset = np.array([x[1] for x in stats], np.int64)
        survived = np.array([x[2] for x in stats], np.int64)
        clean = (n_reset >= params["min_service_resets"]) & (survived < reset_from)
        path = np.asarray(v.take(resets[e], e, "rst_origin")[0]) == RstOrigin.PATH
        keep = path | clean
        out += _findings(v, resets[e][keep], e, path[keep].tolist(), clean[keep].tolist(),
                         reset_from[keep].tolist(), survived[keep].tolist(),
                         n_reset[keep].tolist())
    return out


def _candidates(v: View, e: int, rows: np.ndarray) -> np.ndarray:
    """Which of ``rows`` (connections whose endpoint ``e``'s first RST came after an idle
    long enough) count: the RST answered the peer's first segment after the idle, both sides
    still ESTABLISHED (neither had closed), not a refused connection."""
    p = 1 - e
    rst, answers, state, count = (np.asarray(x) for x in v.take(
        rows, e, "rst_frame", "rst_answers_frame", "rst_from_state", "rst_count"))
    fins = [np.asarray(v.take(rows, x, "fin_frame")[0]) for x in (e, p)]
    (refused,) = v.take(rows, None, "refused")
    return ((count > 0) & (answers >= 0) & (state == EndpointState.ESTABLISHED) &
            ((fins[0] < 0) | (fins[0] > rst)) & ((fins[1] < 0) | (fins[1] > rst)) &
            (np.asarray(refused) == 0))


def _findings(v: View, hits: np.ndarray, e: int, path: list[bool], clean: list[bool],
              reset_from: list[int], survived: list[int], n_reset: list[int]):
    me, peer = ENDPOINTS[e], ENDPOINTS[1 - e]
    conns = hits.tolist()
    rst, rst_ns, answers, idle, bits = v.take(hits, e, "rst_frame", "rst_ns",
                                              "rst_answers_frame", "rst_idle_ns",
                                              "rst_evidence")
    peer_addrs = v.addresses(hits, 1 - e)
    services = v.addresses(hits, 1)
    frames, messages, details = [], [], []
    for i, c in enumerate(conns):
        who = (f"which the {me} did not send (forged on the path: "
               f"{', '.join(evidence_names(bits[i]))})" if path[i] else
               f"with the {me}'s address")
        if survived[i] > 0:
            estimate = (survived[i] + reset_from[i]) / 2
            bracket = (f"the longest idle that survived was {seconds(survived[i])}: an idle "
                       f"timeout between {seconds(survived[i])} and {seconds(reset_from[i])}")
        else:
            estimate = reset_from[i]
            bracket = f"none idle that long survived: an idle timeout of at most " \
                      f"{seconds(reset_from[i])}"
        if clean[i]:
            service = (f" Every connection to {services[i]} idle for >= "
                       f"{seconds(reset_from[i])} was reset ({n_reset[i]} in the capture) and "
                       f"{bracket} on the path.")
        else:
            service = (f" The capture shows no threshold across the connections to "
                       f"{services[i]} ({n_reset[i]} reset after idling)"
                       + (f"; {bracket}." if survived[i] < reset_from[i] else
                          f"; one idle for {seconds(survived[i])} survived."))
        frames.append([answers[i], rst[i]])
        messages.append(
            f"The connection had been idle for {seconds(idle[i])} when the {peer} "
            f"{peer_addrs[i]} sent again (frame {answers[i]}); the segment was answered by an "
            f"RST (frame {rst[i]}) {who}: the connection had been forgotten while idle.{service}")
        details.append({"confidence": "high" if path[i] and clean[i] else "medium",
                        "idle_s": round(idle[i] / NS, 6),
                        "rst_origin": "path" if path[i] else "endpoint",
                        "service": services[i], "service_resets": n_reset[i],
                        "reset_from_s": round(reset_from[i] / NS, 6),
                        "longest_survived_s": round(survived[i] / NS, 6),
                        "timeout_estimate_s": round(estimate / NS, 3)})
    return v.findings(RULE, conns, None, v.take(hits, e, "rst_ns")[0], frames, messages,
                      details)


RULE = Rule(
    code="TA115",
    name="idle-timeout-reset",
    title="Idle connection reset on its next segment: an idle timeout on the path",
    severity=Severity.WARNING,
    rationale=("A connection that sat idle, then had its next segment answered by an RST, was "
               "forgotten while idle: a stateful firewall's conntrack entry expired, a NAT "
               "mapping timed out, a load balancer's idle timeout fired (AWS NLB 350 s, Azure "
               "4 min, many firewalls 1 h). The application sees ECONNRESET on a pooled "
               "connection it believed alive, typically on the first request after a quiet "
               "period. Across the connections of one service, the smallest idle that was "
               "reset and the largest that survived bracket the timeout."),
    remediation=("Enable TCP keepalive with an idle time below the timeout (SO_KEEPALIVE with "
                 "TCP_KEEPIDLE, or `sysctl net.ipv4.tcp_keepalive_time`), send application "
                 "pings, or make connection pools evict connections idle longer than the "
                 "timeout; or raise the box's idle timeout (conntrack: "
                 "`net.netfilter.nf_conntrack_tcp_timeout_established`)."),
    check=check,
    thresholds={"min_idle": 1.0, "min_service_resets": 2},
    threshold_help={"min_idle": "seconds of idle before the reset segment for it to count",
                    "min_service_resets": "resets after idling, across one service, that "
                                          "make a threshold (every longer idle reset, every "
                                          "shorter one survived) when the RST itself is not "
                                          "attributed to the path"},
    references=("RFC 9293 §3.8.4 (TCP keep-alives)", "RFC 5382 §5 (NAT idle timeouts: "
                                                     "at least 2 h 4 min)",
                "Linux nf_conntrack sysctls: nf_conntrack_tcp_timeout_established"),
)
