"""Link-layer header types the built-in reader decodes (numbers from the tcpdump.org registry)."""

NULL = 0             # BSD loopback, address family in host byte order
ETHERNET = 1
PPP = 9
FDDI = 10            # FDDI, then 802.2 LLC/SNAP
RAW_BSD12 = 12       # raw IP on OpenBSD
RAW_BSD14 = 14       # raw IP on some BSDs
PPP_HDLC = 50
RAW = 101            # raw IPv4/IPv6, version nibble decides
CHDLC = 104          # Cisco HDLC: address 0x0F/0x8F, control, ethertype
IEEE802_11 = 105     # 802.11 frames (data frames carry LLC/SNAP)
LOOP = 108           # OpenBSD loopback, family in network byte order
LINUX_SLL = 113      # Linux "cooked" v1 (tcpdump -i any, older libpcap)
IEEE802_11_RADIOTAP = 127   # radiotap header, then an 802.11 frame
# ARCNET: source, destination, a 2-byte offset (tshark reads link type 129 as Linux ARCNET),
# protocol ID, and for RFC 1201 protocols a split flag and sequence number
ARCNET_BSD = 129
IPV4 = 228
IPV6 = 229
NFLOG = 239          # Linux NFLOG: header, then TLVs; the IP packet is NFULA_PAYLOAD (type 9)
# IP over InfiniBand: a 40-byte global route header (source QPN, GIDs), then RFC 4391 section 6's
# ethertype and 2 reserved bytes (as tshark reads link type 242)
IPOIB = 242
LINUX_SLL2 = 276     # Linux "cooked" v2 (tcpdump -i any, libpcap >= 1.10)

SUPPORTED = {
    NULL: "null", ETHERNET: "ether", PPP: "ppp", FDDI: "fddi", RAW_BSD12: "raw", RAW_BSD14: "raw",
    PPP_HDLC: "ppp-hdlc", RAW: "raw", LOOP: "loop", LINUX_SLL: "linux-sll", IPV4: "ipv4",
    IPV6: "ipv6", LINUX_SLL2: "linux-sll2", CHDLC: "cisco-hdlc", IEEE802_11: "802.11",
    IEEE802_11_RADIOTAP: "802.11-radiotap", ARCNET_BSD: "arcnet", NFLOG: "nflog", IPOIB: "ipoib",
}


def name(linktype: int) -> str:
    return SUPPORTED.get(linktype, f"linktype {linktype}")
