"""Launching Triton kernels from ops.

Ops call :func:`launch` rather than ``kernel[grid](...)``:

* While torch traces an op (``torch.compile``, ``make_fx``, export: the tensors are fake or
  functional tensor subclasses) it goes through ``torch.library.wrap_triton``, so the
  kernel appears in the traced graph and Inductor launches it itself.
* In Triton's interpreter, and wherever the fast path is unavailable, it takes Triton's
  plain path ``kernel[grid](...)``.
* Otherwise it takes the fast path: Triton's generic launch binds and specialises every
  argument on every call (tens of microseconds of host time for a kernel with ~25
  arguments). Here a small function generated once per kernel turns the call's arguments
  into a specialisation key — each tensor's dtype and 16-byte alignment, each integer's
  ``== 1`` / ``% 16 == 0`` / 32-bit range, the constexprs and launch options, the device —
  and the kernel that Triton compiled for the first call with that key is launched
  directly on the current stream (so CUDA-graph capture and side streams work). The key
  is at least as fine as Triton's own specialisation, so a cached kernel is never reused
  for arguments Triton would have compiled differently.

The fast path relies on Triton internals that have changed between releases (the compiled
kernel's ``run``, ``function`` and ``packed_metadata``); it checks for them and falls back
to the plain path, with one warning, when they are missing.

By default (``TRITONIC_C_LAUNCH=2``; 0 turns it off) the fast path's common case runs in C
(``fastlaunch.c``, built at the first kernel on a GPU; see the end of this file). There, a
specialisation's first call compiles the kernel, loads it and launches it directly, so that
Triton's own C launcher for the kernel's signature (built with the C compiler at a kernel's
first launch) is built only if something ever needs it (``TRITONIC_LAZY_LAUNCHER=0``: built
at the first call, as Triton does).
"""

from __future__ import annotations

import dataclasses
import os
import sys
import threading
import time

import torch
from torch.library import wrap_triton

try:
    from triton.tools.tensor_descriptor import TensorDescriptor as _TensorDescriptor
except ImportError:  # a Triton without host-side tensor descriptors
    class _TensorDescriptor:  # noqa: D401 - placeholder nothing is an instance of
        pass

from tritonic.runtime.checks import warn_once
from tritonic.runtime.device import interpreter_active

_PLAIN = (torch.Tensor, torch.nn.Parameter)
_PLAIN_OR_NONE = frozenset((torch.Tensor, torch.nn.Parameter, type(None)))
_fast: dict = {}  # kernel -> _FastKernel, or None where the fast path is unavailable
# The same by id(kernel) -> (kernel, _FastKernel or None), for launch(): a JITFunction hashes
# in Python (~0.25 µs a lookup), id() does not; the kernel kept in the entry guards against reuse
# of an id after a kernel is freed.
_by_id: dict = {}
# TRITONIC_FAST_LAUNCH=0 sends every launch through Triton's own path (for debugging and
# for measuring what the fast path saves, as benchmarks/launch.py does).
FAST = os.environ.get("TRITONIC_FAST_LAUNCH", "1").strip() != "0"


# Triton's TensorDescriptor validates its arguments in __post_init__ (alignment asserts, the
# block shape), about 3 µs of host time per descriptor, several per GEMM launch. Ops build
# descriptors only after checking the same layout facts themselves (ops/matmul.py's
# _tma_layout, attention's _tma_kv), so they skip it when the class has the fields this
# relies on; any other Triton gets the validating constructor.
_DESCRIPTOR_FIELDS = ("base", "shape", "strides", "block_shape", "padding")
try:
    _FAST_DESCRIPTOR = tuple(f.name for f in dataclasses.fields(_TensorDescriptor)) == _DESCRIPTOR_FIELDS
except TypeError:  # the placeholder class: no descriptors in this Triton
    _FAST_DESCRIPTOR = False


