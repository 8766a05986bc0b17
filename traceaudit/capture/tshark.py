"""The tshark reader: pyshark drives tshark, whose dissection becomes PacketBatches.

It is the slow, independent cross-check of the built-in reader: every column means exactly what
it means there (see ``batch.COLUMNS``), but the values come from Wireshark's dissectors. One row per
frame that carries a TCP header: for tunnelled traffic the innermost TCP/IP, for an 802.11 A-MSDU
the first subframe. ICMP errors that quote a TCP header are not segments and give no row; IP
fragments are reassembled (tshark's default), the segment is at the frame of the fragment that
completed its datagram, as the built-in reader does. (A TCP data offset below 5 words is the one
difference: tshark shows no flags for it, so this reader skips it, the built-in one keeps it.)

tshark is asked for JSON (``-T json``, ~4x faster to parse than PDML). Duplicate layers (two
``ip`` in a tunnel) come back as one list per name, which loses the order *between* names, so
that order is read from ``frame.protocols``: the innermost IP is the last ``ip``/``ipv6`` token
before the first ``tcp`` token, and its position among the tokens of its name picks the layer.

``app_marks`` (HTTP/1.x message starts) is computed from ``tcp.payload``, the captured payload
bytes, by ``batch.http_marks``, the same rule the built-in decoder applies.

Two columns are not copied from a single tshark field. ``payload_len`` is the IP length minus
the IP, extension and TCP headers (the column's definition): ``tcp.len`` is clipped to what the
frame and every enclosing layer hold, so it is short for a segment inside an outer IP fragment or
behind a PPPoE length that disagrees with the IP header. With ``verify_checksums`` tshark's
verdict (``tcp.checksum.status``) is taken only when tshark saw the whole segment; otherwise the
segment counts as unverifiable and is kept, as the built-in reader does.
"""

from __future__ import annotations

import asyncio
import functools
import gzip
import ipaddress
import os
import socket
import stat
import struct
import zlib
from typing import Any, Iterator

import numpy as np

from traceaudit.capture.batch import COLUMNS, DEFAULT_BATCH_ROWS, PacketBatch, http_marks
from traceaudit.capture.source import CaptureStats
from traceaudit.errors import CaptureError

MISSING_MESSAGE = "the tshark reader needs tshark (apt-get install tshark) and pyshark"

#: tshark preferences (``-o name:value``) the reader runs with, and why.
PREFERENCES = {
    "ip.defragment": "TRUE",               # reassembled, as the built-in reader does
    "ipv6.defragment": "TRUE",
    "tcp.desegment_tcp_streams": "FALSE",  # one TCP layer per frame; no reassembled PDUs
    "tcp.analyze_sequence_numbers": "FALSE",   # only raw fields are used; smaller output
}
CHECKSUM_PREFERENCES = {"tcp.check_checksum": "TRUE"}

#: tcp.checksum.status values (Wireshark's proto_checksum_enum_e).
CHECKSUM_BAD, CHECKSUM_GOOD, CHECKSUM_UNVERIFIED = 0, 1, 2

#: TCP fields read from each segment's layer (all occurrences, in document order).
TCP_FIELDS = frozenset({
    "tcp.srcport", "tcp.dstport", "tcp.seq_raw", "tcp.ack_raw", "tcp.flags",
    "tcp.window_size_value", "tcp.len", "tcp.hdr_len", "tcp.checksum.status", "tcp.options.mss_val",
    "tcp.options.wscale.shift", "tcp.options.sack_perm", "tcp.options.timestamp.tsval",
    "tcp.options.timestamp.tsecr", "tcp.payload",
})
REQUIRED = ("tcp.srcport", "tcp.dstport", "tcp.seq_raw", "tcp.ack_raw", "tcp.flags",
            "tcp.window_size_value", "tcp.hdr_len")
ICMP_TOKENS = frozenset({"icmp", "icmpv6"})
IP_TOKENS = frozenset({"ip", "ipv6"})

