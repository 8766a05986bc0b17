"""Fuzz the capture reader and the stages it feeds with mutated and truncated captures.

Valid captures (classic pcap in both byte orders and resolutions, pcapng with several sections,
interfaces and block kinds, other link layers, gzip; the small sample and corpus captures) are
damaged by Hypothesis (bytes and 32-bit fields overwritten, bytes inserted, deleted or
repeated, the file cut short, before or after gzip) and read under hostile file names. For
every input:

- reading it (record walk, decoder) and analysing it (connections, trackers, Zeek view,
  excerpts) raises nothing but ``CaptureError``, and no exception is swallowed as
  "unraisable" (what a bounds check in a ``nogil`` kernel turns into);
- every ``CaptureError`` names the file and the byte offset of the damage, within the file;
- the analysis reads the same packets as the reader;
- a file only cut short keeps exactly the packets wholly before the cut;
- (one input in eight) ``traceaudit analyze`` with every report, and ``states``, exit 0 or 2
  and report no internal error.

Run it on the core built with bounds checks (an out-of-bounds index there is an IndexError,
a read past an array in the normal build); ``tests/test_fuzz.py`` does, CI-sized:

    python3 tests/fuzz/run.py --minutes 30 --checked /tmp/traceaudit-checked

Without ``--minutes`` it runs ``--examples`` inputs per property. It prints what it ran and
exits 1 at the first failure, with Hypothesis' smallest failing example.
"""

from __future__ import annotations

import argparse
import os
import struct
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
TESTS = HERE.parent
sys.path.insert(0, str(TESTS))


def _checked_first() -> None:
    """``--checked DIR``: build the bounds-checked copy in DIR (once) and run again on it."""
    if "--checked" not in sys.argv[1:-1]:
        return
    work = Path(sys.argv[sys.argv.index("--checked") + 1]).resolve()
    if os.environ.get("TRACEAUDIT_FUZZ_CHECKED") == str(work):
        return
    if not (work / "traceaudit").is_dir():
        import traceaudit

        from fuzz.checked_build import build_checked
        print(f"building the bounds-checked core in {work} ...", flush=True)
        work.mkdir(parents=True, exist_ok=True)
        build_checked(work, Path(traceaudit.__file__).resolve().parent)
    env = dict(os.environ, PYTHONPATH=str(work), TRACEAUDIT_FUZZ_CHECKED=str(work))
    os.execve(sys.executable, [sys.executable, __file__, *sys.argv[1:]], env)


_checked_first()

import pcapgen as g  # noqa: E402
from hypothesis import HealthCheck, given, seed, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from traceaudit.capture.native import NativeSource  # noqa: E402
from traceaudit.errors import CaptureError  # noqa: E402
from traceaudit.names import display_name  # noqa: E402
from traceaudit.pipeline import ReadOptions, analyze_capture  # noqa: E402

SAMPLES = TESTS.parent / "sample_pcaps"
CORPUS = TESTS.parent.parent / "shared" / "corpus" / "zeek" / "traces"
MAX_SEED_BYTES = 4096
NAMES = ("capture.pcap", "dir/ütf-8 name.pcapng", b"bad\xff\xfe name\n\x1b[31m.pcap")
OPTIONS = ReadOptions(read_ahead=False, frames_soon=False)


# -- valid captures to damage ------------------------------------------------------------------
def _conversation(**kw) -> list[g.Frame]:
    conv = g.Conversation(**kw)
    conv.handshake().send("c", g.ACK | g.PSH, b"GET / HTTP/1.0\r\n\r\n")
    conv.send("s", g.ACK | g.PSH, b"HTTP/1.0 200 OK\r\n\r\nhello").close_by("s")
    conv.send("c", g.RST)
    return conv.frames


def _relinked(frames: list[g.Frame], head: bytes, strip: int = 14) -> list[g.Frame]:
    """The frames' IP packets behind another link header (raw IP, null, SLL)."""
    return [g.Frame(f.ts_ns, head + f.data[strip:], None, f.interface) for f in frames]