def descriptor(base, shape, strides, block_shape):
    """A host tensor descriptor (zero padding) over ``base``, without Triton's per-call checks:
    the caller has checked a 16-byte aligned base, 16-byte aligned strides with a unit last
    one, positive shapes and power-of-two blocks."""
    if not _FAST_DESCRIPTOR:
        return _TensorDescriptor(base, shape, strides, block_shape)
    d = object.__new__(_TensorDescriptor)
    d.base, d.shape, d.strides, d.block_shape, d.padding = base, shape, strides, block_shape, "zero"
    return d


def is_traced(*args) -> bool:
    """Is any tensor among ``args`` a tracing subclass (fake, functional, proxy, ...)?"""
    for a in args:  # (the type test first: isinstance on a tensor costs ~3x more)
        if type(a) not in _PLAIN_OR_NONE and isinstance(a, torch.Tensor):
            return True
    return False


def _spec(v):
    """The part of an argument that Triton specialises a kernel on."""
    if isinstance(v, torch.Tensor):
        return (v.dtype, v.data_ptr() % 16 == 0)
    if v is None:
        return None
    if isinstance(v, bool):
        return ("b", v)
    if isinstance(v, int):
        return (v == 1, v % 16 == 0, -(2**31) <= v < 2**31, v >= 2**63)
    if isinstance(v, float):
        return "f"
    if isinstance(v, _TensorDescriptor):  # Triton specialises on the dtype and block shape
        return ("d", v.base.dtype, tuple(v.block_shape), v.padding, len(v.shape))
    raise TypeError(f"no fast-launch key for an argument of type {type(v).__name__}")


class _Miss(Exception):
    """The fast binder does not apply to this call's argument kinds."""


_INT_MIN32, _INT_MAX32, _UINT64 = -(2**31), 2**31 - 1, 2**63


def _int_key(v: int) -> tuple:
    """The fast key of an integer outside [0, 2**31): a tuple, never equal to the one-element
    keys of the common range."""
    return (v == 1, v % 16 == 0, _INT_MIN32 <= v < 2**31, v >= _UINT64)


def _kind(v) -> str | None:
    """The kind of argument a fast binder is specialised for (None: no fast binder)."""
    if type(v) in _PLAIN:
        return "T"
    if v is None:
        return "N"
    if type(v) is int:
        return "i"
    if type(v) is float:
        return "f"
    if type(v) is bool:
        return "b"
    if isinstance(v, _TensorDescriptor):
        return "D"
    return None


