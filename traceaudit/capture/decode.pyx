"""Compiled decoder: link layer → (tunnels) → IP → TCP, one record at a time, into typed columns.

Everything here runs without the GIL on uint8 views of the file; no Python object is made per
packet. The decoder walks a small state machine of protocol "kinds" so that stacks of any order
(VLAN in MPLS in PPPoE, Ethernet in VXLAN in UDP in IPv6, ...) are handled by one loop with a
depth limit.

Bounds: the core indexes without bounds checks, so every byte read is preceded by a check that
it lies before ``end``, the end of the record (``end`` only ever shrinks, to an IP packet's own
length, and positions only grow from the record's start); ``decode_records`` checks that each
record lies within ``buf``.
"""

from libc.stdint cimport int8_t, int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t

cimport traceaudit.tracking.zeek_kernel as ZK

from traceaudit.capture import linktypes as lt

# Field indices of the int64 scratch row a record is decoded into (PacketBatch column order).
cpdef enum:
    C_FRAME = 0
    C_TS = 1
    C_IPV = 2
    C_SRC_HI = 3
    C_SRC_LO = 4
    C_DST_HI = 5
    C_DST_LO = 6
    C_SPORT = 7
    C_DPORT = 8
    C_SEQ = 9
    C_ACK = 10
    C_FLAGS = 11
    C_WIN = 12
    C_PLEN = 13
    C_FLEN = 14
    C_MSS = 15
    C_WSCALE = 16
    C_SACKP = 17
    C_HASTS = 18
    C_TSVAL = 19
    C_TSECR = 20
    C_TUNNELED = 21
    C_SEG = 22
    C_IPLEN = 23
    C_APP = 24        # app_marks: HTTP/1.x requests / responses the payload starts
    C_TTL = 25        # TTL / hop limit of the innermost IP header
    C_IPID = 26       # its IPv4 identification; -1 for IPv6
    C_DF = 27         # its IPv4 don't-fragment bit
    C_FRAG_IP = 28    # a fragment held for reassembly: position of its IP header, else -1
    C_FRAG_AT = 29    # ... and of its payload (IPv4) or fragment header (IPv6)
    N_COLS = 30

# Per-segment capture facts (the optional ``seg_flags`` column), computed only when the reader is
# asked for them. The bits are the Zeek view's, declared once in tracking/zeek_kernel.pxd:
#   SEG_BAD_CSUM      TCP checksum verifiable (segment fully captured) and wrong
#   SEG_PAYLOAD_CUT   TCP payload not fully captured (snap length)
#   SEG_HEADER_CUT    TCP header, options included, not fully captured
#   SEG_BAD_IP_CSUM   an IPv4 header (any layer, tunnels included) has a wrong checksum
SEG_BAD_CSUM = ZK.SEG_BAD_CSUM
SEG_PAYLOAD_CUT = ZK.SEG_PAYLOAD_CUT
SEG_HEADER_CUT = ZK.SEG_HEADER_CUT
SEG_BAD_IP_CSUM = ZK.SEG_BAD_IP_CSUM

# Counters the kernel keeps per call (index → meaning); the reader turns them into warnings.
cpdef enum:
    W_FRAGMENT = 0        # IP fragment not reassembled (cut by the snap length), no TCP header
    W_TRUNCATED_TCP = 1   # TCP header cut by the snap length before the window field: skipped
    W_BAD_CHECKSUM = 2    # TCP checksum wrong, segment dropped (only with verify_checksums)
    W_UNVERIFIABLE = 3    # checksum not verifiable (payload not captured), segment kept
    W_TUNNELED = 4        # TCP segments found inside a tunnel
    W_TRUNCATED_IP = 5    # IP header cut by the snap length: skipped
    W_BOGUS_TCP = 6       # TCP data offset below 5 words or past the segment: kept, counted
    W_BAD_IP_OPTION = 7   # IPv4 option with a bad length: options walk stopped, packet kept
    W_ENCAP = 8           # an encapsulation's payload is not something the reader decodes
    N_WARN = 9

# Protocol kinds of the decode loop.
cpdef enum:
    K_DONE = 0
    K_ETH = 1
    K_IP = 2          # IPv4 or IPv6, decided by the version nibble
    K_LLC = 3
    K_MPLS = 4
    K_PPP = 5         # PPP protocol field (2 bytes, or 1 if compressed)
    K_PPP_HDLC = 6    # optional ff 03 address/control, then PPP protocol
    K_WLAN = 7        # 802.11 data frame (Aruba GRE)
    K_FDDI = 8
    K_NULL_LE = 9     # BSD loopback, family in little-endian host order
    K_NULL_BE = 10
    K_SLL = 11
    K_SLL2 = 12
    K_ETHERTYPE = 13  # 2-byte ethertype at pos (after an encapsulation header)
    K_RADIOTAP = 14   # radiotap header (little-endian length at +2), then an 802.11 frame
    K_NFLOG = 15      # Linux NFLOG: 4-byte header, then TLVs; NFULA_PAYLOAD holds the IP packet
    K_ARCNET = 16     # ARCNET: source, destination, 2-byte offset, protocol ID, RFC 1201 fields
    K_IPOIB = 17      # IP over InfiniBand: 40-byte GRH, 2-byte ethertype, 2 reserved bytes
    K_CHDLC = 18      # Cisco HDLC: address (0x0F/0x8F), control, 2-byte ethertype
    MAX_DEPTH = 24

cpdef enum:
    PROTO_TCP = 6
    PROTO_UDP = 17
    PROTO_GRE = 47
    PROTO_IPIP = 4
    PROTO_IPV6 = 41

# Link types, read once from linktypes.py (their one declaration) into C globals.
cdef int64_t LT_NULL = lt.NULL
cdef int64_t LT_ETHERNET = lt.ETHERNET
cdef int64_t LT_PPP = lt.PPP
cdef int64_t LT_FDDI = lt.FDDI
cdef int64_t LT_RAW_BSD12 = lt.RAW_BSD12
cdef int64_t LT_RAW_BSD14 = lt.RAW_BSD14
cdef int64_t LT_PPP_HDLC = lt.PPP_HDLC
cdef int64_t LT_RAW = lt.RAW
cdef int64_t LT_LOOP = lt.LOOP
cdef int64_t LT_LINUX_SLL = lt.LINUX_SLL
cdef int64_t LT_IPV4 = lt.IPV4
cdef int64_t LT_IPV6 = lt.IPV6
cdef int64_t LT_LINUX_SLL2 = lt.LINUX_SLL2
cdef int64_t LT_CHDLC = lt.CHDLC
cdef int64_t LT_IEEE802_11 = lt.IEEE802_11
cdef int64_t LT_RADIOTAP = lt.IEEE802_11_RADIOTAP
cdef int64_t LT_ARCNET_BSD = lt.ARCNET_BSD
cdef int64_t LT_NFLOG = lt.NFLOG
cdef int64_t LT_IPOIB = lt.IPOIB