# Warning counters, worded as the built-in reader words its own.
W_FRAGMENT, W_TRUNCATED_TCP, W_BAD_CHECKSUM, W_UNVERIFIABLE, W_NO_IP, W_BOGUS_HEADER = range(6)
WARNING_TEXT = {
    W_FRAGMENT: "{n} IP fragment(s) other than the first, not reassembled, carried TCP payload "
                "and were skipped "
                "(no TCP header)",
    W_TRUNCATED_TCP: "{n} TCP header(s) cut short by the snap length were skipped",
    W_BAD_CHECKSUM: "{n} TCP segment(s) with a wrong checksum were dropped (--verify-checksums)",
    W_UNVERIFIABLE: "{n} TCP segment(s) could not have their checksum verified by tshark (payload "
                    "not captured, or cut short by an enclosing header) and were kept",
    W_NO_IP: "{n} TCP header(s) tshark found outside any IP packet were skipped",
    W_BOGUS_HEADER: "{n} TCP header(s) with a data offset below 5 words were skipped",
}

PCAPNG_MAGIC = b"\x0a\x0d\x0d\x0a"
PCAP_MAGICS = {b"\xd4\xc3\xb2\xa1": "<", b"\x4d\x3c\xb2\xa1": "<",
               b"\xa1\xb2\xc3\xd4": ">", b"\xa1\xb2\x3c\x4d": ">"}


def tshark_available() -> bool:
    """True when pyshark imports and it can find a tshark binary."""
    try:
        from pyshark.tshark.tshark import get_process_path
    except ImportError:
        return False
    try:
        get_process_path()
    except Exception:  # pyshark raises its own TSharkNotFoundException
        return False
    return True