class _FastKernel:
    """Per-kernel state of the fast path: the generated binders and the compiled kernels.

    Two binders turn a call's arguments into (specialisation key, launch arguments):

    * ``bind_fast``, generated at the first call for the *kinds* of its arguments (tensor,
      None, int, float, bool, descriptor): straight-line code with no per-argument
      function calls, which hands pointers to the C launcher as integers (no ``data_ptr``
      call and no pointer query there). Its guards raise when a later call's kinds differ;
    * ``bind``, generic (one ``_spec`` call per argument), for every other call.
    """

    def __init__(self, kernel):
        self.kernel = kernel
        self.ccompiled: dict = {}  # the C launch's keys -> the same entries as ``compiled``
        params = kernel.params
        self.names = [p.name for p in params]
        self.constexpr = [p.is_constexpr for p in params]
        keyed = [f"_spec({n})" if not c else n for n, c in zip(self.names, self.constexpr)]
        # parameters with defaults (a constexpr flag added later) keep them, as Triton's own call does
        defaults = {f"_d{i}": p.default for i, p in enumerate(params) if getattr(p, "has_default", False)}
        sig = [f"{n}=_d{i}" if f"_d{i}" in defaults else n for i, n in enumerate(self.names)]
        src = (f"def bind({', '.join(sig)}, **options):\n"
               f"    return ({', '.join(keyed)}, tuple(options.items())), ({', '.join(self.names)},)\n")
        namespace = {"_spec": _spec, **defaults}
        exec(src, namespace)  # one small function per kernel, made once
        self.bind = namespace["bind"]
        self.bind_fast = self.run_fast = None
        self.compiled: dict = {}  # (bound into run_fast: never replaced)
        raw = getattr(torch._C, "_cuda_getCurrentRawStream", None)  # what Triton itself uses
        self.stream = raw if raw is not None else (lambda d: torch.cuda.current_stream(d).cuda_stream)
        get_device = getattr(torch._C, "_cuda_getDevice", None)
        self.device = get_device if get_device is not None else torch.cuda.current_device

    def make_fast_binder(self, args) -> None:
        """Generate ``bind_fast`` for the kinds of ``args`` (the positional arguments)."""
        if len(args) != sum(not c for c in self.constexpr[:len(args)]) or len(args) > len(self.names):
            return  # constexprs passed positionally: leave it to the generic binder
        guards, key, out, pre = [], [], [], []
        for name, is_const, v in zip(self.names, self.constexpr, args + (None,) * len(self.names)):
            if is_const:  # the C launcher takes every parameter, constexprs included, and ignores them
                out.append("None")
                continue
            kind = _kind(v) if name in self.names[:len(args)] else None
            if kind is None:
                return
            if kind == "T":
                guards.append(f"({name}.__class__ is _T or {name}.__class__ is _P)")
                pre.append(f"p_{name} = {name}.data_ptr()")
                key += [f"{name}.dtype", f"not p_{name} & 15"]
                out.append(f"p_{name}")
                continue
            if kind == "N":
                guards.append(f"{name} is None")
            elif kind == "i":  # one element: 2 for == 1, else divisible by 16; other ranges a tuple
                guards.append(f"{name}.__class__ is int")
                key.append(f"((2 if {name} == 1 else not {name} & 15) if 0 <= {name} <= _MAX32 else _ikey({name}))")
            elif kind == "f":
                guards.append(f"{name}.__class__ is float")
            elif kind == "b":
                guards.append(f"{name}.__class__ is bool")
                key.append(name)
            else:  # descriptor
                guards.append(f"isinstance({name}, _D)")
                key.append(f"_spec({name})")
            out.append(name)
        positional = [n for n, c in zip(self.names, self.constexpr) if not c]
        unpack = f"    {', '.join(positional)}, = args\n"  # ValueError on another count
        guard = ' and '.join(guards) or 'True'
        body = "".join(f"    {line}\n" for line in pre)
        # the constexprs and options are in the key as the call's own (name, value) pairs: calls
        # that order them differently get entries of their own for the same compiled kernel
        key_src = f"('fast', dev, {''.join(k + ', ' for k in key)}tuple(meta.items()))"
        out_src = ", ".join(out)
        src = (f"def bind_fast(args, meta):\n"
               f"{unpack}"
               f"    if not ({guard}):\n"
               f"        raise _Miss\n"
               f"{body}"
               f"    dev = _dev()\n"
               f"    return {key_src}, ({out_src},)\n"
               # run_fast: the same key, then straight into the C launcher; False where it does
               # not apply (other kinds, a specialisation not compiled yet, scratch buffers)
               f"def run_fast(grid, args, meta):\n"
               f"{unpack}"
               f"    if not ({guard}):\n"
               f"        return False\n"
               f"{body}"
               f"    dev = _dev()\n"
               f"    entry = _get({key_src})\n"
               f"    if not entry or entry[0] is None:\n"
               f"        return False\n"
               f"    g = len(grid)\n"
               f"    entry[0](grid[0], grid[1] if g > 1 else 1, grid[2] if g > 2 else 1, _stream(dev), entry[3], "
               f"entry[1], entry[2], None, None, entry[4], None, None, None, {out_src})\n"
               f"    return True\n")
        namespace = {"_spec": _spec, "_Miss": _Miss, "_T": torch.Tensor, "_P": torch.nn.Parameter,
                     "_D": _TensorDescriptor, "_MAX32": _INT_MAX32, "_ikey": _int_key,
                     "_dev": self.device, "_get": self.compiled.get, "_stream": self.stream}
        try:
            exec(src, namespace)
        except SyntaxError:  # e.g. a constexpr without a keyword-able name: generic binder only
            return
        self.bind_fast = namespace["bind_fast"]
        self.run_fast = namespace["run_fast"]
        kinds = "".join(_kind(v) for v in args)
        layout = "".join("c" if c else "a" for c in self.constexpr)
        _c_specs[id(self.kernel)] = (self.kernel, kinds.encode(), layout.encode(), self.ccompiled)

    def launch(self, kernel, grid, args, meta) -> None:
        fast = self.bind_fast
        if fast is not None:
            try:  # the key holds the device: one flat tuple, hashed once
                key, launch_args = fast(args, meta)
            except (_Miss, AttributeError, TypeError, ValueError, RuntimeError):
                pass
            else:
                entry = self.compiled.get(key)
                if entry:  # the common case: relaunch a compiled kernel straight away
                    self._run(entry, grid, key[1], launch_args)
                    return
                self._first(kernel, grid, args, meta, key, entry)
                return
        if is_traced(*args):  # torch is tracing: the kernel goes into the graph
            wrap_triton(kernel)[grid](*args, **meta)
            return
        key, launch_args = self.bind(*args, **meta)
        device = self.device()
        entry = self.compiled.get((device, key))
        if entry:
            self._run(entry, grid, device, launch_args)
            return
        self._first(kernel, grid, args, meta, (device, key), entry)

    def _first(self, kernel, grid, args, meta, key, entry) -> None:
        """Triton's own launch: the first call of a specialisation (it compiles, and the
        compiled kernel is kept), or every call where the fast path is unavailable. Called
        from the C launch's way out (``_c_slow`` with the direct path on), the first call
        instead files a :func:`_lazy_entry` under this key and the fast binder's, launches
        nothing and says so (``_defer.hit``): ``_c_slow`` launches it directly."""
        if entry is None and getattr(_defer, "on", False):
            lazy = _lazy_entry(kernel, grid, args, meta)
            if lazy is not None:
                self.compiled[key] = lazy
                if self.bind_fast is None:
                    self.make_fast_binder(args)
                if self.bind_fast is not None:
                    try:
                        self.compiled.setdefault(self.bind_fast(args, meta)[0], lazy)
                    except (_Miss, AttributeError, TypeError, ValueError, RuntimeError):
                        pass
                _defer.hit = True
                return
        compiled = kernel[grid](*args, **meta)
        if entry is None:
            self.compiled[key] = _direct(compiled)
            if self.bind_fast is None:
                self.make_fast_binder(args)

    def _run(self, entry, grid, device, launch_args) -> None:
        launch_c, coop, pdl, function, metadata, compiled = entry
        stream = self.stream(device)
        g1 = grid[1] if len(grid) > 1 else 1
        g2 = grid[2] if len(grid) > 2 else 1
        if launch_c is not None:  # no scratch buffers to allocate: straight into the C launcher
            launch_c(grid[0], g1, g2, stream, function, coop, pdl, None, None, metadata, None, None, None,
                     *launch_args)
        else:
            compiled.run(grid[0], g1, g2, stream, function, metadata, None, None, None, *launch_args)


