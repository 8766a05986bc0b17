#!/usr/bin/env python3
"""Record the two-vantage sample captures: client -- router -- server, three namespaces.

Run as root:  python3 sample_pcaps/record_path.py [--only NAME[,NAME...]] [--out DIR] [--list]

Where ``record.py`` puts both endpoints on one loopback, these scenarios need something
*between* them that resets connections on its own: a stateful firewall whose conntrack entry
timed out, the same behind masquerading NAT, and a reset injector.  For every scenario the
recorder

  1. creates three namespaces ``ta-path-<role>-<pid>`` (client, router, server) joined by two
     veth links: client 10.21.1.2/24 -- 10.21.1.1 router 10.21.2.1 -- 10.21.2.2/24 server,
     routes via the router, ``net.ipv4.ip_forward=1`` in the router; ``gso_max_segs 1`` on
     every veth so that each capture shows wire-sized segments;
  2. runs itself as a child (``--child NAME``) that enters the namespaces thread by thread
     (``setns``): sockets are created in their namespace, ``ss`` runs in both endpoint
     namespaces, tcpdump runs on the client's veth, on the server's veth and (for the
     truth only, not kept) on both router interfaces (``-i any``, which records direction);
  3. writes two captures and two truth files, ``NAME-client.pcap`` and ``NAME-server.pcap``
     (the suffix keeps a directory scan from taking them for one rotated set); the router's
     own capture gives ``path_packets``: every packet the router created (it went out of one
     router interface without coming in on the other) or dropped (it came in and never went
     out), checked against the nft rule counters and the injector's log;
  4. always deletes the three namespaces, killing whatever still runs in them.

Only the standard library is used; shared pieces (capture, ss sampler, truth helpers,
namespace clean-up) come from ``record.py``.
"""
from __future__ import annotations

import argparse
import ctypes
import json
import os
import random
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))
import record as rec  # noqa: E402  (the sibling recorder: shared machinery)

HERE = Path(__file__).resolve().parent

ROLES = ("client", "router", "server")
VANTAGES = ("client", "server")
# interface names live inside their namespace, so they need not be unique on the host
IFACE = {"client": "veth-c", "router-client": "veth-rc", "router-server": "veth-rs",
         "server": "veth-s"}
ADDR = {"client": "10.21.1.2", "router-client": "10.21.1.1", "router-server": "10.21.2.1",
        "server": "10.21.2.2"}
SERVICE_PORT = 5432
CLIENT_PORT = 40000

# the router's own sysctls, recorded in the truth
ROUTER_SYSCTLS = ["net.ipv4.ip_forward", "net.netfilter.nf_conntrack_tcp_loose",
                  "net.netfilter.nf_conntrack_tcp_timeout_established"]

STABLE_S = 0.3  # a state is stable when ss sees it for this long (see stable_by_time)
CLOSE_STEP = 0.6  # designed waits between closing steps: twice STABLE_S
IDLE_TIMEOUT = 4  # conntrack's established timeout in the router (s)
SURVIVE_IDLES = [2.0, 3.0, 3.7]  # idle times below the timeout: the next request passes
RESET_IDLES = [4.3, 5.0, 6.0]  # idle times above it: the router answers with a reset

# PostgreSQL-shaped messages: a simple Query ('Q') and one DataRow ('D') of one column
_SQL, _VALUE = b"SELECT now() AS ping;\x00", b"2026-12-06 19:00:00Z"
QUERY = b"Q" + struct.pack("!I", 4 + len(_SQL)) + _SQL
ROW = b"D" + struct.pack("!IHI", 10 + len(_VALUE), 1, len(_VALUE)) + _VALUE


# --------------------------------------------------------------------------------------
# Namespaces
# --------------------------------------------------------------------------------------
_libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWNET = 0x40000000


def ns_name(role: str, tag: str) -> str:
    return f"ta-path-{role}-{tag}"


