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

numba also initialises its installed extensions (entry points: a scan of every installed
package's metadata) on a dispatcher's first call; that too waits for the first refresh.

A cached kernel is its machine code plus its LLVM module "for linking", kept for any later
compilation of a function that calls it. Loading one parses that module (100 KB of bitcode for
the larger kernels) only to list the symbols it defines: ~40 ms a run for the ~13 kernels of
`analyze`. With light loading the symbols are read from the machine code's ELF symbol table
instead, and the module is parsed when something first links with it (a compilation).

The light cache loading is installed only for numba versions whose cache loader it was checked
against (``LIGHT_LOADING_VERSIONS``) and can be turned off with
``TRACEAUDIT_NUMBA_FULL_START=1``; otherwise the refresh runs at once, as numba would.
"""

from __future__ import annotations

import importlib.abc
import os
import sys

from traceaudit.kernel_cache import elf_symbols

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
    from numba.core import caching, entrypoints
    from numba.core.runtime import rtsys

    numba_load = caching.Cache.load_overload
    numba_refresh = context.refresh
    refreshed = False
    # numba initialises its installed extensions (entry points: a scan of every installed
    # package's metadata, ~4 ms) on a dispatcher's first call; a cached kernel needs none of
    # them, so that waits for the first refresh too
    extensions_done = entrypoints._already_initialized
    entrypoints._already_initialized = True

    def refresh() -> None:
        nonlocal refreshed
        if not refreshed:
            refreshed = True
            del context.refresh                  # numba's own method from now on
            entrypoints._already_initialized = extensions_done   # (the refresh loads them)
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
    _lazy_linking_modules(lambda: refreshed)


def _lazy_linking_modules(refreshed) -> None:
    """Libraries loaded from the cache (until ``refreshed()``) take their defined symbols from
    their ELF object code and parse their module for linking when it is first asked for."""
    import llvmlite.binding as ll
    from numba.core import codegen

    library_class = codegen.CPUCodeLibrary
    numba_unserialize = library_class._unserialize.__func__
    numba_module_for_linking = library_class._get_module_for_linking

    def unserialize(cls, cg, state):
        name, kind, data = state
        symbols = None
        if not refreshed() and kind == "object":
            try:
                found = elf_symbols(data[0])     # (defined, undefined), None: not ELF
                symbols = None if found is None else found[0]
            except (ValueError, IndexError, UnicodeDecodeError):
                symbols = None                   # not an object file we can read: numba's way
        if symbols is None:
            return numba_unserialize(cls, cg, state)
        # numba's own steps for an object-code library, minus parsing the linking module
        object_code, linking_bitcode = data
        library = cg.create_library(name)
        library.enable_object_caching()
        library._set_compiled_object(object_code)
        library._traceaudit_linking_bitcode = linking_bitcode
        library._finalize_final_module()
        cg._engine._defined_symbols |= symbols
        return library

    def module_for_linking(self):
        bitcode = self.__dict__.pop("_traceaudit_linking_bitcode", None)
        if bitcode is not None and self._shared_module is None:
            self._shared_module = ll.parse_bitcode(bitcode)
        return numba_module_for_linking(self)

    library_class._unserialize = classmethod(unserialize)
    library_class._get_module_for_linking = module_for_linking
