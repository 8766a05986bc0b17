"""numba's ``njit`` and ``intrinsic``, with numba imported only when something must compile.

Kernel modules take ``njit``, ``intrinsic``, ``types``, ``cgutils`` and ``prefetch`` from here.
``njit`` returns a ``Kernel``: called from Python, it runs the machine code saved by an earlier
run (``kernel_cache``) when there is some for these argument types, and otherwise numba's
dispatcher, importing numba first, after which that overload's machine code is saved for the
next run. Inline helpers and intrinsics are only ever compiled into kernels: they become numba
objects (and the module globals naming them too) when numba is imported.

numba is imported with SciPy hidden (``import numba`` imports it to check its version: ~15 ms,
for nothing here) and PyYAML too unless a ``.numba_config.yaml`` exists (numba reads its
settings from it); both stay importable as usual afterwards. ``numba_start`` then sets its CPU
target up for loading cached kernels.
"""

from __future__ import annotations

import importlib
import os
import sys
import threading
from typing import Any, Callable

from traceaudit import kernel_cache

__all__ = ["Kernel", "cgutils", "intrinsic", "njit", "prefetch", "types", "use_numba"]

_lazy: list["_Lazy"] = []          # every njit / intrinsic object, in definition order
_numba_ready = False
_lock = threading.RLock()          # kernels are called from the reader's thread too


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


def use_numba() -> None:
    """Import numba, then make every lazy object a numba object: inline helpers and intrinsics
    replace themselves in the globals of traceaudit's modules (numba inlines only its own
    dispatchers), kernels stay and are typed as their dispatchers."""
    global _numba_ready
    with _lock:
        if not _numba_ready:
            _start_numba()
            _numba_ready = True
            _replace_lazy_globals()


def _start_numba() -> None:
    _import_numba()
    from traceaudit.capture import numba_start
    numba_start.start()
    from numba.core import types as nb_types
    from numba.core.typing.typeof import typeof_impl

    @typeof_impl.register(Kernel)
    def _typeof_kernel(kernel, context):
        return nb_types.Dispatcher(kernel.dispatcher())


def _replace_lazy_globals() -> None:
    replace = {id(obj): obj for obj in _lazy if not isinstance(obj, Kernel) or obj.inline}
    owners = {obj.py_func.__module__ for obj in _lazy}
    for name, module in list(sys.modules.items()):
        if module is None or not (name in owners or name == "traceaudit" or
                                  name.startswith("traceaudit.")):
            continue
        names = vars(module)
        for key, value in list(names.items()):
            if id(value) in replace and replace[id(value)] is value:
                names[key] = value.real()


class _Lazy:
    def __init__(self, py_func: Callable, options: dict) -> None:
        self.py_func = py_func
        self.options = options
        self._real = None
        self.__name__ = py_func.__name__
        self.__qualname__ = py_func.__qualname__
        self.__module__ = py_func.__module__
        self.__doc__ = py_func.__doc__
        _lazy.append(self)

    def _make(self):
        raise NotImplementedError

    def real(self):
        """The numba object (imports numba)."""
        if self._real is None:
            with _lock:
                if self._real is None:
                    use_numba()
                    self._real = self._make()
        return self._real


class Kernel(_Lazy):
    """A jitted function called from Python: saved machine code when there is some for the
    argument types, numba's dispatcher otherwise."""

    def __init__(self, py_func: Callable, options: dict) -> None:
        super().__init__(py_func, options)
        self.inline = options.get("inline", "never") != "never"
        self._calls: dict | None = None       # signature_key -> machine-code callable
        self._saved: set = set()              # keys offered to kernel_cache.save

    def _make(self):
        from numba import njit as numba_njit
        return numba_njit(**self.options)(self.py_func)

    dispatcher = _Lazy.real

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        key = None
        if not kwargs and kernel_cache.ENABLED:
            key = kernel_cache.signature_key(args)
            if key is not None:
                calls = self._calls
                if calls is None:
                    calls = self._load()
                call = calls.get(key)
                if call is not None:
                    return call(*args)
        dispatcher = self.real()
        result = dispatcher(*args, **kwargs)
        if key is not None and key not in self._saved and self.options.get("cache"):
            with _lock:
                self._saved.add(key)
                kernel_cache.save(self.py_func, dispatcher, key, args)
        return result

    def _load(self) -> dict:
        with _lock:
            if self._calls is None:
                self._calls = kernel_cache.load(self.py_func) if self.options.get("cache") \
                    else {}
            return self._calls


class _Intrinsic(_Lazy):
    def _make(self):
        from numba.core.extending import intrinsic as numba_intrinsic
        if not self.options:
            return numba_intrinsic(self.py_func)
        return numba_intrinsic(**self.options)(self.py_func)


def njit(fn: Callable | None = None, **options: Any):
    """``numba.njit``: a ``Kernel`` (inline helpers: numba's dispatcher once numba is in)."""
    def wrap(f: Callable):
        kernel = Kernel(f, options)
        return kernel.real() if _numba_ready and kernel.inline else kernel
    return wrap if fn is None else wrap(fn)


def intrinsic(fn: Callable | None = None, **options: Any):
    """``numba.core.extending.intrinsic``, made when numba is imported."""
    def wrap(f: Callable):
        lazy = _Intrinsic(f, options)
        return lazy.real() if _numba_ready else lazy
    return wrap if fn is None else wrap(fn)


class _LazyModule:
    """A numba module whose attributes are read when compiling (imports numba then)."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__"):
            raise AttributeError(attr)
        use_numba()
        return getattr(importlib.import_module(self._name), attr)


types = _LazyModule("numba.core.types")
cgutils = _LazyModule("numba.core.cgutils")


@intrinsic
def prefetch(typingctx, array, row, column):
    """Ask the CPU to bring ``array[row, column]``'s cache line in ahead of its use (LLVM's
    prefetch; no effect on results). For kernels that read rows scattered over a large table:
    asked for a row some iterations ahead, the fetch overlaps the work instead of stalling it."""
    from llvmlite import ir

    def codegen(context, builder, signature, args):
        data, r, c = args
        array_type = signature.args[0]
        ary = context.make_array(array_type)(context, builder, data)
        ptr = cgutils.get_item_pointer(context, builder, array_type, ary, [r, c],
                                       wraparound=False)
        byte_ptr = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [byte_ptr, i32, i32, i32]),
            "llvm.prefetch.p0")
        # (read, keep in every cache level, data)
        builder.call(fn, [builder.bitcast(ptr, byte_ptr), ir.Constant(i32, 0),
                          ir.Constant(i32, 3), ir.Constant(i32, 1)])
        return context.get_dummy_value()
    return types.void(array, row, column), codegen
