"""The direct launch's pieces that hold no launcher state (``runtime/launcher.py`` re-exports
them): fastlaunch.c's parameter type codes and direct-launch spec of a compiled kernel, which
kernels it can take, the lazy Triton launcher of a specialisation's first call, and the
build of fastlaunch.c itself.
"""

from __future__ import annotations

import os

from tritonic.runtime.checks import warn_once
from tritonic.runtime.device import interpreter_active

# Triton's parameter types -> the direct path's codes (fastlaunch.c): pointers, integers by
# width and sign, floats by format; constexprs are not passed.
_CODES = {"i1": "b", "i8": "b", "u1": "B", "u8": "B", "i16": "h", "u16": "H", "i32": "i", "u32": "I", "i64": "l",
          "u64": "L", "fp16": "e", "bf16": "z", "fp32": "f", "f32": "f", "fp64": "d", "constexpr": "c"}


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


class _LazyLauncher:
    """Triton's launcher of a compiled kernel, built at its first call (``compiled.run`` builds
    it): the entries of :func:`_lazy_entry` launch by cuLaunchKernelEx and reach this only
    where the direct path declines a launch. Called as Triton's launch function is."""

    __slots__ = ("compiled",)

    def __init__(self, compiled):
        self.compiled = compiled

    def __call__(self, *args):
        return self.compiled.run.launch(*args)

    def unbuilt(self) -> bool:
        """Has Triton not built (or loaded) the launcher yet?"""
        return getattr(self.compiled, "_run", None) is None


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
    from tritonic.runtime import launcher  # (its _knobs: set at the first kernel, or by a test)

    knobs = launcher._knobs
    hooks = (getattr(knobs, "kernel_load_start_hook", None), getattr(knobs, "kernel_load_end_hook", None))
    return any(bool(getattr(h, "calls", h)) for h in hooks)


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
