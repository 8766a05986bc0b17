"""Retiring finished connections while streaming, so that ``traceaudit flows`` holds only the
connections still open, however long the capture (issues #2 and #4: memory bounded by the
connections open at once, not by file size).

Under Wireshark's ``tcp.stream`` rule no connection is ever *provably* over while it is the
latest on its 4-tuple: a late RST or retransmission hours later still joins it. Retirement is
therefore speculative, with an exact repair:

* a connection retires once it is quiet: idle for a grace period, no endpoint in an unexpired
  TIME_WAIT, and its Zeek connection removed by Zeek's own timers. Its output row is computed
  then (by the same code as at capture end) and spilled to a temporary file; its rows leave
  every working table (``sweep.py``);
* a Bloom filter remembers the retired 4-tuples. A 4-tuple that comes back with anything but a
  pure SYN that would start a new incarnation anyway is a *suspect*;
* at capture end the suspects' packets are read again (a filtered second read) and their rows
  recomputed without retirement; those rows replace the first read's (``pipeline._repair``,
  ``sweep.TupleSet``);
* the rows are merged back in order of first frame, and ids given by that order
  (``spill.py``), so the output equals the one computed without retirement.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class RetireOptions:
    grace_s: float = 60.0          # idle time before a finished connection may retire
    sweep_conns: int = 1 << 15     # sweep once this many connections are live, and twice as
                                   # many as the last sweep kept (amortised O(1) a connection)
    bloom_bits: int = 1 << 27      # Bloom filter of retired 4-tuples (16 MB; a power of two)
    facts: bool = False            # spill each connection's tracker facts and timeline too:
                                   # what analyze's rules and JSON report read (``flat.py``)
    min_bytes: int = 0             # only captures (their files together) at least this large
                                   # are read so; smaller ones are kept whole (faster)
