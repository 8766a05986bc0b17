"""The compiled core never reads outside an array, whatever the capture says.

The core is built without bounds checks; this builds the modules that read capture bytes (and
the stages they feed) again with ``TRACEAUDIT_BOUNDSCHECK=1`` into a copy of the package
(``checked_package`` in conftest.py, built once a session; ``test_fuzz.py`` uses it too) and
runs a corpus of damaged captures through both builds: the checked build must raise no
IndexError (an out-of-bounds index there is a read past an array in the normal build), and
both builds must answer alike.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

import pcapgen as g
import traceaudit
from conftest import CORPUS_TRACES, SAMPLE_CAPTURES
from test_decode_vs_tshark import ENCAPS, LINKS, two_connections
from test_fragments import fragmented

pytest.importorskip("Cython", reason="Cython is needed to build the checked core")

MUTANTS_PER_CAPTURE = 10


def _crafted() -> dict[str, bytes]:
    """Captures of the link types, encapsulations and fragments the samples lack."""
    out = {f"link-{name}.pcap": g.pcap_bytes(two_connections(wrap), linktype=linktype)
           for name, (linktype, wrap) in LINKS.items()}
    out.update({f"encap-{name}.pcap": g.pcap_bytes(two_connections(wrap))
                for name, wrap in ENCAPS.items()})
    out["frag-v4.pcap"] = g.pcap_bytes(fragmented(8, every=2))
    out["frag-v6.pcap"] = g.pcap_bytes(fragmented(16, v6=True, every=2))
    return out


def _damaged(data: bytes, rng: random.Random) -> bytes:
    """One kind of damage: cut short, bytes overwritten (lengths, offsets, flags), or both."""
    out = bytearray(data)
    kind = rng.randrange(3)
    if kind in (0, 2):
        for _ in range(rng.randint(1, 24)):
            pos = rng.randrange(min(len(out), 24), len(out))
            out[pos] = rng.choice((0, 0xFF, 0x40, 0x45, 0x60, 0x08, rng.randrange(256)))
    if kind in (1, 2):
        out = out[:rng.randrange(24, len(out))]
    return bytes(out)


@pytest.fixture(scope="module")
def damaged_corpus(tmp_path_factory) -> list[Path]:
    rng = random.Random(17)
    out = tmp_path_factory.mktemp("damaged")
    originals = SAMPLE_CAPTURES + [p for p in CORPUS_TRACES if p.stat().st_size < 400_000]
    crafted = out / "crafted"
    crafted.mkdir()
    for name, data in _crafted().items():
        (crafted / name).write_bytes(data)
        originals.append(crafted / name)
    files = []
    for original in originals:
        data = original.read_bytes()
        for i in range(MUTANTS_PER_CAPTURE):
            target = out / f"{original.stem}-{i}{original.suffix}"
            target.write_bytes(_damaged(data, rng))
            files.append(target)
    return files


def _flows(package_dir: Path | None, files: list[Path], out: Path) -> subprocess.CompletedProcess:
    # run outside the checkout: `python -m` puts the working directory first on sys.path
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if package_dir is not None:
        env["PYTHONPATH"] = str(package_dir)
    return subprocess.run([sys.executable, "-m", "traceaudit", "flows", *map(str, files),
                           "--format", "csv", "-o", str(out)],
                          capture_output=True, text=True, env=env, timeout=600, cwd=out.parent)


def test_checked_core_reads_nothing_out_of_bounds_on_damaged_captures(
        checked_package, damaged_corpus, tmp_path):
    probe = subprocess.run([sys.executable, "-c", "import traceaudit.capture.decode as d; "
                            "print(d.__file__)"], capture_output=True, text=True,
                           env=dict(os.environ, PYTHONPATH=str(checked_package)), cwd=tmp_path)
    assert probe.stdout.startswith(str(checked_package)), probe.stdout + probe.stderr
    checked = _flows(checked_package, damaged_corpus, tmp_path / "checked.csv")
    # the package this test imported (the installed one, or the checkout on PYTHONPATH)
    normal = _flows(Path(traceaudit.__file__).resolve().parents[1], damaged_corpus,
                    tmp_path / "normal.csv")
    for run in (checked, normal):
        assert "IndexError" not in run.stderr and "Traceback" not in run.stderr, run.stderr[-3000:]
        assert "Exception ignored" not in run.stderr, run.stderr[-3000:]
    assert checked.returncode == normal.returncode == 2    # damaged files are reported
    assert (tmp_path / "checked.csv").read_bytes() == (tmp_path / "normal.csv").read_bytes()
    assert checked.stderr == normal.stderr
    assert len(damaged_corpus) >= 20 * MUTANTS_PER_CAPTURE
