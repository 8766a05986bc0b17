"""numba, imported without two packages it only checks for.

``import numba`` imports SciPy when it is installed (to check its version) and PyYAML (to read
a ``.numba_config.yaml`` in the working directory, if there is one): about 15 ms of every run,
for nothing here, since no kernel uses SciPy. Kernel modules take ``njit`` from this module,
so the first of them imports numba with SciPy hidden, and PyYAML too unless that file exists;
both are importable as usual afterwards. ``prefetch`` is a compiled-code helper kernels share.
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

__all__ = ["cgutils", "intrinsic", "njit", "prefetch", "types"]


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
