"""Embedding lookup: ``weight[ids]``, the functional API and its checks.

    y = embedding(ids, weight)        # ids: integer tensor of any shape; y: (*ids.shape, D)

One kernel gathers the rows (:mod:`tritonic.kernels.embedding`). PyTorch's own lookup of a
few ids (up to 16: one sequence of a short prompt) runs a kernel over a handful of thread
blocks that took ~10 µs on an H100 for a 768-wide table; this one spreads the rows over
(tokens x column blocks) programs. Ids outside ``[0, V)`` give rows of NaN (see the kernel).

Gradients flow to ``weight`` through PyTorch's ``embedding_dense_backward`` (the scatter-add
of the rows' gradients, ``padding_idx`` rows left at zero). What the kernel does not take
falls back to ``torch.nn.functional.embedding``: a table that is not 2-D with unit stride
along its rows, dtypes other than float16/bfloat16/float32, and calls while torch traces.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tritonic.kernels.embedding import _embedding_fwd
from tritonic.runtime import empty, interpreter_active
from tritonic.runtime.checks import KERNEL_DTYPES, check_kernel_device, check_same_device
from tritonic.runtime.launcher import is_traced, launch
from tritonic.runtime import pdl as _pdl

__all__ = ["embedding", "embedding_reference"]


def embedding_reference(ids, weight, padding_idx=None):
    """PyTorch: ``F.embedding(ids, weight, padding_idx)``."""
    return F.embedding(ids, weight, padding_idx)


def _gather(ids: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    flat = ids.reshape(-1)
    if not flat.is_contiguous():
        flat = flat.contiguous()
    T, (V, D) = flat.numel(), weight.shape
    out = empty((T, D), dtype=weight.dtype, device=weight.device)
    if interpreter_active():
        block_t, block_d = 16, min(triton_next_pow2(D), 256)
    else:  # few tokens: one row per program, so a short prompt still spreads over the GPU
        block_d = min(triton_next_pow2(D), 512)
        block_t = 1 if T * -(-D // block_d) < 2048 else 4
    grid = (-(-T // block_t), -(-D // block_d))
    launch(_embedding_fwd, grid, flat, weight, out, T, V, D, weight.stride(0), out.stride(0),
           BLOCK_T=block_t, BLOCK_D=block_d, num_warps=4 if block_d * block_t >= 512 else 2,
           **(_pdl.pdl_meta(out.device, T) if _pdl.ACTIVE and not is_traced(flat, weight) else _pdl.OFF))
    return out.view(*ids.shape, D)


def triton_next_pow2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


class _Embedding(torch.autograd.Function):
    @staticmethod
    def forward(ctx, ids, weight, padding_idx):
        ctx.save_for_backward(ids)
        V = weight.shape[0]
        ctx.num_weights = V
        ctx.padding_idx = -1 if padding_idx is None else (padding_idx + V if padding_idx < 0 else padding_idx)
        return _gather(ids, weight)

    @staticmethod
    def backward(ctx, dy):
        (ids,) = ctx.saved_tensors
        dw = torch.ops.aten.embedding_dense_backward(dy.contiguous(), ids, ctx.num_weights, ctx.padding_idx, False)
        return None, dw, None


def embedding(ids, weight, padding_idx=None):
    """``weight[ids]``: the rows of the ``(V, D)`` table ``weight`` picked by integer ``ids``
    (any shape), as ``torch.nn.functional.embedding`` without ``max_norm``. ``padding_idx``
    only affects the gradient (that row gets none), as in PyTorch."""
    op = "embedding"
    if not isinstance(ids, torch.Tensor) or ids.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"{op}: ids must be an int64 or int32 tensor, got "
                        f"{ids.dtype if isinstance(ids, torch.Tensor) else type(ids).__name__}")
    if not isinstance(weight, torch.Tensor) or weight.dim() != 2:
        raise ValueError(f"{op}: weight must be a 2-D (num_embeddings, dim) tensor, got "
                         f"{tuple(weight.shape) if isinstance(weight, torch.Tensor) else type(weight).__name__}")
    check_same_device(op, "weight", weight, ids=ids)
    if weight.dtype not in KERNEL_DTYPES or weight.stride(1) != 1 or ids.numel() == 0 or weight.numel() == 0 \
            or torch.compiler.is_compiling() or is_traced(ids, weight):
        return embedding_reference(ids, weight, padding_idx)
    check_kernel_device(op, "weight", weight)
    if torch.is_grad_enabled() and weight.requires_grad:
        return _Embedding.apply(ids, weight, padding_idx)
    return _gather(ids, weight)