def _setns(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({path}): {os.strerror(err)}")
    finally:
        os.close(fd)


@contextmanager
def inside(ns: str):
    """Run the block (this thread only) inside network namespace ``ns``.

    Sockets created in the block stay in ``ns`` for life; programs started in it run there."""
    own = f"/proc/self/task/{threading.get_native_id()}/ns/net"
    back = os.open(own, os.O_RDONLY)
    try:
        _setns(f"/run/netns/{ns}")
        yield
    finally:
        try:
            if _libc.setns(back, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns back to the original namespace")
        finally:
            os.close(back)


def sh(ns: str, *cmd: str, input_: str | None = None) -> str:
    return subprocess.run(["ip", "netns", "exec", ns, *cmd], input=input_, text=True,
                          capture_output=True, check=True).stdout


def build_topology(tag: str) -> dict[str, str]:
    """Three namespaces and two veth links; returns {role: namespace name}."""
    ns = {r: ns_name(r, tag) for r in ROLES}
    for n in ns.values():
        subprocess.run(["ip", "netns", "add", n], check=True)
        subprocess.run(["ip", "-n", n, "link", "set", "lo", "up"], check=True)
        # no IPv6 on the links: no router solicitations or MLD reports in the captures
        sh(n, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1",
           "net.ipv6.conf.default.disable_ipv6=1")
    for side in ("client", "server"):
        a, b = IFACE[side], IFACE[f"router-{side}"]
        subprocess.run(["ip", "link", "add", a, "netns", ns[side], "type", "veth", "peer",
                        "name", b, "netns", ns["router"]], check=True)
        for n, ifc in ((ns[side], a), (ns["router"], b)):
            # one wire-sized segment per skb: no TSO/GSO super-segments in the captures
            subprocess.run(["ip", "-n", n, "link", "set", ifc, "gso_max_segs", "1", "up"],
                           check=True)
        subprocess.run(["ip", "-n", ns[side], "addr", "add", f"{ADDR[side]}/24", "dev", a],
                       check=True)
        subprocess.run(["ip", "-n", ns["router"], "addr", "add",
                        f"{ADDR['router-' + side]}/24", "dev", b], check=True)
        subprocess.run(["ip", "-n", ns[side], "route", "add", "default", "via",
                        ADDR[f"router-{side}"]], check=True)
    sh(ns["router"], "sysctl", "-qw", "net.ipv4.ip_forward=1")
    return ns


def remove_topology(tag: str) -> None:
    for r in ROLES:  # deleting a namespace deletes its veth ends too
        rec.kill_namespace(ns_name(r, tag))


# --------------------------------------------------------------------------------------
# A minimal pcap reader (Ethernet and LINUX_SLL2, IPv4/TCP): for the router's truth
# --------------------------------------------------------------------------------------
def read_tcp_packets(path: Path) -> list[dict]:
    data = path.read_bytes()
    magic = data[:4]
    endian = "<" if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    div = 1e9 if magic in (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d") else 1e6
    linktype = struct.unpack(endian + "I", data[20:24])[0]
    out, off, frame = [], 24, 0
    while off + 16 <= len(data):
        sec, frac, incl, _ = struct.unpack(endian + "IIII", data[off:off + 16])
        pkt = data[off + 16:off + 16 + incl]
        off += 16 + incl
        frame += 1
        ifindex = outgoing = None
        if linktype == 1:  # Ethernet
            if pkt[12:14] != b"\x08\x00":
                continue
            ip = pkt[14:]
        elif linktype == 276:  # LINUX_SLL2
            if pkt[0:2] != b"\x08\x00":
                continue
            ifindex = struct.unpack(">I", pkt[4:8])[0]
            outgoing = pkt[10] == 4  # PACKET_OUTGOING
            ip = pkt[20:]
        else:
            raise ValueError(f"{path}: link type {linktype} not handled")
        if len(ip) < 20 or ip[0] >> 4 != 4 or ip[9] != 6:
            continue
        ihl = (ip[0] & 15) * 4
        total = struct.unpack(">H", ip[2:4])[0]
        tcp = ip[ihl:]
        doff = (tcp[12] >> 4) * 4
        opts = tcp[20:doff]
        out.append({
            "frame": frame, "t": round(sec + frac / div, 6), "ifindex": ifindex,
            "outgoing": outgoing,
            "src": f"{socket.inet_ntoa(ip[12:16])}:{struct.unpack('>H', tcp[0:2])[0]}",
            "dst": f"{socket.inet_ntoa(ip[16:20])}:{struct.unpack('>H', tcp[2:4])[0]}",
            "ttl": ip[8], "ip_id": struct.unpack(">H", ip[4:6])[0],
            "df": bool(struct.unpack(">H", ip[6:8])[0] & 0x4000),
            "seq": struct.unpack(">I", tcp[4:8])[0], "ack": struct.unpack(">I", tcp[8:12])[0],
            "flags": tcp_flags(tcp[13]), "len": total - ihl - doff,
            "timestamps": _has_ts_option(opts),
        })
    return out


def tcp_flags(b: int) -> str:
    return "".join(n for bit, n in ((2, "S"), (16, "A"), (8, "P"), (1, "F"), (4, "R"))
                   if b & bit)


def _has_ts_option(opts: bytes) -> bool:
    i = 0
    while i < len(opts):
        kind = opts[i]
        if kind == 0:
            break
        if kind == 1:
            i += 1
            continue
        if kind == 8:
            return True
        if i + 1 >= len(opts) or opts[i + 1] < 2:
            break
        i += opts[i + 1]
    return False


def key(p: dict) -> tuple:
    """What the router leaves unchanged (NAT rewrites addresses and ports, not these)."""
    return (p["seq"], p["ack"], p["flags"], p["len"])


def path_packets(router_pcap: Path, ifnames: dict[int, str]) -> list[dict]:
    """Packets the router created or dropped, from its two interfaces' capture.

    Forwarded: in on one interface, out on the other with the same seq/ack/flags/length.
    Created: out without a matching in.  Dropped: in without a matching out."""
    pk = read_tcp_packets(router_pcap)
    for p in pk:
        p["iface"] = ifnames.get(p["ifindex"], str(p["ifindex"]))
    other = {IFACE["router-client"]: IFACE["router-server"],
             IFACE["router-server"]: IFACE["router-client"]}
    ins = [p for p in pk if not p["outgoing"]]
    outs = [p for p in pk if p["outgoing"]]
    used: set[int] = set()
    found = []
    for p in ins:  # every incoming packet should leave by the other interface
        m = next((q for q in outs if id(q) not in used and q["iface"] == other[p["iface"]]
                  and key(q) == key(p) and q["t"] >= p["t"] - 0.001), None)
        if m is None:
            found.append(dict(p, kind="dropped"))
        else:
            used.add(id(m))
    found += [dict(p, kind="created") for p in outs if id(p) not in used]
    result = []
    for p in sorted(found, key=lambda p: p["t"]):
        toward = "client" if (p["iface"] == IFACE["router-client"]) == (p["kind"] == "created") \
            else "server"
        result.append({"kind": p["kind"], "toward": toward, "t": p["t"], "src": p["src"],
                       "dst": p["dst"], "seq": p["seq"], "ack": p["ack"], "flags": p["flags"],
                       "len": p["len"], "ttl": p["ttl"], "ip_id": p["ip_id"], "df": p["df"],
                       "timestamps": p["timestamps"], "router_iface": p["iface"]})
    return result


def frame_in(vantage_pkts: list[dict], pp: dict, used: set[int]) -> int | None:
    """The frame number of path packet ``pp`` in a vantage capture, if it appears there."""
    for p in vantage_pkts:
        if p["frame"] not in used and key(p) == key(pp) and abs(p["t"] - pp["t"]) < 0.5:
            used.add(p["frame"])
            return p["frame"]
    return None


# --------------------------------------------------------------------------------------
# Child: the scenario, with threads entering the namespaces
# --------------------------------------------------------------------------------------
class PathSampler(rec.Sampler):
    """``ss -tanH`` in the client and the server namespace, back to back, one merged table.

    The two tables cannot collide: every key holds the local address of its namespace."""

    def __init__(self, ns: dict[str, str]):
        super().__init__()
        self.ns = ns

    def run(self) -> None:
        while not self._stop_evt.is_set():
            tb = time.time()
            table = {}
            for role in VANTAGES:
                with inside(self.ns[role]):
                    out = subprocess.run(["ss", "-tanH"], capture_output=True, text=True).stdout
                for line in out.splitlines():
                    f = line.split()
                    if len(f) >= 5:
                        table[(f[3], f[4])] = rec.SS_STATE.get(f[0], f[0])
            self.samples.append((tb, time.time(), table))


class PathCtx(rec.Ctx):
    """record.Ctx whose sockets live in the client or server namespace, plus the router."""

    def __init__(self, scenario: "PathScenario", ns: dict[str, str]):
        super().__init__(scenario)
        self.ns = ns
        self.injections: list[dict] = []  # what the injector says it sent
        self.nat_peer: dict[int, str] = {}  # connection index -> client as the server sees it

    def router_nft(self, script: str, what: str) -> None:
        sh(self.ns["router"], "nft", "-f", "-", input_=script)
        self.intervene(what)

    def listen_at(self, port: int = SERVICE_PORT) -> socket.socket:
        with inside(self.ns["server"]):
            return self.listen(ADDR["server"], port)

    def open_conn(self, lsn: socket.socket, cport: int, closer: str, kind: str,
                  **extra) -> tuple[socket.socket, socket.socket]:
        with inside(self.ns["client"]):
            c = self.client_socket(ADDR["client"], cport)
        saddr, sport = lsn.getsockname()[:2]
        i = self.conn(ADDR["client"], cport, saddr, sport, closer, kind, **extra)
        self.act("client", f"connect() from {rec.ep(ADDR['client'], cport)} to "
                           f"{rec.ep(saddr, sport)}")
        c.connect((saddr, sport))
        s, peer = lsn.accept()
        s.settimeout(10)
        self.keep.append(s)
        self.nat_peer[i] = rec.ep(*peer[:2])
        self.act("server", f"accept() (peer {rec.ep(*peer[:2])})")
        return c, s

    def query(self, c: socket.socket, s: socket.socket) -> None:
        self.send(c, "client", QUERY, "query")
        self.recv_exact(s, "server", len(QUERY), "query")
        self.send(s, "server", ROW, "row")
        self.recv_exact(c, "client", len(ROW), "row")


@dataclass
class Vantage:
    required: list[dict]
    signature: list[dict]
    expect: dict  # {conn index: {"client": [...], "server": [...]}} (stable states)
    neutral: list[str] = field(default_factory=list)
    closers: dict = field(default_factory=dict)  # {conn index: (closer, close_kind)} here
    tool_says: str = ""


@dataclass
class PathScenario:
    name: str
    description: str
    run: Callable[[PathCtx], None]
    client: Vantage
    server: Vantage
    nft: str
    nat: bool = False
    router_sysctls: dict = field(default_factory=dict)
    idle_timeout_s: float | None = None
    max_seconds: float = 20.0
    notes: str = ""

    def vantage(self, v: str) -> Vantage:
        return self.client if v == "client" else self.server

    def capture(self, v: str) -> str:
        return f"{self.name}-{v}.pcap"


SCENARIOS: dict[str, PathScenario] = {}

FIREWALL_NFT = """\
table inet ta_path {
  chain forward {
    type filter hook forward priority 0; policy accept;
    ct state established,related counter accept
    tcp flags & (syn | ack | fin | rst) == syn ct state new counter accept
    meta l4proto tcp ct state invalid counter comment "no conntrack entry"
    meta l4proto tcp counter reject with tcp reset
  }
}
"""
NAT_NFT = FIREWALL_NFT + """\
table ip ta_path_nat {
  chain postrouting {
    type nat hook postrouting priority srcnat; policy accept;
    oifname "veth-rs" counter masquerade random
  }
}
"""
PLAIN_NFT = """\
table inet ta_path {
  chain forward {
    type filter hook forward priority 0; policy accept;
    meta l4proto tcp counter accept
  }
}
"""

RST = "tcp.flags.reset==1"
FROM_SERVER_C = f"ip.src=={ADDR['server']} && tcp.srcport=={SERVICE_PORT}"


def idle_required() -> list[dict]:
    n = len(SURVIVE_IDLES)
    out = []
    for i in range(n, n + len(RESET_IDLES)):
        out.append(rec.req("middlebox-reset", "server", i))
        out.append(rec.req("idle-timeout-reset", None, i))
    return out


def idle_expect() -> dict:
    n = len(SURVIVE_IDLES)
    graceful = {"client": ["ESTABLISHED", "FIN_WAIT_2", "TIME_WAIT"],
                "server": ["ESTABLISHED", "CLOSE_WAIT", "CLOSED"]}
    reset = {"client": ["ESTABLISHED", "CLOSED"], "server": ["ESTABLISHED"]}
    return {i: graceful if i < n else reset for i in range(n + len(RESET_IDLES))}


def idle_closers(vantage: str) -> dict:
    n = len(SURVIVE_IDLES)
    late = ("path", "reset") if vantage == "client" else ("none", "open")
    return {i: ("client", "graceful") if i < n else late
            for i in range(n + len(RESET_IDLES))}


def idle_signature(vantage: str, nat: bool) -> list[dict]:
    n_late = len(RESET_IDLES)
    conns = len(SURVIVE_IDLES) + n_late
    if vantage == "client":
        return [
            rec.sig("tcp.flags.syn==1 && tcp.flags.ack==0", "one handshake per connection",
                    count=conns),
            rec.sig(f"{RST} && ip.ttl==64 && {FROM_SERVER_C}",
                    "the router's resets: the server's address, TTL 64 (one hop short)",
                    count=n_late),
            rec.sig(f"{RST} && ip.ttl==63", "no reset forwarded from the server", count=0),
            rec.sig(f"{FROM_SERVER_C} && !({RST}) && ip.ttl!=63",
                    "every real server packet was forwarded once: TTL 63", count=0),
            rec.sig(f"{RST} && tcp.options.timestamp.tsval",
                    "the router's resets carry no timestamps option", count=0),
            rec.sig(f"{FROM_SERVER_C} && !({RST}) && !tcp.options.timestamp.tsval",
                    "every real server packet carries timestamps", count=0),
        ]
    client_at_server = ADDR["router-server"] if nat else ADDR["client"]
    sigs = [
        rec.sig("tcp.flags.syn==1 && tcp.flags.ack==0", "one handshake per connection",
                count=conns),
        rec.sig(RST, "the server side never sees a reset", count=0),
        rec.sig(f"ip.src=={client_at_server} && ip.ttl==63",
                "client packets arrive through the router (TTL 63)", min_=conns * 3),
        rec.sig(f"ip.src=={client_at_server} && tcp.len>0", "the late requests never arrive: "
                f"one query per connection, a second only on the {len(SURVIVE_IDLES)} survivors",
                count=conns + len(SURVIVE_IDLES)),
    ]
    if nat:
        sigs.append(rec.sig(f"ip.addr=={ADDR['client']}",
                            "masquerading: the client's own address never appears", count=0))
        sigs.append(rec.sig(f"tcp.srcport>={CLIENT_PORT} && tcp.srcport<{CLIENT_PORT + conns}",
                            "masquerade random: no client port survives the NAT", count=0))
    return sigs


def _idle_run(ctx: PathCtx) -> None:
    """Several connections: a query each, then idle for times bracketing the timeout."""
    lsn = ctx.listen_at()
    idles = SURVIVE_IDLES + RESET_IDLES
    conns, closing = [], []
    for i, idle in enumerate(idles):
        late = idle > IDLE_TIMEOUT
        c, s = ctx.open_conn(lsn, CLIENT_PORT + i, "path" if late else "client",
                             "reset" if late else "graceful", designed_idle_s=idle)
        ctx.query(c, s)
        conns.append((time.time() + idle, i, c, s))
        ctx.pause(0.05)
    for due, i, c, s in sorted(conns, key=lambda x: x[0]):
        time.sleep(max(0.0, due - time.time()))
        ctx.send(c, "client", QUERY, f"query after {idles[i]} s idle")
        if idles[i] < IDLE_TIMEOUT:
            ctx.recv_exact(s, "server", len(QUERY), "query")
            ctx.send(s, "server", ROW, "row")
            ctx.recv_exact(c, "client", len(ROW), "row")
            # close before the router forgets this connection too, in the background so
            # that the next late query leaves on time
            closing.append(threading.Thread(target=_close_gracefully, args=(ctx, c, s)))
            closing[-1].start()
        else:
            try:
                data = c.recv(100)
                raise RuntimeError(f"connection {i}: expected a reset, got {data!r}")
            except ConnectionResetError:
                ctx.act("client", "recv() failed: ECONNRESET (a reset with the server's address)")
    for th in closing:
        th.join(10)
    ctx.pause(CLOSE_STEP)


def _close_gracefully(ctx: PathCtx, c: socket.socket, s: socket.socket) -> None:
    """The client closes first; every step lasts CLOSE_STEP, well above STABLE_S (the
    FIN's ACK may be delayed up to 200 ms)."""
    ctx.pause(0.05)
    ctx.close(c, "client")
    ctx.pause(CLOSE_STEP)
    ctx.recv_eof(s, "server")
    ctx.close(s, "server")


def _idle_scenario(name: str, nat: bool) -> PathScenario:
    nat_text = (" The router masquerades the client behind 10.21.2.1 with random ports "
                "(`masquerade random`), so the server-side capture shows the router's address "
                "and other ports." if nat else "")
    return PathScenario(
        name=name, nat=nat, nft=NAT_NFT if nat else FIREWALL_NFT,
        idle_timeout_s=IDLE_TIMEOUT,
        router_sysctls={"net.netfilter.nf_conntrack_tcp_loose": "0",
                        "net.netfilter.nf_conntrack_tcp_timeout_established": str(IDLE_TIMEOUT)},
        description=(
            f"A stateful firewall between client 10.21.1.2 and server 10.21.2.2:{SERVICE_PORT}: "
            "the router's nftables forward chain accepts `ct state established,related` and new "
            "SYNs and answers every other TCP packet with `reject with tcp reset`; its conntrack "
            f"forgets an established connection after {IDLE_TIMEOUT} s idle "
            f"(nf_conntrack_tcp_timeout_established={IDLE_TIMEOUT}, tcp_loose=0). Six "
            "connections each exchange a query and a row, then stay idle for "
            f"{', '.join(str(x) for x in SURVIVE_IDLES + RESET_IDLES)} s and the client sends "
            f"again. Below {IDLE_TIMEOUT} s the query is answered and the connection closes "
            f"gracefully (the client first, the server {CLOSE_STEP} s later); above it the router drops the query and answers the client with a "
            "reset carrying the server's address (TTL 64, no timestamps). The server never "
            "sees the late query and its socket stays ESTABLISHED." + nat_text),
        client=Vantage(required=idle_required(), signature=idle_signature("client", nat),
                       expect=idle_expect(), closers=idle_closers("client"),
                       tool_says="middlebox-reset (server address, connections 3-5), "
                                 "idle-timeout-reset (connections 3-5; resets begin between "
                                 f"{SURVIVE_IDLES[-1]} and {RESET_IDLES[0]} s idle)"),
        server=Vantage(required=[], signature=idle_signature("server", nat),
                       expect=idle_expect(), closers=idle_closers("server"),
                       tool_says="nothing (connections 3-5 idle and still open at capture end)"),
        run=_idle_run, max_seconds=25.0,
    )


def add(sc: PathScenario) -> None:
    assert sc.name not in SCENARIOS and sc.name not in rec.SCENARIOS
    for v in VANTAGES:
        for f in sc.vantage(v).required:
            assert f["rule"] in rec.RULES, f
    SCENARIOS[sc.name] = sc


add(_idle_scenario("path-idle-timeout", nat=False))
add(_idle_scenario("path-idle-timeout-nat", nat=True))


# --------------------------------------------------------------------------------------
# Reset injection (Weaver, Sommer, Paxson, "Detecting Forged TCP Reset Packets", NDSS 2009)
# --------------------------------------------------------------------------------------
def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def forged_reset(src: str, sport: int, dst: str, dport: int, seq: int, ack: int,
                 ip_id: int) -> bytes:
    """An IPv4 RST/ACK as a raw-socket injector writes it: TTL 64, no DF, no TCP options."""
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, 5 << 4, 0x14, 0, 0, 0)
    pseudo = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, 6, len(tcp))
    tcp = tcp[:16] + struct.pack("!H", checksum(pseudo + tcp)) + tcp[18:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), ip_id, 0, 64, 6, 0,
                     socket.inet_aton(src), socket.inet_aton(dst))
    ip = ip[:10] + struct.pack("!H", checksum(ip)) + ip[12:]
    return ip + tcp