class _LazyLauncher:
    """Triton's launcher of a compiled kernel, built at its first call (``compiled.run`` builds
    it): the entries of :func:`_lazy_entry` launch by cuLaunchKernelEx and reach this only
    where the direct path declines a launch. Called as Triton's launch function is."""

    __slots__ = ("compiled",)

    def __init__(self, compiled):
        self.compiled = compiled

    def __call__(self, *args):
        return self.compiled.run.launch(*args)


def _lazy_entry(kernel, grid, args, meta):
    """The first call of a specialisation without Triton's launcher: the kernel compiled (or
    taken from Triton's caches) by ``warmup``, loaded here, and an entry whose direct-launch
    spec :func:`_direct_spec` accepts, with a :class:`_LazyLauncher` as its launch function.
    None, with nothing launched, where Triton's own first launch must run instead: scratch
    buffers, a cooperative grid, clusters, tensor descriptors, too much shared memory or too
    many threads (Triton's path raises the error), a kernel-load hook (a profiler), a compile
    error (raised again by Triton's path), a Triton without these internals."""
    if _load_hooks_active():
        return None
    try:
        compiled = kernel.warmup(*args, grid=grid, **meta)
        if hasattr(compiled, "result"):  # (a compile submitted to a pool earlier)
            compiled = compiled.result()
        md = compiled.metadata
        if not _direct_eligible(compiled):
            return None
        from triton.runtime.driver import driver

        utils = driver.active.utils
        device = driver.active.get_current_device()
        if md.shared > utils.get_device_properties(device)["max_shared_mem"]:
            return None
        _module, function, _regs, _spills, max_threads = utils.load_binary(compiled.name, compiled.kernel,
                                                                           md.shared, device)
        if md.num_warps * 32 > max_threads:
            return None
        entry = (_LazyLauncher(compiled), False, bool(getattr(md, "launch_pdl", False)), function,
                 compiled.packed_metadata, compiled)
    except Exception:  # Triton's own launch then runs (and raises what is wrong)
        return None
    return entry if _direct_spec(entry) is not None else None


