"""LayerNorm and RMSNorm: the functional API, its checks, custom ops and autograd.

    y = layer_norm(x, weight, bias, eps=1e-5)
    y, h = layer_norm(x, weight, bias, residual=h)      # pre-norm block: h = x + h; y = LN(h)
    y = rms_norm(x, weight, eps=1e-6, offset=0.0, upcast=True)

Both normalise over the last dimension of ``x`` (any leading dimensions, any strides).
The kernels compute in float32 and store in ``x``'s dtype; ``weight`` and ``bias`` may be
float32 while ``x`` is half precision. The ops are registered with torch
(``tritonic::layer_norm``, ``tritonic::rms_norm`` and their backward ops), so they work in
eager mode, under ``torch.compile(fullgraph=True)`` and inside CUDA graphs.

What the kernels do not cover falls back to :func:`layer_norm_reference` /
:func:`rms_norm_reference` with a one-time warning: float64 tensors, hidden sizes above
``MAX_HIDDEN``, and empty tensors (silently).
"""

from __future__ import annotations

import functools
import json
import os

import torch

from tritonic.kernels.norm import _norm_bwd, _norm_bwd_reduce, _norm_fwd
from tritonic.ops._register import register
from tritonic.runtime import empty, num_sms, warn_once
from tritonic.runtime import checks as _checks
from tritonic.runtime.alloc import empty_like
from tritonic.runtime.launcher import _PLAIN, is_traced, launch, launch_meta, shared_meta
from tritonic.runtime import pdl as _pdl
from tritonic.runtime.checks import (
    KERNEL_DTYPES,
    check_kernel_device,
    check_same_device,
    check_same_dtype,
    check_shape,
    check_tensor,
)

__all__ = ["layer_norm", "rms_norm", "layer_norm_reference", "rms_norm_reference", "MAX_HIDDEN"]

MAX_HIDDEN = 65536  # widest row the kernels are tested for; wider rows use the reference
INT32_ROWS = 2**31  # the forward indexes rows in int32 while M * row stride stays below this
FUSED_HIDDEN = 16384  # rows up to this width are held in registers, wider ones are chunked
CHUNK = 4096  # columns per chunk for wider rows
BWD_PROGRAMS_PER_SM = 1  # backward grid: programs per multiprocessor, each owning a dW partial


# ----------------------------------------------------------------------------- references


def layer_norm_reference(x, weight=None, bias=None, eps=1e-5, residual=None):
    """PyTorch LayerNorm with the same interface (and the same residual rounding)."""
    s = x if residual is None else x + residual
    y = torch.nn.functional.layer_norm(s, (s.shape[-1],), weight, bias, eps)
    return y if residual is None else (y, s)


def rms_norm_reference(x, weight=None, eps=1e-6, residual=None, offset=0.0, upcast=True):
    """RMSNorm written as the popular models write it, computed in at least float32.

    ``upcast=True`` scales in float32 and casts once (torch.nn.RMSNorm, Gemma);
    ``upcast=False`` casts the normalised input back first, then scales (Llama, T5)."""
    s = x if residual is None else x + residual
    acc = torch.promote_types(s.dtype, torch.float32)
    h = s.to(acc)
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    if weight is not None:
        if upcast:
            h = h * (weight.to(acc) + offset)
        else:
            h = h.to(s.dtype).to(acc) * (weight.to(acc) + offset)
    y = h.to(s.dtype)
    return y if residual is None else (y, s)


# ----------------------------------------------------------------------------- launches


def _cdiv(a: int, b: int) -> int:
    return (a + b - 1) // b


# Launch parameters by BLOCK_N (the row width rounded up to a power of two), chosen from
# sweeps on an H100 (scripts/sweep_norm.py; benchmarks/NOTES.md has the numbers).
_FWD = {1024: (2, 4), 2048: (2, 8), 4096: (4, 16), 8192: (2, 32), 16384: (1, 16)}  # (BLOCK_M, warps)
# The forward on an H200 (its own sweep, 2026-11-29): (BLOCK_M, warps, load eviction, streaming store).
# H100 values were 3-8% slower there at 4096 and 8192 columns.
_FWD_H200 = {1024: (2, 4, "evict_first", False), 2048: (2, 8, "", False), 4096: (2, 16, "", True),
             8192: (1, 8, "", True), 16384: (1, 8, "", True)}
