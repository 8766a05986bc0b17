"""The built-in streaming reader: classic pcap and pcapng (plain or gzip) into PacketBatches.

Memory stays flat: the file is read in fixed-size chunks into one reusable buffer, walked and
decoded by compiled kernels, and handed on as batches of at most ``batch_rows`` rows.
"""

from __future__ import annotations

import gzip
import io
import struct
import zlib
from typing import BinaryIO, Iterator

import numpy as np

from traceaudit import stopping
from traceaudit.capture import decode, fragments, linktypes, memory, walk
from traceaudit.capture.batch import COLUMNS, DEFAULT_BATCH_ROWS, PacketBatch
from traceaudit.capture.source import CaptureStats
from traceaudit.errors import CaptureError

CHUNK_BYTES = 4 << 20              # read size; the buffer also holds one partial record
MAX_RECORD = 16 << 20              # no record or block may be longer than this
STANDARD_MAX_PACKET = 262_144      # Wireshark's limit for ordinary link types

PCAP_MAGICS = {
    # magic as read little-endian -> (file is little-endian, nanosecond timestamps)
    0xA1B2C3D4: (True, False),
    0xD4C3B2A1: (False, False),
    0xA1B23C4D: (True, True),
    0x4D3CB2A1: (False, True),
}
PCAPNG_MAGIC = b"\x0a\x0d\x0d\x0a"
GZIP_MAGIC = b"\x1f\x8b"

WARNING_TEXT = {
    decode.W_FRAGMENT: "{n} IP fragment(s) other than the first, cut short by the snap length "
                       "(so not reassembled), carried TCP payload and were skipped",
    decode.W_TRUNCATED_TCP: "{n} TCP header(s) cut short by the snap length were skipped",
    decode.W_TRUNCATED_IP: "{n} IP header(s) cut short by the snap length were skipped",
    decode.W_BOGUS_TCP: "{n} TCP header(s) with a data offset below 20 bytes or past the end of "
                        "the segment are malformed (kept: ports, flags and seq, as tshark does)",
    decode.W_BAD_IP_OPTION: "{n} IPv4 header(s) with a malformed option (bad length): options "
                            "after it ignored, packet kept (as tshark does)",
    decode.W_ENCAP: "{n} packet(s) of an encapsulation (GRE, a UDP tunnel, L2TP, PPP, MPLS) "
                    "carried a payload the reader does not decode and were skipped",
    decode.W_BAD_CHECKSUM: "{n} TCP segment(s) with a wrong checksum were dropped "
                           "(--verify-checksums)",
    decode.W_UNVERIFIABLE: "{n} TCP segment(s) could not have their checksum verified "
                           "(payload not captured) and were kept",
}


class _Chunks:
    """A reusable read buffer over a binary stream, tracking the file offset of ``buf[0]``."""

    def __init__(self, stream: BinaryIO, path: str, compressed: bool) -> None:
        self.stream = stream
        self.path = path
        self.compressed = compressed
        self.buf = np.empty(CHUNK_BYTES + MAX_RECORD, np.uint8)
        self.base = 0          # file offset of buf[0]
        self.end = 0           # valid bytes in buf
        self.eof = False
        self.damage: CaptureError | None = None   # a read error, raised once the bytes read
                                                  # before it are used

    def offset(self, pos: int) -> int:
        return self.base + pos

    def fill(self, pos: int) -> int:
        """Drop bytes before ``pos``, read more; returns the new position of old ``pos``."""
        keep = self.end - pos
        if keep:
            self.buf[:keep] = self.buf[pos:self.end]
        self.base += pos
        self.end = keep
        if self.damage is not None:
            self.eof = True
            raise self.damage
        view = memoryview(self.buf)[keep:keep + CHUNK_BYTES]
        got = 0
        try:
            # a decompressor is read a piece at a time: what it gave before the damage is kept
            # (one buffered read of the whole chunk would drop it with the exception)
            while got < CHUNK_BYTES:
                with stopping.interruptible():      # a pipe may wait for data for ever
                    n = (self.stream.readinto1 if self.compressed else self.stream.readinto)(
                        view[got:])
                if not n:
                    self.eof = True
                    break
                got += n
        except (OSError, EOFError, zlib.error) as exc:
            self.damage = CaptureError(self.path, f"cannot read ({exc})",
                                       offset=self.offset(keep + got), slug="read-error")
        self.end += got
        if self.damage is not None and not got:
            self.eof = True
            raise self.damage
        return 0


