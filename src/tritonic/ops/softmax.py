"""Softmax and log-softmax: the functional API, its checks, custom ops and autograd.

    p = softmax(x)                                   # over the last dimension
    p = softmax(scores, scale=d ** -0.5, mask=keep)   # softmax(scale * x) where keep, 0 elsewhere
    logp = log_softmax(logits, dim=-1)

Both work over one dimension of ``x`` (any leading dimensions, any strides). The kernels
compute in float32 and store in ``x``'s dtype. ``mask`` is boolean, True = keep, of any
shape that broadcasts to ``x``'s (a ``(B, 1, 1, N)`` key-padding mask for ``(B, H, S, N)``
scores is read in place, never expanded in memory). Masked positions give probability 0
(log-softmax: ``-inf``) and no gradient. A row with every position masked gives zeros
(log-softmax: ``-inf``) and a zero gradient: this differs from PyTorch on purpose, whose
softmax of an all ``-inf`` row is NaN, so that padding rows cannot poison a model with NaN.

The ops are registered with torch (``tritonic::softmax``, ``tritonic::log_softmax`` and
their backward ops), so they work in eager mode, under ``torch.compile(fullgraph=True)``
and inside CUDA graphs. Gradients flow to ``x`` (not to ``mask``).

``dim=-1`` (the last dimension) runs the kernels on ``x`` in place; any other ``dim`` is
moved last first, which costs a copy of ``x``. What the kernels do not cover falls back
to :func:`softmax_reference` / :func:`log_softmax_reference`: float64 inputs, with a
one-time warning, and empty tensors, silently.
"""

from __future__ import annotations

import functools
import math
import os

import torch

from tritonic.kernels.softmax import _softmax_bwd, _softmax_fwd
from tritonic.ops._register import register
from tritonic.runtime import empty, warn_once
from tritonic.runtime import checks as _checks
from tritonic.runtime.checks import KERNEL_DTYPES, check_kernel_device, check_same_device, check_tensor
from tritonic.runtime.launcher import is_traced, launch

__all__ = ["softmax", "log_softmax", "softmax_reference", "log_softmax_reference"]

# Rows up to FUSED_WIDTH columns are held in registers (one read, one write); wider rows
# are chunked (two reads, one write). 16384 float32 values over 16 warps are 32 registers
# per thread, which leaves room for the exponentials and addresses within the 128
# registers a thread gets at 512 threads per SM; 32768 would need 64 per thread for the
# row alone and spill. Module-level so that tests can lower them to exercise the chunked path.
FUSED_WIDTH = 16384
CHUNK = 8192  # columns per chunk of the multi-pass path (H100 sweep at 131072 wide: 4096/8 warps 1.056 ms, 8192/16 1.014)
# The multi-pass forward loads each chunk one iteration ahead (read at import; TRITONIC_SOFTMAX_PREFETCH=0
# keeps the plain loop. H100, 4096 x 131072 forward: 1.007 ms plain, 0.924 ms prefetching, twice each)
PREFETCH = os.environ.get("TRITONIC_SOFTMAX_PREFETCH", "1").strip() != "0"
# The prefetching forward's chunk, 16 warps (scripts/softmax_sweep.py on an H100, 4096 x 131072 bf16,
# best of 2-3 rounds: 8192 0.924 ms, 16384 0.881 ms = 2.44 TB/s at 119 registers, no spills; 16384 over
# 32 warps 0.913; 32768 spills). On an H200 (commit c900cca) 8192 was a little ahead: 0.730 ms against
# 0.739 with STORE_CS, 0.745 against 0.789 without; 16384 stays, the H100's best. The backward and the
# plain loop keep CHUNK.
FWD_CHUNK = 16384
# The multi-pass forward writes its outputs with the streaming hint (.cs), meant to leave more of L2
# to the rows pass 2 reads again; TRITONIC_SOFTMAX_STORE_CS=0 (read at import) turns it off.
# H200, 4096 x 131072 bf16 forward (commit c900cca, triton 3.6, torch 2.11),
# without -> with: 16384/16 warps/prefetch 0.789 -> 0.739 ms (2.91 TB/s), 8192/16/prefetch 0.745 ->
# 0.730, plain loop 16384/16 0.991 -> 0.931; faster in every config swept. (A split forward that read
# each row once, over the programs of a cooperative grid, was 0.92-2.65 ms there and was removed.)
STORE_CS = os.environ.get("TRITONIC_SOFTMAX_STORE_CS", "1").strip() != "0"
# The multi-pass backward in the forward's scheme (kernels/softmax.py, _bwd_pipelined): per-column sums
# reduced once, y and dy loaded a chunk ahead, dx stored with .cs. On by default; TRITONIC_SOFTMAX_BWD_PIPE=0
# (read at import) turns it off. H100 (58b2a12), 4096 x 131072 bf16 forward + backward, two rounds in
# alternation: 2.411 / 2.411 ms with it, 2.503 / 2.503 without (2.23 against 2.14 TB/s).
BWD_PIPE = os.environ.get("TRITONIC_SOFTMAX_BWD_PIPE", "1").strip() != "0"


