"""A rotated capture set read as one timeline: the files' batches in turn, frames numbered
as in the merged capture (``mergecap -a``: each file's records follow the earlier files'),
and where each of those frames lies (which file, which frame of it).

Single files never come here: their reading is unchanged.
"""

from __future__ import annotations

import bisect
import shlex
from pathlib import Path, PurePath
from typing import Iterator

from traceaudit.capture.batch import DEFAULT_BATCH_ROWS, PacketBatch
from traceaudit.capture.sets import TOLERANCE_NS, CaptureSet, peek
from traceaudit.capture.source import CaptureStats
from traceaudit.errors import CaptureError


class ChainedSource:
    """CaptureSource over the files of a ``CaptureSet``.

    ``stats`` covers the timeline (its ``path`` is the first file's; ``parts`` holds each
    file's own stats, in order). A file that starts more than ``TOLERANCE_NS`` before the
    previous one's last packet is not the next piece: a checked set stops before it (with a
    warning), and ``remainder`` gives the files left for the caller to read apart.
    """

    def __init__(self, capture_set: CaptureSet, *, reader: str = "native",
                 verify_checksums: bool = False, batch_rows: int = DEFAULT_BATCH_ROWS,
                 seg_flags: bool = False) -> None:
        self.set = capture_set
        self.kw = dict(reader=reader, verify_checksums=verify_checksums,
                       batch_rows=batch_rows, seg_flags=seg_flags)
        self.stats = CaptureStats(path=str(capture_set))
        self.stats.joined_by = capture_set.joined_by

    def batches(self) -> Iterator[PacketBatch]:
        from traceaudit.capture import open_capture
        st = self.stats
        for path in self.set.files:
            if st.parts and not self._follows(path):
                return
            source = open_capture(path, **self.kw)
            part = source.stats
            st.parts.append(part)
            done = _Done(st)                   # the files before this one
            try:
                for batch in source.batches():
                    if done.packets:
                        frame = batch["frame"]
                        if frame.flags.writeable:
                            frame += done.packets
                        else:
                            batch = PacketBatch({**batch.columns,
                                                 "frame": frame + done.packets})
                    done.add(part)
                    yield batch
            except CaptureError as exc:        # not a capture, cannot be opened
                part.error = exc
            done.add(part)
            st.warnings.extend(f"{PurePath(part.path).name}: {w}" for w in part.warnings)
            if part.error is not None and st.error is None:
                st.error = part.error

    def _follows(self, path: Path) -> bool:
        """Whether ``path`` may come next; if not, why not is a warning (checked sets)."""
        st = self.stats
        head = peek(path)
        starts = head.first_ts_ns if head is not None else None
        if starts is None or st.last_ts_ns is None or starts >= st.last_ts_ns - TOLERANCE_NS:
            return True
        before = (st.last_ts_ns - starts) / 1e9
        prev = PurePath(st.parts[-1].path).name
        if not self.set.checked:
            st.warn(f"{PurePath(path).name} starts {before:.3f} s before {prev} (or an earlier "
                    "file) ends: read after it all the same (--merge); frames are then not in "
                    "time order")
            return True
        st.warn(f"{PurePath(path).name} starts {before:.3f} s before {prev} (or an earlier file) "
                "ends: not the next piece of this capture; it is read as a capture of its own")
        return False

    def remainder(self) -> Path | CaptureSet | None:
        """The files the timeline stopped before (None: it read them all)."""
        return remainder(self.set, self.stats)


class _Done:
    """The timeline's counts of the files before the current one, and ``add``, which sets
    the timeline's stats to those plus the current file's so far."""

    def __init__(self, st: CaptureStats) -> None:
        self.st = st
        self.packets, self.tcp = st.packets, st.tcp_packets
        self.first, self.last = st.first_ts_ns, st.last_ts_ns
        self.formats = st.format.split("+") if st.format else []

    def add(self, part: CaptureStats) -> None:
        st = self.st
        st.packets = self.packets + part.packets
        st.tcp_packets = self.tcp + part.tcp_packets
        for link in part.link_types:
            if link not in st.link_types:
                st.link_types.append(link)
        if part.format and part.format not in self.formats:
            st.format = "+".join(self.formats + [part.format])
        if part.first_ts_ns is not None:
            st.first_ts_ns = part.first_ts_ns if self.first is None \
                else min(self.first, part.first_ts_ns)
            st.last_ts_ns = part.last_ts_ns if self.last is None \
                else max(self.last, part.last_ts_ns)


def remainder(capture_set: CaptureSet, stats: CaptureStats) -> Path | CaptureSet | None:
    """What of ``capture_set`` is still to be read after a read that gave ``stats``."""
    rest = capture_set.files[len(stats.parts):] if stats.parts else ()
    if not rest:
        return None
    if len(rest) == 1:
        return rest[0]
    return CaptureSet(rest, capture_set.joined_by, capture_set.checked)


# -- where a frame of the timeline is ------------------------------------------------------
def locate(stats: CaptureStats, frames: list[int]) -> list[tuple[str, int]]:
    """(file name, frame within it) of each merged-capture frame of a timeline."""
    return _Locator(stats)(frames)


class _Locator:
    """``locate`` for many findings of one timeline: the files' first frames found once."""

    def __init__(self, stats: CaptureStats) -> None:
        self.starts, self.names, acc = [], [], 0
        for p in stats.parts:
            self.starts.append(acc)
            self.names.append(PurePath(p.path).name)
            acc += p.packets

    def __call__(self, frames: list[int]) -> list[tuple[str, int]]:
        starts, names, out = self.starts, self.names, []
        for f in frames:
            i = max(bisect.bisect_left(starts, f) - 1, 0)
            out.append((names[i], f - starts[i]))
        return out


def merge_command(stats: CaptureStats, output: str = "merged.pcapng") -> str:
    """The command that writes the merged capture whose frame numbers a timeline's findings
    use (open it in Wireshark for their display filters)."""
    return " ".join(["mergecap", "-a", "-w", output] +
                    [shlex.quote(p.path) for p in stats.parts])


def annotate(findings: list, stats: CaptureStats) -> None:
    """Give each finding of a timeline the file and file frame of each of its frames
    (``details["frames_in_files"]``, e.g. ``"out.pcap2 frame 34"``)."""
    if not stats.parts:
        return
    where = _Locator(stats)
    for f in findings:
        if f.frames:
            f.details["frames_in_files"] = [f"{name} frame {n}" for name, n in where(f.frames)]
