#!/usr/bin/env python3
"""Record the sample captures in this folder from real Linux TCP stacks.

Run as root:  python3 sample_pcaps/record.py [--only NAME[,NAME...]] [--out DIR] [--list]

For every scenario the recorder
  1. creates a fresh network namespace ``ta-rec-<name>-<pid>`` and brings ``lo`` up;
  2. re-executes itself inside it (``ip netns exec NS python3 record.py --child NAME``);
     the child sets the scenario's per-namespace sysctls, starts the capture on ``lo``
     (tcpdump, or dumpcap for pcapng), waits until it is listening, starts a sampler
     thread that runs ``ss -tanH`` back to back (time before/after each call taken with
     time.time(), the CLOCK_REALTIME that the capture timestamps use), then runs the
     scenario's client and server socket code on 127.0.0.1 / 127.0.0.2 / ::1, with
     one-shot nftables drops or a token-bucket qdisc where the scenario needs them;
  3. stops the sampler and the capture *before* any socket that is still open is
     closed (so "still open at capture end" really is in the file), and writes
     ``NAME.truth.json`` from the scenario's design and the ss samples;
  4. always deletes the namespace (``finally``), killing whatever still runs in it.

The parent then checks the result (the stable state sequences the scenario was
designed to produce and, when tshark is installed, the signature filters) and retries
a scenario at most twice before giving up.  Only the standard library is used.
"""
from __future__ import annotations

import argparse
import json
import os
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

HERE = Path(__file__).resolve().parent

# --------------------------------------------------------------------------------------
# Vocabulary shared with the analyzer (see the contract in sample_pcaps/README.md)
# --------------------------------------------------------------------------------------
RULES = [
    "half-closed-leak",
    "fin-wait-2-hang",
    "rst-after-premature-close",
    "linger-zero-abort",
    "unread-data-reset",
    "connection-refused",
    "half-open-handshake",
    "simultaneous-close",
    "lost-final-ack",
    "time-wait-reuse",
    "time-wait-pileup",
    "server-closes-first",
    "keepalive-on-half-closed",
    "middlebox-reset",  # issue #21: a reset the endpoint it names did not send
    "idle-timeout-reset",
]
RST_CAUSES = ["time_wait_skipped", "fin_wait_2_expired", "data_after_close"]
STATES = [
    "LISTEN", "SYN_SENT", "SYN_RECEIVED", "ESTABLISHED", "FIN_WAIT_1", "FIN_WAIT_2",
    "CLOSE_WAIT", "CLOSING", "LAST_ACK", "TIME_WAIT", "CLOSED",
]
SS_STATE = {
    "ESTAB": "ESTABLISHED", "SYN-SENT": "SYN_SENT", "SYN-RECV": "SYN_RECEIVED",
    "FIN-WAIT-1": "FIN_WAIT_1", "FIN-WAIT-2": "FIN_WAIT_2", "CLOSE-WAIT": "CLOSE_WAIT",
    "CLOSING": "CLOSING", "LAST-ACK": "LAST_ACK", "TIME-WAIT": "TIME_WAIT",
    "LISTEN": "LISTEN", "CLOSE": "CLOSED", "UNCONN": "CLOSED",
}
FORMATS = {"pcap", "pcap-ns", "pcapng", "sll2-pcap"}

# A run of identical ss observations counts as a *stable* state when it spans at least
# this many consecutive samples; shorter runs are transients (FIN_WAIT_1 or LAST_ACK
# lasting microseconds on loopback) that a re-record may or may not catch.
MIN_STABLE_RUN = 2

# recorded in every truth file (the scenario's own settings are added to these)
REPORTED_SYSCTLS = [
    "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_max_tw_buckets", "net.ipv4.tcp_tw_reuse",
    "net.ipv4.tcp_tw_reuse_delay", "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_keepalive_intvl", "net.ipv4.tcp_keepalive_probes",
    "net.ipv4.tcp_synack_retries", "net.ipv4.tcp_timestamps",
]

C4, S4, A6 = "127.0.0.1", "127.0.0.2", "::1"
SPORT = 8080
PAUSE = 0.25  # the gap between designed steps: every designed state lasts at least this
HOLD = 3.0  # how long a "long" wait lasts (leaks, hangs): always >= 3 s

REQ = b"GET /item/42 HTTP/1.1\r\nHost: sample\r\n\r\n"
RESP = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"


def ep(addr: str, port: int) -> str:
    return f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"


def fam(addr: str) -> int:
    return socket.AF_INET6 if ":" in addr else socket.AF_INET


# --------------------------------------------------------------------------------------
# Child side: everything below runs inside the scenario's network namespace
# --------------------------------------------------------------------------------------
class Sampler(threading.Thread):
    """Runs ``ss -tanH`` back to back; keeps (t_before, t_after, {(local, peer): state})."""

    def __init__(self, interval: float = 0.0):
        super().__init__(daemon=True)
        self.interval = interval
        self.samples: list[tuple[float, float, dict]] = []
        self._stop_evt = threading.Event()

    def run(self) -> None:
        while not self._stop_evt.is_set():
            tb = time.time()
            out = subprocess.run(["ss", "-tanH"], capture_output=True, text=True).stdout
            ta = time.time()
            table = {}
            for line in out.splitlines():
                f = line.split()
                if len(f) < 5:
                    continue
                table[(f[3], f[4])] = SS_STATE.get(f[0], f[0])
            self.samples.append((tb, ta, table))
            if self.interval and len(table) > 200:  # big tables (pile-up): sample slower
                self._stop_evt.wait(self.interval)

    def stop(self) -> None:
        self._stop_evt.set()
        self.join(10)


class Capture:
    def __init__(self, fmt: str, path: Path):
        self.fmt = fmt
        self.path = path
        if fmt == "pcapng":
            self.cmd = ["dumpcap", "-i", "lo", "-w", str(path)]
            self.ready = "Capturing on"
        else:
            # --immediate-mode: with TPACKET_V3 blocks tcpdump would lose the last,
            # not yet retired block on SIGINT ("N received by filter, 0 captured").
            # Immediate mode uses one ring slot of snaplen (256 KiB) per packet, so the
            # default 2 MiB ring holds 8 packets: -B 131072 (128 MiB) gives 512 slots.
            self.cmd = ["tcpdump", "-i", "lo", "--immediate-mode", "-B", "131072", "-U",
                        "-Z", "root", "-w", str(path)]
            if fmt == "pcap-ns":
                self.cmd[1:1] = ["--time-stamp-precision=nano"]
            if fmt == "sll2-pcap":
                self.cmd[self.cmd.index("lo")] = "any"
                self.cmd[1:1] = ["-y", "LINUX_SLL2"]
            self.ready = "listening on"
        self.proc: subprocess.Popen | None = None
        self.log: list[str] = []

    def start(self) -> None:
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     text=True)
        deadline = time.time() + 10
        while time.time() < deadline:
            line = self.proc.stderr.readline()
            if not line:
                break
            self.log.append(line.rstrip())
            if self.ready in line:
                threading.Thread(target=self._drain, daemon=True).start()
                time.sleep(0.05)
                return
        raise RuntimeError(f"capture did not start: {self.log}")

    def _drain(self) -> None:
        for line in self.proc.stderr:
            self.log.append(line.rstrip())

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        time.sleep(0.05)  # let the stderr drain thread read the closing statistics

    def dropped(self) -> int:
        """Packets the capture lost, from tcpdump's / dumpcap's closing statistics."""
        n = 0
        for line in self.log:
            m = re.search(r"(\d+) packets? dropped by kernel", line)
            if m:
                n += int(m.group(1))
            m = re.search(r"dropped on interface '[^']*': \d+/(\d+)", line)
            if m:
                n += int(m.group(1))
        return n


