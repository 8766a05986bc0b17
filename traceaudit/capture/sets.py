"""Rotated capture sets: which files are consecutive pieces of one capture, found by name
pattern and time continuity (read as one timeline by ``capture.chain``).

A capture writer that rotates names its pieces in one of a few ways:

=================================  ==========================================================
tcpdump ``-C`` (and ``-W`` rings)  ``out.pcap``, ``out.pcap1``, ``out.pcap2`` …; a ``-W`` ring
                                   has no bare name: ``out.pcap0`` … ``out.pcap9`` (the ring
                                   wraps: time order is a rotation of the number order)
dumpcap / Wireshark ring buffers,  ``prefix_00001_20261121120000.pcapng``: a file number and
editcap ``-c`` / ``-i`` splits     the first packet's time (editcap numbers from 00000)
tcpdump ``-G`` strftime names      ``trace-2026-11-21_12:00.pcap``: files whose names differ
                                   only in digits, some of them a date or an epoch time
=================================  ==========================================================

Files of one directory that match one pattern form a candidate; a candidate is a set when its
pieces are captures of the same kind (pcap or pcapng, link type, snap length) and each piece's
first packet is no earlier than the previous piece's (within ``TOLERANCE_NS``). Whether each
piece also starts after the previous one *ends* is checked while the set is read
(``chain.ChainedSource``), where the last packet's time is known without a second read.
"""

from __future__ import annotations

import gzip
import re
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

#: how far a piece may start before the previous piece's last packet (captures from several
#: interfaces are not strictly in time order)
TOLERANCE_NS = 1_000_000_000
PEEK_BYTES = 1 << 20                # no first packet in the first MiB: time unknown

_PCAP_MAGICS = {0xA1B2C3D4: ("<", 1000), 0xD4C3B2A1: (">", 1000),
                0xA1B23C4D: ("<", 1), 0x4D3CB2A1: (">", 1)}
_PCAPNG = b"\x0a\x0d\x0d\x0a"
_GZIP = b"\x1f\x8b"


@dataclass(frozen=True)
class CaptureHead:
    """What a capture's first bytes tell: its kind and its first packet's time."""

    format: str                     # "pcap" or "pcapng" (a gzip file: the format inside)
    link_type: int | None           # of the file (pcap) or of the first interface (pcapng)
    snaplen: int | None
    first_ts_ns: int | None         # None: no packet (or none in the first PEEK_BYTES)


@dataclass(frozen=True)
class CaptureSet:
    """Files read as one capture, in this order (frames numbered as ``mergecap -a`` would).

    ``str()`` of a set is its name, its first file's path: findings, flow rows and reports
    name the timeline by it, and list the files beside it."""

    files: tuple[Path, ...]
    joined_by: str = "--merge"      # why: the name pattern that matched, or "--merge"
    checked: bool = True            # stop at a piece that starts before the previous ended
                                    # (False: --merge, the user said they belong together)

    def __str__(self) -> str:
        return str(self.files[0])


# -- recognising captures ------------------------------------------------------------------
def _read_head(path: Path, n: int) -> bytes:
    with open(path, "rb") as raw:
        start = raw.read(2)
        raw.seek(0)
        if start == _GZIP:
            try:
                with gzip.GzipFile(fileobj=raw, mode="rb") as gz:
                    return gz.read(n)
            except (OSError, EOFError, zlib.error):
                return b""
        return raw.read(n)


def is_capture(path: str | Path) -> bool:
    """The file starts like a pcap (either byte order, micro- or nanoseconds) or pcapng
    file, plain or gzip-compressed: its magic, not its name, says so."""
    try:
        magic = _read_head(Path(path), 4)
    except OSError:
        return False
    return len(magic) == 4 and (magic == _PCAPNG or
                                struct.unpack("<I", magic)[0] in _PCAP_MAGICS)


def peek(path: str | Path) -> CaptureHead | None:
    """The head of a capture (None: not a capture, or not readable, or not a regular file:
    the head of a pipe cannot be read without taking it from the reader)."""
    try:
        if not Path(path).is_file():
            return None
        data = _read_head(Path(path), 1 << 16)
        if data[:4] == _PCAPNG and len(data) == 1 << 16:
            head = _pcapng_head(data)
            if head.first_ts_ns is not None:
                return head
            data = _read_head(Path(path), PEEK_BYTES)     # long section or interface blocks
    except OSError:
        return None
    if len(data) < 4:
        return None
    if data[:4] == _PCAPNG:
        return _pcapng_head(data)
    magic = struct.unpack("<I", data[:4])[0]
    if magic not in _PCAP_MAGICS or len(data) < 24:
        return None
    order, frac_ns = _PCAP_MAGICS[magic]
    snaplen, link = struct.unpack(order + "II", data[16:24])
    first = None
    if len(data) >= 40:
        sec, frac = struct.unpack(order + "II", data[24:32])
        first = sec * 1_000_000_000 + frac * frac_ns
    return CaptureHead("pcap", link & 0x0FFFFFFF, snaplen, first)