def seeds() -> dict[str, tuple[bytes, bool]]:
    """name -> (valid capture bytes, whether ``packets_of`` can count its records)."""
    v4 = _conversation()
    v6 = _conversation(client="2001:db8::1", server="2001:db8::2")
    two = [g.Frame(f.ts_ns, f.data, None, i % 2) for i, f in enumerate(v4)]
    out = {
        "pcap": g.pcap_bytes(v4),
        "pcap-be-nano": g.pcap_bytes(v6, big_endian=True, nano=True),
        "pcap-snap60": g.pcap_bytes(v4, snaplen=60),
        "pcap-raw-ip": g.pcap_bytes(_relinked(v4, b""), linktype=101),
        "pcap-null": g.pcap_bytes(_relinked(v6, struct.pack("<I", 24)), linktype=0),
        "pcap-sll": g.pcap_bytes(_relinked(v4, struct.pack("!HHH8sH", 0, 1, 6, b"\2" * 8,
                                                           0x0800)), linktype=113),
        "pcapng": g.pcapng_section(v4),
        "pcapng-2if": g.pcapng_section(two, interfaces=[(1, 9), (1, 0x80 | 20)]),
        "pcapng-spb": g.pcapng_section(v6, block="spb"),
        "pcapng-pb-be": g.pcapng_section(v4, block="pb", big_endian=True),
        "pcapng-2sections": g.pcapng_section(v4[:4]) + g.pcapng_section(v6, big_endian=True),
    }
    found = {k: (v, True) for k, v in out.items()}
    found["pcap.gz"] = (g.gzipped(out["pcap"]), False)
    found["pcapng-2sections.gz"] = (g.gzipped(out["pcapng-2sections"]), False)
    for directory in (SAMPLES, CORPUS):
        if directory.is_dir():
            for p in sorted(directory.glob("*.pcap*")):
                if p.stat().st_size <= MAX_SEED_BYTES:
                    found[p.name] = (p.read_bytes(), not p.name.endswith(".gz"))
    return found


SEEDS = seeds()
SEED_NAMES = sorted(SEEDS)


