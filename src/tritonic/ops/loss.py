"""Cross-entropy over the last dimension: the functional API, its checks, custom ops and autograd.

    loss = cross_entropy(logits, target)                                  # like F.cross_entropy
    loss = cross_entropy(logits, target, label_smoothing=0.1, z_loss=1e-4, softcap=30.0)
    loss = fused_linear_cross_entropy(hidden, lm_head.weight, target)      # no (N, V) logits (ops/flce.py)

``logits`` is ``(..., V)`` with the classes last and ``target`` its leading shape (for 2-D
logits this is exactly ``F.cross_entropy``'s layout). The forward reads the logits once
and keeps one log-sum-exp per row; the backward reads them once more and writes their
gradient: three passes over (N, V) in all, where PyTorch makes about six. Registered as
``tritonic::cross_entropy`` (and its backward), so it works under ``torch.compile`` and in
CUDA graphs.

Targets outside ``[0, V)`` that are not ``ignore_index`` raise a ``ValueError``: checking
costs one device-to-host sync, which ``check_targets=False`` (and CUDA-graph capture or
``torch.compile``, where a sync is impossible) skips; unchecked, such a row's loss is NaN and
no memory outside the logits is read.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from tritonic.kernels.loss import _ce_bwd, _ce_fwd
from tritonic.ops._register import register
from tritonic.runtime import empty, interpreter_active, warn_once
from tritonic.runtime.alloc import empty_like
from tritonic.runtime.checks import KERNEL_DTYPES, check_kernel_device, check_same_device, check_tensor
from tritonic.runtime.launcher import is_traced, launch

__all__ = ["cross_entropy", "cross_entropy_reference", "fused_linear_cross_entropy",
           "fused_linear_cross_entropy_reference"]

REDUCTIONS = ("mean", "sum", "none")


# ----------------------------------------------------------------------------- references


def cross_entropy_reference(logits, target, ignore_index=-100, reduction="mean", label_smoothing=0.0, z_loss=0.0,
                            softcap=None):
    """PyTorch, computed in at least float32, with the same options and result dtype."""
    acc = torch.promote_types(logits.dtype, torch.float32)
    z = logits.to(acc)
    if softcap is not None:
        z = softcap * torch.tanh(z / softcap)
    V = z.shape[-1]
    z2, t = z.reshape(-1, V), target.reshape(-1)
    loss = F.cross_entropy(z2, t.long(), ignore_index=ignore_index, reduction="none",
                           label_smoothing=label_smoothing)
    valid = t != ignore_index
    if z_loss:
        loss = loss + z_loss * torch.logsumexp(z2, -1).pow(2) * valid
    return _reduce(loss, valid, reduction, target.shape).to(logits.dtype)


def _reduce(loss_rows, valid, reduction, shape):
    if reduction == "none":
        return loss_rows.reshape(shape)
    total = loss_rows.sum()
    return total if reduction == "sum" else total / valid.sum()  # no valid row: 0 / 0 = NaN, as PyTorch


# ----------------------------------------------------------------------------- launches


def _block_v(V: int) -> int:
    return min(8192 if not interpreter_active() else 64, max(16, 1 << (V - 1).bit_length()))


def _flags(smoothing, z_coef, softcap):
    return dict(HAS_SMOOTHING=smoothing != 0.0, HAS_Z=z_coef != 0.0, HAS_SOFTCAP=softcap != 0.0)


def _launch_fwd(logits, target, ignore_index, smoothing, z_coef, softcap):
    N, V = logits.shape
    loss = empty((N,), dtype=torch.float32, device=logits.device)
    lse = empty((N, 2), dtype=torch.float32, device=logits.device)  # (max, log-sum-exp past it) per row
    if N:
        launch(_ce_fwd, (N,), logits, target, loss, lse, logits.stride(0), V, ignore_index, smoothing, z_coef,
               softcap, **_flags(smoothing, z_coef, softcap), BLOCK_V=_block_v(V), num_warps=8 if V > 4096 else 4)
    return loss, lse


def _launch_bwd(dloss, logits, target, lse, ignore_index, smoothing, z_coef, softcap, out=None, col0=0, V=None):
    """The logits' gradient; ``out`` (an (N, width) buffer, possibly ``logits`` itself)
    receives it. ``logits`` may hold a window of the classes, ``col0 .. col0 + width - 1`` of
    ``V`` (the row's log-sum-exp in ``lse`` covers all ``V``)."""
    N, width = logits.shape
    V = width if V is None else V
    out = empty_like(logits) if out is None else out
    if N:
        launch(_ce_bwd, (N,), logits, target, lse, dloss, out, logits.stride(0), out.stride(0),
               dloss.stride(0) if dloss.dim() else 0, V, ignore_index, smoothing, z_coef, softcap, col0, width,
               **_flags(smoothing, z_coef, softcap), BLOCK_V=_block_v(width), num_warps=8 if width > 4096 else 4)
    return out


# ----------------------------------------------------------------------------- ops
# softcap 0.0 stands for "none" (custom op schemas take plain floats).


def _ce_op(logits: torch.Tensor, target: torch.Tensor, ignore_index: int, smoothing: float, z_coef: float,
           softcap: float) -> tuple[torch.Tensor, torch.Tensor]:
    return _launch_fwd(logits, target, ignore_index, smoothing, z_coef, softcap)


def _ce_op_bwd(dloss: torch.Tensor, logits: torch.Tensor, target: torch.Tensor, lse: torch.Tensor,
               ignore_index: int, smoothing: float, z_coef: float, softcap: float) -> torch.Tensor:
    return _launch_bwd(dloss, logits, target, lse, ignore_index, smoothing, z_coef, softcap)


def _ce_setup(ctx, inputs, output, backward_impl):
    logits, target, ignore_index, smoothing, z_coef, softcap = inputs
    ctx.save_for_backward(logits, target, output[1])
    ctx.opts, ctx.backward_impl = (ignore_index, smoothing, z_coef, softcap), backward_impl


def _ce_grad(ctx, dloss, _dlse):
    logits, target, lse = ctx.saved_tensors
    if dloss is None or not ctx.needs_input_grad[0]:
        return None, None, None, None, None, None
    if dloss.dim() and dloss.stride(0) not in (0, 1):
        dloss = dloss.contiguous()
    return ctx.backward_impl(dloss, logits, target, lse, *ctx.opts), None, None, None, None, None


_CrossEntropyFn = register("cross_entropy", _ce_op, _ce_op_bwd, _ce_setup, _ce_grad, n_nondiff=1)


def _check(op, logits, target, ignore_index, reduction, label_smoothing, z_loss, softcap) -> None:
    check_tensor(op, "logits", logits, min_dim=1)
    if not isinstance(target, torch.Tensor) or target.dtype not in (torch.int64, torch.int32):
        got = target.dtype if isinstance(target, torch.Tensor) else type(target).__name__
        raise TypeError(f"{op}: target must be an int64 (or int32) tensor of class indices, got {got}")
    if tuple(target.shape) != tuple(logits.shape[:-1]):
        raise ValueError(f"{op}: target must have the shape of logits without its last (class) dimension, "
                         f"{tuple(logits.shape[:-1])}, got {tuple(target.shape)}")
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, int):
        raise TypeError(f"{op}: ignore_index must be an int, got {type(ignore_index).__name__}")
    if reduction not in REDUCTIONS:
        raise ValueError(f"{op}: reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if not isinstance(label_smoothing, (int, float)) or not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"{op}: label_smoothing must be a number in [0, 1], got {label_smoothing!r}")
    if not isinstance(z_loss, (int, float)) or not 0.0 <= z_loss < math.inf:
        raise ValueError(f"{op}: z_loss must be a finite number >= 0, got {z_loss!r}")
    if softcap is not None and (not isinstance(softcap, (int, float)) or not 0.0 < softcap < math.inf):
        raise ValueError(f"{op}: softcap must be None or a positive finite number, got {softcap!r}")
    check_same_device(op, "logits", logits, target=target)


def _check_targets(op, target, V, ignore_index, check: bool) -> None:
    """Targets in [0, V) or ignore_index: one small reduction and a sync, where a sync is allowed."""
    if not check or target.numel() == 0 or is_traced(target) or torch.compiler.is_compiling():
        return
    if target.is_cuda and torch.cuda.is_current_stream_capturing():
        return
    bad = (target != ignore_index) & ((target < 0) | (target >= V))
    if bool(bad.any()):
        first = int(target[bad][0])
        raise ValueError(f"{op}: target holds class {first}, outside [0, {V}) and not ignore_index "
                         f"({ignore_index}); {int(bad.sum())} such target(s)")


def cross_entropy(logits, target, ignore_index=-100, reduction="mean", label_smoothing=0.0, z_loss=0.0,
                  softcap=None, *, check_targets=True):
    """Cross-entropy of ``logits`` ``(..., V)`` against class indices ``target`` ``(...)``.

    As ``F.cross_entropy(logits, target, ignore_index=..., reduction=..., label_smoothing=...)``
    for 2-D logits, plus ``z_loss`` (adds ``z_loss * logsumexp(logits)^2`` per row, PaLM's
    auxiliary loss) and ``softcap`` (logits become ``softcap * tanh(logits / softcap)`` first,
    as in Gemma 2). Rows targeting ``ignore_index`` count for nothing; ``"mean"`` divides by
    the number of other rows (NaN when there is none, as PyTorch). The result has the
    logits' dtype."""
    op = "cross_entropy"
    _check(op, logits, target, ignore_index, reduction, label_smoothing, z_loss, softcap)
    V = logits.shape[-1]
    _check_targets(op, target, V, ignore_index, check_targets)
    kw = dict(ignore_index=ignore_index, reduction=reduction, label_smoothing=label_smoothing, z_loss=z_loss,
              softcap=softcap)
    if logits.dtype not in KERNEL_DTYPES:
        warn_once((op, logits.dtype), f"{op}: the kernels take float16, bfloat16 and float32; got {logits.dtype}, "
                  f"so PyTorch's implementation runs instead")
        return cross_entropy_reference(logits, target, **kw)
    if logits.numel() == 0:
        return cross_entropy_reference(logits, target, **kw)
    check_kernel_device(op, "logits", logits)
    rows = logits.reshape(-1, V)
    if rows.stride(-1) != 1:
        rows = rows.contiguous()
    t = target.reshape(-1)
    args = (rows, t, int(ignore_index), float(label_smoothing), float(z_loss), float(softcap or 0.0))
    if torch.compiler.is_compiling() or is_traced(rows, t):
        loss_rows = torch.ops.tritonic.cross_entropy(*args)[0]
    elif torch.is_grad_enabled() and logits.requires_grad:
        loss_rows = _CrossEntropyFn.apply(*args)[0]
    else:
        loss_rows = _launch_fwd(*args)[0]
    return _reduce(loss_rows, t != ignore_index, reduction, target.shape).to(logits.dtype)


# the fused linear cross-entropy lives in ops/flce.py (it builds on the helpers above); its
# names stay importable from here
from tritonic.ops.flce import (  # noqa: E402,F401
    _chunk_rows, _padded_vocab, _plan_in_dw, fused_linear_cross_entropy, fused_linear_cross_entropy_reference)
