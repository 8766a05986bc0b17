"""middlebox-reset: an RST with an endpoint's address that the endpoint did not send.

The tracker judges every endpoint's first RST (``rst_origin``, ``rst_evidence`` and
``rst_confidence`` in facts.pxd; how, in kernel.pyx and docs/design.md): a reset forged by a
firewall, NAT gateway, load balancer or IPS arrives with the box's TTL rather than the
endpoint's, and the endpoint's own segments keep coming after it (the race the forger cannot
win). This rule reports the resets attributed to the path, with that evidence.
"""

from __future__ import annotations

import numpy as np

from traceaudit.rules.common import ENDPOINTS, View
from traceaudit.rules.model import Rule, Severity
from traceaudit.tracking.rst_origin import CONFIDENCE_NAMES, evidence_names, ttl_range
from traceaudit.tracking.states import Confidence, RstEvidence, RstOrigin

def evidence_text(f: dict[str, int], me: str, v6: bool) -> list[str]:
    """Each piece of evidence of one endpoint's first RST in words (``f``: its facts)."""
    ttl = "hop limit" if v6 else "TTL"
    bits = f["rst_evidence"]
    out = []
    if bits & RstEvidence.TTL:
        out.append(f"its {ttl} is {f['rst_ttl']} where every other segment of the {me} "
                   f"arrives with {ttl_range(f['ttl_lo'], f['ttl_hi'])} (a box at another hop "
                   f"count wrote it)")
    if bits & RstEvidence.RACE:
        out.append(f"the {me}'s own segments kept coming after it ({f['race_segs']}, the first "
                   f"frame {f['race_frame']}) with sequence or ACK numbers past the reset: the "
                   f"{me} had not reset the connection")
    if bits & RstEvidence.IP_ID:
        out.append(f"its IP ID {f['rst_ip_id']} is out of the {me}'s sequence (its last "
                   f"{f['ip_id_last']})")
    if bits & RstEvidence.TSVAL:
        out.append(f"its TSval {f['rst_tsval']} is older than the {me}'s last "
                   f"{f['tsval_last']}")
    if bits & RstEvidence.NO_TIMESTAMPS:
        out.append(f"it has no timestamps option, which every other segment of the {me} "
                   f"carries")
    if bits & RstEvidence.SEQ:
        gap = f["rst_seq_gap"]
        out.append(f"its sequence number is {abs(gap)} byte{'' if abs(gap) == 1 else 's'} "
                   f"{'short of' if gap < 0 else 'past'} where the {me}'s next byte would be")
    return out


def display_filter(c: int, ip: str, v6: bool, frames: list[int]) -> str:
    """The connection's segments with the endpoint's address (the reset beside the
    endpoint's own: compare the TTL column), and the finding's frames (the segment the
    reset answered)."""
    own = f"{'ipv6' if v6 else 'ip'}.src == {ip}"
    if not frames:
        return f"tcp.stream eq {c} && {own}"
    return (f"tcp.stream eq {c} && ({own} || frame.number in {{"
            + ", ".join(map(str, frames)) + "})")


#: a flat read (``retire/flat.py``): this rule reads its own connections only
TOTALS: dict = {}


def check(analysis, params):
    v = View.of(analysis)
    out = []
    floor = Confidence.HIGH if params["high_only"] else Confidence.MEDIUM
    for e in (0, 1) if v.n else ():
        hits = np.flatnonzero(v.ep(e, "rst_origin") == RstOrigin.PATH)
        if len(hits):
            (confidence,) = v.take(hits, e, "rst_confidence")
            out += _findings(v, hits[np.asarray(confidence) >= floor], e)
    return out


def _findings(v: View, hits: np.ndarray, e: int):
    me, peer = ENDPOINTS[e], ENDPOINTS[1 - e]
    conns = hits.tolist()
    addrs = v.addresses(hits, e)
    v6 = (v.columns["ip_version"][hits] == 6).tolist()
    rows = [v.row(c, e) for c in conns]
    idle = v.ep(e, "rst_idle_ns")[hits].tolist()
    frames, messages, details, stamps = [], [], [], []
    for i, c in enumerate(conns):
        f = rows[i]
        said = evidence_text(f, me, v6[i])
        answers = f["rst_answers_frame"]
        answered = f" in answer to the {peer}'s frame {answers}" if answers >= 0 else ""
        idle_note = (" It came right after the connection had been idle: see "
                     "idle-timeout-reset.") if idle[i] > 0 else ""
        frames.append([answers, f["rst_frame"], f["race_frame"]])
        messages.append(
            f"The RST at frame {f['rst_frame']}{answered} carries the {me} {addrs[i]}'s address "
            f"but the {me} did not send it: {'; '.join(said)}. A firewall, NAT gateway, load "
            f"balancer or IPS on the path forged it; the {peer} took it as the {me}'s reset "
            f"(ECONNRESET), while the {me} may still hold the connection open.{idle_note}")
        details.append({"confidence": CONFIDENCE_NAMES[f["rst_confidence"]],
                        "rst_origin": "path", "evidence": evidence_names(f["rst_evidence"]),
                        "rst_frame": f["rst_frame"], "rst_ttl": f["rst_ttl"],
                        "usual_ttl": ttl_range(f["ttl_lo"], f["ttl_hi"]),
                        "race_segments": f["race_segs"]})
        stamps.append(f["rst_ns"])
    found = v.findings(RULE, conns, e, stamps, frames, messages, details)
    for finding, c, ip6 in zip(found, conns, v6):
        finding.display_filter = display_filter(finding.connection, v.ip(c, e), ip6,
                                                finding.frames)
    return found


RULE = Rule(
    code="TA114",
    name="middlebox-reset",
    title="Reset forged on the path: the endpoint it names did not send it",
    severity=Severity.WARNING,
    rationale=("Firewalls, NAT gateways, load balancers and IPSs end connections they no "
               "longer track (an idle timeout, a state table overflow, a policy) by sending "
               "an RST with the endpoint's address. The peer cannot tell: it reports "
               "'connection reset by peer' and the endpoint is blamed for a close it never "
               "made, while its own socket may stay open. Such a reset betrays itself at the "
               "vantage point: its TTL or hop limit is the box's, not the endpoint's; the "
               "endpoint's own data or ACKs keep arriving after it (Weaver, Sommer, Paxson, "
               "NDSS 2009); its IP ID or TCP timestamps are out of line with the "
               "endpoint's other segments. Only strong evidence (TTL, the race), or two of "
               "IP ID, TSval and sequence number out of line on a reset that carries "
               "timestamps (a socket's), attributes a reset to the path: an endpoint's own "
               "kernel resets without a socket too, with no timestamps and another ID."),
    remediation=("Find the box: the TTL difference tells how many hops from the capture it "
                 "sits (traceroute towards the endpoint). If it dropped an idle connection, "
                 "enable TCP keepalive below its idle timeout or raise the timeout (see "
                 "idle-timeout-reset); if a policy or IPS signature fires, fix the rule; a "
                 "state table that overflows needs a larger table. Capture on both sides of "
                 "the box to prove it (the endpoint never sent the RST)."),
    check=check,
    thresholds={"high_only": False},
    threshold_help={"high_only": "report only resets attributed to the path with high "
                                 "confidence (two or more pieces of evidence, one of them the "
                                 "TTL or the race)"},
    references=("Weaver, Sommer, Paxson: Detecting Forged TCP Reset Packets (NDSS 2009)",
                "RFC 9293 §3.5.3 (reset processing)", "RFC 5961 §3 (blind reset attacks)"),
)