cdef inline int64_t be16(const uint8_t[::1] b, int64_t p) noexcept nogil:
    return (<int64_t>b[p] << 8) | <int64_t>b[p + 1]


cdef inline int64_t be32(const uint8_t[::1] b, int64_t p) noexcept nogil:
    return (<int64_t>b[p] << 24) | (<int64_t>b[p + 1] << 16) | (<int64_t>b[p + 2] << 8) \
        | <int64_t>b[p + 3]


cdef inline uint64_t be64u(const uint8_t[::1] b, int64_t p) noexcept nogil:
    cdef uint64_t v = 0
    cdef int i
    for i in range(8):
        v = (v << 8) | <uint64_t>b[p + i]
    return v


cpdef int64_t kind_for_ethertype(int64_t et) noexcept nogil:
    """Map an ethertype to the next decode kind; K_DONE for anything that cannot carry TCP."""
    if et == 0x0800 or et == 0x86DD:
        return K_IP
    if et == 0x8847 or et == 0x8848:
        return K_MPLS
    if et == 0x6558:
        return K_ETH
    return K_DONE


cpdef int64_t initial_kind(int64_t linktype) noexcept nogil:
    if linktype == LT_ETHERNET:
        return K_ETH
    if linktype == LT_RAW or linktype == LT_RAW_BSD12 or linktype == LT_RAW_BSD14 \
            or linktype == LT_IPV4 or linktype == LT_IPV6:
        return K_IP
    if linktype == LT_NULL:
        return K_NULL_LE
    if linktype == LT_LOOP:
        return K_NULL_BE
    if linktype == LT_LINUX_SLL:
        return K_SLL
    if linktype == LT_LINUX_SLL2:
        return K_SLL2
    if linktype == LT_PPP or linktype == LT_PPP_HDLC:
        return K_PPP_HDLC
    if linktype == LT_FDDI:
        return K_FDDI
    if linktype == LT_CHDLC:
        return K_CHDLC
    if linktype == LT_IEEE802_11:
        return K_WLAN
    if linktype == LT_RADIOTAP:
        return K_RADIOTAP
    if linktype == LT_NFLOG:
        return K_NFLOG
    if linktype == LT_ARCNET_BSD:
        return K_ARCNET
    if linktype == LT_IPOIB:
        return K_IPOIB
    return K_DONE


# inline: a call per header costs a measurable share of decoding
cdef inline int64_t ones_complement_sum(const uint8_t[::1] b, int64_t start, int64_t stop,
                                        int64_t acc) noexcept nogil:
    """Callers pass ``stop`` <= the record end."""
    cdef int64_t i = start
    while i + 1 < stop:
        acc += (<int64_t>b[i] << 8) | <int64_t>b[i + 1]
        i += 2
    if i < stop:
        acc += <int64_t>b[i] << 8
    return acc


cdef inline bint tcp_checksum_ok(const uint8_t[::1] b, int64_t ipv, int64_t ip_pos,
                                 int64_t dst_pos, int64_t tcp_pos, int64_t seg_len) noexcept nogil:
    """True when the TCP checksum over the pseudo-header and segment folds to 0xffff.

    IPv4's pseudo-header destination is the 4 bytes at ``dst_pos``: the header's, or a source
    route's final hop. Callers have checked that the IP header (20 or 40 bytes at ``ip_pos``),
    ``dst_pos`` and the segment (``seg_len`` bytes at ``tcp_pos``) lie within the record."""
    cdef int64_t acc = 0
    if ipv == 4:
        acc = ones_complement_sum(b, ip_pos + 12, ip_pos + 16, acc)
        acc = ones_complement_sum(b, dst_pos, dst_pos + 4, acc)
    else:
        acc = ones_complement_sum(b, ip_pos + 8, ip_pos + 40, acc)
    acc += PROTO_TCP + seg_len
    acc = ones_complement_sum(b, tcp_pos, tcp_pos + seg_len, acc)
    while acc >> 16:
        acc = (acc & 0xFFFF) + (acc >> 16)
    return acc == 0xFFFF


cdef inline bint may_carry_tcp(int64_t proto) noexcept nogil:
    """IP protocols whose fragments are reassembled: TCP and what tunnels TCP."""
    return proto == PROTO_TCP or proto == PROTO_UDP or proto == PROTO_GRE or \
        proto == PROTO_IPIP or proto == PROTO_IPV6


cdef int64_t ipv4_route_dst(const uint8_t[::1] b, int64_t p, int64_t opt_end,
                            int64_t* warn) noexcept nogil:
    """Walk the IPv4 options in [p, opt_end) (callers checked they lie within the record).

    Returns the position of the final hop of a loose or strict source route (RFC 791 options
    131/137) that still has hops to go (pointer within the option): the destination the TCP
    pseudo-header and tshark's ``ip.dst`` use; 0 when there is none. An option whose length is
    below 2 (3 for a route) or runs past the options ends the walk and is counted (tshark
    flags it and still decodes the packet)."""
    cdef int64_t olen, ptr, found = 0
    cdef uint8_t kind
    while p < opt_end:
        kind = b[p]
        if kind == 0:                       # end of option list
            break
        if kind == 1:                       # no-operation
            p += 1
            continue
        if p + 1 >= opt_end:
            warn[W_BAD_IP_OPTION] += 1
            break
        olen = b[p + 1]
        if olen < 2 or p + olen > opt_end or ((kind == 131 or kind == 137) and olen < 3):
            warn[W_BAD_IP_OPTION] += 1
            break
        if (kind == 131 or kind == 137) and found == 0:
            ptr = b[p + 2]
            if ptr >= 4 and ptr <= olen and olen >= 7 and (olen - 3) % 4 == 0:
                found = p + olen - 4
        p += olen
    return found


cdef inline bint _token(const uint8_t[::1] b, int64_t p, int64_t end, const char* tok,
                        int64_t n) noexcept nogil:
    """The ``n`` bytes at ``p`` (all before ``end``) are ``tok``."""
    cdef int64_t k
    if p + n > end:
        return False
    for k in range(n):
        if b[p + k] != <uint8_t>tok[k]:
            return False
    return True