class TsharkSource:
    """CaptureSource backed by tshark through pyshark (``--reader tshark``)."""

    def __init__(self, path: str, *, batch_rows: int = DEFAULT_BATCH_ROWS,
                 verify_checksums: bool = False) -> None:
        self.path = str(path)
        self.batch_rows = max(1, int(batch_rows))
        self.verify = verify_checksums
        self.stats = CaptureStats(path=self.path, format="tshark")
        self._warn = [0] * len(WARNING_TEXT)
        if not tshark_available():
            raise CaptureError(self.path, MISSING_MESSAGE, slug="tshark-missing")

    def batches(self) -> Iterator[PacketBatch]:
        capture = self._open()
        self.stats.link_types = file_link_types(self.path)
        rows = _Rows()
        packets = iter(capture)
        try:
            while (packet := self._next(packets, capture)) is not None:
                ts = self._count(packet)
                if self._add_row(packet, ts, rows) and len(rows) >= self.batch_rows:
                    yield rows.flush()
        finally:
            packets.close()
            capture.close()
        if len(rows):
            yield rows.flush()
        self._finish(capture)

    def _next(self, packets: Iterator[Any], capture: "_Capture") -> Any:
        """The next packet from pyshark; None at the end, or when tshark could not go on."""
        try:
            return next(packets)
        except StopIteration:
            return None
        except Exception as exc:    # pyshark's own errors: a crashed tshark, unparsable output
            capture.errors.append(f"tshark's output could not be read ({type(exc).__name__}: "
                                  f"{exc})")
            capture.exit_status = capture.exit_status or -1
            return None

    # -- opening and closing -----------------------------------------------------------------
    def _open(self) -> "_Capture":
        try:
            # (stat first: opening a FIFO would wait for a writer)
            if not stat.S_ISREG(os.stat(self.path).st_mode):
                # tshark is run on the file, and the file is read more than once
                raise CaptureError(self.path, "the tshark reader reads regular files only, "
                                   "not a pipe or device (the built-in reader does)",
                                   slug="not-a-file")
            with open(self.path, "rb") as fh:
                empty = not fh.read(1)
        except OSError as exc:
            raise CaptureError(self.path, f"cannot open ({exc.strerror})", slug="open") from None
        if empty:   # tshark would call it an ERF file with no records
            raise CaptureError(self.path, "empty file: not a capture", slug="empty")
        prefs = dict(PREFERENCES, **(CHECKSUM_PREFERENCES if self.verify else {}))
        return _capture_class()(self.path, keep_packets=False, use_json=True,
                                override_prefs=prefs)

    def _finish(self, capture: "_Capture") -> None:
        for idx, text in WARNING_TEXT.items():
            if self._warn[idx]:
                self.stats.warn(text.format(n=self._warn[idx]))
        if capture.exit_status in (0, None):
            for line in capture.errors:         # tshark carried on: notes, not damage
                self.stats.warn(f"tshark: {line}")
            return
        message = "; ".join(capture.errors) or f"tshark exited with status {capture.exit_status}"
        error = CaptureError(self.path, message, slug="tshark-error")
        if not self.stats.packets:
            raise error
        self.stats.error = error
        self.stats.warn(f"{error}; kept the {self.stats.packets} packet(s) read before it")

    # -- per packet --------------------------------------------------------------------------
    def _count(self, packet: Any) -> int:
        st = self.stats
        ts = epoch_ns(packet.frame_info.get_field("time_epoch"))
        st.packets += 1
        st.first_ts_ns = ts if st.first_ts_ns is None else min(st.first_ts_ns, ts)
        st.last_ts_ns = ts if st.last_ts_ns is None else max(st.last_ts_ns, ts)
        return ts

    def _add_row(self, packet: Any, ts: int, rows: "_Rows") -> bool:
        """Append the frame's TCP segment to ``rows``; False when it has none to give."""
        tokens = str(packet.frame_info.get_field("protocols")).split(":")
        layers = _LayerIndex(packet)
        if "tcp" not in tokens:
            self._check_fragment(tokens, layers)
            return False
        before = tokens[:tokens.index("tcp")]
        if ICMP_TOKENS.intersection(before):
            return False                        # a header quoted by an ICMP error
        ips = [i for i, t in enumerate(before) if t in IP_TOKENS]
        ip_name = before[ips[-1]] if ips else ""
        ip = layers.get(ip_name, before.count(ip_name) - 1) if ips else None
        tcp = layers.get("tcp", 0)
        if ip is None or tcp is None or f"{ip_name}.src" not in ip or f"{ip_name}.dst" not in ip:
            self._warn[W_NO_IP] += 1
            return False
        fields = tcp_fields(tcp)
        if any(name not in fields for name in REQUIRED):
            hdr_len = fields.get("tcp.hdr_len")
            bogus = hdr_len is not None and _int(hdr_len[0]) < 20
            self._warn[W_BOGUS_HEADER if bogus else W_TRUNCATED_TCP] += 1
            return False
        payload = self._payload(ip_name, ip, fields, before, ips[-1], layers)
        if not self._checksum_ok(fields, payload):
            return False
        rows.add(packet, ts, ip_name, ip, fields, payload, tunneled=len(ips) > 1)
        self.stats.tcp_packets += 1
        return True

    def _checksum_ok(self, fields: dict[str, list[str]], payload: int) -> bool:
        """False (and counted) when tshark found the checksum wrong over the whole segment."""
        if not self.verify:
            return True
        status = _int(fields.get("tcp.checksum.status", [str(CHECKSUM_UNVERIFIED)])[0])
        seen = fields.get("tcp.len")
        if seen is None or _int(seen[0]) < payload:
            # tshark summed only part of the segment (an outer fragment ends, an outer length
            # field cuts it short): its verdict says nothing about the segment.
            status = CHECKSUM_UNVERIFIED
        if status == CHECKSUM_BAD:
            self._warn[W_BAD_CHECKSUM] += 1
            return False
        if status != CHECKSUM_GOOD:
            self._warn[W_UNVERIFIABLE] += 1
        return True

    @staticmethod
    def _payload(ip_name: str, ip: dict, fields: dict[str, list[str]], before: list[str],
                 ip_at: int, layers: "_LayerIndex") -> int:
        """payload_len: from the IP length, as the column defines it; tcp.len when that is 0."""
        ah: list[dict] = []
        if ip_name == "ip":     # IPv4 AH is a layer of its own (IPv6 nests it in the ipv6 layer)
            first = before[:ip_at].count("ah")
            ah = [layers.get("ah", first + i) or {} for i in range(before[ip_at:].count("ah"))]
        payload = payload_from_ip(ip_name, ip, _int(fields["tcp.hdr_len"][0]), ah)
        if payload is None:                     # IP length 0 (TSO, jumbogram)
            payload = _int(fields.get("tcp.len", ["0"])[0])
        return payload

    def _check_fragment(self, tokens: list[str], layers: "_LayerIndex") -> None:
        ips = [t for t in tokens if t in IP_TOKENS]
        if not ips:
            return
        ip = layers.get(ips[-1], ips.count(ips[-1]) - 1)
        if ip is None:
            return
        flat = _flatten(ip, {"ip.frag_offset", "ip.proto", "ipv6.fraghdr.offset",
                             "ipv6.fraghdr.nxt", "ip.reassembled_in", "ipv6.reassembled_in"})
        offset = flat.get("ip.frag_offset") or flat.get("ipv6.fraghdr.offset")
        proto = flat.get("ip.proto") or flat.get("ipv6.fraghdr.nxt")
        reassembled = flat.get("ip.reassembled_in") or flat.get("ipv6.reassembled_in")
        if offset and proto and _int(offset[-1]) and _int(proto[-1]) == 6 and not reassembled:
            self._warn[W_FRAGMENT] += 1