class Injector(threading.Thread):
    """In the router namespace: watch the server's segments leave towards the client and,
    once armed, answer the next one with a forged reset to the client carrying the server's
    address and the sequence number the server will use next (exactly the client's
    RCV.NXT, so the client accepts it).  The server knows nothing and keeps sending."""

    def __init__(self, ctx: "PathCtx", arm_at: float):
        super().__init__(daemon=True)
        self.ctx = ctx
        self.arm_at = arm_at
        self.ready = threading.Event()
        self.done = threading.Event()
        self._stop_evt = threading.Event()

    def run(self) -> None:
        with inside(self.ctx.ns["router"]):
            # ETH_P_ALL: a socket bound to one protocol sees only incoming packets
            sniff = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
            sniff.bind((IFACE["router-client"], 0))
            raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
        sniff.settimeout(0.1)
        self.ready.set()
        server = socket.inet_aton(ADDR["server"])
        try:
            while not self._stop_evt.is_set():
                try:
                    frame, addr = sniff.recvfrom(65535)
                except socket.timeout:
                    continue
                if addr[2] != socket.PACKET_OUTGOING or time.time() < self.arm_at:
                    continue
                ip = frame[14:]
                if frame[12:14] != b"\x08\x00" or ip[9] != 6 or ip[12:16] != server:
                    continue
                ihl = (ip[0] & 15) * 4
                tcp = ip[ihl:]
                sport, dport, seq, ack = struct.unpack("!HHII", tcp[:12])
                length = struct.unpack("!H", ip[2:4])[0] - ihl - (tcp[12] >> 4) * 4
                if sport != SERVICE_PORT or length <= 0:
                    continue
                ip_id = random.randrange(1, 65536)
                rst_seq = (seq + length) & 0xFFFFFFFF
                raw.sendto(forged_reset(ADDR["server"], sport, socket.inet_ntoa(ip[16:20]),
                                        dport, rst_seq, ack, ip_id),
                           (socket.inet_ntoa(ip[16:20]), 0))
                self.ctx.injections.append({
                    "t": round(time.time(), 6), "src": f"{ADDR['server']}:{sport}",
                    "dst": f"{socket.inet_ntoa(ip[16:20])}:{dport}", "seq": rst_seq,
                    "ack": ack, "flags": tcp_flags(0x14), "ttl": 64, "ip_id": ip_id, "df": False,
                    "timestamps": False,
                    "after_server_segment": {"seq": seq, "len": length}})
                self.ctx.intervene(f"injector: forged RST/ACK seq {rst_seq} to the client "
                                   f"after the server's segment seq {seq} len {length}")
                break
        finally:
            sniff.close()
            raw.close()
            self.done.set()

    def stop(self) -> None:
        self._stop_evt.set()
        self.join(5)