cdef inline int64_t _message_at(const uint8_t[::1] b, int64_t p, int64_t end) noexcept nogil:
    """1: an HTTP/1.x request line starts at ``p`` (a method token and a space), 2: a status
    line (``HTTP/1.``), 0: neither (or cut by ``end``)."""
    if p >= end:
        return 0
    cdef uint8_t c = b[p]
    if c == 71:                                  # G
        return 1 if _token(b, p, end, b"GET ", 4) else 0
    if c == 80:                                  # P
        return 1 if _token(b, p, end, b"POST ", 5) or _token(b, p, end, b"PUT ", 4) or \
            _token(b, p, end, b"PATCH ", 6) else 0
    if c == 72:                                  # H
        if _token(b, p, end, b"HTTP/1.", 7):
            return 2
        return 1 if _token(b, p, end, b"HEAD ", 5) else 0
    if c == 68:                                  # D
        return 1 if _token(b, p, end, b"DELETE ", 7) else 0
    if c == 79:                                  # O
        return 1 if _token(b, p, end, b"OPTIONS ", 8) else 0
    if c == 67:                                  # C
        return 1 if _token(b, p, end, b"CONNECT ", 8) else 0
    if c == 84:                                  # T
        return 1 if _token(b, p, end, b"TRACE ", 6) else 0
    return 0


cdef inline int64_t http_marks_at(const uint8_t[::1] b, int64_t p, int64_t end) noexcept nogil:
    """The ``app_marks`` value of the captured payload ``b[p:end]`` (``batch.http_marks`` is
    the same in Python): HTTP/1.x requests started (low 4 bits) and responses started (high
    4 bits, each capped at 15), at the payload's first byte and right after every
    ``\\r\\n\\r\\n`` that follows. Only a payload that starts a message is scanned."""
    cdef int64_t kind, req = 0, resp = 0, q
    kind = _message_at(b, p, end)
    if kind == 0:
        return 0
    while True:
        if kind == 1:
            req += 1
        elif kind == 2:
            resp += 1
        # the next end of a header block (or a blank line in a body: what follows it is looked
        # at all the same)
        q = p
        while q + 3 < end and not (b[q] == 13 and b[q + 1] == 10 and b[q + 2] == 13 and
                                   b[q + 3] == 10):
            q += 1
        if q + 3 >= end:
            break
        p = q + 4
        if p >= end:
            break
        kind = _message_at(b, p, end)
    if req > 15:
        req = 15
    if resp > 15:
        resp = 15
    return req | (resp << 4)


cdef inline bint decode_tcp(const uint8_t[::1] b, int64_t tcp_pos, int64_t end, int64_t l4_len,
                            int64_t* out, int64_t* warn, bint verify, int64_t ipv,
                            int64_t ip_pos, int64_t dst_pos, bint marks) noexcept nogil:
    """Fill the TCP fields of the scratch row ``out``. Returns False to drop the row."""
    cdef int64_t off_flags, hlen, plen, opt_end, p, olen
    cdef uint8_t kind
    if tcp_pos + 16 > end:
        warn[W_TRUNCATED_TCP] += 1
        return False
    out[C_SPORT] = be16(b, tcp_pos)
    out[C_DPORT] = be16(b, tcp_pos + 2)
    out[C_SEQ] = be32(b, tcp_pos + 4)
    out[C_ACK] = be32(b, tcp_pos + 8)
    off_flags = be16(b, tcp_pos + 12)
    hlen = (off_flags >> 12) * 4
    out[C_FLAGS] = off_flags & 0x1FF
    out[C_WIN] = be16(b, tcp_pos + 14)
    plen = l4_len - hlen
    if plen < 0:
        plen = 0
    out[C_PLEN] = plen
    # the IP header's own total length, as Zeek's IP_Hdr::TotalLen() reads it (the caller
    # checked that the 20 or 40 header bytes at ip_pos lie within the record)
    out[C_IPLEN] = be16(b, ip_pos + 2) if ipv == 4 else be16(b, ip_pos + 4) + 40
    # TTL / hop limit, IPv4 ID and DF: what tells a reset forged on the path from the
    # endpoint's own (same bounds as above: within the 20 or 40 header bytes)
    if ipv == 4:
        out[C_TTL] = b[ip_pos + 8]
        out[C_IPID] = be16(b, ip_pos + 4)
        out[C_DF] = (b[ip_pos + 6] >> 6) & 1
    else:
        out[C_TTL] = b[ip_pos + 7]
        out[C_IPID] = -1
        out[C_DF] = 0
    out[C_MSS] = 0
    out[C_WSCALE] = -1
    out[C_SACKP] = 0
    out[C_HASTS] = 0
    out[C_TSVAL] = 0
    out[C_TSECR] = 0
    # A data offset below 5 words, or one reaching past the segment, is a malformed header;
    # tshark still gives the packet (ports, flags, seq) to its connection, and so do we
    # (payload length as tshark's tcp.len; no options read).
    if hlen < 20 or hlen > l4_len:
        warn[W_BOGUS_TCP] += 1
        hlen = 20
    opt_end = tcp_pos + hlen
    if opt_end > end:
        opt_end = end
    p = tcp_pos + 20
    while p < opt_end:
        kind = b[p]
        if kind == 0:
            break
        if kind == 1:
            p += 1
            continue
        if p + 1 >= opt_end:
            break
        olen = b[p + 1]
        if olen < 2 or p + olen > opt_end:
            break
        if kind == 2 and olen == 4:
            out[C_MSS] = be16(b, p + 2)
        elif kind == 3 and olen == 3:
            out[C_WSCALE] = b[p + 2]
        elif kind == 4 and olen == 2:
            out[C_SACKP] = 1
        elif kind == 8 and olen == 10:
            out[C_HASTS] = 1
            out[C_TSVAL] = be32(b, p + 2)
            out[C_TSECR] = be32(b, p + 6)
        p += olen
    # HTTP/1.x message starts in the captured payload (cheap: only a payload whose first byte
    # is an uppercase ASCII letter is looked at)
    out[C_APP] = 0
    p = tcp_pos + hlen
    if plen > 0 and p < end and 65 <= b[p] <= 90:
        olen = tcp_pos + l4_len
        out[C_APP] = http_marks_at(b, p, olen if olen < end else end)
    if verify:
        if tcp_pos + l4_len <= end and l4_len >= 20:
            if not tcp_checksum_ok(b, ipv, ip_pos, dst_pos, tcp_pos, l4_len):
                warn[W_BAD_CHECKSUM] += 1
                return False
        else:
            warn[W_UNVERIFIABLE] += 1
    if marks:
        if tcp_pos + hlen > end:
            out[C_SEG] |= ZK.SEG_HEADER_CUT
        if plen > 0 and tcp_pos + l4_len > end:
            out[C_SEG] |= ZK.SEG_PAYLOAD_CUT
        if tcp_pos + l4_len <= end and l4_len >= 20 and \
                not tcp_checksum_ok(b, ipv, ip_pos, dst_pos, tcp_pos, l4_len):
            out[C_SEG] |= ZK.SEG_BAD_CSUM
    return True