def _direct_eligible(compiled) -> bool:
    """Can the direct launch run this compiled kernel (no scratch buffers, cooperative grid,
    cluster or tensor descriptor)? Then no Triton launcher is needed for it (``LAZY``)."""
    md = getattr(compiled, "metadata", None)
    return (md is not None and not getattr(md, "global_scratch_size", 1) and not getattr(md, "profile_scratch_size", 1)
            and not getattr(md, "launch_cooperative_grid", True) and getattr(md, "num_ctas", 1) == 1
            and _param_codes(getattr(getattr(compiled, "src", None), "signature", None)) is not None)


def _load_hooks_active() -> bool:
    hooks = (getattr(_knobs, "kernel_load_start_hook", None), getattr(_knobs, "kernel_load_end_hook", None))
    return any(bool(getattr(h, "calls", h)) for h in hooks)


def _direct(compiled):
    """What a relaunch needs: (the C launch function, or None when the kernel needs scratch
    buffers allocated per launch; cooperative-grid and PDL flags; function handle; packed
    metadata; the compiled kernel), or False where this Triton's compiled kernel lacks
    the attributes the fast path relies on."""
    if not all(hasattr(compiled, a) for a in ("run", "function", "packed_metadata")):
        return False
    run = compiled.run  # (a property that loads the module: function is set after it)
    direct = (all(hasattr(run, a) for a in ("launch", "launch_cooperative_grid", "launch_pdl"))
              and getattr(run, "global_scratch_size", 1) == 0 and getattr(run, "profile_scratch_size", 1) == 0)
    if direct:
        return run.launch, run.launch_cooperative_grid, run.launch_pdl, compiled.function, \
            compiled.packed_metadata, compiled
    return None, None, None, compiled.function, compiled.packed_metadata, compiled


_knobs = None  # triton.knobs.runtime (or triton.compiler.CompiledKernel on older releases)


def _hooks_active() -> bool:
    """A profiler (e.g. proton) listens to launches: let Triton's own path serve it."""
    hook = getattr(_knobs, "launch_enter_hook", None)
    return bool(getattr(hook, "calls", hook))