class _Rows:
    """Column lists for the rows of the batch being built."""

    def __init__(self) -> None:
        self.cols: dict[str, list] = {name: [] for name in COLUMNS}

    def __len__(self) -> int:
        return len(self.cols["frame"])

    def add(self, packet: Any, ts: int, ip_name: str, ip: dict, f: dict, payload: int,
            tunneled: bool) -> None:
        c = self.cols
        c["frame"].append(int(packet.number))
        c["ts_ns"].append(ts)
        v6 = ip_name == "ipv6"
        c["ip_version"].append(6 if v6 else 4)
        for side in ("src", "dst"):
            hi, lo = address_words(_first(ip, f"{ip_name}.{side}"), v6)
            c[f"{side}_hi"].append(hi)
            c[f"{side}_lo"].append(lo)
        c["sport"].append(_int(f["tcp.srcport"][0]))
        c["dport"].append(_int(f["tcp.dstport"][0]))
        c["seq"].append(_int(f["tcp.seq_raw"][0]))
        c["ack"].append(_int(f["tcp.ack_raw"][0]))
        c["flags"].append(_int(f["tcp.flags"][0]) & 0x1FF)
        c["win"].append(_int(f["tcp.window_size_value"][0]))
        c["payload_len"].append(payload)
        c["frame_len"].append(int(packet.length))
        # Options: the last occurrence wins, as when a decoder walks them in order.
        c["mss"].append(_int(f["tcp.options.mss_val"][-1]) if "tcp.options.mss_val" in f else 0)
        shift = _int(f["tcp.options.wscale.shift"][-1]) if "tcp.options.wscale.shift" in f else -1
        c["wscale"].append(shift - 256 if shift > 127 else shift)   # the raw byte, as int8
        c["sack_perm"].append("tcp.options.sack_perm" in f)
        has_ts = "tcp.options.timestamp.tsval" in f
        c["has_ts"].append(has_ts)
        c["tsval"].append(_int(f["tcp.options.timestamp.tsval"][-1]) if has_ts else 0)
        c["tsecr"].append(_int(f["tcp.options.timestamp.tsecr"][-1])
                          if "tcp.options.timestamp.tsecr" in f else 0)
        c["tunneled"].append(tunneled)
        c["ip_len"].append(ip_total_length(ip_name, ip))
        c["app_marks"].append(app_marks(f) if payload > 0 else 0)
        ttl, ip_id, df = ip_identity(ip_name, ip)
        c["ttl"].append(ttl)
        c["ip_id"].append(ip_id)
        c["ip_df"].append(df)

    def flush(self) -> PacketBatch:
        batch = PacketBatch({name: np.array(self.cols[name], dtype=dtype)
                             for name, dtype in COLUMNS.items()})
        self.cols = {name: [] for name in COLUMNS}
        return batch