cdef inline bint decode_record(const uint8_t[::1] b, int64_t start, int64_t caplen,
                               int64_t origlen, int64_t linktype, int64_t* out, int64_t* warn,
                               bint verify, bint marks, bint reasm) noexcept nogil:
    """Decode one record into the scratch row ``out``. Returns True when it was a TCP segment.

    With ``reasm``, an IP fragment (whole in the record) that may carry TCP is not decoded:
    ``out[C_FRAG_IP]`` and ``out[C_FRAG_AT]`` locate it for the reassembler (fragments.py).
    The record's ``caplen`` bytes at ``start`` lie within ``b`` (checked by the caller)."""
    cdef int64_t pos = start
    cdef int64_t end = start + caplen
    cdef int64_t ip, total, l4_len, kind, tunneled, depth, et, proto, fam, hdr, ihl, acc, frag
    cdef int64_t ip_pos = 0, ipv = 0, l4_pos = 0, ah_len, elen, sport, dport
    cdef int64_t dst_pos = 0, route
    cdef uint64_t src_hi = 0, src_lo = 0, dst_hi = 0, dst_lo = 0
    cdef uint8_t fc0, fc1, nib, nxt
    cdef bint vlan, bottom, amsdu
    out[C_SEG] = 0
    out[C_FRAG_IP] = -1
    # The common case first, without the general loop below (a third faster): Ethernet (no
    # tag), then IPv4 without options, not a fragment (the loop checks IP checksums when
    # ``marks`` asks), or IPv6 without extension headers; then TCP. What it does is exactly
    # what the loop does for such a record. (caplen >= 54 covers every byte read before
    # decode_tcp, which checks its own.)
    if linktype == LT_ETHERNET and caplen >= 54:
        if b[pos + 12] == 0x08 and b[pos + 13] == 0x00 and b[pos + 14] == 0x45 and \
                b[pos + 23] == PROTO_TCP and not marks and (be16(b, pos + 20) & 0x3FFF) == 0:
            ip = pos + 14
            total = be16(b, ip + 2)
            if total == 0:                      # TSO on the capturing host
                total = origlen - 14
            if ip + total < end:                # Ethernet padding
                end = ip + total
            out[C_IPV] = 4
            out[C_SRC_HI] = 0
            out[C_SRC_LO] = <int64_t>0xFFFF00000000 | be32(b, ip + 12)
            out[C_DST_HI] = 0
            out[C_DST_LO] = <int64_t>0xFFFF00000000 | be32(b, ip + 16)
            out[C_TUNNELED] = 0
            return decode_tcp(b, ip + 20, end, total - 20, out, warn, verify, 4, ip, ip + 16,
                              marks)
        if b[pos + 12] == 0x86 and b[pos + 13] == 0xDD and b[pos + 14] >> 4 == 6 and \
                b[pos + 20] == PROTO_TCP and caplen >= 74:
            ip = pos + 14
            l4_len = be16(b, ip + 4)
            if l4_len == 0:                     # jumbogram or TSO
                l4_len = origlen - 54
            if ip + 40 + l4_len < end:
                end = ip + 40 + l4_len
            out[C_IPV] = 6
            # uint64 bits into the int64 row (reinterpreted, not converted)
            out[C_SRC_HI] = <int64_t>be64u(b, ip + 8)
            out[C_SRC_LO] = <int64_t>be64u(b, ip + 16)
            out[C_DST_HI] = <int64_t>be64u(b, ip + 24)
            out[C_DST_LO] = <int64_t>be64u(b, ip + 32)
            out[C_TUNNELED] = 0
            return decode_tcp(b, ip + 40, end, l4_len, out, warn, verify, 6, ip, 0, marks)
    kind = initial_kind(linktype)
    tunneled = 0
    depth = 0
    while depth < MAX_DEPTH and kind != K_DONE:
        depth += 1
        if kind == K_ETH:
            if pos + 14 > end:
                return False
            et = be16(b, pos + 12)
            pos += 14
            # VLAN tags (802.1Q, 802.1ad, old QinQ), VN-Tag, PBB and FabricPath, in any stacking.
            while True:
                vlan = et == 0x8100 or et == 0x88A8 or et == 0x9100 or et == 0x9200
                if vlan and pos + 4 <= end:
                    et = be16(b, pos + 2)
                    pos += 4
                elif et == 0x8926 and pos + 6 <= end:
                    et = be16(b, pos + 4)
                    pos += 6
                else:
                    break
            if et == 0x88E7:                # 802.1ah PBB: I-TAG, then a customer Ethernet header
                pos += 4
                kind = K_ETH
            elif et == 0x8903:              # Cisco FabricPath: 2 more bytes, then inner Ethernet
                pos += 2
                kind = K_ETH
            elif et == 0x8864:              # PPPoE session: 6-byte header, then PPP protocol
                pos += 6
                kind = K_PPP
            elif et < 0x0600:               # 802.3 length field: LLC follows
                kind = K_LLC
            else:
                kind = kind_for_ethertype(et)
        elif kind == K_ETHERTYPE:
            if pos + 2 > end:
                return False
            et = be16(b, pos)
            pos += 2
            kind = kind_for_ethertype(et)
        elif kind == K_LLC:
            if pos + 3 > end:
                return False
            if b[pos] == 0xAA and b[pos + 1] == 0xAA and b[pos + 2] == 0x03:
                pos += 6                    # SNAP: OUI, then an ethertype
                kind = K_ETHERTYPE
            elif b[pos] == 0x06 and b[pos + 1] == 0x06:
                pos += 3                    # LLC SAP 6: IPv4 directly
                kind = K_IP
            else:
                return False
        elif kind == K_FDDI:
            pos += 13
            kind = K_LLC
        elif kind == K_MPLS:
            while True:
                if pos + 4 > end:
                    return False
                bottom = b[pos + 2] & 0x01
                pos += 4
                if bottom:
                    break
            if pos >= end:
                return False
            nib = b[pos] >> 4
            if nib == 4 or nib == 6:
                kind = K_IP
            elif nib == 0:
                pos += 4                    # pseudowire control word, Ethernet follows
                kind = K_ETH
            else:
                warn[W_ENCAP] += 1          # not IP, no control word: not decoded
                return False
        elif kind == K_PPP_HDLC:
            if pos + 2 <= end and b[pos] == 0xFF and b[pos + 1] == 0x03:
                pos += 2
                kind = K_PPP
            elif depth == 1 and pos < end and (b[pos] == 0x0F or b[pos] == 0x8F):
                kind = K_CHDLC              # Cisco HDLC in a "PPP" capture (as tshark detects)
            else:
                kind = K_PPP
        elif kind == K_CHDLC:
            if pos + 4 > end:
                return False
            pos += 2                        # address, control
            kind = K_ETHERTYPE
        elif kind == K_IPOIB:
            if pos + 44 > end:
                return False
            et = be16(b, pos + 40)
            pos += 44
            kind = kind_for_ethertype(et)
        elif kind == K_RADIOTAP:
            if pos + 4 > end:
                return False
            pos += <int64_t>b[pos + 2] | (<int64_t>b[pos + 3] << 8)
            kind = K_WLAN
        elif kind == K_NFLOG:
            pos = nflog_payload(b, pos, end)
            if pos < 0:
                return False
            kind = K_IP
        elif kind == K_ARCNET:
            if pos + 5 > end:
                return False
            proto = b[pos + 4]
            pos += 5
            if proto != 240:                # RFC 1201 (not 1051): split flag, sequence number
                pos += 3
            if proto == 240 or proto == 212 or proto == 196:    # IPv4 (RFC 1051, 1201), IPv6
                kind = K_IP
            else:
                return False
        elif kind == K_PPP:
            if pos + 1 > end:
                return False
            if b[pos] & 0x01:               # compressed 1-byte protocol field
                proto = b[pos]
                pos += 1
            else:
                if pos + 2 > end:
                    return False
                proto = be16(b, pos)
                pos += 2
            if proto == 0x0021 or proto == 0x0057:
                kind = K_IP
            elif proto == 0x0281:           # MPLS unicast
                kind = K_MPLS
            else:
                # 0x8000 and above are PPP's own control protocols (LCP, IPCP, ...), nothing
                # to decode; a network-layer protocol we do not know (compressed or encrypted
                # datagrams among them) is counted
                if proto < 0x8000:
                    warn[W_ENCAP] += 1
                return False
        elif kind == K_NULL_LE or kind == K_NULL_BE:
            if pos + 4 > end:
                return False
            if kind == K_NULL_LE:
                fam = <int64_t>b[pos] | (<int64_t>b[pos + 1] << 8)
                if fam == 0:                # written on a big-endian host
                    fam = be16(b, pos + 2)
            else:
                fam = be32(b, pos)
            pos += 4
            if fam == 2 or fam == 24 or fam == 28 or fam == 30:
                kind = K_IP
            else:
                return False
        elif kind == K_SLL:
            if pos + 16 > end:
                return False
            et = be16(b, pos + 14)
            pos += 16
            kind = kind_for_ethertype(et) if et != 0x0004 else K_LLC
        elif kind == K_SLL2:
            if pos + 20 > end:
                return False
            et = be16(b, pos)
            pos += 20
            kind = kind_for_ethertype(et) if et != 0x0004 else K_LLC
        elif kind == K_WLAN:
            if pos + 24 > end:
                return False
            fc0 = b[pos]
            fc1 = b[pos + 1]
            if (fc0 & 0x0C) != 0x08:        # not a data frame
                return False
            hdr = 24
            if (fc1 & 0x03) == 0x03:        # ToDS and FromDS: a fourth address
                hdr += 6
            amsdu = False
            if fc0 & 0x80:                  # QoS data: 2-byte QoS control
                if pos + hdr + 2 > end:
                    return False
                amsdu = (b[pos + hdr] & 0x80) != 0
                hdr += 2
            if fc0 & 0x80 and fc1 & 0x80:   # QoS frame with the order bit: HT control field
                hdr += 4
            if fc1 & 0x40:                  # protected frame: cannot decode
                return False
            pos += hdr
            if amsdu:
                pos += 14                   # first A-MSDU subframe header (DA, SA, length)
            kind = K_LLC
        elif kind == K_IP:
            if pos + 1 > end:
                return False
            nib = b[pos] >> 4
            if nib == 4:
                if pos + 20 > end:
                    warn[W_TRUNCATED_IP] += 1
                    return False
                ihl = <int64_t>(b[pos] & 0x0F) * 4
                if ihl < 20:
                    return False
                if marks and pos + ihl <= end:
                    acc = ones_complement_sum(b, pos, pos + ihl, 0)
                    while acc >> 16:
                        acc = (acc & 0xFFFF) + (acc >> 16)
                    if acc != 0xFFFF:
                        out[C_SEG] |= ZK.SEG_BAD_IP_CSUM
                total = be16(b, pos + 2)
                frag = be16(b, pos + 6)
                proto = b[pos + 9]
                ip_pos = pos
                if total == 0:              # TSO on the capturing host: length from the frame
                    total = origlen - (pos - start)
                l4_len = total - ihl
                if (frag & 0x3FFF) != 0:   # a fragment (MF or an offset)
                    if reasm and total > ihl and pos + total <= end and may_carry_tcp(proto):
                        out[C_FRAG_IP] = pos
                        out[C_FRAG_AT] = pos + ihl
                        out[C_TUNNELED] = tunneled
                        return False
                    if (frag & 0x1FFF) != 0:    # cut short: the first one is decoded as is
                        if proto == PROTO_TCP:
                            warn[W_FRAGMENT] += 1
                        return False
                dst_pos = pos + 16
                if ihl > 20 and pos + ihl <= end:
                    route = ipv4_route_dst(b, pos + 20, pos + ihl, warn)
                    if route:
                        dst_pos = route
                src_hi = 0
                src_lo = <uint64_t>0xFFFF00000000 | <uint64_t>be32(b, pos + 12)
                dst_hi = 0
                dst_lo = <uint64_t>0xFFFF00000000 | <uint64_t>be32(b, dst_pos)
                ipv = 4
                l4_pos = pos + ihl
                if pos + total < end:       # Ethernet padding is not part of the IP packet
                    end = pos + total
                if proto == 51 and l4_pos + 8 <= end:   # IPsec AH: skip to what it protects
                    ah_len = (<int64_t>b[l4_pos + 1] + 2) * 4
                    proto = b[l4_pos]
                    l4_pos += ah_len
                    l4_len -= ah_len
            elif nib == 6:
                if pos + 40 > end:
                    warn[W_TRUNCATED_IP] += 1
                    return False
                ip_pos = pos
                l4_len = be16(b, pos + 4)
                if l4_len == 0:             # jumbogram or TSO: fall back to the frame length
                    l4_len = origlen - (pos - start) - 40
                proto = b[pos + 6]
                src_hi = be64u(b, pos + 8)
                src_lo = be64u(b, pos + 16)
                dst_hi = be64u(b, pos + 24)
                dst_lo = be64u(b, pos + 32)
                ipv = 6
                if pos + 40 + l4_len < end:
                    end = pos + 40 + l4_len
                l4_pos = pos + 40
                # Extension headers: hop-by-hop, routing, destination options, fragment, AH.
                while proto == 0 or proto == 43 or proto == 60 or proto == 44 or proto == 51:
                    if l4_pos + 8 > end:
                        return False
                    nxt = b[l4_pos]
                    if proto == 44:
                        frag = be16(b, l4_pos + 2)
                        if (frag & 0xFFF9) != 0 and reasm and may_carry_tcp(nxt) and \
                                be16(b, ip_pos + 4) != 0 and \
                                ip_pos + 40 + be16(b, ip_pos + 4) <= end:
                            out[C_FRAG_IP] = ip_pos
                            out[C_FRAG_AT] = l4_pos
                            out[C_TUNNELED] = tunneled
                            return False
                        if (frag & 0xFFF8) != 0:
                            if nxt == PROTO_TCP:
                                warn[W_FRAGMENT] += 1
                            return False
                        elen = 8
                    elif proto == 51:
                        elen = (<int64_t>b[l4_pos + 1] + 2) * 4
                    else:
                        elen = (<int64_t>b[l4_pos + 1] + 1) * 8
                    l4_pos += elen
                    l4_len -= elen
                    proto = nxt
            else:
                return False
            if proto == PROTO_TCP:
                out[C_IPV] = ipv
                out[C_SRC_HI] = <int64_t>src_hi
                out[C_SRC_LO] = <int64_t>src_lo
                out[C_DST_HI] = <int64_t>dst_hi
                out[C_DST_LO] = <int64_t>dst_lo
                out[C_TUNNELED] = tunneled
                if not decode_tcp(b, l4_pos, end, l4_len, out, warn, verify, ipv, ip_pos,
                                  dst_pos, marks):
                    return False
                if tunneled:
                    warn[W_TUNNELED] += 1
                return True
            if proto == PROTO_IPIP or proto == PROTO_IPV6:
                pos = l4_pos
                tunneled = 1
                kind = K_IP
            elif proto == PROTO_GRE:
                pos = l4_pos
                kind = decode_gre_kind(b, pos, end)
                if kind == K_DONE:
                    if pos + 4 <= end and be16(b, pos + 2) != 0:   # 0: a keepalive
                        warn[W_ENCAP] += 1
                    return False
                pos += gre_header_len(b, pos, end)
                tunneled = 1
            elif proto == PROTO_UDP:
                if l4_pos + 8 > end:
                    return False
                sport = be16(b, l4_pos)
                dport = be16(b, l4_pos + 2)
                pos = l4_pos + 8
                kind = udp_tunnel(b, pos, end, sport, dport, &hdr)
                if kind == K_DONE:
                    if hdr < 0:
                        warn[W_ENCAP] += 1
                    return False
                pos += hdr
                tunneled = 1
            else:
                return False
    return False


