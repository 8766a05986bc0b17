"""Compiled kernels' machine code, run without importing numba.

``import numba`` costs ~0.1 s of one core on every run (its type system, compiler and the
registries they fill), and loading a kernel from numba's cache ~2 ms more each: a tenth of
``analyze`` on a 3M-packet capture, for code that is already compiled. A compiled overload is
an ELF object file whose Python entry point (numba's "cpython wrapper") unboxes the arguments,
runs the kernel and boxes the result, calling nothing but the CPython API, numba's C helper
modules and its memory manager (NRT), all of which load without the ``numba`` package.

So once numba has compiled (or loaded from its cache) an overload that Python calls, its object
code is written next to numba's cache files as ``<module>.<function>.<python tag>.machine``.
Later runs load those files into one LLVM MCJIT engine (llvmlite), give the objects the symbols
numba gives them, and call the wrapper through ``_dynfunc.make_function``, as numba's own
dispatcher does. numba is imported only for what has no machine code yet: the first run, a new
argument type, a changed source.

A wrapper trusts its caller to pass exactly the types it was compiled for. numba's dispatcher
ensures that by typing every argument; ``signature_key`` does the same for the arguments
traceaudit passes (NumPy arrays by dtype, dimensions, layout, writeability and alignment;
ints, floats, bools, None, strings and tuples of these), and anything else goes to numba. A
file is used only when it was written for this Python, these numba and llvmlite files, this CPU
(triple, name and features) and these traceaudit sources (every module's mtime and size: a
kernel bakes in constants of other modules), and only when every symbol its objects need can
be resolved (an unresolved one is a fatal LLVM error, not an exception). Any ``NUMBA_*``
environment setting, or ``TRACEAUDIT_NUMBA_ONLY=1``, turns all this off: every call goes
through numba, as before. Where numba keeps its cache elsewhere than the module's
``__pycache__`` (a read-only install), nothing is written and numba runs every time.
"""

from __future__ import annotations

import ctypes
import hashlib
import importlib.machinery
import importlib.util
import os
import pickle
import sys
import tempfile
from functools import lru_cache
from typing import Any, Callable

import numpy as np

FORMAT = 1
SUFFIX = ".machine"
_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def _enabled() -> bool:
    return not os.environ.get("TRACEAUDIT_NUMBA_ONLY") and \
        not any(name.startswith("NUMBA_") for name in os.environ)


#: machine code is used (read once, at import: the environment of the process)
ENABLED = _enabled()


# -- argument types --------------------------------------------------------------------------

def signature_key(args: tuple) -> tuple | None:
    """What numba's dispatcher would type ``args`` as, as a hashable key; None for an argument
    this does not know how to type exactly (numba then decides)."""
    key = []
    for a in args:
        k = _type_key(a)
        if k is None:
            return None
        key.append(k)
    return tuple(key)


def _type_key(a: Any):
    t = type(a)
    if t is np.ndarray:
        dtype = a.dtype
        if dtype.kind not in "biuf" or not dtype.isnative:
            return None
        flags = a.flags
        layout = "C" if flags.c_contiguous else "F" if flags.f_contiguous else "A"
        return (dtype.str, a.ndim, layout, flags.writeable, flags.aligned)
    if t is int:
        return "int64" if -(1 << 63) <= a < (1 << 63) else None
    if t is bool:
        return "bool"
    if t is float:
        return "float64"
    if a is None:
        return "none"
    if t is str:
        return "str"
    if t is tuple:
        inner = signature_key(a)
        return None if inner is None else ("tuple", inner)
    if isinstance(a, np.generic) and t.__module__ == "numpy":
        dtype = a.dtype
        return ("scalar", dtype.str) if dtype.kind in "biuf" and dtype.isnative else None
    return None


# -- what a file must match ------------------------------------------------------------------

def _module_file(name: str, relative: str) -> str | None:
    spec = importlib.util.find_spec(name)          # (finds a top-level package, no import)
    if spec is None or not spec.origin:
        return None
    return os.path.join(os.path.dirname(spec.origin), relative)


def _extension_path(package: str, relative_stem: str) -> str | None:
    base = _module_file(package, relative_stem)
    if base is None:
        return None
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        if os.path.isfile(base + suffix):
            return base + suffix
    return None


_EXTENSIONS = {                 # numba's C modules the wrappers call into, by module name
    "numba._helperlib": "_helperlib",
    "numba._dynfunc": "_dynfunc",
    "numba.core.runtime._nrt_python": os.path.join("core", "runtime", "_nrt_python"),
}