_BWD = {1024: (8, 4, 1), 2048: (4, 8, 1), 4096: (4, 16, 1), 8192: (2, 16, 1), 16384: (1, 8, 1)}  # + programs/SM
_CHUNKED = (1, 8)  # (BLOCK_M, warps) of the chunked path, CHUNK columns per step
# Cache hints of the forward: the one-pass loads' L2 eviction policy ("" or "evict_first")
# and whether Y is written with the streaming hint (.cs).
_FWD_HINTS = ("", False)


_OVERRIDE = os.environ.get("TRITONIC_NORM_FWD_TABLE") or None  # read at import: sweeps set it before


def _fwd_override(block_n: int):
    """A forward launch from the JSON file named by TRITONIC_NORM_FWD_TABLE, if any:
    ``{"<BLOCK_N>": [single_pass, BLOCK_M, BLOCK_N or chunk, num_warps(, load_evict, store_cs)]}``.
    For tuning experiments (scripts/sweep_norm.py writes such a file); read once per width."""
    path = _OVERRIDE
    if not path:
        return None
    with open(path) as f:
        entry = json.load(f).get(str(block_n))
    if entry is None:
        return None
    hints = (str(entry[4]), bool(entry[5])) if len(entry) >= 6 else _FWD_HINTS
    return (bool(entry[0]), int(entry[1]), int(entry[2]), int(entry[3])) + hints