cdef int64_t nflog_payload(const uint8_t[::1] b, int64_t pos, int64_t end) noexcept nogil:
    """Position of the NFULA_PAYLOAD value (the IP packet) of the NFLOG record at ``pos``, or
    -1. The 4-byte header (family, version, resource id) is followed by TLVs whose length and
    type are in the capturing host's byte order, each padded to 4 bytes; the order is taken
    from the first TLV (a length that fits and a small type)."""
    cdef int64_t p = pos + 4, tlen, ttype
    cdef bint little
    if p + 4 > end:
        return -1
    tlen = <int64_t>b[p] | (<int64_t>b[p + 1] << 8)
    ttype = (<int64_t>b[p + 2] | (<int64_t>b[p + 3] << 8)) & 0x7FFF
    little = tlen >= 4 and p + tlen <= end and ttype < 256
    while p + 4 <= end:
        if little:
            tlen = <int64_t>b[p] | (<int64_t>b[p + 1] << 8)
            ttype = (<int64_t>b[p + 2] | (<int64_t>b[p + 3] << 8)) & 0x7FFF
        else:
            tlen = be16(b, p)
            ttype = be16(b, p + 2) & 0x7FFF
        if tlen < 4 or p + tlen > end:
            return -1
        if ttype == 9:                      # NFULA_PAYLOAD
            return p + 4
        p += (tlen + 3) & ~3
    return -1