# ----------------------------------------------------------------------------- references


def _masked_logits(x, dim, scale, mask):
    """(logits with -inf where masked, rows with no kept position), for the references."""
    z = x if scale is None else x * scale
    if mask is None:
        return z, None
    z = z.masked_fill(~mask, float("-inf"))
    empty_rows = ~mask.expand(z.shape).any(dim, keepdim=True)
    # A row with nothing kept is computed on zeros (finite: no NaN in forward or backward)
    # and its outputs are overwritten afterwards.
    return z.masked_fill(empty_rows, 0.0), empty_rows


def softmax_reference(x, dim=-1, *, scale=None, mask=None):
    """PyTorch softmax with the same interface, including the zeros of fully masked rows."""
    z, empty_rows = _masked_logits(x, dim, scale, mask)
    y = torch.softmax(z, dim)
    return y if empty_rows is None else y.masked_fill(empty_rows, 0.0)


def log_softmax_reference(x, dim=-1, *, scale=None, mask=None):
    """PyTorch log-softmax with the same interface: ``-inf`` at masked positions and in
    fully masked rows."""
    z, empty_rows = _masked_logits(x, dim, scale, mask)
    y = torch.log_softmax(z, dim)
    return y if empty_rows is None else y.masked_fill(~mask | empty_rows, float("-inf"))


# ----------------------------------------------------------------------------- launches


def _cdiv(a: int, b: int) -> int:
    return (a + b - 1) // b


# (BLOCK_M, num_warps) by BLOCK_N, the row width rounded up to a power of two, for rows held
# in registers. One row per program from 2048 columns up: a row of bf16 is then >= 4 KiB,
# enough bytes in flight per program; about 16-32 row elements per thread. A first guess,
# not yet measured on a GPU (docs/softmax.md).
_FUSED = {1024: (2, 4), 2048: (1, 4), 4096: (1, 8), 8192: (1, 16), 16384: (1, 16)}
_CHUNKED = (1, 16)  # (BLOCK_M, warps) of the multi-pass path, CHUNK columns per step