def _fast_kernel(kernel):
    try:
        return _fast[kernel]
    except KeyError:
        pass
    global _knobs
    fast = None
    if not interpreter_active():
        try:
            if _knobs is None:
                try:
                    from triton import knobs

                    _knobs = knobs.runtime
                except ImportError:  # triton < 3.4 kept the hooks on CompiledKernel
                    from triton.compiler import CompiledKernel as _knobs
            fast = _FastKernel(kernel)
            if not _c_tried:
                _init_c()
        except Exception as e:  # a Triton without the internals this relies on
            warn_once(("fast-launch", type(e).__name__),
                      f"tritonic: the fast kernel launcher is unavailable with this Triton ({e!r}); "
                      f"using Triton's own launch path, which costs more host time per call")
    _fast[kernel] = fast
    _by_id[id(kernel)] = (kernel, fast)
    return fast


def _launch_py(kernel, grid, *args, **meta) -> None:
    """Launch ``kernel`` over ``grid`` (a tuple of ints) with positional arguments ``args``
    and constexprs / options (``num_warps``...) as keywords."""
    if _precompiling and _precompiling == threading.get_ident():  # (runtime/precompile.py): compile, do not run
        if not is_traced(*args):
            try:
                kernel.warmup(*args, grid=grid, **meta)
            except Exception:  # the real call will say what is wrong
                pass
        return
    fast = None
    if FAST:
        hit = _by_id.get(id(kernel))
        fast = hit[1] if hit is not None and hit[0] is kernel else _fast_kernel(kernel)
    if fast is None or _hooks_active():
        if is_traced(*args):
            wrap_triton(kernel)[grid](*args, **meta)
        else:
            kernel[grid](*args, **meta)
        return
    run = fast.run_fast
    if run is not None:  # the common case: one generated function from arguments to the C launcher
        try:
            if run(grid, args, meta):
                return
        except (AttributeError, TypeError, ValueError, RuntimeError):  # the slow path below says what is wrong
            pass
    fast.launch(kernel, grid, args, meta)


# ----------------------------------------------------------------------------- the C launch
# fastlaunch.c does what _launch_py's generated run_fast does, in C: for a kernel whose spec
# _FastKernel registered (argument kinds and parameter layout), the key and the call of
# Triton's C launcher cost no Python frames. Everything else it hands to _c_slow. It is
# built (with Triton's own build helper, as Triton builds its launchers) when the launcher is
# launched on a machine with a GPU; TRITONIC_C_LAUNCH=0 keeps the Python path.

_c_specs: dict = {}  # id(kernel) -> (kernel, kinds, layout, C keys -> compiled entries)
_C = None  # the built module, or None


def _c_slow(kernel, grid, args, meta, key, keep=None) -> None:
    """The C launch's way out: the Python path, then (when the C side computed a key that was
    not compiled yet) the entry filed under that key for the next call. ``keep``: the dict of
    a ``launch_meta`` call, whose address is in the key: kept alive once filed."""
    saved = getattr(_defer, "on", False), getattr(_defer, "hit", False)
    _defer.on, _defer.hit = key is not None and _C_DIRECT and LAZY and _C is not None, False
    try:
        _launch_py(kernel, grid, *args, **meta)
        deferred = _defer.hit  # the first call of a specialisation was filed, not launched
    finally:
        _defer.on, _defer.hit = saved
    filed = False
    try:
        if key is None:
            return
        hit = _by_id.get(id(kernel))
        fast = hit[1] if hit is not None and hit[0] is kernel else None
        if fast is None or fast.bind_fast is None:
            return
        try:
            entry = fast.compiled.get(fast.bind_fast(args, meta)[0])
        except (_Miss, AttributeError, TypeError, ValueError, RuntimeError):
            return
        if entry:
            if keep is not None:
                _c_kept[id(keep)] = keep  # its address now stands for its contents: never freed, never reused
            fast.ccompiled[key] = entry + (_direct_spec(entry),) if _C_DIRECT else entry
            filed = True
    finally:
        if deferred:  # now launch it: from C by its new key, else by the Python path's entry
            if filed:
                if keep is not None:
                    _C.launch_meta(kernel, grid, keep, *args)
                else:
                    _C.launch(kernel, grid, *args, **meta)
            else:
                _launch_py(kernel, grid, *args, **meta)