class _Prefixed(io.RawIOBase):
    """A binary stream that gives ``head`` (bytes already read from ``raw``) and then the rest
    of ``raw``: sniffing a file's first bytes without seeking back."""

    def __init__(self, head: bytes, raw: BinaryIO) -> None:
        self.head = head
        self.raw = raw

    def readable(self) -> bool:
        return True

    def readinto(self, view) -> int:
        # as a buffered file's readinto: fills ``view`` unless the stream ends first
        n = min(len(view), len(self.head))
        if n:
            view[:n] = self.head[:n]
            self.head = self.head[n:]
        if n == len(view):
            return n
        return n + (self.raw.readinto(memoryview(view)[n:]) or 0)

    def close(self) -> None:
        self.raw.close()
        super().close()


class NativeSource:
    """CaptureSource for pcap / pcapng / gzip, decoded by the compiled kernels."""

    def __init__(self, path: str, *, batch_rows: int = DEFAULT_BATCH_ROWS,
                 verify_checksums: bool = False, seg_flags: bool = False) -> None:
        memory.tune()
        self.path = str(path)
        self.batch_rows = batch_rows
        self.verify = verify_checksums
        self.marks = seg_flags              # add the optional seg_flags column (decode.SEG_*)
        self._no_marks = np.zeros(1, np.uint8)
        self.stats = CaptureStats(path=self.path)
        self._warn = np.zeros(decode.N_WARN, np.int64)
        self._scratch = np.zeros(decode.N_COLS, np.int64)
        self._rec_off = np.empty(batch_rows, np.int64)
        self._rec_caplen = np.empty(batch_rows, np.int64)
        self._rec_origlen = np.empty(batch_rows, np.int64)
        self._rec_ts = np.empty(batch_rows, np.int64)
        self._rec_link = np.empty(batch_rows, np.int64)
        self._frags = np.empty((batch_rows, 4), np.int64)     # fragments held, per call
        self._reasm = fragments.Reassembler()
        self._fragdec = fragments.FragmentDecoder(self._reasm, self._warn, self.verify,
                                                  self.marks)

    # -- opening -----------------------------------------------------------------------------
    def _open(self) -> tuple[BinaryIO, bool]:
        try:
            raw = open(self.path, "rb")
        except OSError as exc:
            raise CaptureError(self.path, f"cannot open ({exc.strerror})", slug="open") from None
        # the magic is sniffed without seeking back: a pipe, a FIFO or /dev/stdin cannot seek
        try:
            with stopping.interruptible():          # a pipe may wait for data for ever
                head = raw.read(2)
        except OSError as exc:
            raw.close()
            raise CaptureError(self.path, f"cannot read ({exc.strerror or exc})", offset=0,
                               slug="read-error") from None
        stream = _Prefixed(head, raw)
        if head == GZIP_MAGIC:
            return gzip.GzipFile(fileobj=stream, mode="rb"), True
        return stream, False

    def batches(self) -> Iterator[PacketBatch]:
        stream, compressed = self._open()
        with stream:
            chunks = _Chunks(stream, self.path, compressed)
            chunks.fill(0)
            if chunks.end == 0:
                raise CaptureError(self.path, "empty file: not a capture", offset=0, slug="empty")
            magic = bytes(chunks.buf[:4])
            if magic == PCAPNG_MAGIC:
                self.stats.format = "pcapng"
                records = self._pcapng(chunks)
            elif len(magic) == 4 and struct.unpack("<I", magic)[0] in PCAP_MAGICS:
                self.stats.format = "pcap"
                records = self._pcap(chunks)
            else:
                raise CaptureError(self.path, "not a pcap or pcapng file (first bytes "
                                   f"{bytes(chunks.buf[:min(chunks.end, 4)]).hex(' ')})",
                                   offset=0, slug="not-a-capture")
            if compressed:
                self.stats.format += ".gz"
            try:
                yield from records
            except CaptureError as exc:
                self.stats.error = exc
                if self.stats.packets:
                    self.stats.warn(f"{exc}; kept the {self.stats.packets} packet(s) read before "
                                    "it")
        self._finish_warnings()

    def _finish_warnings(self) -> None:
        for idx, text in WARNING_TEXT.items():
            if self._warn[idx]:
                self.stats.warn(text.format(n=int(self._warn[idx])))
        for text in self._reasm.warnings():
            self.stats.warn(text)

    # -- classic pcap ------------------------------------------------------------------------
    def _pcap(self, chunks: _Chunks) -> Iterator[PacketBatch]:
        if chunks.end < 24:
            raise CaptureError(self.path, f"pcap file header cut short ({chunks.end} of 24 bytes)",
                               offset=0, slug="truncated-header")
        little, nano = PCAP_MAGICS[struct.unpack("<I", bytes(chunks.buf[:4]))[0]]
        order = "<" if little else ">"
        snaplen, link_field = struct.unpack(order + "II", bytes(chunks.buf[16:24]))
        link = link_field & 0x0FFFFFFF
        if link not in linktypes.SUPPORTED:
            raise CaptureError(self.path, f"link type {link} is not decoded by the built-in reader "
                               "(try --reader tshark)", offset=20, slug="unknown-linktype")
        self.stats.link_types = [link]
        self._rec_link.fill(link)
        max_len = max(STANDARD_MAX_PACKET, min(snaplen, MAX_RECORD))
        frac_ns = 1 if nano else 1000
        pos = 24
        while True:
            n, pos, status = walk.walk_pcap(chunks.buf, pos, chunks.end, little, frac_ns, max_len,
                                            self._rec_off, self._rec_caplen, self._rec_origlen,
                                            self._rec_ts)
            if n:
                yield from self._emit(chunks.buf, n)
            if status == walk.BAD_LENGTH:
                incl = struct.unpack(order + "I", bytes(chunks.buf[pos + 8:pos + 12]))[0]
                raise CaptureError(self.path, f"record length {incl} is absurd (snap length "
                                   f"{snaplen}); the file is damaged", offset=chunks.offset(pos),
                                   slug="bad-record-length")
            if status == walk.NEED_MORE:
                if chunks.eof:
                    if pos < chunks.end:
                        self._cut_short(chunks, pos, "record")
                    return
                pos = chunks.fill(pos)

    # -- pcapng ------------------------------------------------------------------------------
    def _pcapng(self, chunks: _Chunks) -> Iterator[PacketBatch]:
        little = True
        if_link: list[int] = []
        if_base: list[int] = []
        if_off: list[int] = []
        if_snap: list[int] = []
        arrays = self._iface_arrays(if_link, if_base, if_off, if_snap)
        last_ts = 0
        pos = 0
        while True:
            n, pos, status, last_ts = walk.walk_pcapng(
                chunks.buf, pos, chunks.end, little, *arrays, MAX_RECORD, last_ts,
                self._rec_off, self._rec_caplen, self._rec_origlen, self._rec_ts, self._rec_link)
            if n:
                yield from self._emit(chunks.buf, n)
            if status == walk.FULL:
                continue
            if status == walk.NEED_MORE:
                if chunks.eof:
                    if pos < chunks.end:
                        self._cut_short(chunks, pos, "block")
                    return
                pos = chunks.fill(pos)
                continue
            if status == walk.STRUCTURAL:
                blen = self._structural_len(chunks, pos)
                if blen is None:
                    if chunks.eof:
                        self._cut_short(chunks, pos, "block")
                        return
                    pos = chunks.fill(pos)
                    continue
                block = bytes(chunks.buf[pos:pos + blen])
                if block[:4] == PCAPNG_MAGIC:
                    little = self._section_order(block[8:12], chunks.offset(pos))
                    if_link.clear(), if_base.clear(), if_off.clear(), if_snap.clear()
                else:
                    self._parse_idb(block, little, chunks.offset(pos), if_link, if_base, if_off,
                                    if_snap)
                arrays = self._iface_arrays(if_link, if_base, if_off, if_snap)
                pos += blen
                continue
            self._pcapng_damage(chunks, pos, status, little, if_link)

    def _structural_len(self, chunks: _Chunks, pos: int) -> int | None:
        """Length of the SHB/IDB at ``pos``, validated; None when more bytes are needed."""
        if pos + 12 > chunks.end:
            return None
        head = bytes(chunks.buf[pos:pos + 12])
        if head[:4] == PCAPNG_MAGIC:
            little = self._section_order(head[8:12], chunks.offset(pos))
        else:
            little = self._current_little
        blen = struct.unpack(("<" if little else ">") + "I", head[4:8])[0]
        if blen < 12 or blen % 4 or blen > MAX_RECORD:
            raise CaptureError(self.path, f"corrupt pcapng block: length {blen}",
                               offset=chunks.offset(pos), slug="corrupt-block")
        if pos + blen > chunks.end:
            return None
        trail = struct.unpack(("<" if little else ">") + "I",
                              bytes(chunks.buf[pos + blen - 4:pos + blen]))[0]
        if trail != blen:
            raise CaptureError(self.path, f"corrupt pcapng block: trailing length {trail} != "
                               f"{blen}", offset=chunks.offset(pos), slug="corrupt-block")
        return blen

    def _section_order(self, bom: bytes, offset: int) -> bool:
        if bom == b"\x4d\x3c\x2b\x1a":
            self._current_little = True
        elif bom == b"\x1a\x2b\x3c\x4d":
            self._current_little = False
        else:
            raise CaptureError(self.path, f"corrupt pcapng section header: byte-order magic "
                               f"{bom.hex(' ')}", offset=offset, slug="corrupt-block")
        return self._current_little

    _current_little = True

    def _parse_idb(self, block: bytes, little: bool, offset: int, if_link: list[int],
                   if_base: list[int], if_off: list[int], if_snap: list[int]) -> None:
        o = "<" if little else ">"
        if len(block) < 20:
            raise CaptureError(self.path, "corrupt pcapng interface block (too short)",
                               offset=offset, slug="corrupt-block")
        link, _, snap = struct.unpack(o + "HHI", block[8:16])
        base, offset_s, resol = 1_000_000, 0, "10^-6"
        p, end = 16, len(block) - 4                # options end at the trailing length
        while p + 4 <= end:
            code, olen = struct.unpack(o + "HH", block[p:p + 4])
            if code == 0:
                break
            if p + 4 + olen > end:
                # (Wireshark too rejects the file: "option length too long")
                raise CaptureError(self.path, f"corrupt pcapng interface block: option {code} "
                                   f"of {olen} bytes runs past the end of the block",
                                   offset=offset, slug="corrupt-block")
            value = block[p + 4:p + 4 + olen]
            if code == 9 and olen >= 1:           # if_tsresol
                r = value[0]
                base = (1 << (r & 0x7F)) if r & 0x80 else 10 ** r
                resol = f"2^-{r & 0x7F}" if r & 0x80 else f"10^-{r}"
            elif code == 14 and olen == 8:        # if_tsoffset, seconds
                offset_s = struct.unpack(o + "q", value)[0]
            p += 4 + ((olen + 3) & ~3)
        if base >= 1 << 63 or abs(offset_s) * 1_000_000_000 >= 1 << 63:
            # times are kept as int64 nanoseconds: such a resolution or offset cannot be held
            raise CaptureError(self.path, f"corrupt pcapng interface block: time resolution "
                               f"{resol} s or offset {offset_s} s out of range",
                               offset=offset, slug="corrupt-block")
        if link not in linktypes.SUPPORTED:
            link = -1 - link                      # remembered as unsupported; error if used
        elif link not in self.stats.link_types:
            self.stats.link_types.append(link)
        if_link.append(link)
        if_base.append(max(base, 1))
        if_off.append(offset_s * 1_000_000_000)
        if_snap.append(snap)

    @staticmethod
    def _iface_arrays(if_link, if_base, if_off, if_snap):
        return (np.array(if_link, np.int64), np.array(if_base, np.int64),
                np.array(if_off, np.int64), np.array(if_snap, np.int64))

    def _pcapng_damage(self, chunks: _Chunks, pos: int, status: int, little: bool,
                       if_link: list[int]) -> None:
        offset = chunks.offset(pos)
        o = "<" if little else ">"
        btype, blen = struct.unpack(o + "II", bytes(chunks.buf[pos:pos + 8]))
        if status == walk.BAD_LENGTH:
            msg, slug = f"corrupt pcapng block: length {blen}", "corrupt-block"
        elif status == walk.CORRUPT:
            msg, slug = (f"corrupt pcapng block (type 0x{btype:x}, length {blen}): its fields or "
                         "trailing length do not agree"), "corrupt-block"
        elif status == walk.UNKNOWN_IF:
            msg, slug = "packet block names an interface that was never described", "corrupt-block"
        else:
            # an obsolete Packet Block has a 16-bit interface id (then a drop count)
            ifid = struct.unpack(o + ("H" if btype == walk.PB_TYPE else "I"),
                                 bytes(chunks.buf[pos + 8:pos + (10 if btype == walk.PB_TYPE
                                                                 else 12)]))[0]
            link = -1 - if_link[ifid if btype != walk.SPB_TYPE else 0]
            msg, slug = (f"link type {link} is not decoded by the built-in reader (try --reader "
                         "tshark)"), "unknown-linktype"
        raise CaptureError(self.path, msg, offset=offset, slug=slug)

    # -- shared ------------------------------------------------------------------------------
    def _cut_short(self, chunks: _Chunks, pos: int, what: str) -> None:
        have = chunks.end - pos
        raise CaptureError(self.path, f"file ends in the middle of a {what} ({have} byte(s) of it "
                           "present)", offset=chunks.offset(pos), slug="truncated")

    def _emit(self, buf: np.ndarray, n: int) -> Iterator[PacketBatch]:
        first_frame = self.stats.packets + 1
        ts = self._rec_ts[:n]
        lo, hi = int(ts.min()), int(ts.max())
        st = self.stats
        st.first_ts_ns = lo if st.first_ts_ns is None else min(st.first_ts_ns, lo)
        st.last_ts_ns = hi if st.last_ts_ns is None else max(st.last_ts_ns, hi)
        st.packets += n
        cols = {name: np.empty(n, dtype) for name, dtype in _DTYPES}
        seg = np.empty(n, np.uint8) if self.marks else self._no_marks
        rows, nfrag = decode.decode_records(
            buf, self._rec_off[:n], self._rec_caplen[:n], self._rec_origlen[:n], ts,
            self._rec_link[:n], first_frame, self._scratch, self._warn, self.verify, self.marks,
            seg, *cols.values(), frags=self._frags)
        if self.marks:
            cols["seg_flags"] = seg
        extra = None
        if nfrag:       # IP fragments (rare): reassembled in Python, off the hot path
            extra = self._fragdec.rows(buf, self._frags[:nfrag], self._rec_off, self._rec_caplen,
                                       self._rec_origlen, self._rec_ts, first_frame)
        if extra is not None:
            cols = fragments.merge({k: v[:rows] for k, v in cols.items()}, extra)
            rows = len(cols["frame"])
            n = rows
        if rows:
            st.tcp_packets += rows
            if rows < n:
                cols = {k: v[:rows] if 2 * rows >= n else v[:rows].copy()
                        for k, v in cols.items()}
            yield PacketBatch(cols)


_DTYPES = list(COLUMNS.items())