CHUNK = b"x" * 1000  # one segment per write
CHUNK_GAP = 0.04  # seconds between the server's writes
STREAM_S = 1.6  # the server streams this long at most
INJECT_AFTER = 0.8  # the injector arms this long after the stream starts


def _inject_run(ctx: PathCtx) -> None:
    lsn = ctx.listen_at()
    c, s = ctx.open_conn(lsn, CLIENT_PORT, "path", "reset")
    ctx.send(c, "client", QUERY, "query (a large result follows)")
    ctx.recv_exact(s, "server", len(QUERY), "query")
    inj = Injector(ctx, time.time() + INJECT_AFTER)
    inj.start()
    inj.ready.wait(5)
    received = {"bytes": 0, "error": None}

    def reader() -> None:
        try:
            while True:
                data = c.recv(65536)
                if not data:
                    received["error"] = "EOF"
                    return
                received["bytes"] += len(data)
        except OSError as e:
            received["error"] = type(e).__name__
    rd = threading.Thread(target=reader, daemon=True)
    rd.start()
    ctx.act("client", "recv() in a loop")
    ctx.act("server", f"send() {len(CHUNK)} bytes every {CHUNK_GAP} s (result rows)")
    t_end, sent = time.time() + STREAM_S, 0
    while time.time() < t_end:
        try:
            s.send(CHUNK)
            sent += 1
        except OSError as e:
            ctx.act("server", f"send() failed after {sent} writes: {type(e).__name__} "
                              f"(the client's kernel reset the connection)")
            break
        time.sleep(CHUNK_GAP)
    else:
        raise RuntimeError("the server never learnt of the reset")
    rd.join(2)
    ctx.act("client", f"recv() failed: {received['error']} after {received['bytes']} bytes "
                      "(the injected reset)")
    if received["error"] != "ConnectionResetError" or not ctx.injections:
        raise RuntimeError(f"no injected reset seen by the client: {received}")
    inj.stop()
    ctx.pause(CLOSE_STEP)


