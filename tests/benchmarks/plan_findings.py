"""Finding counts of `traceaudit analyze --json` against a synthetic capture's plan.

    python3 tests/benchmarks/plan_findings.py REPORT.json PLAN.json [--tolerance 0.02]

Each plan kind of ending must raise known findings (table below) once per connection; the
script prints expected and measured counts per (rule, endpoint, cause) and exits 1 when one is
off by more than the tolerance, or when an unexpected kind of finding is more than that share
of all findings.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter

#: (rule, endpoint, cause) -> plan kinds whose every connection must raise it.
EXPECTED: dict[tuple, tuple[str, ...]] = {
    ("connection-refused", "server", None): ("refused",),
    ("half-open-handshake", "server", None): ("half_open",),
    ("half-closed-leak", "server", None): ("close_wait_leak",),
    ("half-closed-leak", "client", None): ("fin_wait_2_hang",),
    ("fin-wait-2-hang", "client", None): ("close_wait_leak",),
    ("fin-wait-2-hang", "server", None): ("fin_wait_2_hang",),
    ("linger-zero-abort", "client", None): ("rst_client",),
    ("linger-zero-abort", "server", None): ("rst_server",),
    ("unread-data-reset", "client", None): ("unread_data_rst",),
    ("simultaneous-close", None, None): ("simultaneous_close",),
    ("lost-final-ack", "server", None): ("lost_final_ack", "time_wait_skipped"),
    ("rst-after-premature-close", "client", "time_wait_skipped"): ("time_wait_skipped",),
    # one finding per service; its 'connections' field counts them
    ("server-closes-first", "server", None): ("graceful_server", "fin_wait_2_hang"),
}


def measured_counts(findings: list[dict]) -> Counter:
    counts: Counter = Counter()
    for f in findings:
        key = (f["rule"], f.get("endpoint"), f.get("cause"))
        counts[key] += int(f.get("connections", 1))
    return counts


def compare(findings: list[dict], plan: dict, tolerance: float = 0.02) -> tuple[list, bool]:
    """Rows (key, expected, measured, relative error, ok) and whether everything is within."""
    kinds = plan["kinds"]
    got = measured_counts(findings)
    rows, ok = [], True
    for key, plan_kinds in EXPECTED.items():
        want = sum(kinds.get(k, 0) for k in plan_kinds)
        have = got.pop(key, 0)
        err = abs(have - want) / want if want else float(have > 0)
        rows.append((key, want, have, err, err <= tolerance))
        ok &= err <= tolerance
    total = sum(r[2] for r in rows) or 1
    for key, have in sorted(got.items(), key=str):
        share = have / total
        rows.append((key, 0, have, share, share <= tolerance))
        ok &= share <= tolerance
    return rows, ok


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("report", help="JSON report of traceaudit analyze --json")
    ap.add_argument("plan", help="the capture's .plan.json from make_synthetic.py")
    ap.add_argument("--tolerance", type=float, default=0.02)
    args = ap.parse_args(argv)
    with open(args.report, "rb") as fh:
        findings = json.load(fh)["findings"]
    with open(args.plan) as fh:
        plan = json.load(fh)
    rows, ok = compare(findings, plan, args.tolerance)
    print(f"{'rule':<27} {'endpoint':<8} {'cause':<18} {'plan':>8} {'found':>8} {'off':>7}")
    for (rule, endpoint, cause), want, have, err, good in rows:
        print(f"{rule:<27} {endpoint or '-':<8} {cause or '-':<18} {want:>8,} {have:>8,} "
              f"{err:>6.2%}{'' if good else '  <-- off'}")
    print(f"finding counts {'match' if ok else 'DO NOT match'} the plan within "
          f"{args.tolerance:.0%}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
