"""The synthetic benchmark capture: valid, deterministic, and as planned (small sizes, fast)."""

from __future__ import annotations

import importlib.util
import json
import shutil
import struct
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from pcapgen import internet_checksum as csum

HERE = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("make_synthetic", HERE / "make_synthetic.py")
ms = importlib.util.module_from_spec(_spec)
sys.modules["make_synthetic"] = ms
_spec.loader.exec_module(ms)

needs_tshark = pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed")
needs_tcptrace = pytest.mark.skipif(shutil.which("tcptrace") is None,
                                    reason="tcptrace not installed")
N = 1500


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    out = tmp_path_factory.mktemp("synthetic") / "small.pcap"
    plan = ms.generate(out, connections=N, seed=7, truth=True)
    return out, plan


def records(path: Path):
    """(record headers as an (n, 4) array, list of frame bytes) of a little-endian pcap."""
    data = path.read_bytes()
    assert data[:4] == b"\xd4\xc3\xb2\xa1"
    version, snaplen, linktype = struct.unpack("<HH", data[4:8]), *struct.unpack("<II", data[16:24])
    assert version == (2, 4) and snaplen == 128 and linktype == 1
    heads, frames, off = [], [], 24
    while off < len(data):
        h = struct.unpack_from("<IIII", data, off)
        heads.append(h)
        frames.append(data[off + 16: off + 16 + h[2]])
        off += 16 + h[2]
    assert off == len(data)
    return np.array(heads, dtype=np.int64), frames


def test_deterministic(tmp_path, small):
    path, plan = small
    again = tmp_path / "again.pcap"
    ms.generate(again, connections=N, seed=7)
    assert again.read_bytes() == path.read_bytes()
    other = tmp_path / "other.pcap"
    ms.generate(other, connections=N, seed=8)
    assert other.read_bytes() != path.read_bytes()


def test_plan_matches_file(small):
    path, plan = small
    heads, frames = records(path)
    assert plan == json.loads(ms.plan_path_for(path).read_text())
    assert plan["packets"] == len(heads)
    assert plan["bytes"] == path.stat().st_size
    assert sum(plan["kinds"].values()) == plan["connections"] == N
    assert sum(plan["packets_by_kind"].values()) == plan["packets"]
    assert plan["ipv4_connections"] + plan["ipv6_connections"] == N
    assert plan["ipv6_connections"] == round(N * 0.05)
    for kind, (share, _) in ms.KINDS.items():
        assert abs(plan["kinds"][kind] - share * N) <= 1, kind
    # about 30 packets per connection
    assert 26 < plan["packets"] / N < 34
    # global time order; caplen = min(orig_len, snaplen)
    t = heads[:, 0] * 1_000_000 + heads[:, 1]
    assert (np.diff(t) >= 0).all()
    assert (heads[:, 1] < 1_000_000).all()
    assert (heads[:, 2] == np.minimum(heads[:, 3], 128)).all()
    truth = path.with_suffix(".truth.csv").read_text().splitlines()
    assert len(truth) == N + 1
    assert Counter(line.split(",")[6] for line in truth[1:]) == Counter(plan["kinds"])
    assert sum(int(line.split(",")[7]) for line in truth[1:]) == plan["packets"]


def test_headers_valid(small):
    path, plan = small
    heads, frames = records(path)
    tuples, flags_seen, syn_opts = set(), Counter(), 0
    for (_, _, caplen, orig), f in zip(heads, frames):
        etype = struct.unpack("!H", f[12:14])[0]
        if etype == 0x0800:
            ip = f[14:34]
            assert ip[0] == 0x45 and ip[9] == 6
            assert struct.unpack("!H", ip[2:4])[0] == orig - 14
            assert csum(ip) == 0
            src, dst, l4 = ip[12:16], ip[16:20], 34
        else:
            assert etype == 0x86DD
            ip = f[14:54]
            assert ip[0] >> 4 == 6 and ip[6] == 6
            assert struct.unpack("!H", ip[4:6])[0] == orig - 54
            src, dst, l4 = ip[8:24], ip[24:40], 54
        tcp = f[l4:]
        sport, dport, seq, ack, offfl = struct.unpack("!HHIIH", tcp[:14])
        hlen = (offfl >> 12) * 4
        flags = offfl & 0x1FF
        flags_seen[flags] += 1
        assert hlen in (20, 32, 40)
        assert l4 + hlen <= orig
        if flags & 0x02:
            assert hlen == 40 and tcp[20:24] == b"\x02\x04" + tcp[22:24]
            assert tcp[24:28] == b"\x04\x02\x08\x0a" and tcp[36:40] == b"\x01\x03\x03\x07"
            syn_opts += 1
        elif hlen == 32:
            assert tcp[20:24] == b"\x01\x01\x08\x0a"
        else:
            assert flags & 0x04          # only RSTs without options
        if not flags & 0x10:
            assert ack == 0
        if orig == caplen:               # whole segment captured: TCP checksum verifiable
            seglen = orig - l4
            pseudo = src + dst + (struct.pack("!BBH", 0, 6, seglen) if len(src) == 4
                                  else struct.pack("!IxxxB", seglen, 6))
            assert csum(pseudo + tcp) == 0
        client = (src, sport) if 32768 <= sport <= 60999 else (dst, dport)
        assert 32768 <= client[1] <= 60999
        tuples.add(client)
    assert len(tuples) == N
    assert syn_opts == plan["packets_with_syn"]
    assert sum(v for k, v in flags_seen.items() if k & 0x04) == plan["packets_with_rst"]
    assert sum(v for k, v in flags_seen.items() if k & 0x01) == plan["packets_with_fin"]


@needs_tshark
def test_tshark_decodes_everything(small):
    path, plan = small
    flt = ("_ws.malformed || _ws.expert.severity == error || "
           "tcp.analysis.lost_segment || tcp.analysis.ack_lost_segment || "
           "tcp.analysis.out_of_order || tcp.analysis.spurious_retransmission || "
           "tcp.analysis.keep_alive")
    bad = subprocess.run(["tshark", "-n", "-r", str(path), "-Y", flt],
                         capture_output=True, text=True, check=True).stdout
    assert bad == ""
    retx = subprocess.run(["tshark", "-n", "-r", str(path), "-Y", "tcp.analysis.retransmission"],
                          capture_output=True, text=True, check=True).stdout
    assert len(retx.splitlines()) == plan["retransmissions_total"]
    conv = subprocess.run(["tshark", "-n", "-q", "-z", "conv,tcp", "-r", str(path)],
                          capture_output=True, text=True, check=True).stdout
    assert sum("<->" in line for line in conv.splitlines()) == plan["tcp_conversations"] == N


@needs_tcptrace
def test_tcptrace_reads_it(small):
    path, plan = small
    out = subprocess.run(["tcptrace", "-n", str(path)], capture_output=True, text=True,
                         check=True).stdout
    assert f"{plan['packets']} packets seen, {plan['packets']} TCP packets traced" in out
    conns = [line for line in out.splitlines() if line.strip()[:1].isdigit() and ": " in line
             and " - " in line]
    assert len(conns) == N