@functools.lru_cache(maxsize=None)
def _config(N: int, fused_width: int, chunk: int):
    """(single_pass, BLOCK_M, BLOCK_N, num_warps) for rows of N columns (forward and backward
    alike: both move whole rows). Cached per width and thresholds: this runs on every call."""
    block_n = 1 << (N - 1).bit_length()
    if block_n > fused_width:
        return (False, _CHUNKED[0], chunk, _CHUNKED[1])
    if block_n < 1024:  # narrow rows: several per program, a tile of up to 2048 elements
        return (True, min(64, 2048 // block_n), block_n, 4)
    block_m, warps = _FUSED.get(block_n, (1, 16))
    return (True, block_m, block_n, warps)


def _mask_geometry(mask: torch.Tensor | None, shape):
    """The mask as the kernels read it: (tensor, (s0, s1, s2, sn), (D1, D2)), where the
    leading dimensions of ``shape`` are collapsed to at most three (D0, D1, D2), with the
    mask's strides over them (0 where it is broadcast) and along the row (``sn``).

    Dimensions the mask strides through uniformly merge (a (B, 1, 1, N) mask over (B, H, S,
    N) scores becomes (B, H*S) with strides (N, 0)); a mask that needs more than three is
    copied to x's full shape first (rare: it costs one byte per element)."""
    if mask is None:
        return None, (0, 0, 0, 0), (1, 1)
    m = mask.expand(shape)
    dims = []  # (size, stride) from the outermost dimension in
    for size, stride in zip(shape[:-1], m.stride()[:-1]):
        if size == 1:
            continue
        if dims and dims[-1][1] == stride * size:
            dims[-1] = (dims[-1][0] * size, stride)
        else:
            dims.append((size, stride))
    if len(dims) > 3:
        m = m.contiguous()
        dims = [(math.prod(shape[:-1]), shape[-1])]
    dims = [(1, 0)] * (3 - len(dims)) + dims
    return m, (dims[0][1], dims[1][1], dims[2][1], m.stride(-1)), (dims[1][0], dims[2][0])


def _as_rows(t: torch.Tensor) -> torch.Tensor:
    """``t`` as 2-D rows with unit column stride (no copy when it already is one)."""
    if t.dim() != 2:
        t = t.reshape(-1, t.shape[-1])
    return t if t.stride(1) == 1 else t.contiguous()


def _launch_fwd(x, mask, scale, log):
    """Softmax (``log``: log-softmax) of ``x`` over its last dimension; the output is
    contiguous, of ``x``'s shape."""
    x2 = _as_rows(x)
    M, N = x2.shape
    y = empty(tuple(x.shape), dtype=x.dtype, device=x.device)
    m, strides, sizes = _mask_geometry(mask, tuple(x.shape))
    single, block_m, block_n, num_warps = _config(int(N), FUSED_WIDTH, FWD_CHUNK if PREFETCH else CHUNK)
    launch(
        _softmax_fwd, (_cdiv(M, block_m),), x2, m, y,
        x2.stride(0), N, *strides, *sizes, M, N, scale,
        LOG=log, HAS_SCALE=scale != 1.0, HAS_MASK=m is not None, SINGLE_PASS=single,
        BLOCK_M=block_m, BLOCK_N=block_n, num_warps=num_warps, PREFETCH=PREFETCH and not single,
        STORE_CS=STORE_CS and not single,
    )
    return y


def _launch_bwd(y, dy, mask, scale, log):
    """Gradient of ``x`` from the forward output ``y`` and its gradient ``dy`` (any strides);
    ``mask`` is needed by log-softmax only."""
    y2, dy2 = _as_rows(y), _as_rows(dy)
    M, N = y2.shape
    dx = empty(tuple(y.shape), dtype=y.dtype, device=y.device)
    m, strides, sizes = _mask_geometry(mask if log else None, tuple(y.shape))
    single, block_m, block_n, num_warps = _config(int(N), FUSED_WIDTH, CHUNK)
    launch(
        _softmax_bwd, (_cdiv(M, block_m),), y2, dy2, m, dx,
        y2.stride(0), dy2.stride(0), N, *strides, *sizes, M, N, scale,
        LOG=log, HAS_SCALE=scale != 1.0, HAS_MASK=m is not None, SINGLE_PASS=single,
        BLOCK_M=block_m, BLOCK_N=block_n, num_warps=num_warps, PIPE=BWD_PIPE and not single,
    )
    return dx


# ----------------------------------------------------------------------------- ops
# The forward takes x with the softmax dimension last (any leading dims and strides) and
# the mask as given (broadcastable); the backward takes the forward's output. Each is
# registered as a torch custom op for torch.compile and tracing; in eager mode an
# autograd.Function calls the same functions directly, skipping the dispatcher's cost.


def _sm_fwd(x: torch.Tensor, mask: torch.Tensor | None, scale: float) -> torch.Tensor:
    return _launch_fwd(x, mask, scale, False)


def _sm_bwd(y: torch.Tensor, dy: torch.Tensor, scale: float) -> torch.Tensor:
    return _launch_bwd(y, dy, None, scale, False)


def _lsm_fwd(x: torch.Tensor, mask: torch.Tensor | None, scale: float) -> torch.Tensor:
    return _launch_fwd(x, mask, scale, True)


def _lsm_bwd(y: torch.Tensor, dy: torch.Tensor, mask: torch.Tensor | None, scale: float) -> torch.Tensor:
    return _launch_bwd(y, dy, mask, scale, True)


def _softmax_setup(ctx, inputs, output, backward_impl):
    _, _, ctx.scale = inputs
    ctx.backward_impl = backward_impl
    ctx.save_for_backward(output)  # softmax's gradient needs only y (0 where masked)


def _softmax_grad(ctx, dy):
    (y,) = ctx.saved_tensors
    if dy is None or not ctx.needs_input_grad[0]:
        return None, None, None
    return ctx.backward_impl(y, dy, ctx.scale), None, None


def _log_softmax_setup(ctx, inputs, output, backward_impl):
    _, mask, ctx.scale = inputs
    ctx.backward_impl = backward_impl
    ctx.save_for_backward(output, mask)


def _log_softmax_grad(ctx, dy):
    y, mask = ctx.saved_tensors
    if dy is None or not ctx.needs_input_grad[0]:
        return None, None, None
    return ctx.backward_impl(y, dy, mask, ctx.scale), None, None


_SoftmaxFn = register("softmax", _sm_fwd, _sm_bwd, _softmax_setup, _softmax_grad)
_LogSoftmaxFn = register("log_softmax", _lsm_fwd, _lsm_bwd, _log_softmax_setup, _log_softmax_grad)


def _path(x, mask) -> str:
    """"op": the registered custom op (torch is tracing); "grad": the eager autograd.Function;
    "plain": a direct launch with no autograd (nothing wants a gradient)."""
    if torch.compiler.is_compiling() or is_traced(x, mask):
        return "op"
    if torch.is_grad_enabled() and x.requires_grad:
        return "grad"
    return "plain"


# ----------------------------------------------------------------------------- public API


def _check(op, x, dim, scale, mask) -> int | None:
    """Validate the arguments; the dimension (normalised to >= 0) when the kernels can run
    them, None to fall back.

    The common case passes a few cheap comparisons (this runs on every call); anything
    else goes through the full checks, which name the bad argument."""
    if (isinstance(x, torch.Tensor) and x.dtype in KERNEL_DTYPES and x.numel() > 0 and type(dim) is int
            and -x.dim() <= dim < x.dim() and (scale is None or type(scale) is float and math.isfinite(scale))
            and mask is None and _checks.can_run_kernels(x.device)):
        return dim % x.dim()
    check_tensor(op, "x", x, min_dim=1)
    if type(dim) is not int:  # bool is an int subclass, and no dimension
        raise TypeError(f"{op}: dim must be an int, got {type(dim).__name__}")
    if not -x.dim() <= dim < x.dim():
        raise ValueError(f"{op}: dim must be in [{-x.dim()}, {x.dim() - 1}] for x of shape {tuple(x.shape)}, "
                         f"got {dim}")
    if scale is not None:
        if isinstance(scale, bool) or not isinstance(scale, (int, float)):
            raise TypeError(f"{op}: scale must be a number or None, got {type(scale).__name__}")
        if not math.isfinite(scale):
            raise ValueError(f"{op}: scale must be finite, got {scale!r}")
    if mask is not None:
        if not isinstance(mask, torch.Tensor):
            raise TypeError(f"{op}: mask must be a boolean torch.Tensor (True = keep) or None, "
                            f"got {type(mask).__name__}")
        if mask.dtype != torch.bool:
            raise TypeError(f"{op}: mask must have dtype torch.bool (True = keep), got {mask.dtype}")
        if mask.dim() > x.dim() or any(m != 1 and m != s for m, s in zip(reversed(mask.shape), reversed(x.shape))):
            raise ValueError(f"{op}: mask must broadcast to x's shape {tuple(x.shape)}, got shape "
                             f"{tuple(mask.shape)}")
    check_same_device(op, "x", x, mask=mask)
    check_kernel_device(op, "x", x)
    if x.numel() == 0:
        return None
    if x.dtype not in KERNEL_DTYPES:
        warn_once((op, "dtype"), f"{op}: the kernels take float16, bfloat16 and float32; got {x.dtype}, "
                  f"so PyTorch's implementation runs instead")
        return None
    return dim % x.dim()


def _run(op, fn, x, dim, scale, mask, log):
    """Move ``dim`` last (a copy unless it already is), run the op, move it back."""
    last = x.dim() - 1
    if dim != last:
        if mask is not None:
            mask = mask.expand(x.shape).movedim(dim, -1)
        x = x.movedim(dim, -1)
    scale = 1.0 if scale is None else float(scale)
    path = _path(x, mask)
    if path == "plain":
        y = _launch_fwd(x, mask, scale, log)
    elif path == "grad":
        y = fn.apply(x, mask, scale)
    else:
        y = getattr(torch.ops.tritonic, op)(x, mask, scale)
    return y if dim == last else y.movedim(-1, dim)


def softmax(x, dim=-1, *, scale=None, mask=None):
    """``softmax(scale * x)`` over dimension ``dim`` (default: the last), with probability 0
    where the boolean ``mask`` (broadcastable to ``x``, True = keep) is False.

    A row with every position masked gives zeros and a zero gradient (PyTorch gives NaN)."""
    d = _check("softmax", x, dim, scale, mask)
    if d is None:
        return softmax_reference(x, dim, scale=scale, mask=mask)
    return _run("softmax", _SoftmaxFn, x, d, scale, mask, False)


def log_softmax(x, dim=-1, *, scale=None, mask=None):
    """``log_softmax(scale * x)`` over dimension ``dim`` (default: the last), with ``-inf``
    where the boolean ``mask`` (broadcastable to ``x``, True = keep) is False.

    A row with every position masked gives ``-inf`` everywhere (the log of softmax's zeros)
    and a zero gradient (PyTorch gives NaN)."""
    d = _check("log_softmax", x, dim, scale, mask)
    if d is None:
        return log_softmax_reference(x, dim, scale=scale, mask=mask)
    return _run("log_softmax", _LogSoftmaxFn, x, d, scale, mask, True)
