"""numba's start-up, minus the work our cached kernels never need.

Loading a kernel from numba's on-disk cache makes numba "refresh" its CPU target first: import
and install every typing and lowering registry it has (NumPy, random, linear algebra, typed
containers, third-party extensions) — about 0.2 s of one core on every run of the command line.
Those registries serve the compiler. A cached kernel needs only what the target context sets
up when it is created (numba's C helpers, math functions, exception classes) and the NRT (its
memory manager), so ``start()`` has cache loads initialise just the NRT and leaves the full
refresh to the first real compilation (a cache miss: first run after install, a new
signature), which numba's compiler asks for itself.

That refresh imports ``numba.np.arraymath``, which checks whether BLAS is available for
``np.dot`` & co. by importing ``scipy.linalg.cython_blas``: with SciPy installed, ~0.17 s and
13 MB. No kernel here uses linear algebra, so the refresh runs with ``scipy.linalg`` hidden:
numba then records that BLAS is unavailable (its ``np.dot`` / ``np.linalg`` in compiled code
would fail to compile in this process; nothing in traceaudit uses them) and ``scipy.linalg``
stays importable as usual afterwards.

The light cache loading is installed only for numba versions whose cache loader it was checked
against (``LIGHT_LOADING_VERSIONS``) and can be turned off with
``TRACEAUDIT_NUMBA_FULL_START=1``; otherwise the refresh runs at once, as numba would.
"""

from __future__ import annotations

import importlib.abc
import os
import sys

#: numba versions (major.minor) whose ``Cache.load_overload`` is "refresh the target context,
#: then ``_load_overload`` under ``_guard_against_spurious_io_errors``".
LIGHT_LOADING_VERSIONS = ("0.68",)

_done = False


class _HideScipy(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "scipy.linalg" or name.startswith("scipy.linalg."):
            raise ImportError(f"{name} hidden while numba initialises (traceaudit)")


def start() -> None:
    """Set numba's CPU target up for loading our cached kernels (idempotent)."""
    global _done
    if _done:
        return
    _done = True
    if "scipy.linalg" in sys.modules or "numba.np.arraymath" in sys.modules:
        return
    import numba
    from numba.core.registry import cpu_target
    context = cpu_target.target_context          # made now: helpers, math, exceptions
    version = ".".join(numba.__version__.split(".")[:2])
    if version in LIGHT_LOADING_VERSIONS and not os.environ.get("TRACEAUDIT_NUMBA_FULL_START"):
        _light_cache_loading(context)
    else:
        _refresh_hiding_scipy(context.refresh)


def _refresh_hiding_scipy(refresh) -> None:
    finder = _HideScipy()
    sys.meta_path.insert(0, finder)
    try:
        refresh()
    finally:
        sys.meta_path.remove(finder)


def _light_cache_loading(context) -> None:
    """Cache loads into ``context`` initialise the NRT only; the first refresh (numba's
    compiler asks for one before compiling anything) runs with scipy.linalg hidden and from
    then on everything is as numba does it."""
    from numba.core import caching
    from numba.core.runtime import rtsys

    numba_load = caching.Cache.load_overload
    numba_refresh = context.refresh
    refreshed = False

    def refresh() -> None:
        nonlocal refreshed
        if not refreshed:
            refreshed = True
            del context.refresh                  # numba's own method from now on
            _refresh_hiding_scipy(numba_refresh)
        else:                                    # (only if numba kept a reference to ours)
            numba_refresh()

    def load_overload(self, sig, target_context):
        if refreshed or target_context is not context:
            return numba_load(self, sig, target_context)
        rtsys.initialize(target_context)
        with self._guard_against_spurious_io_errors():
            return self._load_overload(sig, target_context)

    context.refresh = refresh
    caching.Cache.load_overload = load_overload
