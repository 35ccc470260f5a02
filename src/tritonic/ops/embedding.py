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

``embeddings_layer_norm`` is BERT's embedding block at inference (word + token type + position
rows, LayerNorm) as one kernel instead of eight (a gather of the token types, their expanded
copy, three lookups, two adds, the norm); with autograd it runs the PyTorch reference.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tritonic.kernels.embedding import _embedding_fwd, _embeddings_norm_fwd
from tritonic.runtime import empty, interpreter_active
from tritonic.runtime.checks import KERNEL_DTYPES, check_kernel_device, check_same_device
from tritonic.runtime.launcher import is_traced, launch
from tritonic.runtime import pdl as _pdl

__all__ = ["embedding", "embedding_reference", "embeddings_layer_norm", "embeddings_layer_norm_reference"]


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


def embeddings_layer_norm_reference(input_ids, word, position_ids, position, token_type_ids, token_type, weight,
                                    bias, eps=1e-12, token_types_by_position=False):
    """PyTorch, as BERT's embedding module computes it: ``(word[ids] + token_type[types]) +
    position[positions]`` (each sum rounded to the tables' dtype), then ``layer_norm``."""
    if token_types_by_position:
        token_type_ids = token_type_ids[position_ids]
    e = F.embedding(input_ids, word) + F.embedding(token_type_ids, token_type)
    e = e + F.embedding(position_ids, position)
    return F.layer_norm(e, (word.shape[1],), weight, bias, eps)


def _rows_of(t: torch.Tensor, B: int, S: int, name: str):
    """(batch stride, token stride) of a (B or 1, S) index tensor; 0 across a batch of one."""
    if t.dim() != 2 or t.shape[1] != S or t.shape[0] not in (1, B):
        raise ValueError(f"embeddings_layer_norm: {name} must be ({B} or 1, {S}), got {tuple(t.shape)}")
    return (0 if t.shape[0] == 1 else t.stride(0)), t.stride(1)


def embeddings_layer_norm(input_ids, word, position_ids, position, token_type_ids, token_type, weight, bias,
                          eps=1e-12, token_types_by_position=False):
    """``layer_norm(word[input_ids] + token_type[token_type_ids] + position[position_ids])``: BERT's
    embedding block (and RoBERTa's and ELECTRA's shape of it) at inference, in one kernel.

    ``input_ids``: (B, S) integers; ``position_ids`` and ``token_type_ids``: (B or 1, S), or with
    ``token_types_by_position`` ``token_type_ids`` is a 1-D buffer read at each token's position
    (what BERT does when it is given no token types). Tables ``(rows, D)``, ``weight`` and
    ``bias`` ``(D,)``, all of one dtype. The two sums round to that dtype in the module's order.
    An index out of range gives that token a row of NaN. Returns ``(B, S, D)``. Where the kernel
    does not apply (autograd, tracing, mixed dtypes, strided tables), the PyTorch reference."""
    op = "embeddings_layer_norm"
    args = (input_ids, word, position_ids, position, token_type_ids, token_type, weight, bias, eps,
            token_types_by_position)
    for name, t in (("input_ids", input_ids), ("position_ids", position_ids), ("token_type_ids", token_type_ids)):
        if not isinstance(t, torch.Tensor) or t.dtype not in (torch.int64, torch.int32):
            raise TypeError(f"{op}: {name} must be an int64 or int32 tensor, got "
                            f"{t.dtype if isinstance(t, torch.Tensor) else type(t).__name__}")
    if input_ids.dim() != 2:
        raise ValueError(f"{op}: input_ids must be (batch, tokens), got {tuple(input_ids.shape)}")
    tables = (("word", word), ("position", position), ("token_type", token_type))
    for name, t in tables:
        if not isinstance(t, torch.Tensor) or t.dim() != 2 or t.shape[1] != word.shape[1]:
            raise ValueError(f"{op}: {name} must be a 2-D (rows, {word.shape[1]}) table, got "
                             f"{tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__}")
    D = word.shape[1]
    for name, t in (("weight", weight), ("bias", bias)):
        if not isinstance(t, torch.Tensor) or tuple(t.shape) != (D,):
            raise ValueError(f"{op}: {name} must be ({D},), got "
                             f"{tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__}")
    B, S = input_ids.shape
    stride_pb, stride_ps = _rows_of(position_ids, B, S, "position_ids")
    if token_types_by_position:
        if token_type_ids.dim() != 1:
            raise ValueError(f"{op}: with token_types_by_position, token_type_ids is a 1-D buffer, got "
                             f"{tuple(token_type_ids.shape)}")
        stride_tb, stride_ts = 0, token_type_ids.stride(0)
    else:
        stride_tb, stride_ts = _rows_of(token_type_ids, B, S, "token_type_ids")
    check_same_device(op, "word", word, input_ids=input_ids, position_ids=position_ids, position=position,
                      token_type_ids=token_type_ids, token_type=token_type, weight=weight, bias=bias)
    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (word, position, token_type, weight, bias))
    if (needs_grad or word.dtype not in KERNEL_DTYPES or any(t.dtype != word.dtype for _, t in tables)
            or weight.dtype != word.dtype or bias.dtype != word.dtype or any(t.stride(1) != 1 for _, t in tables)
            or input_ids.numel() == 0 or D > 8192 or torch.compiler.is_compiling() or is_traced(*args[:8])):
        return embeddings_layer_norm_reference(*args)
    check_kernel_device(op, "word", word)
    T = B * S
    out = empty((B, S, D), dtype=word.dtype, device=word.device)
    block_d = triton_next_pow2(D)
    # few tokens (a short prompt): one per program, so they spread over the SMs; else up to 4096 elements a program
    block_t = 2 if interpreter_active() else (1 if T < 2048 else max(1, min(8, 4096 // block_d)))
    launch(_embeddings_norm_fwd, (-(-T // block_t),), input_ids, position_ids, token_type_ids, word, position,
           token_type, weight, bias, out, T, S, word.shape[0], position.shape[0], token_type.shape[0],
           token_type_ids.shape[0] if token_types_by_position else 0, D, float(eps), input_ids.stride(0),
           input_ids.stride(1), stride_pb, stride_ps, stride_tb, stride_ts, word.stride(0), position.stride(0),
           token_type.stride(0), D, int(bool(token_types_by_position)), BLOCK_T=block_t, BLOCK_D=block_d,
           num_warps=4 if block_d * block_t <= 4096 else 8,
           **(_pdl.pdl_meta(out.device, T) if _pdl.ACTIVE and not is_traced(input_ids, word) else _pdl.OFF))
    return out