class _LayerIndex:
    """The JSON dicts of a packet's ``ip``, ``ipv6``, ``tcp``, ``ah`` layers, per name in order.

    Top-level layers come first (pyshark keeps a name's duplicates in document order); layers
    that tshark nests inside another one (an A-MSDU subframe, say) are searched for only when the
    top level does not have enough of them.
    """

    NAMES = ("ip", "ipv6", "tcp", "ah")

    def __init__(self, packet: Any) -> None:
        self.packet = packet
        self.top: dict[str, list[dict]] = {name: [] for name in self.NAMES}
        for layer in packet.layers:
            if layer.layer_name in self.top:
                for one in [layer, *getattr(layer, "duplicate_layers", [])]:
                    self.top[layer.layer_name].append(_layer_dict(one))
        self._deep: dict[str, list[dict]] | None = None

    def get(self, name: str, index: int) -> dict | None:
        found = self.top[name]
        if index >= len(found):
            if self._deep is None:
                self._deep = self._search()
            found = self._deep[name]
        return found[index] if index < len(found) else None

    def _search(self) -> dict[str, list[dict]]:
        out: dict[str, list[dict]] = {name: [] for name in self.NAMES}

        def walk(node: Any) -> None:
            if isinstance(node, list):
                for item in node:
                    walk(item)
            elif isinstance(node, dict):
                for key, value in node.items():
                    if key in out:
                        out[key].extend(v for v in (value if isinstance(value, list) else [value])
                                        if isinstance(v, dict))
                    walk(value)

        for name in self.NAMES:
            out[name].extend(self.top[name])
        for layer in self.packet.layers:
            for one in [layer, *getattr(layer, "duplicate_layers", [])]:
                walk(_layer_dict(one))
        return out


def _layer_dict(layer: Any) -> dict:
    """The raw JSON object pyshark parsed for a layer (pyshark keeps it as ``_all_fields``)."""
    fields = getattr(layer, "_all_fields", None)
    return fields if isinstance(fields, dict) else {}


def _flatten(node: Any, wanted: frozenset[str] | set[str]) -> dict[str, list[str]]:
    """Every occurrence of the ``wanted`` field names anywhere in a layer, in document order."""
    out: dict[str, list[str]] = {}

    def walk(item: Any) -> None:
        if isinstance(item, list):
            for one in item:
                walk(one)
        elif isinstance(item, dict):
            for key, value in item.items():
                if key in wanted:
                    for one in value if isinstance(value, list) else [value]:
                        out.setdefault(key, []).append(one if isinstance(one, str) else "")
                if isinstance(value, (dict, list)):
                    walk(value)

    walk(node)
    return out


#: IPv6 extension-header length fields (bytes) tshark nests in the ipv6 layer; a fragment
#: header has no length field and is always 8 bytes.
IPV6_EXT_LENGTHS = frozenset({"ipv6.hopopts.len_oct", "ipv6.routing.len_oct",
                              "ipv6.dstopts.len_oct"})


