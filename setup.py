"""Builds the compiled core: every ``traceaudit/**/*.pyx`` becomes an extension module.

Environment switches read by the build:
  TRACEAUDIT_BOUNDSCHECK=1   compile the core with bounds checks on every typed-memoryview index
                             (an IndexError instead of reading past an array), unoptimised (-O0:
                             it builds in a third of the time); slower, for tests.
  TRACEAUDIT_EXTENSIONS=a,b  build only these modules (dotted names); for developers iterating.
"""

import os
from pathlib import Path

from Cython.Build import cythonize
from setuptools import Extension, setup

HERE = Path(__file__).parent
BOUNDSCHECK = os.environ.get("TRACEAUDIT_BOUNDSCHECK", "") == "1"
ONLY = {name for name in os.environ.get("TRACEAUDIT_EXTENSIONS", "").split(",") if name}


def extensions() -> list[Extension]:
    found = []
    for pyx in sorted((HERE / "traceaudit").rglob("*.pyx")):
        rel = pyx.relative_to(HERE)
        name = ".".join(rel.with_suffix("").parts)
        if ONLY and name not in ONLY:
            continue
        found.append(Extension(
            name, [str(rel)],
            # -fwrapv: signed integers wrap as the kernels' 64-bit arithmetic expects;
            # -O3: flows 3-5% faster than -O2 (interleaved A/B, one core); -g0: no debug
            # information (a fifth of the size, faster to build)
            extra_compile_args=["-O0" if BOUNDSCHECK else "-O3", "-g0", "-fwrapv",
                                "-Wno-unused-function"]))
    return found


setup(ext_modules=cythonize(
    extensions(),
    compiler_directives={
        "language_level": 3,
        "boundscheck": BOUNDSCHECK,
        "wraparound": False,           # no kernel indexes from the end
        "initializedcheck": BOUNDSCHECK,
        "cdivision": False,            # // and % floor as in Python (kernels rely on it)
        "embedsignature": True,
    },
    # a bounds-checked build writes its C elsewhere, so that switching back rebuilds
    build_dir="build/cython-bounds" if BOUNDSCHECK else "build/cython",
    quiet=True))