@lru_cache(maxsize=1)
def _libraries() -> tuple | None:
    """(path, mtime_ns, size) of numba's and llvmlite's files that machine code depends on."""
    paths = [_module_file("numba", "__init__.py"), _module_file("llvmlite", "__init__.py")]
    paths += [_extension_path("numba", stem) for stem in _EXTENSIONS.values()]
    llvm = _module_file("llvmlite", "binding")
    if llvm is None or None in paths:
        return None
    libs = sorted(f for f in os.listdir(llvm) if f.startswith("libllvmlite"))
    stamps = []
    for path in paths + [os.path.join(llvm, f) for f in libs]:
        st = os.stat(path)
        stamps.append((path, st.st_mtime_ns, st.st_size))
    return tuple(stamps)


@lru_cache(maxsize=1)
def _sources() -> str:
    """A digest of every traceaudit module's path, mtime and size."""
    entries = []
    stack = [_PACKAGE_DIR]
    while stack:
        with os.scandir(stack.pop()) as it:
            for e in it:
                if e.is_dir(follow_symlinks=False):
                    if e.name != "__pycache__":
                        stack.append(e.path)
                elif e.name.endswith(".py"):
                    st = e.stat()
                    entries.append(f"{e.path}\0{st.st_mtime_ns}\0{st.st_size}")
    return hashlib.sha256("\n".join(sorted(entries)).encode()).hexdigest()


@lru_cache(maxsize=1)
def machine() -> tuple[str, str, str]:
    """(triple, CPU name, CPU features) as numba compiles for them (without NUMBA_CPU_*)."""
    import llvmlite.binding as ll
    return ll.get_process_triple(), ll.get_host_cpu_name(), \
        ll.get_host_cpu_features().flatten()


@lru_cache(maxsize=1)
def _common_header() -> tuple | None:
    libraries = _libraries()
    if libraries is None:
        return None
    return (FORMAT, sys.version, libraries, _sources(), machine())


def header(fn: Callable) -> tuple | None:
    """What ``fn``'s file must have been written for: the common part, and ``fn``'s own source
    file (a kernel outside the package)."""
    common = _common_header()
    if common is None:
        return None
    st = os.stat(fn.__code__.co_filename)
    return common + ((st.st_mtime_ns, st.st_size),)


def cache_file(fn: Callable) -> str:
    code = fn.__code__
    stem = os.path.splitext(os.path.basename(code.co_filename))[0]
    return os.path.join(os.path.dirname(os.path.abspath(code.co_filename)), "__pycache__",
                        f"{stem}.{fn.__qualname__}.{sys.implementation.cache_tag}{SUFFIX}")


# -- ELF ---------------------------------------------------------------------------------------

_ELF_SYMBOL = np.dtype([("name", "<u4"), ("info", "u1"), ("other", "u1"), ("shndx", "<u2"),
                        ("value", "<u8"), ("size", "<u8")])
_SHT_SYMTAB = 2
_SYMBOL_TYPES = (0, 1, 2)          # STT_NOTYPE, STT_OBJECT, STT_FUNC (not sections, files)


