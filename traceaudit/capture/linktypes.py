"""Link-layer header types the built-in reader decodes (numbers from the tcpdump.org registry)."""

NULL = 0             # BSD loopback, address family in host byte order
ETHERNET = 1
PPP = 9
FDDI = 10            # FDDI, then 802.2 LLC/SNAP
RAW_BSD12 = 12       # raw IP on OpenBSD
RAW_BSD14 = 14       # raw IP on some BSDs
PPP_HDLC = 50
RAW = 101            # raw IPv4/IPv6, version nibble decides
LOOP = 108           # OpenBSD loopback, family in network byte order
LINUX_SLL = 113      # Linux "cooked" v1 (tcpdump -i any, older libpcap)
IPV4 = 228
IPV6 = 229
LINUX_SLL2 = 276     # Linux "cooked" v2 (tcpdump -i any, libpcap >= 1.10)

SUPPORTED = {
    NULL: "null", ETHERNET: "ether", PPP: "ppp", FDDI: "fddi", RAW_BSD12: "raw", RAW_BSD14: "raw",
    PPP_HDLC: "ppp-hdlc", RAW: "raw", LOOP: "loop", LINUX_SLL: "linux-sll", IPV4: "ipv4",
    IPV6: "ipv6", LINUX_SLL2: "linux-sll2",
}


def name(linktype: int) -> str:
    return SUPPORTED.get(linktype, f"linktype {linktype}")