_c_kept: dict = {}  # id -> the launch_meta dicts whose address is part of a filed C key
# TRITONIC_LAZY_LAUNCHER (read at import; "0" turns it off): with the direct launch, a
# specialisation's first call builds no Triton launcher (_lazy_entry). Triton builds one per
# kernel signature with the C compiler: 16-26 of them, 1.3-1.8 s, in a model's cold first call
# on the H200 (c900cca).
LAZY = os.environ.get("TRITONIC_LAZY_LAUNCHER", "1").strip() != "0"
_defer = threading.local()  # (on: _c_slow asks _first to file the first call unlaunched; hit: it did)


# Triton's parameter types -> the direct path's codes (fastlaunch.c): pointers, integers by
# width and sign, floats by format; constexprs are not passed.
_CODES = {"i1": "b", "i8": "b", "u1": "B", "u8": "B", "i16": "h", "u16": "H", "i32": "i", "u32": "I", "i64": "l",
          "u64": "L", "fp16": "e", "bf16": "z", "fp32": "f", "f32": "f", "fp64": "d", "constexpr": "c"}
_C_DIRECT = False  # TRITONIC_C_LAUNCH=2 and libcuda found


def _direct_spec(entry):
    """(type codes, CUfunction, threads per block, shared memory) for fastlaunch.c's direct
    launch, or None where Triton's own launcher must run: scratch buffers, a cooperative grid,
    clusters, tensor descriptors, or a compiled kernel without the attributes used. A fifth
    item, the PDL flag, makes the C side set the programmatic stream serialisation attribute."""
    launch_c, coop, pdl, function, metadata, compiled = entry[:6]
    sig = getattr(getattr(compiled, "src", None), "signature", None)
    if launch_c is None or coop or not isinstance(sig, dict) or not isinstance(metadata, tuple) \
            or len(metadata) != 3:
        return None
    num_warps, num_ctas, shared = metadata
    codes = _param_codes(sig)
    if num_ctas != 1 or codes is None:
        return None
    return (codes, int(function), 32 * int(num_warps), int(shared), bool(pdl))


def _param_codes(sig):
    """fastlaunch.c's type codes of a compiled kernel's parameters (bytes), or None where one
    has none (a tensor descriptor) or the signature is not Triton's dict of type names."""
    if not isinstance(sig, dict):
        return None
    codes = []
    for ty in sig.values():
        code = "P" if isinstance(ty, str) and ty.startswith("*") else _CODES.get(ty) if isinstance(ty, str) else None
        if code is None:
            return None
        codes.append(code)
    return "".join(codes).encode()


def _configure_c(module, device=None, stream=None) -> None:
    """Hand the C module the objects it works with (``device`` / ``stream``: for tests)."""
    raw = getattr(torch._C, "_cuda_getCurrentRawStream", None)
    get_device = getattr(torch._C, "_cuda_getDevice", None)
    module.configure(_c_specs, _c_slow, globals(), _knobs, torch.Tensor, torch.nn.Parameter, _TensorDescriptor,
                     device or get_device or torch.cuda.current_device,
                     stream or raw or (lambda d: torch.cuda.current_stream(d).cuda_stream), _spec)


def _build_c():
    """Compile fastlaunch.c (cached by Triton's cache manager); None, with one warning, where
    that fails. With Triton's copy of cuda.h at hand, the direct path is compiled in too."""
    from pathlib import Path

    try:
        import triton
        from triton.runtime.build import compile_module_from_src

        src = (Path(__file__).with_name("fastlaunch.c")).read_text()
        include = Path(triton.__file__).parent / "backends" / "nvidia" / "include"
        has_h = (include / "cuda.h").exists()
        module = compile_module_from_src(src, "tritonic_fastlaunch", include_dirs=[str(include)] if has_h else [],
                                         ccflags=["-DTRITONIC_HAVE_CUDA_H"] if has_h else [])
    except Exception as e:  # no compiler, no headers, another Triton
        warn_once(("c-launch", type(e).__name__), f"tritonic: the C launch path could not be built ({e!r}); "
                  f"launches take the Python path, which costs ~1-2 µs more per call")
        return None
    return module


