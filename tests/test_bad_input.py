"""Bad input: a clear message naming file and byte offset, earlier packets kept, exit 2."""

from __future__ import annotations

import struct
import subprocess
import sys

import pytest

import pcapgen as g
from conftest import cli_run as run
from conftest import flows_json
from traceaudit.report.output import OutputError, write_with


def good_pcap() -> bytes:
    conv = g.Conversation()
    conv.handshake().send("c", g.ACK | g.PSH, b"hi").close_by("c")
    return g.pcap_bytes(conv.frames)


GOOD = good_pcap()
FIRST_RECORD = 24
SECOND_RECORD = FIRST_RECORD + 16 + struct.unpack("<I", GOOD[32:36])[0]


def test_not_a_capture(tmp_path):
    p = tmp_path / "notes.txt"
    p.write_text("hello, this is not a capture\n")
    result, rows = flows_json(tmp_path, p)
    assert result.exit_code == 2
    assert f"{p} at byte offset 0: not a pcap or pcapng file" in result.stderr
    assert rows == []


def test_empty_file(tmp_path):
    p = tmp_path / "empty.pcap"
    p.write_bytes(b"")
    result, _ = flows_json(tmp_path, p)
    assert result.exit_code == 2 and f"{p} at byte offset 0: empty file" in result.stderr


def test_header_cut_short(tmp_path):
    p = tmp_path / "head.pcap"
    p.write_bytes(GOOD[:10])
    result, _ = flows_json(tmp_path, p)
    assert result.exit_code == 2 and "file header cut short" in result.stderr


def test_file_cut_in_the_middle_of_a_record_keeps_earlier_packets(tmp_path):
    p = tmp_path / "cut.pcap"
    p.write_bytes(GOOD[:SECOND_RECORD + 30])
    result, rows = flows_json(tmp_path, p)
    assert result.exit_code == 2
    assert f"{p} at byte offset {SECOND_RECORD}: file ends in the middle of a record" \
        in result.stderr
    assert "kept 1 packet(s)" in result.stderr
    assert len(rows) == 1 and rows[0]["client_packets"] == 1


def test_absurd_record_length(tmp_path):
    data = bytearray(GOOD)
    data[SECOND_RECORD + 8:SECOND_RECORD + 12] = struct.pack("<I", 0x7FFFFFF0)
    p = tmp_path / "absurd.pcap"
    p.write_bytes(bytes(data))
    result, rows = flows_json(tmp_path, p)
    assert result.exit_code == 2
    assert f"byte offset {SECOND_RECORD}: record length 2147483632 is absurd" in result.stderr
    assert rows[0]["client_packets"] == 1


def test_unknown_link_type(tmp_path):
    data = bytearray(GOOD)
    data[20:24] = struct.pack("<I", 147)
    p = tmp_path / "user0.pcap"
    p.write_bytes(bytes(data))
    result, _ = flows_json(tmp_path, p)
    assert result.exit_code == 2
    assert f"{p} at byte offset 20: link type 147 is not decoded" in result.stderr
    assert "--reader tshark" in result.stderr


def test_corrupt_pcapng_block(tmp_path):
    conv = g.Conversation()
    conv.handshake().close_by("s")
    data = bytearray(g.pcapng_section(conv.frames))
    # find the third enhanced packet block and break its trailing length
    pos, seen = 0, 0
    while True:
        btype, blen = struct.unpack("<II", data[pos:pos + 8])
        if btype == 6:
            seen += 1
            if seen == 3:
                break
        pos += blen
    data[pos + blen - 4:pos + blen] = struct.pack("<I", blen + 4)
    p = tmp_path / "corrupt.pcapng"
    p.write_bytes(bytes(data))
    result, rows = flows_json(tmp_path, p)
    assert result.exit_code == 2
    assert f"{p} at byte offset {pos}: corrupt pcapng block" in result.stderr
    assert rows[0]["client_packets"] + rows[0]["server_packets"] == 2


