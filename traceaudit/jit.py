"""numba, imported without two packages it only checks for.

``import numba`` imports SciPy when it is installed (to check its version) and PyYAML (to read
a ``.numba_config.yaml`` in the working directory, if there is one): about 15 ms of every run,
for nothing here, since no kernel uses SciPy. Kernel modules take ``njit`` from this module,
so the first of them imports numba with SciPy hidden, and PyYAML too unless that file exists;
both are importable as usual afterwards.
"""

from __future__ import annotations

import os
import sys


def _import_numba() -> None:
    if "numba" in sys.modules:
        return
    hide = [name for name in ("scipy", "yaml") if name not in sys.modules]
    if os.path.isfile(".numba_config.yaml") and "yaml" in hide:
        hide.remove("yaml")                   # numba reads its settings from that file
    for name in hide:
        sys.modules[name] = None              # `import name` raises ImportError
    try:
        import numba  # noqa: F401
    finally:
        for name in hide:
            if sys.modules.get(name, 0) is None:
                del sys.modules[name]


_import_numba()

from numba import njit, types  # noqa: E402
from numba.core import cgutils  # noqa: E402
from numba.core.extending import intrinsic  # noqa: E402

__all__ = ["cgutils", "intrinsic", "njit", "types"]