INJECT_SIG_CLIENT = [
    rec.sig(f"{RST} && {FROM_SERVER_C} && ip.ttl==64",
            "the injected reset: the server's address, TTL 64 (the router's own)", count=1),
    rec.sig(f"{RST} && {FROM_SERVER_C} && ip.flags.df==0 && !tcp.options.timestamp.tsval",
            "the injected reset: no DF bit, no timestamps option", count=1),
    rec.sig(f"{FROM_SERVER_C} && !({RST}) && (ip.ttl!=63 || ip.flags.df==0)",
            "every real server packet: TTL 63 (one hop), DF set", count=0),
    rec.sig(f"{RST} && ip.src=={ADDR['client']}",
            "the server's data still arrives after the reset: the client's kernel answers it "
            "with resets (the race)", min_=1),
    rec.sig(f"{FROM_SERVER_C} && tcp.len>0", "the stream", min_=15),
]
INJECT_SIG_SERVER = [
    rec.sig(RST, "only the client's resets reach the server", min_=1),
    rec.sig(f"{RST} && !(ip.src=={ADDR['client']} && ip.ttl==63)",
            "every reset here comes from the client, through the router", count=0),
    rec.sig(f"ip.src=={ADDR['server']} && tcp.len>0", "the stream", min_=15),
]

