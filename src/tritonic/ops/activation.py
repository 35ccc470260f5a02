"""Elementwise activations: the functional API, its checks, custom ops and autograd.

    y = gelu(x, approximate="none")            # or "tanh": 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
    y = silu(x)                                # x * sigmoid(x)
    h = swiglu(gate, up)                       # silu(gate) * up
    h = geglu(gate, up, approximate="none")    # gelu(gate) * up
    h = swiglu(x)                              # x = cat([gate, up], -1): the halves of one tensor

Any shape and any strides. Inputs that are contiguous, or rows with unit stride along the
last dimension whose leading dimensions merge into one row stride (a slice of a wider
tensor, the halves of a concatenated ``[gate, up]``, a broadcast gradient), are read in
place; anything else (a transpose, a step along the last dimension) is copied to a
contiguous tensor first, with ``.contiguous()``, which costs one extra read and write.
Outputs are contiguous, with the input's shape and dtype; the kernels compute in float32.

``gate`` and ``up`` must have the same shape (no broadcasting), dtype and device. The
gradient of a gated product reaches both inputs from one kernel pass; with the
concatenated layout it is written straight into one ``(..., 2H)`` gradient tensor.

The ops are registered with torch (``tritonic::activation``, ``tritonic::gated_activation``
and their backward ops), so they work in eager mode, under ``torch.compile(fullgraph=True)``
and inside CUDA graphs. float64 tensors fall back to the ``*_reference`` functions
(PyTorch) with a one-time warning, empty tensors silently.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tritonic.kernels.activation import GELU, GELU_TANH, SILU, _act_bwd, _act_fwd
from tritonic.ops._register import register
from tritonic.runtime import num_sms, warn_once
from tritonic.runtime import checks as _checks
from tritonic.runtime.alloc import empty, empty_like
from tritonic.runtime.checks import (
    KERNEL_DTYPES,
    check_kernel_device,
    check_same_device,
    check_same_dtype,
    check_shape,
    check_tensor,
)
from tritonic.runtime.launcher import is_traced, launch
from tritonic.runtime import pdl as _pdl

__all__ = ["gelu", "silu", "swiglu", "geglu", "gelu_reference", "silu_reference", "swiglu_reference",
           "geglu_reference"]

# Activation names of the custom ops -> the kernels' ACT codes (shared with the GEMM epilogue).
KINDS = {"gelu": GELU, "gelu_tanh": GELU_TANH, "silu": SILU}
_GELU_KIND = {"none": "gelu", "tanh": "gelu_tanh"}  # F.gelu's `approximate` -> kind

# Elements per program (at most): 16 a thread of 8 warps, two (bfloat16) or four (float32)
# 16-byte accesses per operand. Every variant then needs at most 80 registers (ptxas, sm_90),
# so three or more programs share an SM and one's loads overlap another's stores; 32 a thread
# needed up to 239 (float32 gated backward). Chosen from register counts, not yet timed.
BLOCK = 4096
MIN_BLOCK = 1024  # smallest block of the flat layout, however few the elements
WAVES = 4  # the flat layout shrinks its block until there are this many programs per SM (or MIN_BLOCK)


# ----------------------------------------------------------------------------- references


def gelu_reference(x, approximate="none"):
    """PyTorch: ``F.gelu(x, approximate=approximate)``."""
    return F.gelu(x, approximate=approximate)


def silu_reference(x):
    """PyTorch: ``F.silu(x)``."""
    return F.silu(x)


def _halves(gate, up):
    return gate.chunk(2, dim=-1) if up is None else (gate, up)


def swiglu_reference(gate, up=None):
    """PyTorch: ``F.silu(gate) * up`` (``up=None``: the halves of ``gate``'s last dimension)."""
    gate, up = _halves(gate, up)
    return F.silu(gate) * up


def geglu_reference(gate, up=None, approximate="none"):
    """PyTorch: ``F.gelu(gate, approximate=approximate) * up`` (``up=None`` as in :func:`swiglu_reference`)."""
    gate, up = _halves(gate, up)
    return F.gelu(gate, approximate=approximate) * up


# ----------------------------------------------------------------------------- launches


def _cdiv(a: int, b: int) -> int:
    return (a + b - 1) // b


def _config(n_cols: int, rows: bool, sms: int):
    """(BLOCK, num_warps) for rows of ``n_cols`` elements (ROWS), or ``n_cols`` elements in all."""
    block = BLOCK
    if rows:
        # A block never straddles two rows: take the largest of (the row's width rounded up
        # to a power of two, at most block), a half and a quarter of it, that leaves at most
        # 1/8 of its lanes idle (rows of 14336 elements split into 2048s, 3072 into 1024s);
        # no block under 1024 elements unless the row is narrower (then one block a row).
        top = 1
        while top < n_cols and top < block:  # (a loop rather than bit_length: n_cols may be a SymInt)
            top *= 2
        fits = [b for b in (top, top // 2, top // 4) if b >= min(top, 1024)]
        block = next((b for b in fits if (-n_cols) % b * 8 <= n_cols), fits[-1])
    else:
        while block > MIN_BLOCK and n_cols < block * WAVES * sms:  # enough programs to fill the GPU
            block //= 2
    # 8 warps from 2048 elements up (8 or 16 a thread), 4 for 1024, fewer for narrow rows.
    return block, min(8, max(1, block // 256))


def _flat_or_rows(tensors):
    """(ROWS, n_cols, n_rows, tensors for the kernel): the flat layout when every tensor is
    contiguous, else each viewed as (rows, last dimension) (see _kernel_layout)."""
    if all(t.is_contiguous() for t in tensors):
        return False, tensors[0].numel(), 1, tensors
    n = tensors[0].shape[-1]
    views = [t.view(-1, n) for t in tensors]
    return True, n, views[0].shape[0], views


def _launch(kernel, kind, tensors, gated):
    """Launch ``kernel`` on same-shaped ``tensors`` (inputs then outputs, as the kernel
    takes them; a missing operand is None)."""
    present = [t for t in tensors if t is not None]
    rows, n, n_rows, views = _flat_or_rows(present)
    it = iter(views)
    args = [None if t is None else next(it) for t in tensors]
    strides = [t.stride(0) if rows and t is not None else 0 for t in args]
    ref = present[0]
    block, warps = _config(n, rows, num_sms(ref.device.index))
    n_blocks = _cdiv(n, block)
    # n_blocks is read only with ROWS: 0 otherwise, so its value does not multiply compilations.
    launch(kernel, (n_rows * n_blocks,), *args, n, n_blocks if rows else 0, *strides,
           ACT=KINDS[kind], GATED=gated, ROWS=rows, BLOCK=block, num_warps=warps,
           **(_pdl.pdl_meta(ref.device, ref.numel() // max(ref.shape[-1], 1) if ref.dim() else 1)
             if _pdl.ACTIVE and not is_traced(*present) else _pdl.OFF))


def _split(x: torch.Tensor):
    """The gate and up halves of a concatenated (..., 2H) tensor, as views."""
    h = x.shape[-1] // 2
    return x[..., :h], x[..., h:]


# ----------------------------------------------------------------------------- ops
# Forward and backward take tensors already in a layout the kernels read in place
# (_kernel_layout); they are registered as torch custom ops for torch.compile and tracing,
# and in eager mode an autograd.Function calls the same functions without the dispatcher.


def _act_fwd_op(x: torch.Tensor, kind: str) -> torch.Tensor:
    y = empty_like(x)
    _launch(_act_fwd, kind, [x, None, y], False)
    return y


def _act_bwd_op(dy: torch.Tensor, x: torch.Tensor, kind: str) -> torch.Tensor:
    dx = empty_like(x)
    _launch(_act_bwd, kind, [x, None, dy, dx, None], False)
    return dx


def _gated_fwd_op(gate: torch.Tensor, up: torch.Tensor | None, kind: str) -> torch.Tensor:
    """``act(gate) * up``; with ``up`` None, gate is the concatenated (..., 2H) tensor."""
    if up is None:
        gate, up = _split(gate)
    y = empty(tuple(gate.shape), dtype=gate.dtype, device=gate.device)
    _launch(_act_fwd, kind, [gate, up, y], True)
    return y


def _gated_bwd_op(dy: torch.Tensor, gate: torch.Tensor, up: torch.Tensor | None,
                  kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(d gate, d up); with the concatenated layout (d x, an empty tensor): both halves of
    d x are written by the one kernel, so no concatenation follows."""
    if up is None:
        dx = empty_like(gate)
        _launch(_act_bwd, kind, [*_split(gate), dy, *_split(dx)], True)
        return dx, gate.new_empty(0)
    dgate, dup = empty_like(gate), empty_like(up)
    _launch(_act_bwd, kind, [gate, up, dy, dgate, dup], True)
    return dgate, dup


def _rows_in_place(t: torch.Tensor) -> bool:
    """Unit stride along the last dimension, and leading dimensions that merge into one row
    stride (exactly when ``t.view(-1, t.shape[-1])`` works), judged from the strides alone:
    no exception to catch, which keeps torch.compile's tracing simple."""
    if t.shape[-1] != 1 and t.stride(-1) != 1:
        return False
    outer = None  # the stride the next outer dimension must have to merge with those inside it
    for size, stride in zip(reversed(t.shape[:-1]), reversed(t.stride()[:-1])):
        if size == 1:
            continue
        if outer is not None and stride != outer:
            return False
        outer = stride * size
    return True


def _kernel_layout(t: torch.Tensor) -> torch.Tensor:
    """``t`` itself when the kernels read it in place: contiguous, or rows (_rows_in_place).
    Otherwise a contiguous copy (one extra read and write; a general strided kernel would
    save it, but such inputs, a transpose or a step along the last dimension, are rare in
    transformers)."""
    if t.is_contiguous() or (t.dim() > 0 and t.numel() > 0 and _rows_in_place(t)):
        return t
    return t.contiguous()


def _act_setup(ctx, inputs, output, backward_impl):
    x, kind = inputs
    ctx.kind, ctx.backward_impl = kind, backward_impl
    ctx.save_for_backward(x)


def _act_grad(ctx, dy):
    if dy is None:
        return None, None
    (x,) = ctx.saved_tensors
    return ctx.backward_impl(_kernel_layout(dy), x, ctx.kind), None


def _gated_setup(ctx, inputs, output, backward_impl):
    gate, up, kind = inputs
    ctx.kind, ctx.backward_impl = kind, backward_impl
    ctx.save_for_backward(gate, up)


def _gated_grad(ctx, dy):
    if dy is None:
        return None, None, None
    gate, up = ctx.saved_tensors
    need_gate, need_up = ctx.needs_input_grad[:2]
    dgate, dup = ctx.backward_impl(_kernel_layout(dy), gate, up, ctx.kind)
    return dgate if need_gate else None, dup if up is not None and need_up else None, None


_ActFn = register("activation", _act_fwd_op, _act_bwd_op, _act_setup, _act_grad)
_GatedFn = register("gated_activation", _gated_fwd_op, _gated_bwd_op, _gated_setup, _gated_grad)


def _path(*tensors) -> str:
    """"op": the registered custom op (torch is tracing); "grad": the eager autograd.Function;
    "plain": a direct launch with no autograd (nothing wants a gradient)."""
    if torch.compiler.is_compiling() or is_traced(*tensors):
        return "op"
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors):
        return "grad"
    return "plain"


# ----------------------------------------------------------------------------- public API


def _fallback(op: str, t: torch.Tensor) -> bool:
    """After the full checks: True when PyTorch's implementation must run instead."""
    check_kernel_device(op, "gate" if op in ("swiglu", "geglu") else "x", t)
    if t.numel() == 0:
        return True
    if t.dtype not in KERNEL_DTYPES:
        warn_once((op, "dtype"), f"{op}: the kernels take float16, bfloat16 and float32; got {t.dtype}, "
                  f"so PyTorch's implementation runs instead")
        return True
    return False


def _check(op: str, x) -> bool:
    """Validate ``x``; True when the kernels run it, False to fall back. The common case
    passes a few cheap comparisons (this runs on every call)."""
    if (isinstance(x, torch.Tensor) and x.dtype in KERNEL_DTYPES and _checks.can_run_kernels(x.device)
            and x.numel() > 0):
        return True
    check_tensor(op, "x", x)
    return not _fallback(op, x)


def _check_gated(op: str, gate, up) -> bool:
    """Validate ``gate`` and ``up`` (or a concatenated ``gate`` when ``up`` is None)."""
    if (isinstance(gate, torch.Tensor) and gate.dtype in KERNEL_DTYPES and _checks.can_run_kernels(gate.device)
            and gate.numel() > 0
            and (gate.dim() > 0 and gate.shape[-1] % 2 == 0 if up is None else
                 isinstance(up, torch.Tensor) and up.shape == gate.shape and up.dtype == gate.dtype
                 and up.device == gate.device)):
        return True
    check_tensor(op, "gate", gate)
    if up is None:
        if gate.dim() == 0 or gate.shape[-1] % 2:
            raise ValueError(f"{op}: with up=None, gate must hold [gate, up] concatenated along its last "
                             f"dimension, so that dimension must be even; got shape {tuple(gate.shape)}")
    else:
        check_tensor(op, "up", up)
        check_shape(op, "up", up, tuple(gate.shape), "(the shape of gate)")
        check_same_dtype(op, "gate", gate, "up", up)
        check_same_device(op, "gate", gate, up=up)
    return not _fallback(op, gate)


def _approximate(op: str, approximate) -> str:
    kind = _GELU_KIND.get(approximate) if isinstance(approximate, str) else None
    if kind is None:
        raise ValueError(f"{op}: approximate must be 'none' or 'tanh', got {approximate!r}")
    return kind


def _unary(x: torch.Tensor, kind: str) -> torch.Tensor:
    x = _kernel_layout(x)
    path = _path(x)
    if path == "plain":
        return _act_fwd_op(x, kind)
    return (_ActFn.apply if path == "grad" else torch.ops.tritonic.activation)(x, kind)


def _gated(gate: torch.Tensor, up: torch.Tensor | None, kind: str) -> torch.Tensor:
    gate = _kernel_layout(gate)
    up = None if up is None else _kernel_layout(up)
    path = _path(gate, up)
    if path == "plain":
        return _gated_fwd_op(gate, up, kind)
    return (_GatedFn.apply if path == "grad" else torch.ops.tritonic.gated_activation)(gate, up, kind)


def gelu(x, approximate="none"):
    """GELU, ``x * Phi(x)``: with ``approximate="none"`` through erf, with ``"tanh"``
    through ``0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))``, as ``F.gelu``."""
    kind = _approximate("gelu", approximate)
    if not _check("gelu", x):
        return gelu_reference(x, approximate)
    return _unary(x, kind)


def silu(x):
    """SiLU (swish), ``x * sigmoid(x)``, as ``F.silu``."""
    if not _check("silu", x):
        return silu_reference(x)
    return _unary(x, "silu")


def swiglu(gate, up=None):
    """``silu(gate) * up``, the gated MLP of Llama-family models. ``gate`` and ``up`` have one
    shape; with ``up=None``, ``gate`` is one tensor holding ``[gate, up]`` concatenated along
    its last dimension (a fused gate/up projection's output) and the result has half its width."""
    if not _check_gated("swiglu", gate, up):
        return swiglu_reference(gate, up)
    return _gated(gate, up, "silu")


def geglu(gate, up=None, approximate="none"):
    """``gelu(gate, approximate) * up``, the gated MLP of T5 v1.1 and Gemma (both with
    ``approximate="tanh"``); ``up=None`` as in :func:`swiglu`."""
    kind = _approximate("geglu", approximate)
    if not _check_gated("geglu", gate, up):
        return geglu_reference(gate, up, approximate)
    return _gated(gate, up, kind)