def test_pcapng_unknown_link_type(tmp_path):
    conv = g.Conversation()
    conv.handshake()
    p = tmp_path / "usb.pcapng"
    p.write_bytes(g.pcapng_section(conv.frames, interfaces=[(189, None)]))
    result, _ = flows_json(tmp_path, p)
    assert result.exit_code == 2 and "link type 189 is not decoded" in result.stderr


def test_truncated_gzip(tmp_path):
    p = tmp_path / "cut.pcap.gz"
    p.write_bytes(g.gzipped(GOOD * 1)[:-12])
    result, _ = flows_json(tmp_path, p)
    assert result.exit_code == 2 and str(p) in result.stderr and "byte offset" in result.stderr


def test_missing_file(tmp_path):
    result, _ = flows_json(tmp_path, tmp_path / "nope.pcap")
    assert result.exit_code == 2 and "nope.pcap: cannot open" in result.stderr


def test_one_bad_file_does_not_stop_the_others(tmp_path):
    bad = tmp_path / "bad.pcap"
    bad.write_bytes(b"\xd4\xc3\xb2\xa1" + b"\0" * 5)
    good = tmp_path / "good.pcap"
    good.write_bytes(GOOD)
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(GOOD[:SECOND_RECORD + 3])
    result, rows = flows_json(tmp_path, bad, good, cut)
    assert result.exit_code == 2
    assert str(bad) in result.stderr and str(cut) in result.stderr
    captures = sorted({r["capture"] for r in rows})
    assert captures == [str(cut), str(good)]


def test_output_is_not_half_written_on_error(tmp_path):
    target = tmp_path / "flows.csv"
    target.write_text("previous\n")

    def failing_writer(tmp):
        with open(tmp, "w") as fh:
            fh.write("half of a report")
        raise OSError(28, "No space left on device")

    with pytest.raises(OutputError, match="No space left"):
        write_with(target, failing_writer)
    assert target.read_text() == "previous\n"
    assert [p.name for p in tmp_path.iterdir()] == ["flows.csv"]


@pytest.mark.parametrize("content", [b"", b"\x0a\x0d\x0d\x0a\x10\x00", b"\x1f\x8bgarbage"])
def test_no_traceback_from_the_installed_command(tmp_path, content):
    p = tmp_path / "x.pcap"
    p.write_bytes(content)
    proc = subprocess.run([sys.executable, "-m", "traceaudit.cli", "flows", str(p)],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and str(p) in proc.stderr


def test_reports_get_ordinary_file_permissions(tmp_path):
    import os
    target = tmp_path / "report.csv"
    write_with(target, lambda tmp: open(tmp, "w").write("x\n"))
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask


@pytest.mark.parametrize("resol", [64, 19, 0x80 | 63])
def test_pcapng_time_resolution_beyond_nanosecond_range(tmp_path, resol):
    conv = g.Conversation()
    conv.handshake()
    data = g.pcapng_section(conv.frames[:0], interfaces=[(1, resol)])
    p = tmp_path / "resol.pcapng"
    p.write_bytes(data)
    result, _ = flows_json(tmp_path, p)
    assert result.exit_code == 2
    assert f"{p} at byte offset 28: corrupt pcapng interface block: time resolution" \
        in result.stderr


@pytest.mark.parametrize("big_endian", [False, True])
def test_obsolete_packet_block_on_undecoded_link_names_the_link(tmp_path, big_endian):
    conv = g.Conversation()
    conv.handshake()
    data = bytearray(g.pcapng_section(conv.frames, interfaces=[(189, None)], block="pb",
                                      big_endian=big_endian))
    o = ">" if big_endian else "<"
    pos = 0
    while struct.unpack(o + "I", data[pos:pos + 4])[0] != 2:
        pos += struct.unpack(o + "I", data[pos + 4:pos + 8])[0]
    data[pos + 10:pos + 12] = struct.pack(o + "H", 7)      # a drop count after the 16-bit id
    p = tmp_path / "pb.pcapng"
    p.write_bytes(bytes(data))
    result, _ = flows_json(tmp_path, p)
    assert result.exit_code == 2
    assert f"{p} at byte offset {pos}: link type 189 is not decoded" in result.stderr