add(PathScenario(
    name="path-injected-reset", nft=PLAIN_NFT,
    description=(
        f"The server streams a result to the client (a {len(CHUNK)}-byte write every "
        f"{CHUNK_GAP} s). {INJECT_AFTER} s in, an injector in the router namespace (a raw "
        "socket sniffing the router's client-side interface) answers the next server segment "
        "with a forged RST/ACK to the client: the server's address and port, the sequence "
        "number the server uses next (the client's RCV.NXT, so the client accepts it), TTL 64 "
        "(the server's own packets arrive with 63), a random IP ID, no DF bit, no timestamps "
        "option. The server never learns of it and its next segment arrives at the client "
        "after the reset, with the very sequence number the reset claimed (the race of "
        "Weaver, Sommer and Paxson, NDSS 2009); the client's kernel, whose socket is gone, "
        "answers it with a reset of its own, which ends the connection at the server."),
    client=Vantage(
        required=[rec.req("middlebox-reset", "server", 0)],
        signature=INJECT_SIG_CLIENT,
        expect={0: {"client": ["ESTABLISHED", "CLOSED"], "server": ["ESTABLISHED", "CLOSED"]}},
        closers={0: ("path", "reset")},
        tool_says="middlebox-reset (server address, connection 0: TTL 64 vs 63, no "
                  "timestamps, the server's data after it)"),
    server=Vantage(
        required=[], signature=INJECT_SIG_SERVER,
        expect={0: {"client": ["ESTABLISHED", "CLOSED"], "server": ["ESTABLISHED", "CLOSED"]}},
        neutral=["linger-zero-abort", "rst-after-premature-close", "unread-data-reset"],
        closers={0: ("client", "reset")},
        tool_says="the client's kernel reset (real, TTL 63); from this side alone its cause "
                  "(a reset injected on the path) cannot be seen: endpoint rules neutral"),
    run=_inject_run,
    notes="Server vantage: the resets here are real ones from the client's kernel, sent "
          "because the injected reset had already destroyed the client's socket; this side "
          "alone cannot tell why, so the endpoint rules are neutral here (not forbidden). "
          "The pair of captures proves it: the injected reset (path_packets) never reached "
          "the server.",
))


def _endpoint_reset_run(ctx: PathCtx) -> None:
    lsn = ctx.listen_at()
    c, s = ctx.open_conn(lsn, CLIENT_PORT, "server", "reset")
    ctx.query(c, s)
    ctx.pause(CLOSE_STEP)
    ctx.linger_zero(s, "server")
    ctx.close(s, "server", "close() (SO_LINGER 0: abort)")
    ctx.pause(CLOSE_STEP)


ENDPOINT_EXPECT = {0: {"client": ["ESTABLISHED", "CLOSED"], "server": ["ESTABLISHED", "CLOSED"]}}

add(PathScenario(
    name="path-endpoint-reset", nft=PLAIN_NFT,
    description=(
        "Control for the path resets: through the same router (forwarding only), the server "
        "answers the query, sets SO_LINGER {on, 0} and calls close(): a real endpoint reset. "
        "At the client it arrives with TTL 63 like every other server packet, DF set and the "
        "timestamps option, and nothing from the server follows it: it stays the server's."),
    client=Vantage(
        required=[rec.req("linger-zero-abort", "server", 0)],
        neutral=["server-closes-first"],
        signature=[rec.sig(f"{RST} && {FROM_SERVER_C} && ip.ttl==63 && ip.flags.df==1 && "
                           "tcp.options.timestamp.tsval",
                           "the server's own reset: TTL 63, DF, timestamps", count=1),
                   rec.sig(RST, "exactly one reset", count=1),
                   rec.sig("tcp.flags.fin==1", "no FIN", count=0)],
        expect=ENDPOINT_EXPECT, closers={0: ("server", "reset")},
        tool_says="linger-zero-abort (server); no middlebox-reset"),
    server=Vantage(
        required=[rec.req("linger-zero-abort", "server", 0)],
        neutral=["server-closes-first"],
        signature=[rec.sig(f"{RST} && ip.src=={ADDR['server']} && ip.ttl==64",
                           "the server's reset as it leaves the server", count=1),
                   rec.sig(RST, "exactly one reset", count=1)],
        expect=ENDPOINT_EXPECT, closers={0: ("server", "reset")},
        tool_says="linger-zero-abort (server); no middlebox-reset"),
    run=_endpoint_reset_run,
))


# --------------------------------------------------------------------------------------
# Truth assembly
# --------------------------------------------------------------------------------------
def nft_counters(text: str) -> list[dict]:
    out = []
    for line in text.splitlines():
        m = re.search(r"counter packets (\d+) bytes (\d+)", line)
        if m:
            rule = re.sub(r"\s*counter packets \d+ bytes \d+\s*", " ", line).strip()
            out.append({"rule": rule, "packets": int(m.group(1)), "bytes": int(m.group(2))})
    return out


def vantage_truth(sc: PathScenario, v: str, ctx: PathCtx, samples: list, common: dict,
                  pkts: dict[str, list[dict]], pp: list[dict]) -> dict:
    van = sc.vantage(v)
    # connections as this capture shows them (behind NAT the server sees the router)
    alias: dict[tuple, tuple] = {}
    conns_v = []
    for i, c in enumerate(ctx.conns):
        d = dict(c)
        seen = ctx.nat_peer[i]
        if v == "server":  # the client's socket, named as the server sees it
            alias[(c["client"], c["server"])] = (seen, c["server"])
            d["client"] = seen
        else:  # the server's socket, named as the client sees it
            alias[(c["server"], seen)] = (c["server"], c["client"])
        d["closer"], d["close_kind"] = van.closers.get(i, (c["closer"], c["close_kind"]))
        conns_v.append(d)
    view = [(tb, ta, {alias.get(k, k): st for k, st in table.items()})
            for tb, ta, table in samples]
    shim = type("ConnsOnly", (), {"conns": conns_v})()  # all connection_truth reads
    conns = [rec.connection_truth(shim, i, view) for i in range(len(conns_v))]
    for i, (c, d) in enumerate(zip(conns, ctx.conns)):
        c["states"] = {who: stable_by_time(c["ss"], who) for who in c["states"]}
        # the same connection in the pair capture (behind NAT: other client address/port)
        c["pair_connection"] = {"index": i, "server": d["server"],
                                "client": d["client"] if v == "server" else ctx.nat_peer[i]}
        if "designed_idle_s" in d:  # copied by connection_truth
            c["idle_s"] = measured_idle(pkts["client"], d)
    used: set[int] = set()
    packets = [dict(p, frame=frame_in(pkts[v], p, used)) for p in pp]
    truth = {
        "name": f"{sc.name}-{v}",
        "capture": sc.capture(v),
        "format": "pcap",
        "description": sc.description,
        "vantage": v,
        "pair": sc.capture("server" if v == "client" else "client"),
        **common,
        "connections": conns,
        "findings": {"required": van.required,
                     "forbidden": [r for r in rec.RULES
                                   if r not in {f["rule"] for f in van.required}
                                   and r not in van.neutral],
                     "neutral": van.neutral},
        "signature": van.signature,
        "path_packets": packets,
    }
    if sc.idle_timeout_s:
        truth["idle_timeout_s"] = sc.idle_timeout_s
    if sc.notes:
        truth["notes"] = sc.notes
    return truth


