"""The terminal summary of ``traceaudit compare``: how many connections matched (and through
which translation), the clock offset, and per connection the packets dropped or created on the
path, with a Wireshark display filter for each capture."""

from __future__ import annotations

from collections import Counter

from rich.console import Console
from rich.table import Table
from rich.text import Text

from traceaudit.compare import Comparison
from traceaudit.report.compare_text import (fmt_ns, frames_filter, packet_text, side_name,
                                            translation)

#: connections with differences listed in full; packets listed per connection
SHOWN, PACKETS_SHOWN = 10, 8


def render(c: Comparison, console: Console, elapsed_s: float) -> None:
    na, nb = len(c.a.flows), len(c.b.flows)
    console.print(Text(f"traceaudit compare: {len(c.pairs):,} connection(s) matched of "
                       f"{na:,} in a and {nb:,} in b, in {elapsed_s:.1f} s", style="bold"))
    for side, v in (("a", c.a), ("b", c.b)):
        st = v.stats
        damaged = Text(f"  damaged: {st.error}", style="red") if st.error else Text("")
        console.print(Text(f"  {side}: {side_name(c, side)}: {st.packets:,} packets, "
                           f"{len(v.flows):,} connections") + damaged, highlight=False)
    al = c.alignment
    if al.offset_samples:
        delay = f", one-way delay {fmt_ns(al.delay_ns)}" if al.delay_ns >= 0 else ""
        console.print(f"  clock offset (b - a): {fmt_ns(al.offset_ns)} from "
                      f"{al.offset_samples:,} packets seen at both{delay}", highlight=False)
    sides = Counter(p.client_side for p in c.pairs)
    if sides.get("b"):
        console.print(f"  client beside a: {sides.get('a', 0):,} connection(s), beside b: "
                      f"{sides['b']:,}", highlight=False)
    translations = Counter(translation(p) for p in c.pairs if p.translated)
    if translations:
        console.print(f"  translated (NAT): {sum(translations.values()):,} connection(s)",
                      highlight=False)
        for text, n in translations.most_common(5):
            console.print(f"    {text}" + (f"  ×{n}" if n > 1 else ""), highlight=False)
    for side, left in (("a", c.unmatched_a), ("b", c.unmatched_b)):
        if left:
            shown = ", ".join(f"#{u.conn} {u.client} -> {u.server}" for u in left[:3])
            more = f" and {len(left) - 3} more" if len(left) > 3 else ""
            console.print(Text(f"  only in {side}: {len(left):,} connection(s): {shown}{more}",
                               style="yellow"), highlight=False)
    cut = sum(p.resegmented for p in c.pairs)
    if cut:
        console.print(f"  {cut:,} data segment(s) cut differently at the two points "
                      "(segmentation offload): not counted as differences", highlight=False)
    differing = c.differing
    for pair in differing[:SHOWN]:
        table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
        for col in ("", "in", "frame", "direction", "packet"):
            table.add_column(col)
        for p in sorted((*pair.dropped, *pair.created), key=lambda p: (p.seen_in, p.frame)
                        )[:PACKETS_SHOWN]:
            style = "red" if p.kind == "created" else "yellow"
            table.add_row(Text(p.kind, style=style), p.seen_in, str(p.frame), p.direction,
                          packet_text(p))
        total = len(pair.dropped) + len(pair.created)
        tr = translation(pair)
        console.print(Text(f"\nconnection a#{pair.conn_a} = b#{pair.conn_b}: {pair.client_a} "
                           f"-> {pair.server_a}" + (f" (b: {tr})" if tr else ""),
                           style="bold"), highlight=False)
        console.print(table)
        if total > PACKETS_SHOWN:
            console.print(f"  … {total - PACKETS_SHOWN} more", highlight=False)
        for side in ("a", "b"):
            console.print(f"  filter in {side}: {frames_filter(pair, side)}", highlight=False)
    if len(differing) > SHOWN:
        console.print(f"\n… {len(differing) - SHOWN} more connection(s) with differences "
                      "(--json or --html lists them all)", highlight=False)
    verdict = (f"{c.dropped:,} packet(s) dropped and {c.created:,} created on the path, in "
               f"{len(differing):,} connection(s)") if differing else \
        "nothing dropped or created on the path between the two captures"
    console.print(Text("\n" + verdict, style="bold red" if differing else "bold green"),
                  highlight=False)
