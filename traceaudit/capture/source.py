"""What every reader backend produces: batches plus a running account of the file."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Protocol

from traceaudit.capture.batch import PacketBatch
from traceaudit.errors import CaptureError


@dataclass
class CaptureStats:
    """Counts a reader keeps while it streams; final once ``batches()`` is exhausted."""

    path: str
    format: str = ""                     # "pcap", "pcapng", "pcap.gz", "tshark", ...
    link_types: list[int] = field(default_factory=list)
    packets: int = 0                     # every record (frame) read, TCP or not
    tcp_packets: int = 0                 # rows yielded in batches
    first_ts_ns: int | None = None
    last_ts_ns: int | None = None
    warnings: list[str] = field(default_factory=list)
    #: set when the file is damaged: packets before it were kept, the rest is lost
    error: CaptureError | None = None
    #: a rotated set read as one timeline (``capture.chain``): each file's own stats, in
    #: order (empty for a single file), and why the files were joined
    parts: list["CaptureStats"] = field(default_factory=list)
    joined_by: str = ""

    def warn(self, message: str) -> None:
        self.warnings.append(message)


class CaptureSource(Protocol):
    """A reader backend bound to one file."""

    stats: CaptureStats

    def batches(self) -> Iterator[PacketBatch]:
        """Yield batches in frame order. Damage after the first record ends the stream and sets
        ``stats.error``; a file that is not a capture at all raises ``CaptureError``."""
        ...