cdef int64_t gre_header_len(const uint8_t[::1] b, int64_t pos, int64_t end) noexcept nogil:
    """Length of the GRE header at ``pos``; only called after decode_gre_kind found its first
    4 bytes within ``end``."""
    cdef int64_t flags = be16(b, pos)
    cdef int64_t n = 4
    cdef int64_t proto
    if flags & 0x8000 or flags & 0x4000:    # checksum or routing present: checksum+offset word
        n += 4
    if flags & 0x2000:                      # key
        n += 4
    if flags & 0x1000:                      # sequence number
        n += 4
    if (flags & 0x0007) == 1 and flags & 0x0080:   # enhanced GRE (PPTP) acknowledgment
        n += 4
    proto = be16(b, pos + 2)
    if proto == 0x88BE and flags & 0x1000:  # ERSPAN type II header
        n += 8
    elif proto == 0x22EB:                   # ERSPAN type III header (+ platform subheader)
        if pos + n + 12 <= end and b[pos + n + 11] & 0x01:
            n += 8
        n += 12
    elif proto == 0x883E:                   # WCCP redirect: a 4-byte header unless IPv4 follows
        if pos + n < end and (b[pos + n] >> 4) != 4:   # at once (WCCPv1, as tshark tells them)
            n += 4
    return n


cdef int64_t decode_gre_kind(const uint8_t[::1] b, int64_t pos, int64_t end) noexcept nogil:
    cdef int64_t proto
    if pos + 4 > end:
        return K_DONE
    proto = be16(b, pos + 2)
    if proto == 0x0800 or proto == 0x86DD or proto == 0x883E:
        return K_IP
    if proto == 0x6558 or proto == 0x88BE or proto == 0x22EB:
        return K_ETH
    if proto == 0x880B:
        return K_PPP_HDLC
    if proto == 0x8847:
        return K_MPLS
    if proto >= 0x8200 and proto <= 0x8300:  # Aruba WLAN management tunnel: 802.11 frames
        return K_WLAN
    return K_DONE