class Ctx:
    """What a scenario function gets: sockets, actions, connections, interventions."""

    def __init__(self, scenario: "Scenario"):
        self.sc = scenario
        self.actions: list[dict] = []
        self.interventions: list[dict] = []
        self.conns: list[dict] = []
        self.keep: list[socket.socket] = []  # closed only after the capture has stopped
        self.tw_hosts: list[str] = []  # hosts whose TIME_WAIT count is sampled
        self.quiet = False  # pile-up: don't log every action

    # -- bookkeeping ---------------------------------------------------------------
    def act(self, who: str, what: str) -> None:
        if not self.quiet:
            self.actions.append({"t": round(time.time(), 6), "who": who, "what": what})

    def intervene(self, what: str) -> None:
        self.interventions.append({"t": round(time.time(), 6), "what": what})

    @staticmethod
    def pause(seconds: float = PAUSE) -> None:
        time.sleep(seconds)

    # -- network plumbing inside the namespace ---------------------------------------
    def nft(self, script: str, what: str) -> None:
        subprocess.run(["nft", "-f", "-"], input=script, text=True, check=True)
        self.intervene(what)

    def nft_drop(self, rule: str, what: str, hook: str = "input") -> None:
        """Add one drop rule; with 'quota until 100 bytes' it drops one small packet."""
        self.nft(f"""
table inet ta_rec {{
  chain {hook} {{
    type filter hook {hook} priority 0; policy accept;
    {rule}
  }}
}}
""", what)

    def nft_clear(self) -> None:
        subprocess.run(["nft", "delete", "table", "inet", "ta_rec"], check=False,
                       stderr=subprocess.DEVNULL)
        self.intervene("nft: drop rules removed")

    def tc(self, args: str, what: str) -> None:
        subprocess.run(["tc"] + args.split(), check=True)
        self.intervene(what)

    # -- sockets -------------------------------------------------------------------
    def listen(self, addr: str = S4, port: int = SPORT, keepalive: bool = False) -> socket.socket:
        s = socket.socket(fam(addr), socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if keepalive:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        s.bind((addr, port))
        s.listen(4096)
        s.settimeout(5)
        self.keep.append(s)
        self.act("server", f"listen() on {ep(addr, port)}"
                 + (" with SO_KEEPALIVE" if keepalive else ""))
        return s

    def conn(self, caddr: str, cport: int, saddr: str, sport: int, closer: str, kind: str,
             listed: bool = True, **extra) -> int:
        self.conns.append({"client": ep(caddr, cport), "server": ep(saddr, sport),
                           "closer": closer, "close_kind": kind, "t_start": time.time(),
                           "listed": listed, **extra})
        return len(self.conns) - 1

    def client_socket(self, caddr: str, cport: int) -> socket.socket:
        c = socket.socket(fam(caddr), socket.SOCK_STREAM)
        c.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        c.bind((caddr, cport))
        c.settimeout(5)
        self.keep.append(c)
        return c

    def open(self, lsn: socket.socket, cport: int, closer: str, kind: str, caddr: str | None = None,
             **extra) -> tuple[socket.socket, socket.socket]:
        saddr, sport = lsn.getsockname()[:2]
        caddr = caddr or (A6 if ":" in saddr else C4)
        c = self.client_socket(caddr, cport)
        self.conn(caddr, cport, saddr, sport, closer, kind, **extra)
        self.act("client", f"connect() from {ep(caddr, cport)} to {ep(saddr, sport)}")
        c.connect((saddr, sport))
        s, _ = lsn.accept()
        s.settimeout(5)
        self.keep.append(s)
        self.act("server", "accept()")
        return c, s

    def send(self, sock: socket.socket, who: str, data: bytes, what: str) -> None:
        self.act(who, f"send() {len(data)} bytes: {what}")
        sock.sendall(data)

    def recv_exact(self, sock: socket.socket, who: str, n: int, what: str) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = sock.recv(n - len(buf))
            if not chunk:
                raise RuntimeError(f"{who}: unexpected EOF")
            buf += chunk
        self.act(who, f"recv() {n} bytes: {what}")
        return buf

    def recv_eof(self, sock: socket.socket, who: str) -> None:
        data = sock.recv(65536)
        if data:
            raise RuntimeError(f"{who}: expected EOF, got {len(data)} bytes")
        self.act(who, "recv() returned 0 (EOF: the peer's FIN)")

    def exchange(self, c: socket.socket, s: socket.socket) -> None:
        self.send(c, "client", REQ, "request")
        self.recv_exact(s, "server", len(REQ), "request")
        self.send(s, "server", RESP, "response")
        self.recv_exact(c, "client", len(RESP), "response")

    def close(self, sock: socket.socket, who: str, what: str = "close()") -> None:
        self.act(who, what)
        sock.close()

    def shutdown_wr(self, sock: socket.socket, who: str) -> None:
        self.act(who, "shutdown(SHUT_WR) (sends FIN, keeps reading)")
        sock.shutdown(socket.SHUT_WR)

    def linger_zero(self, sock: socket.socket, who: str) -> None:
        self.act(who, "setsockopt(SO_LINGER, on, 0 s)")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


# --------------------------------------------------------------------------------------
# Scenarios
# --------------------------------------------------------------------------------------
@dataclass
class Scenario:
    name: str
    fmt: str
    description: str
    run: Callable[[Ctx], None]
    required: list[dict]
    signature: list[dict]
    expect: dict  # {conn index: {"client": [stable states], "server": [...]}}
    sysctls: dict = field(default_factory=dict)
    neutral: list[str] = field(default_factory=list)  # rules neither required nor forbidden
    tool_says: str = ""  # one line for the README
    max_seconds: float = 15.0
    sample_interval: float = 0.0
    notes: str = ""

    @property
    def capture(self) -> str:
        return f"{self.name}.pcapng" if self.fmt == "pcapng" else f"{self.name}.pcap"

    def forbidden(self) -> list[str]:
        req = {f["rule"] for f in self.required}
        return [r for r in RULES if r not in req and r not in self.neutral]


SCENARIOS: dict[str, Scenario] = {}


def scenario(**kw):
    def deco(fn):
        sc = Scenario(run=fn, **kw)
        assert sc.fmt in FORMATS and sc.name not in SCENARIOS
        for f in sc.required:
            assert f["rule"] in RULES, f
        SCENARIOS[sc.name] = sc
        return fn
    return deco


def req(rule: str, endpoint: str | None = None, connection: int | None = 0, **kw) -> dict:
    d = {"rule": rule}
    if endpoint:
        d["endpoint"] = endpoint
    if connection is not None:
        d["connection"] = connection
    d.update(kw)
    return d


def sig(filt: str, what: str, count: int | None = None, min_: int | None = None) -> dict:
    d = {"filter": filt, "what": what}
    if count is not None:
        d["count"] = count
    if min_ is not None:
        d["min"] = min_
    return d


SYN = "tcp.flags.syn==1 && tcp.flags.ack==0"
SYNACK = "tcp.flags.syn==1 && tcp.flags.ack==1"
FIN = "tcp.flags.fin==1"
RST = "tcp.flags.reset==1"
CPORT = "tcp.srcport==40000"
SRV = "tcp.srcport==8080"

# The passive closer's ACK of a FIN is a *delayed* ACK (~40 ms) when the connection is in
# interactive (request/response) mode, so the active closer sits in FIN_WAIT_1 long enough
# for ss to see it.  LAST_ACK (the final ACK comes back within microseconds) is not seen.
GRACEFUL_CLIENT = {0: {"client": ["ESTABLISHED", "FIN_WAIT_1", "FIN_WAIT_2", "TIME_WAIT"],
                       "server": ["ESTABLISHED", "CLOSE_WAIT", "CLOSED"]}}
GRACEFUL_SERVER = {0: {"client": ["ESTABLISHED", "CLOSE_WAIT", "CLOSED"],
                       "server": ["ESTABLISHED", "FIN_WAIT_1", "FIN_WAIT_2", "TIME_WAIT"]}}


def _normal_close_client(ctx: Ctx, addr_s: str) -> None:
    lsn = ctx.listen(addr_s)
    c, s = ctx.open(lsn, 40000, "client", "graceful")
    ctx.exchange(c, s)
    ctx.pause()
    ctx.close(c, "client")
    ctx.pause()
    ctx.recv_eof(s, "server")
    ctx.close(s, "server")
    ctx.pause()


NORMAL_CLIENT_SIG = [
    sig(SYN, "one handshake", count=1),
    sig(FIN, "two FINs", count=2),
    sig(f"{FIN} && {CPORT}", "the client's FIN (it closes first)", count=1),
    sig(RST, "no RST", count=0),
]

scenario(
    name="normal-close-client", fmt="pcap",
    description="The client sends a request, reads the response and calls close(); the "
                "server reads EOF and closes 0.25 s later. Textbook four-way close, client "
                "ends in TIME_WAIT.",
    required=[], signature=NORMAL_CLIENT_SIG, expect=GRACEFUL_CLIENT,
    tool_says="nothing (clean close by the client)",
)(lambda ctx: _normal_close_client(ctx, S4))

scenario(
    name="ipv6-normal-close", fmt="pcapng",
    description="Same as normal-close-client over IPv6 loopback ([::1]:40000 -> [::1]:8080), "
                "captured with dumpcap as pcapng.",
    required=[], signature=NORMAL_CLIENT_SIG, expect=GRACEFUL_CLIENT,
    tool_says="nothing (clean close by the client, IPv6)",
)(lambda ctx: _normal_close_client(ctx, A6))


@scenario(
    name="normal-close-server", fmt="pcap-ns",
    description="The server answers and calls close() first (HTTP/1.0 style); the client reads "
                "the response and EOF and closes 0.25 s later. The server ends in TIME_WAIT.",
    required=[req("server-closes-first", "server")],
    signature=[sig(SYN, "one handshake", count=1), sig(FIN, "two FINs", count=2),
               sig(f"{FIN} && {SRV}", "the server's FIN", count=1), sig(RST, "no RST", count=0)],
    expect=GRACEFUL_SERVER,
    tool_says="server-closes-first (info: the server collects TIME_WAIT); no bug",
)
def _normal_close_server(ctx: Ctx) -> None:
    lsn = ctx.listen()
    c, s = ctx.open(lsn, 40000, "server", "graceful")
    ctx.exchange(c, s)
    ctx.pause()
    ctx.close(s, "server")
    ctx.pause()
    ctx.recv_eof(c, "client")
    ctx.close(c, "client")
    ctx.pause()


@scenario(
    name="server-fin-with-data", fmt="pcap",
    description="The server corks the socket (TCP_CORK), writes the response and calls close(): "
                "Linux sends the response and the FIN in ONE segment. The client reads it, sees "
                "EOF and closes 0.25 s later.",
    required=[req("server-closes-first", "server")],
    signature=[sig(f"{FIN} && {SRV} && tcp.len>0", "the server's FIN carries the response",
                   count=1),
               sig(FIN, "two FINs", count=2), sig(RST, "no RST", count=0)],
    expect=GRACEFUL_SERVER,
    tool_says="server-closes-first (info); no bug. The FIN segment carries payload",
)
def _server_fin_with_data(ctx: Ctx) -> None:
    lsn = ctx.listen()
    c, s = ctx.open(lsn, 40000, "server", "graceful")
    ctx.send(c, "client", REQ, "request")
    ctx.recv_exact(s, "server", len(REQ), "request")
    ctx.pause()
    ctx.act("server", "setsockopt(TCP_CORK, 1)")
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
    ctx.send(s, "server", RESP, "response (held back by the cork)")
    ctx.close(s, "server", "close() (the corked response leaves together with the FIN)")
    ctx.pause()
    ctx.recv_exact(c, "client", len(RESP), "response")
    ctx.recv_eof(c, "client")
    ctx.pause()
    ctx.close(c, "client")
    ctx.pause()


@scenario(
    name="close-wait-leak", fmt="pcap",
    description="The client closes; the server reads EOF but never calls close(). For the "
                "remaining 3 s of the capture the server sits in CLOSE_WAIT and the client in "
                "FIN_WAIT_2; the capture ends with the connection still half-closed.",
    sysctls={"net.ipv4.tcp_fin_timeout": "60"},
    required=[req("half-closed-leak", "server"), req("fin-wait-2-hang", "client")],
    signature=[sig(FIN, "only the client's FIN", count=1),
               sig(f"{FIN} && {CPORT}", "the client's FIN", count=1),
               sig(RST, "no RST", count=0)],
    expect={0: {"client": ["ESTABLISHED", "FIN_WAIT_1", "FIN_WAIT_2"],
                "server": ["ESTABLISHED", "CLOSE_WAIT"]}},
    tool_says="half-closed-leak (server), fin-wait-2-hang (client)",
)
def _close_wait_leak(ctx: Ctx) -> None:
    lsn = ctx.listen()
    c, s = ctx.open(lsn, 40000, "client", "half_closed")
    ctx.exchange(c, s)
    ctx.pause()
    ctx.close(c, "client")
    ctx.pause()
    ctx.recv_eof(s, "server")
    ctx.act("server", "never calls close() (leaks the socket)")
    ctx.pause(HOLD)


@scenario(
    name="close-wait-leak-rst", fmt="pcap",
    description="With tcp_fin_timeout=3 the client closes; the server reads EOF and never "
                "closes. The client's orphaned FIN_WAIT_2 expires after 3 s; at 4 s the server "
                "finally writes and the client's kernel, which no longer knows the connection, "
                "answers with RST.",
    sysctls={"net.ipv4.tcp_fin_timeout": "3"},
    required=[req("half-closed-leak", "server"), req("fin-wait-2-hang", "client"),
              req("rst-after-premature-close", "client", cause="fin_wait_2_expired")],
    signature=[sig(FIN, "only the client's FIN", count=1),
               sig(f"{SRV} && tcp.len>0", "request answer + the late write", count=2),
               sig(f"{RST} && {CPORT}", "the client's RST answers the late write", count=1),
               sig(RST, "one RST", count=1)],
    expect={0: {"client": ["ESTABLISHED", "FIN_WAIT_1", "FIN_WAIT_2", "CLOSED"],
                "server": ["ESTABLISHED", "CLOSE_WAIT", "CLOSED"]}},
    tool_says="half-closed-leak (server), fin-wait-2-hang (client), "
              "rst-after-premature-close cause=fin_wait_2_expired (client)",
)
def _close_wait_leak_rst(ctx: Ctx) -> None:
    lsn = ctx.listen()
    c, s = ctx.open(lsn, 40000, "client", "reset")
    ctx.exchange(c, s)
    ctx.pause()
    t_fin = time.time()
    ctx.close(c, "client")
    ctx.pause()
    ctx.recv_eof(s, "server")
    ctx.act("server", "does not call close()")
    ctx.pause(4.0 - (time.time() - t_fin))
    ctx.send(s, "server", b"late data\n", "a late write 4 s after the client's FIN")
    ctx.pause()


@scenario(
    name="fin-wait-2-hang", fmt="pcap",
    description="The server closes an idle keep-alive connection; the client (a connection "
                "pool) never reads it and never closes. The server waits in FIN_WAIT_2 and the "
                "client sits in CLOSE_WAIT for the last 3 s of the capture.",
    sysctls={"net.ipv4.tcp_fin_timeout": "60"},
    required=[req("fin-wait-2-hang", "server"), req("half-closed-leak", "client")],
    neutral=["server-closes-first"],
    signature=[sig(FIN, "only the server's FIN", count=1),
               sig(f"{FIN} && {SRV}", "the server's FIN", count=1),
               sig(RST, "no RST", count=0)],
    expect={0: {"client": ["ESTABLISHED", "CLOSE_WAIT"],
                "server": ["ESTABLISHED", "FIN_WAIT_1", "FIN_WAIT_2"]}},
    tool_says="fin-wait-2-hang (server), half-closed-leak (client)",
)
def _fin_wait_2_hang(ctx: Ctx) -> None:
    lsn = ctx.listen()
    c, s = ctx.open(lsn, 40000, "server", "half_closed")
    ctx.exchange(c, s)
    ctx.pause()
    ctx.close(s, "server", "close() (idle timeout)")
    ctx.act("client", "keeps the pooled connection, never reads or closes it")
    ctx.pause(HOLD + PAUSE)


def _linger_zero_client(ctx: Ctx, addr_s: str) -> None:
    lsn = ctx.listen(addr_s)
    c, s = ctx.open(lsn, 40000, "client", "reset")
    ctx.exchange(c, s)
    ctx.send(c, "client", b"QUIT\r\n", "a last message")
    ctx.recv_exact(s, "server", 6, "the last message")
    ctx.pause()
    ctx.linger_zero(c, "client")
    ctx.close(c, "client", "close() (SO_LINGER 0: abort)")
    ctx.pause()


LINGER_CLIENT_SIG = [
    sig(FIN, "no FIN anywhere", count=0),
    sig(RST, "exactly one RST", count=1),
    sig(f"{RST} && {CPORT}", "the RST comes from the client", count=1),
]
LINGER_CLIENT_EXPECT = {0: {"client": ["ESTABLISHED", "CLOSED"],
                            "server": ["ESTABLISHED", "CLOSED"]}}

scenario(
    name="linger-zero-client", fmt="pcap",
    description="After request, response and a last QUIT message the client sets SO_LINGER "
                "{on, 0} and calls close(): the kernel sends RST instead of FIN. Nothing was "
                "left unread.",
    required=[req("linger-zero-abort", "client")],
    signature=LINGER_CLIENT_SIG, expect=LINGER_CLIENT_EXPECT,
    tool_says="linger-zero-abort (client)",
)(lambda ctx: _linger_zero_client(ctx, S4))

scenario(
    name="ipv6-linger-zero", fmt="pcap-ns",
    description="Same as linger-zero-client over IPv6 loopback: RST instead of FIN after "
                "SO_LINGER {on, 0}.",
    required=[req("linger-zero-abort", "client")],
    signature=LINGER_CLIENT_SIG, expect=LINGER_CLIENT_EXPECT,
    tool_says="linger-zero-abort (client, IPv6)",
)(lambda ctx: _linger_zero_client(ctx, A6))


@scenario(
    name="linger-zero-server", fmt="pcap-ns",
    description="The server answers the request, sets SO_LINGER {on, 0} and calls close(): "
                "RST instead of FIN. The client had already read the whole response.",
    required=[req("linger-zero-abort", "server")],
    neutral=["server-closes-first"],
    signature=[sig(FIN, "no FIN anywhere", count=0), sig(RST, "exactly one RST", count=1),
               sig(f"{RST} && {SRV}", "the RST comes from the server", count=1)],
    expect={0: {"client": ["ESTABLISHED", "CLOSED"], "server": ["ESTABLISHED", "CLOSED"]}},
    tool_says="linger-zero-abort (server)",
)
def _linger_zero_server(ctx: Ctx) -> None:
    lsn = ctx.listen()
    c, s = ctx.open(lsn, 40000, "server", "reset")
    ctx.exchange(c, s)
    ctx.pause()
    ctx.linger_zero(s, "server")
    ctx.close(s, "server", "close() (SO_LINGER 0: abort)")
    ctx.pause()


@scenario(
    name="unread-data-reset", fmt="pcap",
    description="The client pipelines a second request; the server answered the first, never "
                "reads the second and calls close() with it still in its receive queue: Linux "
                "sends RST instead of FIN.",
    required=[req("unread-data-reset", "server", confidence="high")],
    neutral=["server-closes-first"],
    signature=[sig(FIN, "no FIN anywhere", count=0), sig(RST, "exactly one RST", count=1),
               sig(f"{RST} && {SRV}", "the RST comes from the server", count=1),
               sig(f"{CPORT} && tcp.len>0", "two requests from the client", count=2)],
    expect={0: {"client": ["ESTABLISHED", "CLOSED"], "server": ["ESTABLISHED", "CLOSED"]}},
    tool_says="unread-data-reset (server; confidence high: two HTTP requests in, one response "
              "out)",
)
def _unread_data_reset(ctx: Ctx) -> None:
    lsn = ctx.listen()
    c, s = ctx.open(lsn, 40000, "server", "reset")
    ctx.exchange(c, s)
    ctx.send(c, "client", REQ.replace(b"42", b"43"), "a second, pipelined request")
    ctx.act("server", "does not read the second request")
    ctx.pause()
    ctx.close(s, "server", f"close() with {len(REQ)} unread bytes in the receive queue")
    ctx.pause()


@scenario(
    name="pipelined-unread", fmt="pcap",
    description="A server that answers one request per connection and closes (HTTP/1.0 "
                "style): on connections 0-2 it answers and close()s, FIN. On connection 3 the "
                "client pipelines two requests in one segment; the server reads and answers "
                "the first and calls close() with the second still unread: Linux sends RST "
                "instead of FIN. On the wire its answer is the last data, as after an "
                "SO_LINGER 0 abort; the payload (two HTTP requests in, one response out) and "
                "its other connections tell the two apart.",
    required=[req("server-closes-first", "server", 0),
              req("unread-data-reset", "server", 3, confidence="high")],
    signature=[sig(SYN, "four handshakes", count=4),
               sig(f"{FIN} && {SRV}", "the server's FINs on connections 0-2", count=3),
               sig(RST, "exactly one RST", count=1),
               sig(f"{RST} && {SRV} && tcp.dstport==40003",
                   "the server's RST on connection 3", count=1),
               sig("tcp.srcport==40003 && tcp.len>0", "both requests in one segment",
                   count=1)],
    expect={0: GRACEFUL_SERVER[0], 1: GRACEFUL_SERVER[0], 2: GRACEFUL_SERVER[0],
            3: {"client": ["ESTABLISHED", "CLOSED"], "server": ["ESTABLISHED", "CLOSED"]}},
    tool_says="server-closes-first (server, connection 0), unread-data-reset (server, "
              "connection 3; confidence high: two HTTP requests in, one response out)",
)
def _pipelined_unread(ctx: Ctx) -> None:
    lsn = ctx.listen()
    for k in range(3):
        c, s = ctx.open(lsn, 40000 + k, "server", "graceful")
        ctx.exchange(c, s)
        ctx.pause()
        ctx.close(s, "server", "close() after answering (nothing unread)")
        ctx.pause()
        ctx.recv_eof(c, "client")
        ctx.close(c, "client")
        ctx.pause()
    c, s = ctx.open(lsn, 40003, "server", "reset")
    second = REQ.replace(b"42", b"43")
    ctx.send(c, "client", REQ + second, "two pipelined requests in one send()")
    ctx.recv_exact(s, "server", len(REQ), "the first request only")
    ctx.send(s, "server", RESP, "response to the first request")
    ctx.recv_exact(c, "client", len(RESP), "response")
    ctx.pause()
    ctx.close(s, "server", f"close() with the second request ({len(second)} bytes) unread")
    ctx.pause()


@scenario(
    name="linger-zero-service", fmt="pcap",
    description="A server with an abort policy: on each of three connections it answers the "
                "request, sets SO_LINGER {on, 0} and calls close(): RST instead of FIN, with "
                "nothing unread. Each connection alone looks like a close() with unread data "
                "would; together they show the policy.",
    required=[req("linger-zero-abort", "server", k) for k in range(3)],
    neutral=["server-closes-first"],
    signature=[sig(SYN, "three handshakes", count=3), sig(FIN, "no FIN anywhere", count=0),
               sig(f"{RST} && {SRV}", "one RST from the server per connection", count=3),
               sig(RST, "three RSTs", count=3)],
    expect={k: {"client": ["ESTABLISHED", "CLOSED"], "server": ["ESTABLISHED", "CLOSED"]}
            for k in range(3)},
    tool_says="linger-zero-abort (server, connections 0-2), confidence high",
)
def _linger_zero_service(ctx: Ctx) -> None:
    lsn = ctx.listen()
    for k in range(3):
        c, s = ctx.open(lsn, 40000 + k, "server", "reset")
        ctx.exchange(c, s)
        ctx.pause()
        ctx.linger_zero(s, "server")
        ctx.close(s, "server", "close() (SO_LINGER 0: abort, nothing unread)")
        ctx.pause()
        ctx.close(c, "client", "close() (the connection was reset: sends nothing)")


@scenario(
    name="data-after-close", fmt="sll2-pcap",
    description="The server answers and calls close() (FIN); the client does not notice and "
                "0.25 s later sends another request. The server's orphaned socket (FIN_WAIT_2) "
                "answers the data with RST. Captured with tcpdump -i any (Linux SLL2).",
    required=[req("rst-after-premature-close", "server", cause="data_after_close")],
    neutral=["server-closes-first"],
    signature=[sig(FIN, "only the server's FIN", count=1),
               sig(f"{FIN} && {SRV}", "the server's FIN", count=1),
               sig(f"{RST} && {SRV}", "the server's RST answers the late request", count=1),
               sig(RST, "one RST", count=1),
               sig(f"{CPORT} && tcp.len>0", "two requests from the client", count=2)],
    expect={0: {"client": ["ESTABLISHED", "CLOSE_WAIT", "CLOSED"],
                "server": ["ESTABLISHED", "FIN_WAIT_1", "FIN_WAIT_2", "CLOSED"]}},
    tool_says="rst-after-premature-close cause=data_after_close (server)",
)
def _data_after_close(ctx: Ctx) -> None:
    lsn = ctx.listen()
    c, s = ctx.open(lsn, 40000, "server", "reset")
    ctx.exchange(c, s)
    ctx.pause()
    ctx.close(s, "server")
    ctx.pause()
    ctx.send(c, "client", REQ.replace(b"42", b"43"),
             "another request on the connection the server already closed")
    ctx.pause()


def _lost_final_ack(ctx: Ctx, skip_tw: bool) -> None:
    lsn = ctx.listen()
    c, s = ctx.open(lsn, 40000, "client", "reset" if skip_tw else "graceful")
    ctx.exchange(c, s)
    ctx.pause()
    if skip_tw:
        # A non-orphaned FIN_WAIT_2 socket: with tcp_max_tw_buckets=0 an orphaned one
        # would vanish right at FIN_WAIT_2 (it needs a timewait bucket too).
        ctx.shutdown_wr(c, "client")
    else:
        ctx.close(c, "client")
    ctx.pause()
    ctx.recv_eof(s, "server")
    ctx.nft_drop(f"ip saddr {C4} tcp sport 40000 tcp dport {SPORT} tcp flags == ack "
                 "quota until 100 bytes drop",
                 "nft (input hook): drop the client's next pure ACK, once")
    ctx.close(s, "server")
    ctx.pause(0.8)  # the server retransmits its FIN after ~200-250 ms (RTO)
    ctx.nft_clear()
    if skip_tw:
        ctx.close(c, "client", "close() (the socket is already gone from the kernel's tables)")
    ctx.pause()


scenario(
    name="time-wait-skipped", fmt="pcap-ns",
    description="tcp_max_tw_buckets=0. The client shuts down its write side, the server closes "
                "too; the client's final ACK is dropped (nft). The client kept no TIME_WAIT, so "
                "the server's retransmitted FIN is answered with RST instead of an ACK.",
    sysctls={"net.ipv4.tcp_max_tw_buckets": "0"},
    required=[req("rst-after-premature-close", "client", cause="time_wait_skipped"),
              req("lost-final-ack", "server")],
    signature=[sig(f"{FIN} && {SRV}", "the server's FIN, sent twice", count=2),
               sig(f"{FIN} && {SRV} && tcp.analysis.retransmission",
                   "the retransmitted FIN", count=1),
               sig(f"{RST} && {CPORT}", "the client's RST answers the retransmitted FIN", count=1),
               sig(RST, "one RST", count=1),
               sig(f"{CPORT} && tcp.flags==0x010 && tcp.ack=={len(RESP) + 2} "
                   f"&& tcp.seq=={len(REQ) + 2}",
                   "the (lost) final ACK is in the capture", count=1)],
    expect={0: {"client": ["ESTABLISHED", "FIN_WAIT_1", "FIN_WAIT_2", "CLOSED"],
                "server": ["ESTABLISHED", "CLOSE_WAIT", "LAST_ACK", "CLOSED"]}},
    tool_says="rst-after-premature-close cause=time_wait_skipped (client), lost-final-ack (server)",
)(lambda ctx: _lost_final_ack(ctx, True))

scenario(
    name="lost-final-ack", fmt="pcap",
    description="The client closes, the server closes; the client's final ACK is dropped (nft). "
                "The server retransmits its FIN from LAST_ACK and the client, in TIME_WAIT, "
                "ACKs it again: the protocol working as designed.",
    required=[req("lost-final-ack", "server")],
    signature=[sig(f"{FIN} && {SRV}", "the server's FIN, sent twice", count=2),
               sig(f"{FIN} && {SRV} && tcp.analysis.retransmission",
                   "the retransmitted FIN", count=1),
               sig(f"{CPORT} && tcp.flags==0x010 && tcp.ack=={len(RESP) + 2}",
                   "the client ACKs the server's FIN twice", count=2),
               sig(RST, "no RST", count=0)],
    expect={0: {"client": ["ESTABLISHED", "FIN_WAIT_1", "FIN_WAIT_2", "TIME_WAIT"],
                "server": ["ESTABLISHED", "CLOSE_WAIT", "LAST_ACK", "CLOSED"]}},
    tool_says="lost-final-ack (server); no RST, TIME_WAIT did its job",
)(lambda ctx: _lost_final_ack(ctx, False))


@scenario(
    name="fin-wait-2-skipped", fmt="pcap",
    description="tcp_max_tw_buckets=0 and the client calls close(): its orphaned FIN_WAIT_2 "
                "needs a timewait bucket too, so the kernel drops the socket as soon as its FIN "
                "is ACKed. When the server closes 0.25 s later, its first FIN is answered "
                "with RST.",
    sysctls={"net.ipv4.tcp_max_tw_buckets": "0"},
    required=[req("rst-after-premature-close", "client", cause="time_wait_skipped")],
    signature=[sig(f"{FIN} && {SRV}", "the server's FIN, sent once", count=1),
               sig(f"{FIN} && {SRV} && tcp.analysis.retransmission", "no retransmission",
                   count=0),
               sig(f"{RST} && {CPORT}", "the client's RST answers the server's first FIN",
                   count=1),
               sig(RST, "one RST", count=1)],
    expect={0: {"client": ["ESTABLISHED", "FIN_WAIT_1", "CLOSED"],
                "server": ["ESTABLISHED", "CLOSE_WAIT", "CLOSED"]}},
    tool_says="rst-after-premature-close cause=time_wait_skipped (client)",
    notes="Same mechanism as time-wait-skipped (no timewait bucket), seen one step earlier: "
          "the client vanished at FIN_WAIT_2, so no ACK had to be lost for the RST.",
)
def _fin_wait_2_skipped(ctx: Ctx) -> None:
    lsn = ctx.listen()
    c, s = ctx.open(lsn, 40000, "client", "reset")
    ctx.exchange(c, s)
    ctx.pause()
    ctx.close(c, "client", "close() (orphaned: FIN_WAIT_2 would be a timewait mini-socket)")
    ctx.pause()
    ctx.recv_eof(s, "server")
    ctx.close(s, "server")
    ctx.pause()


@scenario(
    name="simultaneous-close", fmt="pcap-ns",
    description="Both sides call close() within microseconds while a slow token-bucket qdisc "
                "on lo holds both FINs in flight: each side receives the other's FIN in "
                "FIN_WAIT_1, both pass through CLOSING and both end in TIME_WAIT.",
    required=[req("simultaneous-close", None)],
    neutral=["server-closes-first"],
    signature=[sig(FIN, "two FINs", count=2),
               sig(f"{FIN} && {SRV} && tcp.ack=={len(REQ) + 5}",
                   "the server's FIN does not ack the client's FIN (they crossed)", count=1),
               sig(RST, "no RST", count=0)],
    expect={0: {"client": ["ESTABLISHED", "FIN_WAIT_1", "CLOSING", "TIME_WAIT"],
                "server": ["ESTABLISHED", "FIN_WAIT_1", "CLOSING", "TIME_WAIT"]}},
    tool_says="simultaneous-close (info); no bug",
)
def _simultaneous_close(ctx: Ctx) -> None:
    lsn = ctx.listen()
    c, s = ctx.open(lsn, 40000, "simultaneous", "graceful")
    ctx.exchange(c, s)
    ctx.pause()
    # 16 kbit/s with a 100-byte bucket: the 70-byte BYE passes at once, after it every
    # ~66-byte segment waits ~33 ms, so both FINs are queued before either is delivered,
    # and every ACK still comes back well within the 200 ms minimum RTO.
    ctx.tc("qdisc add dev lo root tbf rate 16kbit burst 100 limit 10000",
           "tc: token bucket on lo (16 kbit/s, 100-byte burst) to hold segments in flight")
    ctx.send(c, "client", b"BYE\n", "a last message (it empties the token bucket)")
    ctx.recv_exact(s, "server", 4, "the last message")
    ctx.close(c, "client")
    ctx.close(s, "server")
    ctx.pause(1.2)
    ctx.tc("qdisc del dev lo root", "tc: token bucket removed")
    ctx.pause()


@scenario(
    name="connection-refused", fmt="pcap",
    description="The client connects to 127.0.0.2:8081 where nothing listens; the kernel "
                "answers the SYN with RST/ACK (a token-bucket qdisc delays the RST ~0.2 s so "
                "ss sees SYN_SENT).",
    required=[req("connection-refused", "server")],
    signature=[sig(SYN, "one SYN", count=1),
               sig(f"{RST} && tcp.flags.ack==1 && tcp.srcport==8081", "the RST/ACK", count=1),
               sig(FIN, "no FIN", count=0)],
    expect={0: {"client": ["SYN_SENT", "CLOSED"]}},
    tool_says="connection-refused",
)
def _connection_refused(ctx: Ctx) -> None:
    ctx.tc("qdisc add dev lo root tbf rate 1kbit burst 100 limit 10000",
           "tc: token bucket on lo (1 kbit/s, 100-byte burst) so the RST leaves ~0.2 s late")
    c = ctx.client_socket(C4, 40000)
    ctx.conn(C4, 40000, S4, 8081, "server", "refused")
    ctx.act("client", f"connect() from {ep(C4, 40000)} to {ep(S4, 8081)} (nothing listens)")
    try:
        c.connect((S4, 8081))
        raise RuntimeError("connect() unexpectedly succeeded")
    except ConnectionRefusedError:
        ctx.act("client", "connect() failed: ECONNREFUSED")
    ctx.pause()
    ctx.tc("qdisc del dev lo root", "tc: token bucket removed")
    ctx.pause()


@scenario(
    name="half-open-handshake", fmt="pcap",
    description="The client sends a SYN and gives up 0.4 s later without a word (its SYN/ACKs "
                "are dropped by nft before they reach it). The server's embryonic connection "
                "stays in SYN_RECEIVED, retransmitting SYN/ACK at 1 s and 3 s, until the "
                "capture ends.",
    required=[req("half-open-handshake", "server")],
    signature=[sig(SYN, "one SYN", count=1),
               sig(SYNACK, "SYN/ACK and its retransmissions", min_=3),
               sig(f"{CPORT} && tcp.flags.syn==0", "the client never completes the handshake",
                   count=0),
               sig(RST, "no RST", count=0)],
    expect={0: {"client": ["SYN_SENT", "CLOSED"], "server": ["SYN_RECEIVED"]}},
    tool_says="half-open-handshake (server)",
    notes="The SYN/ACKs are dropped at the input hook, so they are in the capture (the capture "
          "sees what the server sent).",
)
def _half_open(ctx: Ctx) -> None:
    lsn = ctx.listen()
    ctx.nft_drop(f"ip daddr {C4} tcp sport {SPORT} tcp dport 40000 "
                 "tcp flags & (syn | ack) == syn | ack drop",
                 "nft (input hook): drop every SYN/ACK to the client")
    c = ctx.client_socket(C4, 40000)
    ctx.conn(C4, 40000, S4, SPORT, "none", "open")
    c.setblocking(False)
    ctx.act("client", f"non-blocking connect() from {ep(C4, 40000)} to {ep(S4, SPORT)}")
    try:
        c.connect((S4, SPORT))
    except BlockingIOError:
        pass
    ctx.pause(0.4)
    ctx.close(c, "client", "close() while still in SYN_SENT (sends nothing)")
    ctx.pause(3.2)
    del lsn


@scenario(
    name="syn-recv-gave-up", fmt="pcap",
    sysctls={"net.ipv4.tcp_synack_retries": "1"},
    description="The client's handshake ACK never reaches the server (nft drops the client's "
                "ACKs on the input hook): the client is ESTABLISHED, the server's request "
                "socket stays in SYN_RECEIVED, retransmits its SYN/ACK once at 1 s "
                "(tcp_synack_retries=1; the client ACKs it again, dropped again) and is "
                "dropped silently at 3 s. At 4 s, the drop rule removed, the client sends a "
                "request: the server has no connection for it and answers with RST.",
    required=[req("half-open-handshake", "server")],
    signature=[sig(SYN, "one SYN", count=1),
               sig(SYNACK, "the SYN/ACK and one retransmission", count=2),
               sig(f"{CPORT} && tcp.flags.syn==0 && tcp.len==0",
                   "the client's ACKs of both SYN/ACKs", count=2),
               sig(f"{CPORT} && tcp.len>0", "the client's request", count=1),
               sig(f"{RST} && {SRV} && tcp.flags.ack==0",
                   "the server's bare RST answers the request", count=1),
               sig(RST, "one RST", count=1)],
    expect={0: {"client": ["ESTABLISHED", "CLOSED"], "server": ["SYN_RECEIVED", "CLOSED"]}},
    tool_says="half-open-handshake (server): SYN_RECEIVED until it gave up at 3 s",
    notes="The client's ACKs are dropped at the input hook, so they are in the capture (as a "
          "capture taken beside the client would show them). The request socket is removed "
          "without a packet; `ss` shows SYN-RECV until then.",
)
def _syn_recv_gave_up(ctx: Ctx) -> None:
    lsn = ctx.listen()
    ctx.nft_drop(f"ip saddr {C4} ip daddr {S4} tcp sport 40000 tcp dport {SPORT} "
                 "tcp flags & (syn | ack) == ack drop",
                 "nft (input hook): drop every ACK from the client to the server")
    c = ctx.client_socket(C4, 40000)
    ctx.conn(C4, 40000, S4, SPORT, "server", "reset")
    ctx.act("client", f"connect() from {ep(C4, 40000)} to {ep(S4, SPORT)}")
    c.connect((S4, SPORT))
    ctx.act("server", "never accept()s: the handshake never completes for it")
    ctx.pause(4.0)
    ctx.nft_clear()
    ctx.send(c, "client", REQ, "request, 4 s after connect()")
    try:
        c.recv(100)
        raise RuntimeError("client: expected ECONNRESET")
    except ConnectionResetError:
        ctx.act("client", "recv() failed with ECONNRESET")
    ctx.pause()
    del lsn


@scenario(
    name="half-close", fmt="sll2-pcap",
    description="Legitimate half-close: the client sends its request and shutdown(SHUT_WR); "
                "the server keeps streaming the answer for 3 s (12 chunks), then closes; the "
                "client reads to EOF and closes. Captured with tcpdump -i any (Linux SLL2).",
    required=[],
    signature=[sig(FIN, "two FINs", count=2),
               sig(f"{SRV} && tcp.len>0", "12 chunks after the client's FIN", count=12),
               sig(RST, "no RST", count=0)],
    # the first chunk, sent right after the server reads EOF, carries the ACK of the FIN
    # (no 40 ms delayed ACK), so the client's FIN_WAIT_1 is too short for ss
    expect={0: {"client": ["ESTABLISHED", "FIN_WAIT_2", "TIME_WAIT"],
                "server": ["ESTABLISHED", "CLOSE_WAIT", "CLOSED"]}},
    tool_says="nothing (legitimate half-close: the server keeps sending after the client's FIN)",
)
def _half_close(ctx: Ctx) -> None:
    lsn = ctx.listen()
    c, s = ctx.open(lsn, 40000, "client", "graceful")
    ctx.pause()
    ctx.send(c, "client", REQ, "request")
    ctx.shutdown_wr(c, "client")
    ctx.recv_exact(s, "server", len(REQ), "request")
    ctx.recv_eof(s, "server")
    for i in range(12):
        chunk = b"chunk %02d of the streamed answer\n" % i
        ctx.send(s, "server", chunk, f"chunk {i + 1}/12")
        ctx.recv_exact(c, "client", len(chunk), f"chunk {i + 1}/12")
        ctx.pause()
    ctx.close(s, "server")
    ctx.recv_eof(c, "client")
    ctx.close(c, "client")
    ctx.pause()


@scenario(
    name="time-wait-reuse-client", fmt="pcap",
    description="The client closes first (TIME_WAIT on 127.0.0.1:40000); 1.2 s later, with "
                "tcp_tw_reuse=1, a new client socket binds the same port and connects to the "
                "same server: the kernel recycles the TIME_WAIT socket for the same 4-tuple.",
    sysctls={"net.ipv4.tcp_tw_reuse": "1"},
    required=[req("time-wait-reuse", "client", connection=1)],
    signature=[sig(SYN, "two SYNs on one 4-tuple", count=2), sig(FIN, "four FINs", count=4),
               sig(RST, "no RST", count=0)],
    expect={0: GRACEFUL_CLIENT[0], 1: GRACEFUL_CLIENT[0]},
    tool_says="time-wait-reuse (client, second connection)",
    notes="Connection 0's ss samples stop at the second connect(): its TIME_WAIT socket is "
          "recycled, not closed, so it never shows CLOSED.",
)
def _tw_reuse_client(ctx: Ctx) -> None:
    lsn = ctx.listen()
    for i in range(2):
        c, s = ctx.open(lsn, 40000, "client", "graceful")
        ctx.exchange(c, s)
        ctx.pause()
        ctx.close(c, "client")
        ctx.pause()
        ctx.recv_eof(s, "server")
        ctx.close(s, "server")
        if i == 0:
            ctx.pause(1.2)  # tcp_tw_reuse_delay (1 s) must pass before the reuse
        ctx.pause()


@scenario(
    name="time-wait-reuse-server", fmt="pcap-ns",
    description="The server closes first and holds TIME_WAIT for 127.0.0.2:8080 <-> "
                "127.0.0.1:40000; 0.5 s later the client connects again from the same port. "
                "The SYN hits the server's TIME_WAIT socket, which accepts it as a new "
                "incarnation (higher ISN and timestamp).",
    required=[req("time-wait-reuse", "server", connection=1),
              req("server-closes-first", "server", connection=0)],
    signature=[sig(SYN, "two SYNs on one 4-tuple", count=2), sig(FIN, "four FINs", count=4),
               sig(RST, "no RST", count=0)],
    expect={0: GRACEFUL_SERVER[0], 1: GRACEFUL_CLIENT[0]},
    tool_says="time-wait-reuse (server, second connection); server-closes-first (first)",
    notes="Connection 0's ss samples stop at the second connect(): the server's TIME_WAIT "
          "socket is recycled, not closed.",
)
def _tw_reuse_server(ctx: Ctx) -> None:
    lsn = ctx.listen()
    c, s = ctx.open(lsn, 40000, "server", "graceful")
    ctx.exchange(c, s)
    ctx.pause()
    ctx.close(s, "server")
    ctx.pause()
    ctx.recv_eof(c, "client")
    ctx.close(c, "client")
    ctx.pause(0.5)
    c, s = ctx.open(lsn, 40000, "client", "graceful")
    ctx.exchange(c, s)
    ctx.pause()
    ctx.close(c, "client")
    ctx.pause()
    ctx.recv_eof(s, "server")
    ctx.close(s, "server")
    ctx.pause()


PILEUP_N = 2000


@scenario(
    name="time-wait-pileup", fmt="pcap",
    description=f"{PILEUP_N} short request/response connections from 127.0.0.1:41000-"
                f"{41000 + PILEUP_N - 1} to 127.0.0.2:8080, each closed first by the client: "
                f"{PILEUP_N} sockets in TIME_WAIT on 127.0.0.1 at capture end.",
    required=[req("time-wait-pileup", connection=None, host=C4)],
    signature=[sig(SYN, "one SYN per connection", count=PILEUP_N),
               sig(f"{FIN} && tcp.dstport==8080", "every client closes first", count=PILEUP_N),
               sig(RST, "no RST", count=0)],
    expect={0: GRACEFUL_CLIENT[0]},
    tool_says=f"time-wait-pileup (host 127.0.0.1, {PILEUP_N} TIME_WAIT)",
    sample_interval=0.02, max_seconds=40,
    notes="Only the first connection is listed in 'connections' (it is run slowly so its "
          "states are stable; with thousands of sockets ss takes ~10-30 ms per call, too slow "
          "for the others); 'tw_count' samples the number of TIME_WAIT sockets per host over "
          "the whole capture.",
)
def _pileup(ctx: Ctx) -> None:
    ctx.tw_hosts = [C4]
    lsn = ctx.listen()
    for i in range(PILEUP_N):
        slow = i == 0
        ctx.quiet = not slow
        c, s = ctx.open(lsn, 41000 + i, "client", "graceful", listed=slow)
        ctx.exchange(c, s)
        if slow:
            ctx.pause()
        ctx.close(c, "client")
        if slow:
            ctx.pause()
        ctx.recv_eof(s, "server")
        ctx.close(s, "server")
        if slow:
            ctx.pause()
        ctx.keep.clear()
        ctx.keep.append(lsn)
    ctx.quiet = False
    ctx.act("client", f"{PILEUP_N} connections done")
    ctx.pause()


@scenario(
    name="keepalive-half-closed", fmt="pcap",
    description="The server enables SO_KEEPALIVE (namespace keepalive time 1 s, interval 1 s). "
                "The client sends its request and shutdown(SHUT_WR) and waits for an answer "
                "that never comes; the server reads EOF and neither answers nor closes. Its "
                "keepalive probes, answered by the client, keep the half-closed connection "
                "alive for 4 s.",
    sysctls={"net.ipv4.tcp_keepalive_time": "1", "net.ipv4.tcp_keepalive_intvl": "1",
             "net.ipv4.tcp_keepalive_probes": "5"},
    required=[req("keepalive-on-half-closed", "server"), req("half-closed-leak", "server"),
              req("fin-wait-2-hang", "client")],
    signature=[sig(FIN, "only the client's FIN", count=1),
               sig(f"tcp.analysis.keep_alive && {SRV}", "keepalive probes from the server",
                   min_=3),
               sig(f"tcp.analysis.keep_alive_ack && {CPORT}",
                   "the client answers the probes", min_=3),
               sig(RST, "no RST", count=0)],
    expect={0: {"client": ["ESTABLISHED", "FIN_WAIT_1", "FIN_WAIT_2"],
                "server": ["ESTABLISHED", "CLOSE_WAIT"]}},
    tool_says="keepalive-on-half-closed (server), half-closed-leak (server), "
              "fin-wait-2-hang (client)",
)
def _keepalive(ctx: Ctx) -> None:
    lsn = ctx.listen(keepalive=True)
    c, s = ctx.open(lsn, 40000, "client", "half_closed")
    ctx.pause()
    ctx.send(c, "client", REQ, "request")
    ctx.shutdown_wr(c, "client")
    ctx.recv_exact(s, "server", len(REQ), "request")
    ctx.recv_eof(s, "server")
    ctx.act("server", "neither answers nor closes")
    ctx.pause(4.3)


# --------------------------------------------------------------------------------------
# Truth assembly (child)
# --------------------------------------------------------------------------------------
def stable_sequence(states: list[str], min_run: int = MIN_STABLE_RUN) -> list[str]:
    """Distinct states in order, keeping only runs of >= min_run consecutive samples."""
    runs: list[list] = []
    for st in states:
        if runs and runs[-1][0] == st:
            runs[-1][1] += 1
        else:
            runs.append([st, 1])
    seq: list[str] = []
    for st, n in runs:
        if n < min_run or (seq and seq[-1] == st) or (not seq and st == "CLOSED"):
            continue
        seq.append(st)
    return seq


def connection_truth(ctx: Ctx, i: int, samples: list) -> dict:
    c = ctx.conns[i]
    later = [d["t_start"] for d in ctx.conns[i + 1:]
             if d["client"] == c["client"] and d["server"] == c["server"]]
    t_end = later[0] if later else float("inf")
    keys = {"client": (c["client"], c["server"]), "server": (c["server"], c["client"])}
    window = [(tb, ta, table) for tb, ta, table in samples if c["t_start"] <= ta < t_end]
    # An endpoint missing from a dump *between* two dumps that list it is not closed: while
    # an orphaned socket is swapped for its timewait mini-socket (FIN_WAIT_1 -> FIN_WAIT_2
    # or -> TIME_WAIT) one dump can miss it.  Absent is CLOSED only after the last sighting.
    last_seen = {who: max((j for j, (_, _, table) in enumerate(window) if key in table),
                          default=None) for who, key in keys.items()}
    first_seen = {who: min((j for j, (_, _, table) in enumerate(window) if key in table),
                           default=None) for who, key in keys.items()}
    rows = []
    per_ep: dict[str, list[str]] = {"client": [], "server": []}
    for j, (tb, ta, table) in enumerate(window):
        row = {"ts": round((tb + ta) / 2, 6), "ts_before": round(tb, 6), "ts_after": round(ta, 6)}
        for who, key in keys.items():
            st = table.get(key)
            if st is None and last_seen[who] is not None and j > last_seen[who]:
                st = "CLOSED"
            if st is not None:
                row[who] = st
                per_ep[who].append(st)
            elif first_seen[who] is not None and first_seen[who] < j:
                row.setdefault("missed", []).append(who)
        if "client" in row or "server" in row:
            rows.append(row)
    # compact: keep the first and the last sample of every run of identical observations
    compact = []
    for j, row in enumerate(rows):
        key = lambda r: (r.get("client"), r.get("server"), tuple(r.get("missed", ())))
        sig_ = key(row)
        prev = key(rows[j - 1]) if j else None
        nxt = key(rows[j + 1]) if j + 1 < len(rows) else None
        if sig_ != prev or sig_ != nxt:
            compact.append(row)
    out = {"client": c["client"], "server": c["server"], "closer": c["closer"],
           "close_kind": c["close_kind"], "index": i,
           "states": {who: stable_sequence(per_ep[who]) for who in ("client", "server")
                      if per_ep[who]},
           "ss_samples_seen": len(rows), "ss": compact}
    for k, v in c.items():
        if k not in out and k not in ("t_start", "listed"):
            out[k] = v
    return out


def tw_counts(hosts: list[str], samples: list) -> list[dict]:
    out = []
    for tb, ta, table in samples:
        for h in hosts:
            n = sum(1 for (loc, _), st in table.items()
                    if st == "TIME_WAIT" and loc.rsplit(":", 1)[0].strip("[]") == h)
            out.append({"ts": round((tb + ta) / 2, 6), "ts_before": round(tb, 6),
                        "ts_after": round(ta, 6), "host": h, "count": n})
    compact = []
    for j, row in enumerate(out):
        prev = out[j - 1]["count"] if j else None
        nxt = out[j + 1]["count"] if j + 1 < len(out) else None
        if row["count"] != prev or row["count"] != nxt:
            compact.append(row)
    return compact


def child_main(name: str, outdir: Path) -> int:
    sc = SCENARIOS[name]
    t0 = time.time()
    for key, val in sc.sysctls.items():
        Path("/proc/sys/" + key.replace(".", "/")).write_text(val + "\n")
    sysctls = {k: Path("/proc/sys/" + k.replace(".", "/")).read_text().strip()
               for k in sorted(set(sc.sysctls) | set(REPORTED_SYSCTLS))}
    ctx = Ctx(sc)
    cap = Capture(sc.fmt, outdir / sc.capture)
    sampler = Sampler(sc.sample_interval)
    try:
        cap.start()
        t_cap = time.time()
        sampler.start()
        time.sleep(0.05)
        sc.run(ctx)
        time.sleep(0.1)
    finally:
        sampler.stop()
        time.sleep(0.05)
        cap.stop()
        t_stop = time.time()
        for s in ctx.keep:  # only now: "still open at capture end" must stay true
            try:
                s.close()
            except OSError:
                pass
    if cap.dropped():
        print(f"[{sc.name}] the capture dropped {cap.dropped()} packets: {cap.log[-3:]}",
              file=sys.stderr)
        return 3
    samples = sampler.samples
    conns = [connection_truth(ctx, i, samples) for i, c in enumerate(ctx.conns) if c["listed"]]
    gaps = sorted(b[0] - a[0] for a, b in zip(samples, samples[1:]))
    truth = {
        "name": sc.name,
        "capture": sc.capture,
        "format": sc.fmt,
        "description": sc.description,
        "kernel": os.uname().release,
        "sysctls": sysctls,
        "actions": ctx.actions,
        "interventions": ctx.interventions,
        "connections": conns,
        "findings": {"required": sc.required, "forbidden": sc.forbidden(),
                     "neutral": sc.neutral},
        "signature": sc.signature,
        "record_seconds": round(t_stop - t0, 3),
        "capture_command": " ".join(cap.cmd),
        "capture_started": round(t_cap, 6),
        "capture_stopped": round(t_stop, 6),
        "ss_sampler": {"command": "ss -tanH (inside the namespace, back to back)",
                       "samples": len(samples),
                       "median_interval_ms":
                           round(1000 * gaps[len(gaps) // 2], 2) if gaps else None,
                       "stable_run": MIN_STABLE_RUN},
    }
    if len(ctx.conns) != len(conns):
        truth["connection_count"] = len(ctx.conns)
    if ctx.tw_hosts:
        truth["tw_count"] = tw_counts(ctx.tw_hosts, samples)
    if sc.notes:
        truth["notes"] = sc.notes
    (outdir / f"{sc.name}.truth.json").write_text(json.dumps(truth, indent=1) + "\n")
    print(f"[{sc.name}] capture: {' | '.join(cap.log[-3:])}", file=sys.stderr)
    return 0


# --------------------------------------------------------------------------------------
# Parent side: namespaces, retries, checks
# --------------------------------------------------------------------------------------
def tshark_count(path: Path, filt: str) -> int:
    out = subprocess.run(["tshark", "-n", "-r", str(path), "-Y", filt, "-T", "fields",
                          "-e", "frame.number"], capture_output=True, text=True, check=True)
    return len([ln for ln in out.stdout.splitlines() if ln.strip()])


def check(sc: Scenario, staging: Path) -> list[str]:
    problems = []
    truth = json.loads((staging / f"{sc.name}.truth.json").read_text())
    got = {c["index"]: c["states"] for c in truth["connections"]}
    for idx, exp in sc.expect.items():
        if got.get(idx) != exp:
            problems.append(f"connection {idx}: states {got.get(idx)} != designed {exp}")
    if shutil.which("tshark"):
        for s in sc.signature:
            n = tshark_count(staging / sc.capture, s["filter"])
            if ("count" in s and n != s["count"]) or ("min" in s and n < s["min"]):
                problems.append(f"signature {s['filter']!r}: {n} packets, wanted "
                                f"{s.get('count', s.get('min'))}")
    return problems


def kill_namespace(ns: str) -> None:
    pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True,
                          text=True).stdout.split()
    for pid in pids:
        try:
            os.kill(int(pid), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass
    subprocess.run(["ip", "netns", "del", ns], stderr=subprocess.DEVNULL, check=False)


def record_one(sc: Scenario, outdir: Path, attempts: int = 3, verify: bool = True) -> bool:
    for attempt in range(1, attempts + 1):
        ns = f"ta-rec-{sc.name}-{os.getpid()}"
        staging = Path(tempfile.mkdtemp(prefix=f"ta-rec-{sc.name}-"))
        proc = None
        t0 = time.time()
        try:
            subprocess.run(["ip", "netns", "add", ns], check=True)
            subprocess.run(["ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up"], check=True)
            proc = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable,
                                     str(Path(__file__).resolve()),
                                     "--child", sc.name, "--out", str(staging)],
                                    start_new_session=True)
            try:
                rc = proc.wait(timeout=sc.max_seconds + 10)
            except subprocess.TimeoutExpired:
                rc = None
            if rc != 0:
                problems = [f"child exited with {rc}" if rc is not None else "timed out"]
            else:
                problems = check(sc, staging) if verify else []
            if not problems:
                for f in (sc.capture, f"{sc.name}.truth.json"):
                    os.chmod(staging / f, 0o644)  # dumpcap writes 0600
                    shutil.move(str(staging / f), str(outdir / f))
                size = (outdir / sc.capture).stat().st_size
                print(f"{sc.name}: ok ({time.time() - t0:.1f} s, {size} bytes)", flush=True)
                return True
            print(f"{sc.name}: attempt {attempt} failed: {'; '.join(problems)}", flush=True)
        finally:
            if proc is not None and proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait()
            kill_namespace(ns)
            shutil.rmtree(staging, ignore_errors=True)
    print(f"{sc.name}: FAILED {attempts} times, nothing written", flush=True)
    return False


def _terminate(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", help="comma-separated scenario names")
    ap.add_argument("--out", type=Path, default=HERE, help="output folder (default: this folder)")
    ap.add_argument("--list", action="store_true", help="list the scenarios and exit")
    ap.add_argument("--no-verify", action="store_true",
                    help="do not check designed states / tshark signatures")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return child_main(args.child, args.out)
    # Ctrl-C and SIGTERM both unwind through record_one's finally (namespace deleted,
    # capture killed); SIGINT may arrive ignored when started as a background job.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _terminate)
    if args.list:
        for sc in SCENARIOS.values():
            print(f"{sc.name:24} {sc.fmt:9} {sc.tool_says}")
        return 0
    if os.geteuid() != 0:
        print("record.py needs root (network namespaces, tcpdump, nft)", file=sys.stderr)
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
        print(f"interrupted ({e or 'Ctrl-C'}); namespace and capture cleaned up", flush=True)
        return 130
    print(f"recorded {len(names) - len(failed)} of {len(names)} scenario(s) in "
          f"{time.time() - t0:.1f} s" + (f"; FAILED: {', '.join(failed)}" if failed else ""),
          flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