def payload_from_ip(ip_name: str, ip: dict, tcp_hdr_len: int,
                    ah: list[dict] = ()) -> int | None:
    """TCP payload bytes from the IP header's length field; None when that field is 0.

    ``tcp.len`` is not used: tshark clips it to what the frame and every enclosing layer can
    hold (an outer IP fragment, a PPPoE length that disagrees with the IP header), and leaves it
    out of fragmented packets. ``ah`` are the IPv4 AH layers between the IP and TCP headers.
    """
    whole = _flatten(ip, {"ip.reassembled.length", "ipv6.reassembled.length"})
    whole = whole.get("ip.reassembled.length") or whole.get("ipv6.reassembled.length")
    if whole:                   # a reassembled datagram: its payload, after the fragment header
        l4 = _int(whole[0])
        flat = _flatten(list(ah), {"ah.length"})
    elif ip_name == "ipv6":
        flat = _flatten(ip, IPV6_EXT_LENGTHS | {"ipv6.plen", "ipv6.fraghdr.nxt", "ah.length"})
        if not flat.get("ipv6.plen") or not _int(flat["ipv6.plen"][0]):
            return None
        l4 = _int(flat["ipv6.plen"][0]) - 8 * len(flat.get("ipv6.fraghdr.nxt", []))
        l4 -= sum(_int(v) for name in IPV6_EXT_LENGTHS for v in flat.get(name, []))
    else:
        flat = _flatten(ip, {"ip.len", "ip.hdr_len"})
        if not flat.get("ip.len") or not _int(flat["ip.len"][0]) or not flat.get("ip.hdr_len"):
            return None
        l4 = _int(flat["ip.len"][0]) - _int(flat["ip.hdr_len"][0])
        flat = _flatten(list(ah), {"ah.length"})
    l4 -= sum((_int(v) + 2) * 4 for v in flat.get("ah.length", []))   # RFC 4302 §2.2
    return max(l4 - tcp_hdr_len, 0)


def ip_total_length(ip_name: str, ip: dict) -> int:
    """The ``ip_len`` column: the IP header's total length field (IPv6: payload length + 40),
    as written, 0 included."""
    name = "ipv6.plen" if ip_name == "ipv6" else "ip.len"
    flat = _flatten(ip, {name})
    value = _int(flat[name][0]) if flat.get(name) else 0
    return value + 40 if ip_name == "ipv6" else value


def ip_identity(ip_name: str, ip: dict) -> tuple[int, int, bool]:
    """The ``ttl``, ``ip_id`` and ``ip_df`` columns from the innermost IP layer: ``ip.ttl``,
    ``ip.id``, ``ip.flags.df`` (IPv6: ``ipv6.hlim``, no ID: -1, DF False)."""
    if ip_name == "ipv6":
        flat = _flatten(ip, {"ipv6.hlim"})
        return (_int(flat["ipv6.hlim"][0]) if flat.get("ipv6.hlim") else 0), -1, False
    flat = _flatten(ip, {"ip.ttl", "ip.id", "ip.flags.df"})
    ttl = _int(flat["ip.ttl"][0]) if flat.get("ip.ttl") else 0
    ip_id = _int(flat["ip.id"][0]) if flat.get("ip.id") else 0
    df = bool(flat.get("ip.flags.df")) and flat["ip.flags.df"][0] in ("1", "True", "true")
    return ttl, ip_id, df


def app_marks(f: dict[str, list[str]]) -> int:
    """The ``app_marks`` column from ``tcp.payload`` (the captured payload bytes, as hex pairs
    joined by colons; only its first bytes are decoded unless it starts an HTTP/1.x message)."""
    text = f.get("tcp.payload")
    if not text:
        return 0
    hexes = text[0]
    if not hexes or not ("41" <= hexes[:2].upper() <= "5A"):
        return 0
    try:
        return http_marks(bytes.fromhex(hexes.replace(":", "")))
    except ValueError:
        return 0


def tcp_fields(layer: dict) -> dict[str, list[str]]:
    """The TCP fields the reader uses, from one ``tcp`` layer's JSON object."""
    return _flatten(layer, TCP_FIELDS)