def stable_by_time(rows: list[dict], who: str, min_s: float = STABLE_S) -> list[str]:
    """Distinct states of ``who`` that lasted at least ``min_s`` (first to last sighting).

    Through a router the passive closer's delayed ACK keeps FIN_WAIT_1 for 40-200 ms, long
    enough for several ss samples some times and not others, and on a loaded machine the
    sampler may stall for tens of ms: a time threshold between the longest delayed ACK and
    the designed CLOSE_STEP gives the same sequence on every re-record."""
    runs: list[list] = []  # [state, first ts, last ts]
    for r in rows:
        st = r.get(who)
        if st is None:
            continue
        if runs and runs[-1][0] == st:
            runs[-1][2] = r["ts"]
        else:
            runs.append([st, r["ts"], r["ts"]])
    seq: list[str] = []
    for i, (st, first, last) in enumerate(runs):
        end = runs[i + 1][1] if i + 1 < len(runs) else float("inf")
        lasted = (last - first) if i + 1 < len(runs) else end
        if lasted < min_s or (seq and seq[-1] == st) or (not seq and st == "CLOSED"):
            continue
        seq.append(st)
    return seq


def measured_idle(client_pkts: list[dict], conn: dict) -> float | None:
    """Seconds between the connection's last packet before the late query and that query."""
    me = conn["client"]
    mine = [p for p in client_pkts if me in (p["src"], p["dst"])]
    queries = [j for j, p in enumerate(mine) if p["src"] == me and p["len"] > 0]
    if len(queries) < 2 or queries[1] == 0:
        return None
    j = queries[1]
    return round(mine[j]["t"] - mine[j - 1]["t"], 6)