cdef int64_t udp_tunnel(const uint8_t[::1] b, int64_t pos, int64_t end, int64_t sport,
                        int64_t dport, int64_t* hdr_out) noexcept nogil:
    """Recognise a UDP tunnel payload at pos. Returns the kind and sets ``*hdr_out`` to the
    header length, or returns K_DONE with ``*hdr_out`` = 0 (not a tunnel, or one carrying
    nothing to decode) or -1 (a tunnel whose payload the reader does not decode: counted)."""
    cdef int64_t avail = end - pos
    cdef int64_t optlen, proto, kind, idlen, siglen, hdr
    cdef uint8_t nxt
    hdr_out[0] = 0
    if (dport == 4789 or sport == 4789) and avail >= 8 and (b[pos] & 0x08):
        hdr_out[0] = 8
        return K_ETH                                        # VXLAN
    if (dport == 6081 or sport == 6081) and avail >= 8 and (b[pos] >> 6) == 0:
        optlen = <int64_t>(b[pos] & 0x3F) * 4               # Geneve
        proto = be16(b, pos + 2)
        if proto == 0x6558:
            hdr_out[0] = 8 + optlen
            return K_ETH
        if proto == 0x0800 or proto == 0x86DD:
            hdr_out[0] = 8 + optlen
            return K_IP
        hdr_out[0] = -1
        return K_DONE
    if (dport == 2152 or sport == 2152) and avail >= 8:    # GTP-U G-PDU
        return gtp_u(b, pos, end, hdr_out)
    if (dport == 4754 or sport == 4754) and avail >= 4:    # GRE in UDP (RFC 8086)
        kind = decode_gre_kind(b, pos, end)
        if kind == K_DONE:
            hdr_out[0] = -1
            return K_DONE
        hdr_out[0] = gre_header_len(b, pos, end)
        return kind
    if (dport == 1701 or sport == 1701) and avail >= 6:    # L2TP
        return l2tp(b, pos, end, hdr_out)
    if (dport == 6635 or sport == 6635) and avail >= 4:    # MPLS in UDP (RFC 7510)
        return K_MPLS
    if (dport == 5072 or sport == 5072) and avail >= 8:    # AYIYA
        idlen = <int64_t>1 << (b[pos] >> 4)
        siglen = <int64_t>(b[pos + 1] >> 4) * 4
        nxt = b[pos + 3]
        hdr = 8 + idlen + siglen
        if (nxt == PROTO_IPV6 or nxt == PROTO_IPIP) and hdr < avail:
            hdr_out[0] = hdr
            return K_IP
        if nxt != 59:                                       # 59: none (a heartbeat)
            hdr_out[0] = -1
        return K_DONE
    if dport == 3544 or sport == 3544:                       # Teredo
        hdr = 0
        if avail >= 4 and b[pos] == 0 and b[pos + 1] == 1:  # authentication indicator
            hdr = 4 + <int64_t>b[pos + 2] + <int64_t>b[pos + 3] + 9
        if pos + hdr + 2 <= end and b[pos + hdr] == 0 and b[pos + hdr + 1] == 0:
            hdr += 8                                         # origin indication
        if pos + hdr + 40 <= end and (b[pos + hdr] >> 4) == 6:
            hdr_out[0] = hdr
            return K_IP
        return K_DONE
    # GTP-U on another port: recognised by its shape (version 1, PT, G-PDU) as Zeek does.
    if avail >= 8 and (b[pos] & 0xF0) == 0x30 and b[pos + 1] == 0xFF:
        kind = gtp_u(b, pos, end, &hdr)
        if kind != K_DONE and pos + hdr < end and ((b[pos + hdr] >> 4) == 4 or
                                                   (b[pos + hdr] >> 4) == 6):
            hdr_out[0] = hdr
            return kind
    return K_DONE


cdef int64_t l2tp(const uint8_t[::1] b, int64_t pos, int64_t end,
                  int64_t* hdr_out) noexcept nogil:
    """L2TP over UDP at ``pos`` (callers checked 6 bytes are there). Version 2 data messages
    (RFC 2661 section 3.1: flags and version, optional length, tunnel and session ids, optional
    Ns/Nr, optional offset size and padding) carry PPP: K_PPP_HDLC and the header length.
    Control messages carry nothing to decode (K_DONE, 0); anything else (L2TPv3, a header
    cut short) is K_DONE with -1, counted by the caller."""
    cdef int64_t flags = be16(b, pos)
    cdef int64_t hdr = 2
    hdr_out[0] = -1
    if (flags & 0x000F) != 2:
        return K_DONE
    if flags & 0x8000:                      # T: control message
        hdr_out[0] = 0
        return K_DONE
    if flags & 0x4000:                      # L: length field
        hdr += 2
    hdr += 4                                # tunnel id, session id
    if flags & 0x0800:                      # S: Ns, Nr
        hdr += 4
    if flags & 0x0200:                      # O: offset size, then that much padding
        if pos + hdr + 2 > end:
            return K_DONE
        hdr += 2 + be16(b, pos + hdr)
    if pos + hdr >= end:
        return K_DONE
    hdr_out[0] = hdr
    return K_PPP_HDLC


cdef int64_t gtp_u(const uint8_t[::1] b, int64_t pos, int64_t end,
                   int64_t* hdr_out) noexcept nogil:
    """GTP-U G-PDU at ``pos`` (callers checked 8 bytes are there): K_IP and its header length
    in ``*hdr_out``, or K_DONE and 0."""
    cdef int64_t hdr, elen
    cdef uint8_t nxt
    hdr_out[0] = 0
    if (b[pos] >> 5) != 1 or b[pos + 1] != 0xFF:
        return K_DONE
    hdr = 8
    if b[pos] & 0x07:
        if pos + 12 > end:
            return K_DONE
        hdr = 12
        nxt = b[pos + 11]
        while nxt != 0:
            if pos + hdr + 1 > end:
                return K_DONE
            elen = <int64_t>b[pos + hdr] * 4
            if elen == 0 or pos + hdr + elen > end:
                return K_DONE
            nxt = b[pos + hdr + elen - 1]
            hdr += elen
    if pos + hdr >= end:
        return K_DONE
    hdr_out[0] = hdr
    return K_IP


