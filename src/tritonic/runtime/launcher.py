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
(``fastlaunch.c``, built at the first kernel on a GPU; see the end of this file). With
the lazy launcher (on by default; ``TRITONIC_LAZY_LAUNCHER=0`` turns it off), a specialisation's first call
there compiles the kernel, loads it and launches it directly, so that Triton's own C launcher
for the kernel's signature (built with the C compiler at a kernel's first launch) is built
only if something ever needs it.
"""

from __future__ import annotations

import inspect
import os
import sys
import threading
import time

import torch
from torch.library import wrap_triton

from tritonic.runtime.checks import warn_once
from tritonic.runtime.device import interpreter_active
from tritonic.runtime.direct import (  # noqa: F401  (some re-exported: tests and precompile use them here)
    _LazyLauncher, _build_c, _c_mode, _c_wanted, _direct_eligible, _direct_spec, _lazy_entry)
from tritonic.runtime.launch_keys import (  # noqa: F401  (re-exported: ops import is_traced, descriptor, _PLAIN)
    _INT_MAX32, _PLAIN, _Miss, _TensorDescriptor, _int_key, _kind, _spec, descriptor, is_traced)

_fast: dict = {}  # kernel -> _FastKernel, or None where the fast path is unavailable
# The same by id(kernel) -> (kernel, _FastKernel or None), for launch(): a JITFunction hashes
# in Python (~0.25 µs a lookup), id() does not; the kernel kept in the entry guards against reuse
# of an id after a kernel is freed.
_by_id: dict = {}
# TRITONIC_FAST_LAUNCH=0 sends every launch through Triton's own path (for debugging and
# for measuring what the fast path saves, as benchmarks/launch.py does).
FAST = os.environ.get("TRITONIC_FAST_LAUNCH", "1").strip() != "0"


def _with_defaults(kernel, n_args, meta):
    """``meta`` plus every defaulted constexpr the call leaves out, passed by name. Inductor's
    generated launcher for a user kernel counts the constexprs it was given, and one left at
    its default breaks it ("missing '_grid_2'", torch 2.11); naming them all avoids it."""
    params, k, fn = None, kernel, None
    while k is not None and params is None:  # a JITFunction, or a wrapper of one (.fn)
        params, fn, k = getattr(k, "params", None), k, getattr(k, "fn", None)
    if params:
        named = [(p.name, p.is_constexpr, p.has_default, getattr(p, "default", None)) for p in params]
    else:  # the interpreter's InterpretedFunction: the Python function's own signature
        try:
            sig = inspect.signature(fn)
        except (TypeError, ValueError):
            return meta
        named = [(n, "constexpr" in str(p.annotation), p.default is not inspect.Parameter.empty, p.default)
                 for n, p in sig.parameters.items()]
    extra = {name: default for name, const, has_default, default in named[n_args:]
             if const and has_default and name not in meta}
    return {**meta, **extra} if extra else meta


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
        self.cvariants: dict = {}  # argument kinds (bytes) -> that C spec's dict (the first: ccompiled)
        self.layout = b""
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
        self.layout = "".join("c" if c else "a" for c in self.constexpr).encode()
        self.cvariants = {kinds.encode(): self.ccompiled}
        _c_specs[id(self.kernel)] = (self.kernel, kinds.encode(), self.layout, self.ccompiled)

    def add_c_variant(self, args) -> bool:
        """A C spec for the kinds of ``args`` too (a call passing None where the first passed
        a tensor, say: the norm without and with a residual), chained after the first, so the
        C launch takes such calls as well instead of handing each to Python. False where it
        cannot or need not (no first spec, kinds without a fast form, four variants already,
        these kinds already have one: C declined the call for another reason)."""
        if self.bind_fast is None or len(self.cvariants) >= 4:
            return False
        kinds = [_kind(v) for v in args]
        if None in kinds:
            return False
        kinds = "".join(kinds).encode()
        if kinds in self.cvariants:
            return False
        self.cvariants[kinds] = {}
        chain = None
        for k, d in reversed(list(self.cvariants.items())):
            chain = (self.kernel, k, self.layout, d, chain)
        _c_specs[id(self.kernel)] = chain
        return True

    def c_dict_for(self, args) -> dict:
        """The C keys' dict of the spec whose kinds ``args`` have (the first spec's otherwise)."""
        if len(self.cvariants) > 1:
            kinds = [_kind(v) for v in args]
            if None not in kinds:
                return self.cvariants.get("".join(kinds).encode(), self.ccompiled)
        return self.ccompiled

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
            wrap_triton(kernel)[grid](*args, **_with_defaults(kernel, len(args), meta))
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
        nothing and says so (``_defer.hit``): ``_c_slow`` launches it from C."""
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
        if type(launch_c) is _LazyLauncher and getattr(_defer, "on", False) and launch_c.unbuilt():
            _defer.hit = True  # (from _c_slow: it files the C key and launches directly instead)
            return
        stream = self.stream(device)
        g1 = grid[1] if len(grid) > 1 else 1
        g2 = grid[2] if len(grid) > 2 else 1
        if launch_c is not None:  # no scratch buffers to allocate: straight into the C launcher
            launch_c(grid[0], g1, g2, stream, function, coop, pdl, None, None, metadata, None, None, None,
                     *launch_args)
        else:
            compiled.run(grid[0], g1, g2, stream, function, metadata, None, None, None, *launch_args)


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
        if hit is not None and hit[0] is kernel:
            fast = hit[1]
        else:
            tried = _c_tried
            fast = _fast_kernel(kernel)
            if not tried and _C is not None and launch is not _launch_py:
                # The process's first kernel has just built the C launch: this call takes it too,
                # so that its first specialisation is deferred like every later kernel's (the lazy
                # launcher: Triton builds no launcher module for it; cold BERT first calls built
                # one for their first kernel, the embeddings', ~0.25 s)
                launch(kernel, grid, *args, **meta)
                return
    if fast is None or _hooks_active():
        if is_traced(*args):
            wrap_triton(kernel)[grid](*args, **_with_defaults(kernel, len(args), meta))
        else:
            kernel[grid](*args, **meta)
        return
    run = fast.run_fast
    if run is not None and not (LAZY and getattr(_defer, "on", False)):  # the common case: one generated function
        # from arguments to the C launcher (not from _c_slow with the lazy launcher: see _FastKernel._run)
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
    # With the lazy launcher, the Python path files a specialisation's first call (or finds its
    # unlaunched entry) without launching it, and this launches it from C by its key. A kernel's
    # very first call has no C key yet (C had no spec for it): the relaunch from C computes one
    # and comes back here once, one level deeper; two levels down nothing is deferred, so a
    # launch C keeps declining ends on the Python path.
    depth = getattr(_defer, "depth", 0)
    saved = getattr(_defer, "on", False), getattr(_defer, "hit", False)
    hit = _by_id.get(id(kernel))
    fast = hit[1] if hit is not None and hit[0] is kernel else None
    # No key although C knows the kernel: these arguments' kinds match none of its specs (or
    # the fast path is off). A spec for them is added where it can be, so the relaunch (and
    # every later call) computes a key; otherwise nothing is deferred: a relaunch from C would
    # only come back here.
    known = fast is not None and id(kernel) in _c_specs
    can_defer = key is not None or not known or (FAST and fast.add_c_variant(args))
    _defer.on, _defer.hit = _C_DIRECT and LAZY and _C is not None and depth < 2 and can_defer, False
    try:
        _launch_py(kernel, grid, *args, **meta)
        deferred = _defer.hit  # filed (or found) unlaunched
    finally:
        _defer.on, _defer.hit = saved
    try:
        if key is None:
            return
        hit = _by_id.get(id(kernel))  # (again: a kernel's very first call has just made its state)
        fast = hit[1] if hit is not None and hit[0] is kernel else None
        if fast is None or fast.bind_fast is None:
            return
        try:
            entry = fast.compiled.get(fast.bind_fast(args, meta)[0])
        except _Miss:  # another spec's kinds: the generic binder's key
            try:
                entry = fast.compiled.get((fast.device(), fast.bind(*args, **meta)[0]))
            except (AttributeError, TypeError, ValueError, RuntimeError):
                return
        except (AttributeError, TypeError, ValueError, RuntimeError):
            return
        if entry:
            if keep is not None:
                _c_kept[id(keep)] = keep  # its address now stands for its contents: never freed, never reused
            fast.c_dict_for(args)[key] = entry + (_direct_spec(entry),) if _C_DIRECT else entry
    finally:
        if deferred:  # now launch it from C (by its new key, or computing the key it lacked)
            _defer.depth = depth + 1
            try:
                if keep is not None:
                    _C.launch_meta(kernel, grid, keep, *args)
                else:
                    _C.launch(kernel, grid, *args, **meta)
            finally:
                _defer.depth = depth