@functools.lru_cache(maxsize=None)
def _fwd_config(N: int, override_file: str | None = None):
    """(single_pass, BLOCK_M, BLOCK_N, num_warps, load_evict, store_cs) of the forward for
    rows of N columns (cached per width and override file: this runs on every call)."""
    block_n = 1 << (N - 1).bit_length()  # next power of two
    override = _fwd_override(block_n)
    if override is not None:
        return override
    if block_n > FUSED_HIDDEN:
        return (False, _CHUNKED[0], CHUNK, _CHUNKED[1]) + _FWD_HINTS
    if block_n < 1024:  # narrow rows: several per program, a 4096-element tile
        return (True, min(16, 4096 // block_n), block_n, 4) + _FWD_HINTS
    if _gpu_is_h200():
        block_m, warps, evict, cs = _FWD_H200[block_n]
        return (True, block_m, block_n, warps, evict, cs)
    return (True,) + (_FWD[block_n][0], block_n, _FWD[block_n][1]) + _FWD_HINTS


@functools.lru_cache(maxsize=None)
def _gpu_is_h200() -> bool:
    """Whether the forward's H200 table applies (the current GPU's name says H200)."""
    from tritonic.runtime import has_cuda, interpreter_active

    return has_cuda() and not interpreter_active() and "H200" in torch.cuda.get_device_name()


def _bwd_config(N: int):
    """(single_pass, BLOCK_M, BLOCK_N, num_warps, programs per SM) of the backward."""
    block_n = 1 << (N - 1).bit_length()
    if block_n > FUSED_HIDDEN:
        return (False, _CHUNKED[0], CHUNK, _CHUNKED[1], BWD_PROGRAMS_PER_SM)
    if block_n < 1024:
        return (True, min(16, 8192 // block_n), block_n, 4, BWD_PROGRAMS_PER_SM)
    block_m, warps, per_sm = _BWD[block_n]
    return (True, block_m, block_n, warps, per_sm)


def _launch_fwd(x, residual, weight, bias, eps, offset, is_rms, upcast, store_stats=True, store_sum=True):
    # Outputs a case does not produce are None here (the kernel never touches them).
    M, N = x.shape
    y = empty_like(x)
    s = empty_like(x) if residual is not None and store_sum else None
    mean = empty((M,), dtype=torch.float32, device=x.device) if store_stats and not is_rms else None
    rstd = empty((M,), dtype=torch.float32, device=x.device) if store_stats else None
    sx = x.stride()[0]  # (stride() then an index: half the cost of stride(0))
    sr = residual.stride()[0] if residual is not None else 0
    if type(M) is not int or type(N) is not int:  # traced with symbolic sizes (torch.compile, dynamic shapes):
        # the hidden size is fixed (a guard: it is the model's), the row count stays symbolic and
        # only sizes the grid (no even-rows specialisation, 64-bit row offsets), nothing is cached
        N = int(N)
        _, meta = _fwd_launch.__wrapped__(1, N, is_rms, residual is not None, weight is not None, bias is not None,
                                          upcast, store_stats, s is not None, offset != 0.0, True, _OVERRIDE)
        launch(_norm_fwd, (_cdiv(M, meta["BLOCK_M"]),), x, residual, weight, bias, y, s, mean, rstd, sx, sr,
               N, N, M, N, eps, offset, **dict(meta, EVEN=False))
        return y, s, mean, rstd
    # 64-bit row offsets only where an offset can pass 2**31 (M rows, plus a last block's padding
    # rows, at the widest row stride; BLOCK_M is at most 16 in the tables, 1024 leaves room)
    wide = sx if sx > N else N  # (max(sx, sr, N) without the builtin's call: this runs on every call)
    if sr > wide:
        wide = sr
    int64 = (M + 1024) * wide >= INT32_ROWS
    pdl = _pdl.ACTIVE and not is_traced(x) and _pdl.pdl_meta(x.device, M) is _pdl.ON
    grid, meta = _fwd_launch(M, N, is_rms, residual is not None, weight is not None, bias is not None, upcast,
                             store_stats, s is not None, offset != 0.0, int64, _OVERRIDE, pdl)
    launch_meta(_norm_fwd, grid, meta, x, residual, weight, bias, y, s, mean, rstd, sx, sr, N, N, M, N, eps, offset)
    return y, s, mean, rstd


@functools.lru_cache(maxsize=4096)
def _fwd_launch(M, N, is_rms, has_residual, has_weight, has_bias, upcast, store_stats, store_sum, has_offset, int64,
                override_file, pdl=False):
    """(grid, keyword arguments) of a forward launch, cached: they depend on the shape and the
    flags only, and building 17 keywords costs more host time than the kernel's launch. The
    dict is handed to ``launch_meta`` as it is, so it must never be changed after this."""
    single, block_m, block_n, num_warps, load_evict, store_cs = _fwd_config(N, override_file)
    meta = dict(IS_RMS=is_rms, HAS_RESIDUAL=has_residual, HAS_WEIGHT=has_weight, HAS_BIAS=has_bias, UPCAST=upcast,
                STORE_STATS=store_stats, SINGLE_PASS=single, BLOCK_M=block_m, BLOCK_N=block_n, LOAD_EVICT=load_evict,
                STORE_CS=store_cs, HAS_OFFSET=has_offset, EVEN=N % block_n == 0 and M % block_m == 0, INT64=int64,
                STORE_SUM=store_sum, num_warps=num_warps)
    meta.update(_pdl.ON if pdl else _pdl.OFF)
    return (_cdiv(M, block_m),), shared_meta(meta)


def _launch_bwd(dy, ds, s, weight, bias, mean, rstd, offset, is_rms, upcast, need_dw, need_db):
    M, N = s.shape
    dx = empty((M, N), dtype=s.dtype, device=s.device)
    single, block_m, block_n, num_warps, per_sm = _bwd_config(N)
    n_blocks = _cdiv(M, block_m)
    programs = max(1, min(n_blocks, num_sms(s.device.index) * per_sm))
    alloc = torch.empty if single else torch.zeros  # chunked rows accumulate in place
    dw = alloc((programs, N), dtype=torch.float32, device=s.device) if need_dw else None
    db = alloc((programs, N), dtype=torch.float32, device=s.device) if need_db else None
    launch(
        _norm_bwd, (programs,), s, dy, ds, weight, mean, rstd, dx, dw, db,
        s.stride(0), dy.stride(0), ds.stride(0) if ds is not None else 0, dx.stride(0),
        M, N, offset,
        IS_RMS=is_rms, HAS_DS=ds is not None, HAS_WEIGHT=weight is not None, HAS_DW=need_dw, HAS_DB=need_db,
        UPCAST=upcast, SINGLE_PASS=single, BLOCK_M=block_m, BLOCK_N=block_n, num_warps=num_warps,
    )
    dw_out = empty((N,) if need_dw else (0,), dtype=weight.dtype if need_dw else s.dtype, device=s.device)
    db_out = empty((N,) if need_db else (0,), dtype=bias.dtype if need_db else s.dtype, device=s.device)
    if need_dw or need_db:
        launch(_norm_bwd_reduce, (_cdiv(N, 64),), dw, db, dw_out, db_out, programs, N,
               HAS_DW=need_dw, HAS_DB=need_db, BLOCK_G=32, BLOCK_N=64, num_warps=4)
    return dx, dw_out, db_out


# ----------------------------------------------------------------------------- ops
# The forward and backward take 2-D (rows, hidden) tensors with unit column stride (the
# public functions reshape) and return empty tensors for outputs a case does not produce.
# Each is registered as a torch custom op for torch.compile and tracing; in eager mode an
# autograd.Function calls the same functions directly, skipping the dispatcher's cost.


def _filled(x: torch.Tensor, outputs):
    """Ops cannot return None: unused outputs become empty tensors."""
    return tuple(x.new_empty(0) if t is None else t for t in outputs)


def _ln_fwd(
    x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None,
    residual: torch.Tensor | None, eps: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    return _filled(x, _launch_fwd(x, residual, weight, bias, eps, 0.0, False, True))


def _ln_bwd(
    dy: torch.Tensor, ds: torch.Tensor | None, s: torch.Tensor, weight: torch.Tensor | None,
    bias: torch.Tensor | None, mean: torch.Tensor, rstd: torch.Tensor, need_dw: bool, need_db: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return _launch_bwd(dy, ds, s, weight, bias, mean, rstd, 0.0, False, True, need_dw, need_db)


def _rms_fwd(
    x: torch.Tensor, weight: torch.Tensor | None, residual: torch.Tensor | None,
    eps: float, offset: float, upcast: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    y, s, _, rstd = _launch_fwd(x, residual, weight, None, eps, offset, True, upcast)
    return _filled(x, (y, s, rstd))


def _rms_bwd(
    dy: torch.Tensor, ds: torch.Tensor | None, s: torch.Tensor, weight: torch.Tensor | None,
    rstd: torch.Tensor, offset: float, upcast: bool, need_dw: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    dx, dw, _ = _launch_bwd(dy, ds, s, weight, None, None, rstd, offset, True, upcast, need_dw, False)
    return dx, dw


def _rows(t: torch.Tensor | None) -> torch.Tensor | None:
    """Gradients can arrive with any strides (even expanded); the kernels want unit column stride."""
    if t is None:
        return None
    return t if t.stride(-1) == 1 else t.contiguous()


def _save(ctx, x, weight, bias, residual, s, mean, rstd, backward_impl):
    ctx.has_residual = residual is not None
    ctx.backward_impl = backward_impl
    ctx.save_for_backward(s if residual is not None else x, weight, bias, mean, rstd)


def _incoming(ctx, dy, ds, s):
    """The output gradients as the kernels want them (None where nothing flows back)."""
    dy = torch.zeros_like(s) if dy is None else _rows(dy)
    return dy, (_rows(ds) if ctx.has_residual and ds is not None else None)


def _layer_norm_setup(ctx, inputs, output, backward_impl):
    x, weight, bias, residual, _ = inputs
    y, s, mean, rstd = output
    _save(ctx, x, weight, bias, residual, s, mean, rstd, backward_impl)


def _layer_norm_grad(ctx, dy, ds, _dmean, _drstd):
    s, weight, bias, mean, rstd = ctx.saved_tensors
    need_x, need_w, need_b, need_r, _ = ctx.needs_input_grad
    dy, ds = _incoming(ctx, dy, ds, s)
    dx, dw, db = ctx.backward_impl(dy, ds, s, weight, bias, mean, rstd, weight is not None and need_w,
                                   bias is not None and need_b)
    return (dx if need_x else None, dw if need_w else None, db if need_b else None,
            dx if need_r else None, None)


def _rms_norm_setup(ctx, inputs, output, backward_impl):
    x, weight, residual, _, offset, upcast = inputs
    y, s, rstd = output
    ctx.offset, ctx.upcast = offset, upcast
    _save(ctx, x, weight, None, residual, s, None, rstd, backward_impl)


def _rms_norm_grad(ctx, dy, ds, _drstd):
    s, weight, _, _, rstd = ctx.saved_tensors
    need_x, need_w, need_r = ctx.needs_input_grad[:3]
    dy, ds = _incoming(ctx, dy, ds, s)
    dx, dw = ctx.backward_impl(dy, ds, s, weight, rstd, ctx.offset, ctx.upcast, weight is not None and need_w)
    return (dx if need_x else None, dw if need_w else None,
            dx if need_r else None, None, None, None)


_LayerNormFn = register("layer_norm", _ln_fwd, _ln_bwd, _layer_norm_setup, _layer_norm_grad, n_nondiff=2)
_RMSNormFn = register("rms_norm", _rms_fwd, _rms_bwd, _rms_norm_setup, _rms_norm_grad, n_nondiff=1)


def _path(x, weight, bias, residual, plain_types=False) -> str:
    """"op": the registered custom op (torch is tracing); "grad": the eager autograd.Function;
    "plain": a direct launch with no autograd and no saved statistics (nothing wants a gradient).
    ``plain_types``: the check saw exact Tensor / Parameter types (no tracing subclass)."""
    if torch.compiler.is_compiling() or (not plain_types and is_traced(x, weight, bias, residual)):
        return "op"
    # (the tensors first: with none wanting a gradient, grad mode need not be asked)
    if (x.requires_grad or (weight is not None and weight.requires_grad) or (bias is not None and bias.requires_grad)
            or (residual is not None and residual.requires_grad)) and torch.is_grad_enabled():
        return "grad"
    return "plain"


# ----------------------------------------------------------------------------- public API


def _check(op, x, weight, bias, residual, eps) -> int:
    """Validate the arguments: 0 to fall back, otherwise the kernels can run them (2 when
    every tensor is exactly a Tensor or Parameter, so none is a tracing subclass; else 1).

    The common case passes a few cheap comparisons (this runs on every call); anything
    else goes through the full checks, which name the bad argument."""
    # (exact type tests: cheaper than isinstance on tensors; subclasses take the full checks)
    if type(x) in _PLAIN and type(eps) is float and eps >= 0 and x.dtype in KERNEL_DTYPES and x.dim() >= 1:
        shape, dev = x.shape, x.device
        N = shape[-1]
        if ((weight is None or (type(weight) in _PLAIN and weight.shape == (N,) and weight.dtype in KERNEL_DTYPES
                                and weight.device == dev))
                and (bias is None or (type(bias) in _PLAIN and bias.shape == (N,) and bias.dtype in KERNEL_DTYPES
                                      and bias.device == dev))
                and (residual is None or (type(residual) in _PLAIN and residual.shape == shape
                                          and residual.dtype == x.dtype and residual.device == dev))
                and 0 < N <= MAX_HIDDEN and x.numel() > 0 and _checks.can_run_kernels(dev)):
            return 2
    check_tensor(op, "x", x, min_dim=1)
    N = x.shape[-1]
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None:
            check_tensor(op, name, t)
            check_shape(op, name, t, (N,), lambda: f"(the size of x's last dimension, x has shape {tuple(x.shape)})")
    if residual is not None:
        check_tensor(op, "residual", residual)
        check_shape(op, "residual", residual, tuple(x.shape), "(the shape of x)")
        check_same_dtype(op, "x", x, "residual", residual)
    check_same_device(op, "x", x, weight=weight, bias=bias, residual=residual)
    if not isinstance(eps, (int, float)) or eps < 0:
        raise ValueError(f"{op}: eps must be a non-negative number, got {eps!r}")
    check_kernel_device(op, "x", x)
    if x.numel() == 0:
        return 0
    if x.dtype not in KERNEL_DTYPES or not all(t is None or t.dtype in KERNEL_DTYPES for t in (weight, bias)):
        dtypes = {t.dtype for t in (x, weight, bias, residual) if t is not None}
        warn_once((op, "dtype"), f"{op}: the kernels take float16, bfloat16 and float32; "
                  f"got {sorted(str(d) for d in dtypes)}, so PyTorch's implementation runs instead")
        return 0
    if N > MAX_HIDDEN:
        warn_once((op, "width"), f"{op}: hidden size {N} is above {MAX_HIDDEN}, the widest the "
                  f"kernels are tested for, so PyTorch's implementation runs instead")
        return 0
    return 1


def layer_norm(x, weight=None, bias=None, eps=1e-5, residual=None, return_sum=True):
    """LayerNorm over the last dimension of ``x``: ``(s - mean) / sqrt(var + eps) * weight + bias``.

    With ``residual``, ``s = x + residual`` (rounded to ``x``'s dtype) is normalised and
    ``(y, s)`` is returned, fusing a pre-norm block's residual add; otherwise ``y``.
    ``return_sum=False`` returns ``y`` alone and, without autograd, never writes the sum (a
    post-norm block such as BERT's: one tensor less written per call).
    """
    ok = _check("layer_norm", x, weight, bias, residual, eps)
    if not ok:
        out = layer_norm_reference(x, weight, bias, eps, residual)
        return out[0] if residual is not None and not return_sum else out
    x2, r2 = _as_rows(x), None if residual is None else _as_rows(residual)
    path = _path(x, weight, bias, residual, ok == 2)
    if path == "plain":
        y, s, _, _ = _launch_fwd(x2, r2, weight, bias, float(eps), 0.0, False, True, store_stats=False,
                                 store_sum=bool(return_sum))
    else:
        fn = _LayerNormFn.apply if path == "grad" else torch.ops.tritonic.layer_norm
        y, s, _, _ = fn(x2, weight, bias, r2, float(eps))
    if residual is None or not return_sum:  # (the common case inline: one call less)
        return y.view(x.shape) if x.dim() != 2 else y
    return _shaped(y, s, x, residual)


def rms_norm(x, weight=None, eps=1e-6, residual=None, offset=0.0, upcast=True):
    """RMSNorm over the last dimension of ``x``: ``s / sqrt(mean(s^2) + eps) * (weight + offset)``.

    ``offset`` covers weights stored as ``w - 1`` (Gemma: ``offset=1.0``). ``upcast=True``
    multiplies by the weight in float32 and casts once; ``upcast=False`` casts the
    normalised input to ``x``'s dtype first (Llama, Mistral, Qwen2, T5). ``residual`` works
    as in :func:`layer_norm`.
    """
    if offset != 0.0 and weight is None:
        raise ValueError("rms_norm: offset is added to the weight, so it needs a weight; got weight=None")
    ok = _check("rms_norm", x, weight, None, residual, eps)
    if not ok:
        return rms_norm_reference(x, weight, eps, residual, offset, upcast)
    x2, r2 = _as_rows(x), None if residual is None else _as_rows(residual)
    path = _path(x, weight, None, residual, ok == 2)
    if path == "plain":
        y, s, _, _ = _launch_fwd(x2, r2, weight, None, float(eps), float(offset), True, bool(upcast),
                                 store_stats=False)
    else:
        fn = _RMSNormFn.apply if path == "grad" else torch.ops.tritonic.rms_norm
        y, s, _ = fn(x2, weight, r2, float(eps), float(offset), bool(upcast))
    return _shaped(y, s, x, residual)


def _as_rows(t: torch.Tensor) -> torch.Tensor:
    """``t`` as 2-D rows with unit column stride (no reshape when it already is one)."""
    if t.dim() != 2:
        t = t.reshape(-1, t.shape[-1])
    return t if t.stride()[1] == 1 else t.contiguous()


def _shaped(y, s, x, residual):
    """The outputs in ``x``'s shape: ``y``, or ``(y, s)`` with a residual."""
    if x.dim() != 2:
        y = y.view(x.shape)
        s = s if residual is None else s.view(x.shape)
    return y if residual is None else (y, s)
