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
"""

from __future__ import annotations

import os

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
_fast: dict = {}  # kernel -> _FastKernel, or None where the fast path is unavailable
# TRITONIC_FAST_LAUNCH=0 sends every launch through Triton's own path (for debugging and
# for measuring what the fast path saves, as benchmarks/launch.py does).
FAST = os.environ.get("TRITONIC_FAST_LAUNCH", "1").strip() != "0"


def is_traced(*args) -> bool:
    """Is any tensor among ``args`` a tracing subclass (fake, functional, proxy, ...)?"""
    return any(isinstance(a, torch.Tensor) and type(a) not in _PLAIN for a in args)


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


class _FastKernel:
    """Per-kernel state of the fast path: the generated binder and the compiled kernels."""

    def __init__(self, kernel):
        params = kernel.params
        names = [p.name for p in params]
        keyed = [f"_spec({p.name})" if not p.is_constexpr else p.name for p in params]
        src = (f"def bind({', '.join(names)}, **options):\n"
               f"    return ({', '.join(keyed)}, tuple(options.items())), ({', '.join(names)},)\n")
        namespace = {"_spec": _spec}
        exec(src, namespace)  # one small function per kernel, made once
        self.bind = namespace["bind"]
        self.compiled: dict = {}
        raw = getattr(torch._C, "_cuda_getCurrentRawStream", None)  # what Triton itself uses
        self.stream = raw if raw is not None else (lambda d: torch.cuda.current_stream(d).cuda_stream)

    def launch(self, kernel, grid, args, meta) -> None:
        key, all_args = self.bind(*args, **meta)
        device = torch.cuda.current_device()
        compiled = self.compiled.get((device, key))
        if compiled is None:  # first call with this specialisation: Triton compiles and launches
            compiled = kernel[grid](*args, **meta)
            if all(hasattr(compiled, a) for a in ("run", "function", "packed_metadata")):
                self.compiled[(device, key)] = compiled
            return
        stream = self.stream(device)
        compiled.run(grid[0], grid[1] if len(grid) > 1 else 1, grid[2] if len(grid) > 2 else 1, stream,
                     compiled.function, compiled.packed_metadata, None, None, None, *all_args)


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
        except Exception as e:  # a Triton without the internals this relies on
            warn_once(("fast-launch", type(e).__name__),
                      f"tritonic: the fast kernel launcher is unavailable with this Triton ({e!r}); "
                      f"using Triton's own launch path, which costs more host time per call")
    _fast[kernel] = fast
    return fast


def launch(kernel, grid, *args, **meta) -> None:
    """Launch ``kernel`` over ``grid`` (a tuple of ints) with positional arguments ``args``
    and constexprs / options (``num_warps``...) as keywords."""
    if is_traced(*args):
        wrap_triton(kernel)[grid](*args, **meta)
        return
    fast = _fast_kernel(kernel) if FAST else None
    if fast is None or _hooks_active():
        kernel[grid](*args, **meta)
        return
    fast.launch(kernel, grid, args, meta)