def decode_records(const uint8_t[::1] buf, const int64_t[::1] rec_off,
                   const int64_t[::1] rec_caplen, const int64_t[::1] rec_origlen,
                   const int64_t[::1] rec_ts, const int64_t[::1] rec_link, int64_t first_frame,
                   int64_t[::1] scratch, int64_t[::1] warn, bint verify, bint marks,
                   uint8_t[::1] seg_flags, int64_t[::1] frame, int64_t[::1] ts_ns,
                   uint8_t[::1] ip_version, uint64_t[::1] src_hi, uint64_t[::1] src_lo,
                   uint64_t[::1] dst_hi, uint64_t[::1] dst_lo, uint16_t[::1] sport,
                   uint16_t[::1] dport, uint32_t[::1] seq, uint32_t[::1] ack,
                   uint16_t[::1] flags, uint16_t[::1] win, int32_t[::1] payload_len,
                   int32_t[::1] frame_len, uint16_t[::1] mss, int8_t[::1] wscale,
                   uint8_t[::1] sack_perm, uint8_t[::1] has_ts, uint32_t[::1] tsval,
                   uint32_t[::1] tsecr, uint8_t[::1] tunneled, int32_t[::1] ip_len,
                   uint8_t[::1] app_marks, uint8_t[::1] ttl, int32_t[::1] ip_id,
                   uint8_t[::1] ip_df, int64_t[:, ::1] frags=None):
    """Decode ``len(rec_off)`` records; TCP rows are packed at the top of the typed column
    arrays (``PacketBatch`` columns, in ``COLUMNS`` order; the bool columns are taken as bytes).
    ``scratch``: an int64 row of N_COLS (kept for the callers; each record is now decoded into
    a row on the C stack). With ``marks``, ``seg_flags`` (uint8) receives each row's SEG_* bits.

    Returns the number of TCP rows written. With ``frags`` (int64, at least ``len(rec_off)``
    rows of 4), IP fragments are held for reassembly instead: each gets a row (record index,
    IP header position, payload / fragment header position, tunneled) and the return value
    is (TCP rows, fragment rows).
    """
    cdef Py_ssize_t n = rec_off.shape[0]
    cdef Py_ssize_t nbuf = buf.shape[0]
    cdef Py_ssize_t i, j = 0, k, bad = -1, shortest
    cdef int64_t start, caplen
    cdef int64_t r[N_COLS]
    cdef int64_t w[N_WARN]
    cdef Py_ssize_t nf = 0
    cdef bint reasm = frags is not None
    if rec_caplen.shape[0] < n or rec_origlen.shape[0] < n or rec_ts.shape[0] < n \
            or rec_link.shape[0] < n:
        raise ValueError("decode_records: record arrays shorter than rec_off")
    shortest = min(frame.shape[0], ts_ns.shape[0], ip_version.shape[0], src_hi.shape[0],
                   src_lo.shape[0], dst_hi.shape[0], dst_lo.shape[0], sport.shape[0],
                   dport.shape[0], seq.shape[0], ack.shape[0], flags.shape[0], win.shape[0],
                   payload_len.shape[0], frame_len.shape[0], mss.shape[0], wscale.shape[0],
                   sack_perm.shape[0], has_ts.shape[0], tsval.shape[0], tsecr.shape[0],
                   tunneled.shape[0], ip_len.shape[0], app_marks.shape[0], ttl.shape[0],
                   ip_id.shape[0], ip_df.shape[0])
    if marks and seg_flags.shape[0] < shortest:
        shortest = seg_flags.shape[0]
    if shortest < n:
        raise ValueError("decode_records: a column array is shorter than rec_off")
    if warn.shape[0] < N_WARN:
        raise ValueError(f"decode_records: warn must hold {N_WARN} counters")
    if reasm and (frags.shape[0] < n or frags.shape[1] < 4):
        raise ValueError("decode_records: frags must have a row of 4 for every record")
    for k in range(N_COLS):
        r[k] = 0
    for k in range(N_WARN):
        w[k] = 0
    with nogil:
        for i in range(n):
            start = rec_off[i]
            caplen = rec_caplen[i]
            # the record must lie within buf (a negative caplen decodes to nothing)
            if start < 0 or start > nbuf or start + caplen > nbuf:
                bad = i
                break
            if not decode_record(buf, start, caplen, rec_origlen[i], rec_link[i], r, w, verify,
                                 marks, reasm):
                if r[C_FRAG_IP] >= 0:       # only ever set with reasm
                    frags[nf, 0] = i
                    frags[nf, 1] = r[C_FRAG_IP]
                    frags[nf, 2] = r[C_FRAG_AT]
                    frags[nf, 3] = r[C_TUNNELED]
                    nf += 1
            else:
                frame[j] = first_frame + i
                ts_ns[j] = rec_ts[i]
                ip_version[j] = <uint8_t>r[C_IPV]
                # the int64 row holds the address bits; the columns are uint64
                src_hi[j] = <uint64_t>r[C_SRC_HI]
                src_lo[j] = <uint64_t>r[C_SRC_LO]
                dst_hi[j] = <uint64_t>r[C_DST_HI]
                dst_lo[j] = <uint64_t>r[C_DST_LO]
                # narrowing stores truncate (e.g. a wscale byte of 200 -> -56,
                # a 32-bit length above 2**31 wraps in the int32 columns)
                sport[j] = <uint16_t>r[C_SPORT]
                dport[j] = <uint16_t>r[C_DPORT]
                seq[j] = <uint32_t>r[C_SEQ]
                ack[j] = <uint32_t>r[C_ACK]
                flags[j] = <uint16_t>r[C_FLAGS]
                win[j] = <uint16_t>r[C_WIN]
                payload_len[j] = <int32_t>r[C_PLEN]
                frame_len[j] = <int32_t>rec_origlen[i]
                mss[j] = <uint16_t>r[C_MSS]
                wscale[j] = <int8_t>r[C_WSCALE]
                sack_perm[j] = r[C_SACKP] != 0
                has_ts[j] = r[C_HASTS] != 0
                tsval[j] = <uint32_t>r[C_TSVAL]
                tsecr[j] = <uint32_t>r[C_TSECR]
                tunneled[j] = r[C_TUNNELED] != 0
                ip_len[j] = <int32_t>r[C_IPLEN]
                app_marks[j] = <uint8_t>r[C_APP]
                ttl[j] = <uint8_t>r[C_TTL]
                ip_id[j] = <int32_t>r[C_IPID]
                ip_df[j] = r[C_DF] != 0
                if marks:
                    seg_flags[j] = <uint8_t>r[C_SEG]
                j += 1
    for k in range(N_WARN):
        warn[k] += w[k]
    if bad >= 0:
        raise ValueError(f"decode_records: record {bad} (offset {rec_off[bad]}, length "
                         f"{rec_caplen[bad]}) lies outside the buffer of {nbuf} bytes")
    if reasm:
        return j, nf
    return j