def elf_symbols(obj: bytes) -> tuple[set[str], set[str]] | None:
    """(defined, undefined) names of the functions and data of an ELF64 little-endian object
    file (numba's object code on x86-64 / aarch64 Linux); None for any other kind of file.
    Common symbols count as defined (the loader allocates them)."""
    if len(obj) < 64 or obj[:4] != b"\x7fELF" or obj[4] != 2 or obj[5] != 1:
        return None
    shoff = int.from_bytes(obj[0x28:0x30], "little")
    shentsize = int.from_bytes(obj[0x3A:0x3C], "little")
    sections = []
    for i in range(int.from_bytes(obj[0x3C:0x3E], "little")):
        h = obj[shoff + i * shentsize:shoff + (i + 1) * shentsize]
        if len(h) < 48:
            return None
        sections.append((int.from_bytes(h[4:8], "little"), int.from_bytes(h[24:32], "little"),
                         int.from_bytes(h[32:40], "little"), int.from_bytes(h[40:44], "little")))
    defined: set[str] = set()
    undefined: set[str] = set()
    for kind, offset, size, link in sections:
        if kind != _SHT_SYMTAB:
            continue
        if link >= len(sections) or offset + size > len(obj):
            return None
        symbols = np.frombuffer(obj, _ELF_SYMBOL, size // _ELF_SYMBOL.itemsize, offset)
        _, text_offset, text_size, _ = sections[link]
        text = obj[text_offset:text_offset + text_size]
        named = (symbols["name"] != 0) & np.isin(symbols["info"] & 0xF, _SYMBOL_TYPES)
        for at, section in zip(symbols["name"][named].tolist(),
                               symbols["shndx"][named].tolist()):
            name = text[at:text.index(b"\0", at)].decode()
            (undefined if section == 0 else defined).add(name)
    return defined, undefined - defined


# -- loading -----------------------------------------------------------------------------------

def _extension(name: str):
    """numba's C module ``name``: the one numba imported, else loaded on its own (its parent
    packages are not imported; numba finds it in sys.modules if it is imported later)."""
    module = sys.modules.get(name)
    if module is None:
        path = _extension_path("numba", _EXTENSIONS[name])
        loader = importlib.machinery.ExtensionFileLoader(name, path)
        spec = importlib.util.spec_from_file_location(name, path, loader=loader)
        module = importlib.util.module_from_spec(spec)
        loader.exec_module(module)
        sys.modules[name] = module
    return module


def _prime_unpickle(helperlib) -> None:
    """Have numba's C unpickler (it boxes a kernel's array results: the array type is pickled
    into the machine code) use a function of ours. On its first use it looks its Python half
    up, ``numba.core.serialize._numba_unpickle``, and keeps it: that lookup would import all of
    numba. So it is made once here, with stand-ins for ``numba`` and ``numba.core.serialize``
    that are gone again afterwards; what it keeps does what numba's does (memoised by address
    and hash; cloudpickle's ``loads`` is pickle's)."""
    import types

    memo: dict = {}

    def _numba_unpickle(address, bytedata, hashed):
        key = (address, hashed)
        obj = memo.get(key, memo)
        if obj is memo:
            obj = memo[key] = pickle.loads(bytedata)
        return obj

    serialize = types.ModuleType("numba.core.serialize")
    serialize._numba_unpickle = _numba_unpickle
    stand_ins = {"numba": types.ModuleType("numba"), "numba.core.serialize": serialize}
    sys.modules.update(stand_ins)
    try:
        unpickle = ctypes.PYFUNCTYPE(ctypes.py_object, ctypes.c_char_p, ctypes.c_int,
                                     ctypes.c_char_p)(helperlib.c_helpers["unpickle"])
        data = pickle.dumps("primed")
        if unpickle(data, len(data), b"traceaudit/primed/\0\0") != "primed":
            raise RuntimeError("numba_unpickle did not answer as expected")
    finally:
        for name, module in stand_ins.items():
            if sys.modules.get(name) is module:
                del sys.modules[name]


class _Engine:
    """One MCJIT engine holding every kernel loaded from machine-code files."""

    def __init__(self) -> None:
        import builtins

        import llvmlite.binding as ll
        self.ll = ll
        helperlib = _extension("numba._helperlib")
        self.dynfunc = _extension("numba._dynfunc")
        nrt = _extension("numba.core.runtime._nrt_python")
        if "numba" not in sys.modules:
            _prime_unpickle(helperlib)
        ll.initialize_native_target()
        ll.initialize_native_asmprinter()
        # the symbols numba installs (numba.core.base._load_global_helpers, rtsys.initialize)
        symbols = {"_Py_NoneStruct": id(None)}
        for helpers in (helperlib.c_helpers, self.dynfunc.c_helpers):
            symbols.update(("numba_" + name, address) for name, address in helpers.items())
        for obj in vars(builtins).values():
            if isinstance(obj, type) and issubclass(obj, BaseException):
                symbols["PyExc_" + obj.__name__] = id(obj)
        symbols.update((name if name.startswith("_") else "NRT_" + name, address)
                       for name, address in nrt.c_helpers.items())
        for name, address in symbols.items():
            ll.add_symbol(name, address)
        self.defined = set(symbols)
        target = ll.Target.from_default_triple()
        _, cpu, features = machine()
        tm = target.create_target_machine(cpu=cpu, features=features, opt=3, reloc="default",
                                          codemodel="jitdefault", jit=True)
        self.engine = ll.create_mcjit_compiler(ll.parse_assembly(""), tm)
        self.keep: list = []                      # environments the machine code points to

    def resolvable(self, names: set[str]) -> bool:
        address_of = self.ll.address_of_symbol
        for name in names:
            if name not in self.defined:
                if not address_of(name):
                    return False
                self.defined.add(name)
        return True

    def add(self, fn: Callable, entry: tuple) -> Callable | None:
        """The callable of one saved overload; None when its object cannot be loaded here."""
        obj, wrapper, env_name, consts, referenced = entry
        symbols = elf_symbols(obj)
        if symbols is None or not self.resolvable(symbols[1]):
            return None
        if fn.__module__ not in sys.modules:
            return None
        envs = [(fn.__module__, env_name, consts)] + list(referenced)
        # an environment's globals are its module's (numba's own modules, whose compiled
        # helpers get one too, need not be imported: nopython code reads only constants)
        names = [vars(sys.modules[m]) if m in sys.modules else {"__name__": m}
                 for m, _, _ in envs]
        engine = self.engine
        engine.add_object_file(self.ll.ObjectFileRef.from_data(obj))
        engine.finalize_object()
        main_env = None
        for globals_, (_, name, blob) in zip(names, envs):
            env = self.dynfunc.Environment(globals_)
            env.consts.extend(pickle.loads(blob))
            ctypes.c_void_p.from_address(engine.get_global_value_address(name)).value = id(env)
            self.keep.append(env)
            if main_env is None:
                main_env = env
        address = engine.get_function_address(wrapper)
        if not address:
            return None
        return self.dynfunc.make_function(sys.modules[fn.__module__], fn.__name__,
                                          f"compiled wrapper for {fn.__qualname__!r}",
                                          address, main_env, (self,))


_engine: _Engine | None | bool = None       # False: it could not be made in this process


def load(fn: Callable) -> dict[tuple, Callable]:
    """The saved overloads of ``fn`` usable in this process, by ``signature_key``."""
    global _engine
    try:
        with open(cache_file(fn), "rb") as f:
            saved = pickle.load(f)
        if not isinstance(saved, dict) or saved.get("header") != header(fn) or \
                _engine is False:
            return {}
        entries = saved["entries"]
        if _engine is None:
            _engine = False
            _engine = _Engine()
        calls = {}
        for key, entry in entries.items():
            call = _engine.add(fn, entry)
            if call is not None:
                calls[key] = call
        return calls
    except Exception:           # a missing, stale, damaged or foreign file: numba decides
        return {}


# -- saving ------------------------------------------------------------------------------------

def save(fn: Callable, dispatcher, key: tuple, args: tuple) -> bool:
    """Write the machine code numba used for ``fn(*args)`` (typed as ``key``) to ``fn``'s file;
    False when there is none to write (no exact overload, not cached by numba in the module's
    ``__pycache__``, objects numba would rebuild differently)."""
    try:
        return _save(fn, dispatcher, key, args)
    except Exception:           # never fail a run for the sake of the next one
        return False


def _save(fn, dispatcher, key, args) -> bool:
    path = cache_file(fn)
    cache = getattr(dispatcher, "_cache", None)
    head = header(fn)
    if head is None or cache is None or not hasattr(cache, "_cache_file") or \
            os.path.normpath(cache._cache_path) != os.path.dirname(path):
        return False
    sig = tuple(dispatcher.typeof_pyval(a) for a in args)
    if any(type(t).__name__ == "Omitted" for t in sig) or sig not in dispatcher.overloads:
        return False
    codegen = dispatcher.targetctx.codegen()
    if tuple(codegen.magic_tuple()) != head[4]:
        return False
    payload = cache._cache_file.load(cache._index_key(sig, codegen))
    if payload is None:
        return False
    libdata, fndesc, env, _, objectmode, lifted, _, reload_init, referenced = payload
    _, kind, data = libdata
    if kind != "object" or objectmode or lifted or reload_init:
        return False
    others = []
    for e in referenced:
        if e.env_name != fndesc.env_name:
            others.append((e.globals["__name__"], e.env_name, _consts(e)))
    entry = (bytes(data[0]), fndesc.llvm_cpython_wrapper_name, fndesc.env_name, _consts(env),
             tuple(others))
    if env.globals.get("__name__") != fn.__module__ or elf_symbols(entry[0]) is None:
        return False
    saved = {"header": head, "entries": {}}
    try:
        with open(path, "rb") as f:
            old = pickle.load(f)
        if isinstance(old, dict) and old.get("header") == head:
            saved = old
    except Exception:
        pass
    saved["entries"][key] = entry
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".machine-")
    try:
        with os.fdopen(fd, "wb") as f:
            pickle.dump(saved, f, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return True


def _consts(env) -> bytes:
    """An environment's constants, pickled without numba (numba's own objects are refused:
    unpickling them would import numba)."""
    blob = pickle.dumps(list(env.consts), protocol=pickle.HIGHEST_PROTOCOL)
    if b"numba" in blob:
        raise ValueError("constants need numba")
    return blob