def _first(layer: dict, name: str) -> str:
    value = layer.get(name)
    if isinstance(value, list):
        value = value[0]
    if not isinstance(value, str):
        raise KeyError(name)
    return value


def _int(text: str) -> int:
    text = str(text)
    return int(text, 16) if text.startswith(("0x", "0X")) else int(text)


def epoch_ns(text: str) -> int:
    """Exact nanoseconds from a decimal epoch string such as ``1630165473.690298000``."""
    text = str(text).strip()
    negative = text.startswith("-")
    whole, _, frac = text.lstrip("+-").partition(".")
    ns = int(whole or "0") * 1_000_000_000 + int((frac + "000000000")[:9])
    return -ns if negative else ns


@functools.lru_cache(maxsize=1 << 16)
def address_words(text: str, v6: bool) -> tuple[int, int]:
    """(high, low) 64-bit words of an address; IPv4 is mapped into ::ffff:0:0/96."""
    if v6:
        value = int(ipaddress.IPv6Address(text))
        return value >> 64, value & 0xFFFF_FFFF_FFFF_FFFF
    return 0, 0xFFFF_0000_0000 | int.from_bytes(socket.inet_aton(text), "big")


def file_link_types(path: str) -> list[int]:
    """Link types named by a pcap header or pcapng interface blocks (plain or gzip); [] if other."""
    try:
        with open(path, "rb") as raw:
            stream = gzip.GzipFile(fileobj=raw) if raw.read(2) == b"\x1f\x8b" else raw
            stream.seek(0)
            head = stream.read(24)
            if head[:4] in PCAP_MAGICS:
                return [struct.unpack(PCAP_MAGICS[head[:4]] + "I", head[20:24])[0] & 0x0FFFFFFF]
            if head[:4] == PCAPNG_MAGIC:
                stream.seek(0)
                return _pcapng_link_types(stream)
    except (OSError, EOFError, zlib.error, struct.error):
        pass
    return []


def _pcapng_link_types(stream: Any) -> list[int]:
    found: list[int] = []
    order = "<"
    while True:
        head = stream.read(12)
        if len(head) < 12:
            return found
        if head[:4] == PCAPNG_MAGIC:
            order = "<" if head[8:12] == b"\x4d\x3c\x2b\x1a" else ">"
        btype, blen = struct.unpack(order + "II", head[:8])
        if blen < 12 or blen % 4:
            return found
        if btype == 1:                                  # interface description block
            link = struct.unpack(order + "H", head[8:10])[0]
            if link not in found:
                found.append(link)
        stream.seek(blen - 12, 1)


@functools.lru_cache(maxsize=1)
def _capture_class() -> type:
    """pyshark's FileCapture, made to report how tshark ended instead of killing it at EOF."""
    import pyshark

    class _Capture(pyshark.FileCapture):
        WAIT_SECONDS = 60

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            self.errors: list[str] = []
            self.exit_status: int | None = None
            super().__init__(*args, **kwargs)

        async def _handle_process_stderr_forever(self, stderr: Any) -> None:
            while line := await stderr.readline():
                text = line.decode("utf-8", "replace").strip()
                if text and not text.startswith("Running as user"):
                    self.errors.append(text.removeprefix("tshark: "))

        async def _cleanup_subprocess(self, process: Any) -> None:
            if process.returncode is None and self._eof_reached:
                try:                        # tshark is done writing; let it exit by itself
                    await asyncio.wait_for(process.wait(), self.WAIT_SECONDS)
                except asyncio.TimeoutError:
                    pass
            if process.returncode is None:  # stopped early, or hung: end it
                try:
                    process.kill()
                    await asyncio.wait_for(process.wait(), 5)
                except (ProcessLookupError, asyncio.TimeoutError):
                    pass
            elif self._eof_reached:
                self.exit_status = process.returncode
            await asyncio.gather(*self._stderr_handling_tasks)

    return _Capture
