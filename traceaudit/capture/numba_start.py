"""numba's start-up, minus an import our kernels never use.

The first compiled function that runs (or is loaded from the cache) makes numba import every
lowering registry of its CPU target. One of them, ``numba.np.arraymath``, checks whether BLAS is
available for ``np.dot`` & co. by importing ``scipy.linalg.cython_blas``; with SciPy installed
that import alone costs ~0.17 s and 13 MB, on every run of the command line. No kernel here
uses linear algebra, so ``start()`` lets numba initialise its target with ``scipy.linalg``
hidden: numba then records that BLAS is unavailable (its ``np.dot`` / ``np.linalg`` in compiled
code would fail to compile in this process; nothing in traceaudit uses them) and
``scipy.linalg`` stays importable as usual afterwards. When it is already imported, or numba's
target is already initialised, nothing is changed.
"""

from __future__ import annotations

import importlib.abc
import sys

_done = False


class _HideScipy(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "scipy.linalg" or name.startswith("scipy.linalg."):
            raise ImportError(f"{name} hidden while numba initialises (traceaudit)")


def start() -> None:
    """Initialise numba's CPU target now (idempotent)."""
    global _done
    if _done:
        return
    _done = True
    if "scipy.linalg" in sys.modules or "numba.np.arraymath" in sys.modules:
        return
    from numba.core.registry import cpu_target
    finder = _HideScipy()
    sys.meta_path.insert(0, finder)
    try:
        cpu_target.target_context.refresh()
    finally:
        sys.meta_path.remove(finder)