_c_kept: dict = {}  # id -> the launch_meta dicts whose address is part of a filed C key
# TRITONIC_LAZY_LAUNCHER (read at import; "0" turns it off): with the direct launch, a
# specialisation's first call builds no Triton launcher (_lazy_entry). Triton builds one per
# kernel signature with the C compiler: 16-26 of them, 1.3-1.8 s, in a model's cold first call
# on the H200 (c900cca). H100 (58b2a12), cold BERT 1x16 first calls: 5.19 / 5.38 s off, 4.34 /
# 4.52 / 5.29 s on (7 -> 4 launchers built); its GPU tests and the model table ran with it on.
LAZY = os.environ.get("TRITONIC_LAZY_LAUNCHER", "1").strip() != "0"
_defer = threading.local()  # (on: _c_slow asks the Python path to file, not launch; hit: it did; depth: relaunches)


_C_DIRECT = False  # TRITONIC_C_LAUNCH=2 and libcuda found


def _configure_c(module, device=None, stream=None) -> None:
    """Hand the C module the objects it works with (``device`` / ``stream``: for tests)."""
    raw = getattr(torch._C, "_cuda_getCurrentRawStream", None)
    get_device = getattr(torch._C, "_cuda_getDevice", None)
    module.configure(_c_specs, _c_slow, globals(), _knobs, torch.Tensor, torch.nn.Parameter, _TensorDescriptor,
                     device or get_device or torch.cuda.current_device,
                     stream or raw or (lambda d: torch.cuda.current_stream(d).cuda_stream), _spec)


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