def _c_wanted() -> bool:
    from tritonic.runtime.device import has_cuda

    # on by default since the GPU suite passed with it on an H100 (2026-12-06): 2 (default) the C
    # binder and the direct cuLaunchKernelEx where a kernel allows it, 1 the C binder with
    # Triton's launcher, 0 the Python path
    return _c_mode() in ("1", "2") and not interpreter_active() and has_cuda()


def _c_mode() -> str:
    return os.environ.get("TRITONIC_C_LAUNCH", "2").strip()


def _init_c() -> None:
    """Build the C launch (once per process, at the first kernel on a GPU: nothing is compiled
    at import) and point ``launch`` at it, here and in the op modules that imported it."""
    global _C, _C_DIRECT, _knobs, launch, launch_meta, _c_tried, c_build_seconds
    _c_tried = True
    if not _c_wanted():
        return
    if _knobs is None:
        try:
            from triton import knobs

            _knobs = knobs.runtime
        except ImportError:  # triton < 3.4 kept the hooks on CompiledKernel
            from triton.compiler import CompiledKernel as _knobs
    t0 = time.perf_counter()
    module = _build_c()
    c_build_seconds = time.perf_counter() - t0  # (a cold Triton cache compiles it: part of a first call)
    if module is None:
        return
    try:
        _configure_c(module)
    except Exception as e:  # a torch without the entry points used
        warn_once(("c-launch", type(e).__name__), f"tritonic: the C launch path is off ({e!r})")
        return
    _C = module
    # (the module is one per process: a second init in another mode sets its flag again too)
    _C_DIRECT = bool(module.enable_direct(_c_mode() == "2"))
    launch = module.launch
    launch_meta = getattr(module, "launch_meta", _launch_meta_py)
    for name, mod in list(sys.modules.items()):  # (a test's own replacement is left alone)
        if name.startswith("tritonic.") and getattr(mod, "launch", None) is _launch_py:
            mod.launch = module.launch
        if name.startswith("tritonic.") and getattr(mod, "launch_meta", None) is _launch_meta_py:
            mod.launch_meta = launch_meta


def _launch_meta_py(kernel, grid, meta, *args) -> None:
    """``launch(kernel, grid, *args, **meta)`` with the keywords as one dict: for an op's cached
    launch parameters, which the caller keeps and never changes. The C launch keys on the
    dict's identity instead of its values (one key part for 17 keywords). Pass dicts from
    :func:`shared_meta`, so that equal keywords are one dict and one key."""
    launch(kernel, grid, *args, **meta)


_metas: dict = {}  # the keyword items -> the one dict holding them (shared_meta)


def shared_meta(meta: dict) -> dict:
    """The one dict with ``meta``'s items (``meta`` itself the first time): what callers of
    ``launch_meta`` hand over, never to be changed. Equal keywords built anew (a cache entry
    evicted and rebuilt, another shape with the same launch) then map to one C key, so the
    C launch's table and its kept dicts grow with the distinct launches, not the calls."""
    try:  # (the value's type too: True == 1 and 0 == 0.0 == False, but Triton compiles them apart)
        return _metas.setdefault(tuple((k, type(v), v) for k, v in meta.items()), meta)
    except TypeError:  # an unhashable value: a copy of its own (launch_meta still works, uncached)
        return dict(meta)


_c_tried = False
c_build_seconds = 0.0
launch = _launch_py
launch_meta = _launch_meta_py


# set by runtime/precompile.py to the thread whose launches compile in a pool and run nothing (0: none;
# other threads' launches run as usual)
_precompiling = 0