def child_main(name: str, tag: str, outdir: Path) -> int:
    sc = SCENARIOS[name]
    ns = {r: ns_name(r, tag) for r in ROLES}
    t0 = time.time()
    for k, val in sc.router_sysctls.items():
        sh(ns["router"], "sysctl", "-qw", f"{k}={val}")
    ctx = PathCtx(sc, ns)
    ctx.router_nft(sc.nft, "nft ruleset loaded in the router (see router.nft)")
    caps = {}
    for v in VANTAGES:
        caps[v] = rec.Capture("pcap", outdir / sc.capture(v))
        caps[v].cmd[caps[v].cmd.index("lo")] = IFACE[v]
        caps[v].cmd[:0] = ["ip", "netns", "exec", ns[v]]
    router_pcap = outdir / f"{sc.name}-router.pcap"
    caps["router"] = rec.Capture("sll2-pcap", router_pcap)
    caps["router"].cmd[:0] = ["ip", "netns", "exec", ns["router"]]
    sampler = PathSampler(ns)
    try:
        t_cap = time.time()  # the first capture starts now; all run once the loop is done
        for cap in caps.values():
            cap.start()
        sampler.start()
        time.sleep(0.05)
        sc.run(ctx)
        time.sleep(0.1)
    finally:
        sampler.stop()
        time.sleep(0.05)
        for cap in caps.values():
            cap.stop()
        t_stop = time.time()
        # the counters now, before the sockets close: the server's FINs of connections the
        # router forgot would be rejected too, after the captures ended
        nft_after = sh(ns["router"], "nft", "list", "ruleset")
        for s in ctx.keep:
            try:
                s.close()
            except OSError:
                pass
    lost = {r: cap.dropped() for r, cap in caps.items() if cap.dropped()}
    if lost:
        print(f"[{sc.name}] captures dropped packets: {lost}", file=sys.stderr)
        return 3
    ifnames = {int(m.group(1)): m.group(2) for m in
               re.finditer(r"^(\d+): ([^:@]+)[:@]", sh(ns["router"], "ip", "-o", "link"), re.M)}
    pp = path_packets(router_pcap, ifnames)
    if not os.environ.get("TA_PATH_KEEP_ROUTER"):
        router_pcap.unlink()
    sysctls = {}
    for k in sorted(set(sc.router_sysctls) | set(ROUTER_SYSCTLS)):
        sysctls[k] = sh(ns["router"], "sysctl", "-n", k).strip()
    for k in rec.REPORTED_SYSCTLS:
        sysctls[k] = Path("/proc/sys/" + k.replace(".", "/")).read_text().strip()
    gaps = sorted(b[0] - a[0] for a, b in zip(sampler.samples, sampler.samples[1:]))
    pkts = {v: read_tcp_packets(outdir / sc.capture(v)) for v in VANTAGES}
    common = {
        "kernel": os.uname().release,
        "sysctls": sysctls,
        "topology": {"client": f"{ADDR['client']}/24 on {IFACE['client']}",
                     "router": f"{ADDR['router-client']}/24 on {IFACE['router-client']}, "
                               f"{ADDR['router-server']}/24 on {IFACE['router-server']}, "
                               "ip_forward=1",
                     "server": f"{ADDR['server']}/24 on {IFACE['server']}",
                     "links": "veth pairs, gso_max_segs 1 (wire-sized segments)"},
        "router": {"nat": sc.nat, "idle_timeout_s": sc.idle_timeout_s,
                   "nft": sc.nft, "nft_counters": nft_counters(nft_after),
                   "injections": ctx.injections,
                   "capture_command": " ".join(caps["router"].cmd) + " (not kept)"},
        "actions": sorted(ctx.actions, key=lambda a: a["t"]),
        "interventions": ctx.interventions,
        "record_seconds": round(t_stop - t0, 3),
        "capture_started": round(t_cap, 6),
        "capture_stopped": round(t_stop, 6),
        "ss_sampler": {"command": "ss -tanH in the client and in the server namespace, "
                                  "back to back",
                       "samples": len(sampler.samples),
                       "median_interval_ms":
                           round(1000 * gaps[len(gaps) // 2], 2) if gaps else None,
                       "stable_s": STABLE_S},
    }
    for v in VANTAGES:
        truth = vantage_truth(sc, v, ctx, sampler.samples, common, pkts, pp)
        truth["capture_command"] = " ".join(caps[v].cmd)
        (outdir / f"{sc.name}-{v}.truth.json").write_text(json.dumps(truth, indent=1) + "\n")
    print(f"[{sc.name}] path packets: {len(pp)}; "
          + " | ".join(f"{v}: {caps[v].log[-3:]}" for v in VANTAGES), file=sys.stderr)
    return 0


# --------------------------------------------------------------------------------------
# Parent: topology, retries, checks
# --------------------------------------------------------------------------------------
def check(sc: PathScenario, staging: Path) -> list[str]:
    problems = []
    for v in VANTAGES:
        van = sc.vantage(v)
        truth = json.loads((staging / f"{sc.name}-{v}.truth.json").read_text())
        got = {c["index"]: c["states"] for c in truth["connections"]}
        for idx, exp in van.expect.items():
            if got.get(idx) != exp:
                problems.append(f"{v} connection {idx}: states {got.get(idx)} != designed {exp}")
        if shutil.which("tshark"):
            for s in van.signature:
                n = rec.tshark_count(staging / sc.capture(v), s["filter"])
                if ("count" in s and n != s["count"]) or ("min" in s and n < s["min"]):
                    problems.append(f"{v} signature {s['filter']!r}: {n} packets, wanted "
                                    f"{s.get('count', s.get('min'))}")
        problems += check_path_packets(sc, truth)
    return problems


def check_path_packets(sc: PathScenario, truth: dict) -> list[str]:
    """The router's capture, its nft counters and the injector's log must tell one story."""
    pp = truth["path_packets"]
    created = [p for p in pp if p["kind"] == "created"]
    dropped = [p for p in pp if p["kind"] == "dropped"]
    counters = {c["rule"]: c["packets"] for c in truth["router"]["nft_counters"]}
    rejects = sum(n for r, n in counters.items() if "reject" in r)
    injected = len(truth["router"]["injections"])
    problems = []
    if len(created) != rejects + injected:
        problems.append(f"{len(created)} created packets, but {rejects} rejects + "
                        f"{injected} injections")
    if len(dropped) != rejects:
        problems.append(f"{len(dropped)} dropped packets, but {rejects} rejects")
    if sc.idle_timeout_s and truth["vantage"] == "client":
        if len(created) != len(RESET_IDLES):
            problems.append(f"{len(created)} router resets, designed {len(RESET_IDLES)}")
    return problems


def record_one(sc: PathScenario, outdir: Path, attempts: int = 3, verify: bool = True) -> bool:
    for attempt in range(1, attempts + 1):
        tag = f"{os.getpid()}-{attempt}"
        staging = Path(tempfile.mkdtemp(prefix=f"ta-path-{sc.name}-"))
        proc = None
        t0 = time.time()
        try:
            build_topology(tag)
            proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--child",
                                     sc.name, "--tag", tag, "--out", str(staging)],
                                    start_new_session=True)
            try:
                rc = proc.wait(timeout=sc.max_seconds + 15)
            except subprocess.TimeoutExpired:
                rc = None
            if rc != 0:
                problems = [f"child exited with {rc}" if rc is not None else "timed out"]
            else:
                problems = check(sc, staging) if verify else []
            if not problems:
                if (staging / f"{sc.name}-router.pcap").exists():
                    shutil.move(str(staging / f"{sc.name}-router.pcap"), str(outdir))
                for v in VANTAGES:
                    for f in (sc.capture(v), f"{sc.name}-{v}.truth.json"):
                        os.chmod(staging / f, 0o644)
                        shutil.move(str(staging / f), str(outdir / f))
                sizes = [(outdir / sc.capture(v)).stat().st_size for v in VANTAGES]
                print(f"{sc.name}: ok ({time.time() - t0:.1f} s, {sizes[0]} + {sizes[1]} bytes)",
                      flush=True)
                return True
            print(f"{sc.name}: attempt {attempt} failed: {'; '.join(problems)}", flush=True)
        finally:
            if proc is not None and proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait()
            remove_topology(tag)
            shutil.rmtree(staging, ignore_errors=True)
    print(f"{sc.name}: FAILED {attempts} times, nothing written", flush=True)
    return False


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", help="comma-separated scenario names")
    ap.add_argument("--out", type=Path, default=HERE, help="output folder (default: this folder)")
    ap.add_argument("--list", action="store_true",
                    help="list the truth files' names (two per scenario) and exit")
    ap.add_argument("--no-verify", action="store_true",
                    help="do not check designed states / tshark signatures / path packets")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--tag", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return child_main(args.child, args.tag, args.out)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, rec._terminate)
    if args.list:
        for sc in SCENARIOS.values():
            for v in VANTAGES:
                print(f"{sc.name + '-' + v:32} pcap      {sc.vantage(v).tool_says}")
        return 0
    if os.geteuid() != 0:
        print("record_path.py needs root (network namespaces, tcpdump, nft)", file=sys.stderr)
        return 2
    names = args.only.split(",") if args.only else list(SCENARIOS)
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        print(f"unknown scenario(s): {', '.join(unknown)}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    try:
        failed = [n for n in names
                  if not record_one(SCENARIOS[n], args.out, verify=not args.no_verify)]
    except KeyboardInterrupt as e:
        print(f"interrupted ({e or 'Ctrl-C'}); namespaces and captures cleaned up", flush=True)
        return 130
    print(f"recorded {len(names) - len(failed)} of {len(names)} scenario(s) in "
          f"{time.time() - t0:.1f} s" + (f"; FAILED: {', '.join(failed)}" if failed else ""),
          flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