def packets_of(data: bytes, cut: int) -> int:
    """Records of a valid uncompressed capture that lie wholly within its first ``cut`` bytes
    (an oracle independent of the reader)."""
    if data[:4] == b"\n\r\r\n":
        count, pos, order = 0, 0, "<"
        while pos + 12 <= len(data):
            if data[pos:pos + 4] == b"\n\r\r\n":
                order = "<" if data[pos + 8:pos + 12] == b"\x4d\x3c\x2b\x1a" else ">"
            btype, blen = struct.unpack(order + "II", data[pos:pos + 8])
            if pos + blen > cut:
                break
            count += btype in (2, 3, 6)
            pos += blen
        return count
    order = "<" if data[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    count, pos = 0, 24
    if cut < 24:
        return 0
    while pos + 16 <= len(data):
        incl = struct.unpack(order + "I", data[pos + 8:pos + 12])[0]
        if pos + 16 + incl > cut:
            break
        count += 1
        pos += 16 + incl
    return count


# -- damage ------------------------------------------------------------------------------------
FIELD_VALUES = (0, 1, 3, 4, 12, 0x7F, 0xFFFF, 0x10000, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF)

mutation = st.one_of(
    st.tuples(st.just("byte"), st.integers(0, 1 << 16), st.integers(0, 255)),
    st.tuples(st.just("u32"), st.integers(0, 1 << 16),
              st.one_of(st.sampled_from(FIELD_VALUES), st.integers(0, 0xFFFFFFFF)),
              st.booleans()),
    st.tuples(st.just("insert"), st.integers(0, 1 << 16), st.binary(min_size=1, max_size=16)),
    st.tuples(st.just("delete"), st.integers(0, 1 << 16), st.integers(1, 64)),
    st.tuples(st.just("repeat"), st.integers(0, 1 << 16), st.integers(1, 256)),
    st.tuples(st.just("cut"), st.integers(0, 1 << 16)),
)


def damaged(data: bytes, mutations: list[tuple]) -> bytes:
    out = bytearray(data)
    for m in mutations:
        if not out:
            break
        pos = m[1] % len(out)
        if m[0] == "byte":
            out[pos] = m[2]
        elif m[0] == "u32":
            pos = min(pos, max(len(out) - 4, 0))
            out[pos:pos + 4] = struct.pack(">I" if m[3] else "<I", m[2])
        elif m[0] == "insert":
            out[pos:pos] = m[2]
        elif m[0] == "delete":
            del out[pos:pos + m[2]]
        elif m[0] == "repeat":
            out[pos:pos] = out[pos:pos + m[2]]
        else:
            del out[pos:]
    return bytes(out)


# -- the properties ----------------------------------------------------------------------------
class Run:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.inputs = 0
        self.rejected = 0          # inputs that ended in a CaptureError
        self.unraisable: list[str] = []
        sys.unraisablehook = lambda u: self.unraisable.append(
            f"{u.exc_type.__name__}: {u.exc_value} in {u.object!r}")

    def write(self, data: bytes, name) -> str:
        path = os.path.join(os.fsencode(self.workdir), os.fsencode(name))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
        return os.fsdecode(path)

    def check(self, data: bytes, name, compressed: bool) -> int:
        """Read and analyse ``data`` under ``name``; the packets read."""
        path = self.write(data, name)
        self.inputs += 1
        source = NativeSource(path, seg_flags=True)
        error = None
        try:
            for batch in source.batches():
                n = len(batch)
                assert all(len(v) == n for v in batch.columns.values())
        except CaptureError as exc:
            error = exc
        error = error or source.stats.error
        self._named(error, path, data, compressed)
        analysis = analyze_capture(path, OPTIONS)
        self._named(analysis.stats.error, path, data, compressed)
        assert analysis.stats.packets == source.stats.packets, \
            (analysis.stats.packets, source.stats.packets)
        assert not self.unraisable, self.unraisable
        self.rejected += error is not None
        return source.stats.packets

    def report(self, data: bytes, name) -> None:
        """``analyze`` with every report, and ``states``: exit 0 or 2, never a bug."""
        import gc

        from click.testing import CliRunner

        from traceaudit.cli import main
        path = self.write(data, name)
        self.inputs += 1
        out = self.workdir / "out"
        for args in (["analyze", path, "--exit-zero", "--json", f"{out}.json", "--html",
                      f"{out}.html", "--junit", f"{out}.xml", "--sarif", f"{out}.sarif"],
                     ["states", path, "--at", "0.5"]):
            result = CliRunner().invoke(main, args)
            gc.enable()                        # (the command turns it off for its run)
            assert result.exception is None or isinstance(result.exception, SystemExit), \
                result.exception
            assert result.exit_code in (0, 2), (result.exit_code, result.stderr)
            assert "internal error" not in result.stderr, result.stderr
            assert not self.unraisable, self.unraisable

    @staticmethod
    def _named(error: CaptureError | None, path: str, data: bytes, compressed: bool) -> None:
        if error is None:
            return
        assert isinstance(error, CaptureError), repr(error)
        assert error.offset is not None, str(error)
        assert str(error).startswith(f"{display_name(path)} at byte offset {error.offset}: "), \
            str(error)
        assert error.offset >= 0 and (compressed or error.offset <= len(data)), str(error)


def properties(run: Run, examples: int):
    common = settings(max_examples=examples, deadline=None, database=None,
                      suppress_health_check=list(HealthCheck), print_blob=True)

    @common
    @given(st.sampled_from(SEED_NAMES), st.lists(mutation, min_size=1, max_size=8),
           st.booleans(), st.sampled_from(NAMES))
    def damaged_captures(seed_name, mutations, then_gzip, name):
        data, _ = SEEDS[seed_name]
        out = damaged(data, mutations)
        if then_gzip:
            out = g.gzipped(out)
        run.check(out, name, compressed=then_gzip or seed_name.endswith(".gz"))

    @common
    @given(st.sampled_from(SEED_NAMES), st.integers(0, 1 << 16))
    def cut_short(seed_name, where):
        data, countable = SEEDS[seed_name]
        cut = where % (len(data) + 1)
        kept = run.check(data[:cut], NAMES[0], compressed=not countable)
        if countable:
            assert kept == packets_of(data, cut), (kept, packets_of(data, cut))

    @settings(common, max_examples=max(1, examples // 8))
    @given(st.sampled_from(SEED_NAMES), st.lists(mutation, min_size=1, max_size=4),
           st.sampled_from(NAMES))
    def reports(seed_name, mutations, name):
        data, _ = SEEDS[seed_name]
        run.report(damaged(data, mutations), name)

    return [damaged_captures, cut_short, reports]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--examples", type=int, default=500,
                    help="inputs per property (per round with --minutes)")
    ap.add_argument("--minutes", type=float, default=0.0,
                    help="keep running rounds of new inputs for this long")
    ap.add_argument("--seed", type=int, default=0, help="first round's random seed")
    ap.add_argument("--checked", metavar="DIR",
                    help="build the core with bounds checks in DIR (once; kept for later "
                         "runs) and fuzz that build")
    args = ap.parse_args(argv)
    import traceaudit.capture.walk as walk
    print(f"fuzzing {walk.__file__} and the stages after it; {len(SEEDS)} seed captures",
          flush=True)
    started = time.monotonic()
    deadline = started + args.minutes * 60
    with tempfile.TemporaryDirectory(prefix="traceaudit-fuzz-") as tmp:
        run = Run(Path(tmp))
        rounds = 0
        while True:
            for prop in properties(run, args.examples):
                seed(args.seed + rounds)(prop)()
            rounds += 1
            if time.monotonic() >= deadline:
                break
    took = time.monotonic() - started
    print(f"{run.inputs} inputs ({run.rejected} rejected with a CaptureError) in {took:.0f} s, "
          f"{rounds} round(s): 0 failures", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