def _pcapng_head(data: bytes) -> CaptureHead:
    """Walk the blocks up to the first packet with a timestamp (EPB or obsolete PB)."""
    o, pos = "<", 0
    ifaces: list[tuple[int, int, int, int]] = []      # link, snaplen, units/s, offset ns
    while pos + 12 <= len(data):
        head = data[pos:pos + 8]
        if head[:4] == _PCAPNG:
            o = "<" if data[pos + 8:pos + 12] == b"\x4d\x3c\x2b\x1a" else ">"
            ifaces = []
        btype, blen = struct.unpack(o + "II", head)
        if blen < 12 or pos + blen > len(data):
            break
        body = data[pos + 8:pos + blen - 4]
        if btype == 1 and len(body) >= 8:
            ifaces.append(_idb(body, o))
        elif btype in (6, 2) and len(body) >= 12:
            if btype == 6:
                ifid, hi, lo = struct.unpack(o + "III", body[:12])
            else:
                ifid, _, hi, lo = struct.unpack(o + "HHII", body[:12])
            if ifid < len(ifaces):
                link, snap, units, off = ifaces[ifid]
                ts = (hi << 32) | lo
                return CaptureHead("pcapng", ifaces[0][0], ifaces[0][1],
                                   ts // units * 1_000_000_000
                                   + ts % units * 1_000_000_000 // units + off)
        pos += blen
    return CaptureHead("pcapng", ifaces[0][0] if ifaces else None,
                       ifaces[0][1] if ifaces else None, None)


def _idb(body: bytes, o: str) -> tuple[int, int, int, int]:
    link, _, snap = struct.unpack(o + "HHI", body[:8])
    units, offset, p = 1_000_000, 0, 8
    while p + 4 <= len(body):
        code, olen = struct.unpack(o + "HH", body[p:p + 4])
        if code == 0:
            break
        value = body[p + 4:p + 4 + olen]
        if code == 9 and olen >= 1:
            r = value[0]
            units = (1 << (r & 0x7F)) if r & 0x80 else 10 ** r
        elif code == 14 and olen == 8:
            offset = struct.unpack(o + "q", value)[0] * 1_000_000_000
        p += 4 + ((olen + 3) & ~3)
    return link, snap, max(units, 1), offset


# -- finding the files -----------------------------------------------------------------------
#: names that claim a capture: in a directory, such a file is read even when its first
#: bytes are not a capture's (reading it then says what is wrong, an error like a named file)
CAPTURE_SUFFIXES = (".pcap", ".pcapng", ".cap", ".pcap.gz", ".pcapng.gz", ".cap.gz", ".ntar")


@dataclass
class Scan:
    files: list[Path]                       # captures, and every file named explicitly
    skipped: list[Path]                     # files inside directories that are not captures


def scan_paths(paths: Iterable[str | Path]) -> Scan:
    """Files as given, and every capture inside directories (recursively, sorted). Each
    regular file of a directory is tried by its magic (``out.pcap1``, ``capture.dmp`` are
    found); a file that is not a capture is returned in ``skipped``, unless its name claims
    one (``CAPTURE_SUFFIXES``). A file named explicitly is kept whatever it holds."""
    scan = Scan([], [])
    for p in map(Path, paths):
        if p.is_dir():
            for f in sorted(f for f in p.rglob("*") if f.is_file()):
                keep = f.name.lower().endswith(CAPTURE_SUFFIXES) or is_capture(f)
                (scan.files if keep else scan.skipped).append(f)
        else:
            scan.files.append(p)
    return scan


# -- grouping ------------------------------------------------------------------------------
_RING = re.compile(r"^(?P<prefix>.+)_(?P<num>\d{5,})_(?P<stamp>\d{14})(?P<ext>(\.[^._]+)*)$")
_DIGITS = re.compile(r"\d+")
_CAPTURE_EXT = (".pcap", ".pcapng", ".cap", ".dmp", ".pcap.gz", ".pcapng.gz")


def group_captures(files: list[Path], merge: bool | None = None) -> list[Path | CaptureSet]:
    """The files as captures to read: single files, and sets of rotated pieces (each at the
    place of its first file in ``files``). ``merge``: None detects sets by name and time,
    True reads every capture given as one timeline (ordered by first packet time), False
    reads each file on its own."""
    if merge is False or len(files) < 2:
        return list(files)
    heads = {f: peek(f) for f in files}
    if merge:
        caps = [f for f in dict.fromkeys(files) if heads[f] is not None]
        if len(caps) < 2:
            return list(files)
        order = sorted(caps, key=lambda f: (heads[f].first_ts_ns is None,
                                            heads[f].first_ts_ns or 0))
        whole = CaptureSet(tuple(order), "--merge", checked=False)
        out: list[Path | CaptureSet] = [f for f in files if heads[f] is None]
        return [whole] + out
    sets: dict[Path, CaptureSet] = {}
    by_dir: dict[Path, list[Path]] = {}
    for f in dict.fromkeys(files):              # (a file named twice is one piece)
        if heads[f] is not None:
            by_dir.setdefault(f.parent, []).append(f)
    for members in by_dir.values():
        for candidate, how, by_time in _candidates(members):
            for run in _continuous(candidate, heads, by_time):
                s = CaptureSet(tuple(run), how)
                for f in run:
                    sets[f] = s
    out, seen = [], set()
    for f in files:
        s = sets.get(f)
        if s is None:
            out.append(f)
        elif id(s) not in seen:
            seen.add(id(s))
            out.append(s)
    return out


def _candidates(files: list[Path]) -> list[tuple[list[Path], str, bool]]:
    """Files whose names follow one rotation pattern: (files in name order, pattern, order by
    time rather than by name)."""
    out: list[tuple[list[Path], str, bool]] = []
    taken: set[Path] = set()
    ring: dict[tuple[str, str], list[tuple[str, int, Path]]] = {}
    for f in files:
        m = _RING.match(f.name)
        if m:
            # (pieces compressed once written, as tcpdump -z gzip does, stay in the set)
            ext = m["ext"][:-3] if m["ext"].endswith(".gz") else m["ext"]
            ring.setdefault((m["prefix"], ext), []).append((m["stamp"], int(m["num"]), f))
    for numbered in ring.values():
        # in order of start time; a file number that does not grow starts another run of
        # the writer (dumpcap restarted: its numbers start again)
        runs: list[list[tuple[str, int, Path]]] = []
        for item in sorted(numbered, key=lambda x: (x[0], x[1], x[2].name)):
            if not runs or item[1] <= runs[-1][-1][1]:
                runs.append([])
            runs[-1].append(item)
        for run in runs:
            group = [f for _, _, f in run]
            taken.update(group)
            if len(group) > 1:
                out.append((group, "dumpcap/editcap names: prefix_NNNNN_YYYYmmddHHMMSS",
                            False))
    names = {f.name: f for f in files if f not in taken}
    numbered_by_base: dict[str, list[tuple[int, Path]]] = {}
    for name, f in names.items():
        stem, gz = (name[:-3], ".gz") if name.endswith(".gz") else (name, "")
        m = re.search(r"\d+$", stem)
        if not m:
            continue
        base = stem[:m.start()]
        # tcpdump -C: the bare name then name1, name2 …; a -W ring: name0 … with no bare name
        if base in names or base + ".gz" in names or base.lower().endswith(_CAPTURE_EXT):
            numbered_by_base.setdefault(base, []).append((int(m.group()), f))
    for base, numbered in numbered_by_base.items():
        bare = names.get(base) or names.get(base + ".gz")
        group = ([bare] if bare is not None else []) + [f for _, f in sorted(numbered)]
        if len(group) > 1:
            out.append((group, "tcpdump -C/-W names: name, name1, name2 …", False))
            taken.update(group)
    skeletons: dict[str, list[Path]] = {}
    for f in files:
        if f not in taken and _dated(f.name):
            skeletons.setdefault(_DIGITS.sub("#", f.name), []).append(f)
    for group in skeletons.values():
        if len(group) > 1:
            out.append((sorted(group), "time-stamped names: tcpdump -G", True))
    return out


def _dated(name: str) -> bool:
    """Some digits of the name read as a date or an epoch time (strftime, %s)."""
    for run in _DIGITS.findall(name):
        if len(run) == 4 and 1970 <= int(run) <= 2099:
            return True
        if len(run) in (8, 12, 14) and run[:2] in ("19", "20"):
            return True
        if len(run) == 10 and run[0] == "1":
            return True
    return False


def _continuous(files: list[Path], heads: dict, by_time: bool) -> list[list[Path]]:
    """The runs (of two files or more) of ``files`` that are consecutive pieces: same kind
    of capture, each starting no earlier than the one before. A ring that wrapped is read
    from its oldest piece."""
    if by_time:
        files = sorted(files, key=lambda f: (heads[f].first_ts_ns is None,
                                             heads[f].first_ts_ns or 0, f.name))
    else:
        files = _unwrapped(files, heads)
    runs: list[list[Path]] = [[files[0]]]
    last = heads[files[0]].first_ts_ns
    kind = _kind(heads[files[0]])
    for f in files[1:]:
        h = heads[f]
        starts = h.first_ts_ns
        if _kind(h) != kind or (starts is not None and last is not None
                                and starts < last - TOLERANCE_NS):
            runs.append([])
            kind = _kind(h)
        runs[-1].append(f)
        if starts is not None:
            last = starts
    return [r for r in runs if len(r) > 1]


def _kind(head: CaptureHead) -> tuple:
    return head.format, head.link_type, head.snaplen


def _unwrapped(files: list[Path], heads: dict) -> list[Path]:
    """Files in number order, rotated to start at the oldest when the numbers wrapped
    (a ring buffer: each piece starts later than the one before but one)."""
    timed = [(i, heads[f].first_ts_ns) for i, f in enumerate(files)
             if heads[f].first_ts_ns is not None]
    drops = [timed[k + 1][0] for k in range(len(timed) - 1) if timed[k + 1][1] < timed[k][1]]
    if len(drops) == 1 and timed[-1][1] <= timed[0][1]:
        at = drops[0]
        return files[at:] + files[:at]
    return files
