"""A flat read's findings parked a chunk at a time (``traceaudit/retire/findings.py``): read
back in the order of a sort of them all, and what the terminal summary takes of them (counts
by rule and severity, the worst findings) without reading them back, equal to what it takes
of the plain list."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from traceaudit.report.summary_report import _worst_of
from traceaudit.retire import findings as parked
from traceaudit.retire.findings import (FindingChain, ParkedFindings, order, rule_severities,
                                        worst_candidates)
from traceaudit.rules.model import Finding, Severity

RULES = [("half-closed-leak", "TA101"), ("linger-zero-abort", "TA104"),
         ("connection-refused", "TA106"), ("simultaneous-close", "TA108")]


def chunk_findings(rng: random.Random, first_id: int, n: int, rules=RULES) -> list[Finding]:
    """n findings of connections first_id.. (or none: a host's; or one of three, so that
    findings of different chunks tie on the whole sort key), sorted as a chunk's are; few
    distinct times and severities, so that many tie on (severity, time) across chunks."""
    out = []
    for _ in range(n):
        rule, code = rng.choice(rules)
        out.append(Finding(rule=rule, code=code, severity=rng.choice(list(Severity)),
                           capture="c.pcap", ts=float(rng.randrange(6)), frames=[1, 2],
                           message=f"m{rng.random()}", remediation="r",
                           connection=rng.choice([None, first_id + rng.randrange(50),
                                                  rng.randrange(3)]),
                           endpoint=rng.choice(["client", "server", None]),
                           display_filter="tcp.stream eq 1", key=f"k{rng.randrange(9)}",
                           details={"cause": rng.choice(["a", "b"]), "n": rng.random()}))
    out.sort(key=order)
    return out


def identity(findings) -> list[tuple]:
    return [(f.rule, f.severity, f.ts, f.connection, f.message) for f in findings]


@pytest.mark.parametrize("kept", [0, 1000, 1 << 30], ids=["packed", "first-kept", "all-kept"])
@pytest.mark.parametrize("plain_bytes", [0, 1 << 30], ids=["compressed", "plain"])
@pytest.mark.parametrize("seed, rules", [(seed, len(RULES) - seed % 3) for seed in range(6)])
def test_parked_findings_read_back_and_summarised_as_the_list(seed, rules, plain_bytes, kept,
                                                              monkeypatch):
    """(With 2 rules, most of the worst findings shown are the most severe of all, not each
    rule's: the candidates must hold enough of those.) ``kept``: the first chunks' findings,
    up to that many, kept as objects, the others packed."""
    monkeypatch.setattr(parked, "PLAIN_BYTES", plain_bytes)
    monkeypatch.setattr(parked, "KEPT_FINDINGS", kept)
    rng = random.Random(seed)
    chunks = [chunk_findings(rng, 50 * k, rng.randrange(0, 700), RULES[:rules])
              for k in range(7)]
    whole = sorted((f for c in chunks for f in c), key=order)     # (a stable sort of all)
    packed = ParkedFindings()
    for c in chunks:
        packed.add(c)
    assert len(packed) == len(whole) > 0
    assert identity(packed) == identity(whole)
    back = list(packed)                         # every field, as made
    assert back == whole
    assert [f.fingerprint for f in back] == [f.fingerprint for f in whole]
    assert type(back[0].severity) is Severity
    assert packed.rule_severities == Counter((f.rule, f.severity) for f in whole)
    assert packed.severities == Counter(f.severity for f in whole)
    candidates = packed.worst_candidates()
    assert len(candidates) < len(whole)
    assert identity(_worst_of(candidates)) == identity(_worst_of(whole))


def test_a_chain_of_parked_and_plain_findings(monkeypatch):
    """Several captures: some parked, one a plain list (a capture read whole)."""
    monkeypatch.setattr(parked, "KEPT_FINDINGS", 0)
    rng = random.Random(11)
    parts, plain = [], []
    for k in range(3):
        chunks = [chunk_findings(rng, 1000 * k + 50 * j, rng.randrange(1, 300))
                  for j in range(4)]
        whole = sorted((f for c in chunks for f in c), key=order)
        if k == 1:
            parts.append(whole)
        else:
            packed = ParkedFindings()
            for c in chunks:
                packed.add(c)
            parts.append(packed)
        plain += whole
    chain = FindingChain(parts)
    assert identity(chain) == identity(plain)
    assert rule_severities(chain) == Counter((f.rule, f.severity) for f in plain)
    assert identity(_worst_of(worst_candidates(chain))) == identity(_worst_of(plain))
    assert worst_candidates(plain) is plain


def test_none_parked():
    packed = ParkedFindings()
    packed.add([])
    assert list(packed) == [] and len(packed) == 0 and packed.worst_candidates() == []
