"""Rotary position embedding (RoPE): the functional API, its checks, custom ops and autograd.

    q, k = rope(q, k, cos, sin)                          # Hugging Face Llama: cos/sin (B, S, D) or (S, D)
    q, k = rope(q, k, cos_table, sin_table, position_ids=pos)   # tables (max_positions, W), pos (B, S) or (S,)
    q, k = rope(q, k, cos, sin, interleaved=True)        # GPT-J pairs (x[2i], x[2i+1])
    q, k = rope(q, k, cos, sin, rotary_dim=32)           # rotate the first 32 columns only (GPT-NeoX, Phi)
    rope(q, k, cos, sin, inplace=True)                   # overwrite q and k (no autograd)

``q`` is ``(B, Hq, S, D)`` and ``k`` is ``(B, Hk, S, D)``, any strides (a ``(B, S, H, D)``
projection output transposed is fine); ``Hk`` may differ from ``Hq`` (GQA/MQA). One kernel
launch rotates both.

The angles. ``cos`` and ``sin`` (same shape and dtype; any kernel dtype, not q's necessarily) have ``W``
columns, where ``W`` is the rotary dimension ``r`` (one entry per rotated element, as Hugging
Face passes them: Llama's halves, or GPT-J's pairs, hold equal values) or ``r / 2`` (one entry
per pair). ``rotary_dim`` defaults to ``W``, so tables of width ``r / 2`` need
``rotary_dim=r``. Without ``position_ids`` the angles are per token: ``(S, W)``,
``(B or 1, S, W)`` or ``(B or 1, 1, S, W)`` (what Hugging Face builds, before or after its
``unsqueeze``). With ``position_ids`` (int32/int64, ``(S,)``, ``(1, S)`` or ``(B, S)``) they
are tables ``(P, W)`` whose rows the kernel gathers itself.

With ``W = r``, element ``j`` of the output is ``x[j] * cos[j] + rot(x)[j] * sin[j]``
(``rot`` is Hugging Face's ``rotate_half``, or GPT-J's ``rotate_every_two`` when
interleaved), exactly as Hugging Face computes it, for any tables. Columns ``r..D-1`` pass
through unchanged. Math is float32; outputs are contiguous ``(B, H, S, D)`` in q's dtype.

Positions out of range. Position ids outside ``0..P-1`` never make the kernel read outside
the tables: such tokens get NaN in their rotated columns. When ``position_ids`` is a CPU
tensor (Triton's interpreter) the range is also checked on the host, with a ``ValueError``;
on a GPU it is not, because that check would synchronise with the device on every call.

Autograd and in place. Out of place, ``rope`` is the custom op ``tritonic::rope`` (with
``tritonic::rope_backward``): gradients flow to ``q`` and ``k`` (the backward is the same
kernel rotating by ``-θ``), in eager mode, under ``torch.compile(fullgraph=True)`` and in
CUDA graphs. No gradient is computed for ``cos``/``sin``: when they require one, ``rope``
runs :func:`rope_reference` instead (with a one-time warning), so the gradient is right.
``inplace=True`` writes into ``q`` and ``k`` and returns them; it is the mutating custom op
``tritonic::rope_inplace`` and records no autograd, so it raises a ``ValueError`` when
``q`` or ``k`` requires a gradient while grad mode is on (use ``inplace=False`` there).

What the kernel does not take falls back to :func:`rope_reference` with a one-time warning:
float64 (or other non-kernel) dtypes of q/k or cos/sin; empty tensors fall back silently.
"""

from __future__ import annotations

import functools
import os

import torch
from torch.library import triton_op

from tritonic.kernels.rope import _rope
from tritonic.ops._register import register
from tritonic.runtime import empty, warn_once
from tritonic.runtime import checks as _checks
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

__all__ = ["rope", "rope_reference"]

# pairs per program (BLOCK_H * BLOCK_S * BLOCK_HALF), before head-count limits. Swept on an
# H100 (Llama-3-8B prefill, 4x32/8x4096x128 bf16): 2 heads x 8 tokens (1024 pairs) 119.5 us,
# 4 x 8 (2048) 132.2 us, 16 x 16 (16384) 2.9 ms; benchmarks/results/h100-80gb-hbm3/logs.
TILE_PAIRS = 1024
MAX_BLOCK_H = 2  # heads per program when there are enough tokens (more for decoding)
# TRITONIC_ROPE_STREAM=1: the heads read with L2 evict-first and written with the streaming
# hint (.cs), as the softmax's outputs are; off until timed on a GPU (the Llama-3-8B prefill
# case ran at 2.80 TB/s against torch.compile's 2.85, 856227b).
STREAM = os.environ.get("TRITONIC_ROPE_STREAM", "0").strip() == "1"
_POS_DTYPES = (torch.int32, torch.int64)


# ----------------------------------------------------------------------------- reference


def _angles_per_token(cos, position_ids):
    """cos (or sin) as (B or 1, 1, S, W): per token, broadcastable over heads."""
    if position_ids is not None:
        cos = cos[position_ids.long()]  # (S, W) or (B, S, W)
    if cos.dim() == 4:
        return cos
    return cos[:, None] if cos.dim() == 3 else cos[None, None]


def rope_reference(q, k, cos, sin, *, position_ids=None, interleaved=False, rotary_dim=None, inplace=False):
    """PyTorch RoPE with :func:`rope`'s interface and Hugging Face's formula
    ``x * cos + rotate(x) * sin``, computed in q's dtype promoted with the tables' dtype."""
    r = cos.shape[-1] if rotary_dim is None else rotary_dim
    c, s = _angles_per_token(cos, position_ids), _angles_per_token(sin, position_ids)
    if c.shape[-1] != r:  # one entry per pair: give each element its pair's entry
        c, s = ((t.repeat_interleave(2, dim=-1) if interleaved else torch.cat((t, t), dim=-1)) for t in (c, s))
    outs = []
    for x in (q, k):
        acc = torch.promote_types(x.dtype, c.dtype)
        xr = x[..., :r].to(acc)
        if interleaved:
            rot = torch.stack((-xr[..., 1::2], xr[..., 0::2]), dim=-1).flatten(-2)
        else:
            rot = torch.cat((-xr[..., r // 2:], xr[..., : r // 2]), dim=-1)
        y = (xr * c.to(acc) + rot * s.to(acc)).to(x.dtype)
        if inplace:
            x[..., :r].copy_(y)
            outs.append(x)
        else:
            outs.append(y if r == x.shape[-1] else torch.cat((y, x[..., r:]), dim=-1))
    return tuple(outs)


# ----------------------------------------------------------------------------- launches


def _cdiv(a: int, b: int) -> int:
    return (a + b - 1) // b


def _pow2(n: int) -> int:
    return 1 if n <= 1 else 1 << (n - 1).bit_length()


@functools.lru_cache(maxsize=None)
def _config(S: int, H: int, half: int, n_pass: int):
    """(BLOCK_H, BLOCK_S, BLOCK_HALF, BLOCK_PASS, num_warps) for S tokens, at most H heads
    per tensor, ``half`` pairs and ``n_pass`` unrotated columns per head. A program takes
    about TILE_PAIRS pairs: a few heads of several tokens (the tokens' angles are loaded once
    per program), or, when there are few tokens (decoding), more heads."""
    block_half = _pow2(half)
    block_h = min(_pow2(H), MAX_BLOCK_H)
    block_s = min(_pow2(S), max(1, TILE_PAIRS // (block_h * block_half)))
    block_h = min(_pow2(H), max(block_h, TILE_PAIRS // (block_s * block_half)))
    tile = block_h * block_s * block_half
    return block_h, block_s, block_half, _pow2(n_pass), 8 if tile >= 4096 else 4


def _static(n, hint: int) -> int:
    """``n`` as a plain int for picking block sizes; under torch.compile's dynamic shapes a
    size may be symbolic, and a fixed ``hint`` then avoids guarding (recompiling) on it."""
    return n if type(n) is int else hint


def _angle_strides(t: torch.Tensor, has_pos: bool):
    """(batch, row, column) strides of cos or sin as the kernel reads them: a table (P, W) is
    indexed by position (no batch stride); per-token angles (S, W) or (1, S, W) are shared by
    the batch (batch stride 0)."""
    if has_pos or t.dim() == 2:
        return 0, t.stride(0), t.stride(1)
    return (0 if t.shape[0] == 1 else t.stride(0)), t.stride(1), t.stride(2)


def _launch(q, k, qo, ko, cos, sin, pos, interleaved: bool, r: int, backward: bool, inplace: bool):
    B, HQ, S, D = q.shape
    HK = k.shape[1]
    # The head dim and rotary dim fix the block shapes: made static (a guard, under dynamic
    # shapes) by int(); batch, heads and tokens stay symbolic there.
    D, r, W = int(D), int(r), int(cos.shape[-1])
    half = r // 2
    has_pos = pos is not None
    heads = max(_static(HQ, 32), _static(HK, 32))
    block_h, block_s, block_half, block_pass, num_warps = _config(_static(S, 4096), heads, half, D - r)
    if has_pos:
        P = cos.shape[0]
        pb = pos.stride(0) if pos.dim() == 2 and pos.shape[0] != 1 else 0
        ps = pos.stride(-1)
    else:
        P, pb, ps = 0, 0, 0
    q_blocks = _cdiv(HQ, block_h)
    grid = (B * _cdiv(S, block_s), q_blocks + _cdiv(HK, block_h))
    launch(
        _rope, grid, q, k, qo, ko, cos, sin, pos,
        *q.stride(), *k.stride(), *qo.stride(), *ko.stride(),
        *_angle_strides(cos, has_pos), *_angle_strides(sin, has_pos), pb, ps,
        S, HQ, HK, P, half, D, q_blocks,
        INTERLEAVED=interleaved, FULL_TABLE=W == r, HAS_POS=has_pos,
        COPY_PASS=not inplace and r < D, BACKWARD=backward,
        BLOCK_H=block_h, BLOCK_S=block_s, BLOCK_HALF=block_half, BLOCK_PASS=block_pass, STREAM=STREAM,
        num_warps=num_warps, **(_pdl.pdl_meta(q.device, B * S) if _pdl.ACTIVE and not is_traced(q, k) else _pdl.OFF),
    )


# ----------------------------------------------------------------------------- ops
# Registered as torch custom ops for torch.compile and tracing; in eager mode an
# autograd.Function (from `register`) calls the same functions without the dispatcher.


def _rope_fwd(
    q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, position_ids: torch.Tensor | None,
    interleaved: bool, rotary_dim: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    qo = empty(tuple(q.shape), dtype=q.dtype, device=q.device)
    ko = empty(tuple(k.shape), dtype=k.dtype, device=k.device)
    _launch(q, k, qo, ko, cos, sin, position_ids, interleaved, rotary_dim, False, False)
    return qo, ko


def _rope_bwd(
    dq: torch.Tensor, dk: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, position_ids: torch.Tensor | None,
    interleaved: bool, rotary_dim: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    # The gradients may have any strides (even expanded ones): the kernel reads them as they are.
    dqi = empty(tuple(dq.shape), dtype=dq.dtype, device=dq.device)
    dki = empty(tuple(dk.shape), dtype=dk.dtype, device=dk.device)
    _launch(dq, dk, dqi, dki, cos, sin, position_ids, interleaved, rotary_dim, True, False)
    return dqi, dki


def _rope_setup(ctx, inputs, output, backward_impl):
    q, k, cos, sin, position_ids, interleaved, rotary_dim = inputs
    ctx.save_for_backward(cos, sin, position_ids)
    ctx.interleaved, ctx.rotary_dim, ctx.backward_impl = interleaved, rotary_dim, backward_impl
    ctx.shapes = (tuple(q.shape), tuple(k.shape), q.dtype, q.device)


def _rope_grad(ctx, dq, dk):
    cos, sin, position_ids = ctx.saved_tensors
    q_shape, k_shape, dtype, device = ctx.shapes
    # An output that was not used gets no gradient (None): it contributes zeros.
    dq = torch.zeros(q_shape, dtype=dtype, device=device) if dq is None else dq
    dk = torch.zeros(k_shape, dtype=dtype, device=device) if dk is None else dk
    dqi, dki = ctx.backward_impl(dq, dk, cos, sin, position_ids, ctx.interleaved, ctx.rotary_dim)
    need_q, need_k = ctx.needs_input_grad[:2]
    return dqi if need_q else None, dki if need_k else None, None, None, None, None, None


_RopeFn = register("rope", _rope_fwd, _rope_bwd, _rope_setup, _rope_grad)


@triton_op("tritonic::rope_inplace", mutates_args=("q", "k"))
def _rope_inplace(
    q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, position_ids: torch.Tensor | None,
    interleaved: bool, rotary_dim: int,
) -> None:
    _launch(q, k, q, k, cos, sin, position_ids, interleaved, rotary_dim, False, True)


# ----------------------------------------------------------------------------- checks


def _fmt(t: torch.Tensor) -> str:
    return "(" + ", ".join(str(s) for s in t.shape) + ("," if t.dim() == 1 else "") + ")"


def _common(q, k, cos, sin, position_ids, interleaved, rotary_dim, inplace) -> bool:
    """Hugging Face's call (per-token angles as wide as the head, no ids, out of place), in a
    few cheap comparisons: this runs on every call. Anything else goes through _check."""
    if position_ids is not None or inplace or type(interleaved) is not bool:
        return False
    if not (type(q) is torch.Tensor and type(k) is torch.Tensor and isinstance(cos, torch.Tensor)
            and isinstance(sin, torch.Tensor)):
        return False
    qs, ks, cs = q.shape, k.shape, cos.shape
    return (len(qs) == 4 and len(ks) == 4 and ks[0] == qs[0] and ks[2] == qs[2] and ks[3] == qs[3]
            and cs == sin.shape and 2 <= len(cs) <= 3 and cs[-1] == qs[3] and cs[-2] == qs[2]
            and (len(cs) == 2 or cs[0] == 1 or cs[0] == qs[0]) and cs[-1] % 2 == 0
            and (rotary_dim is None or (type(rotary_dim) is int and rotary_dim == cs[-1]))
            and q.dtype == k.dtype and q.dtype in KERNEL_DTYPES and cos.dtype == sin.dtype
            and cos.dtype in KERNEL_DTYPES and q.device == k.device == cos.device == sin.device
            and _checks.can_run_kernels(q.device) and q.numel() > 0 and k.numel() > 0
            and not (torch.is_grad_enabled() and (cos.requires_grad or sin.requires_grad)))


def _check(op, q, k, cos, sin, position_ids, interleaved, rotary_dim, inplace):
    """Validate the arguments. Returns (cos, sin, rotary_dim, use_kernel), with 4-D per-token
    angles viewed as 3-D; use_kernel is False where the reference must run instead."""
    for name, t in (("q", q), ("k", k)):
        check_tensor(op, name, t)
        if t.dim() != 4:
            raise ValueError(f"{op}: {name} must have 4 dimensions (batch, heads, seq_len, head_dim), "
                             f"got shape {_fmt(t)}")
    B, HQ, S, D = q.shape
    if k.shape[0] != B or k.shape[2] != S or k.shape[3] != D:
        raise ValueError(f"{op}: k must have shape ({B}, heads, {S}, {D}) (q's batch, sequence length and head "
                         f"dim; q has shape {_fmt(q)}), got {_fmt(k)}")
    check_same_dtype(op, "q", q, "k", k)
    check_tensor(op, "cos", cos)
    check_tensor(op, "sin", sin)
    check_shape(op, "sin", sin, tuple(cos.shape), "(the shape of cos)")
    check_same_dtype(op, "cos", cos, "sin", sin)
    for name, v in (("interleaved", interleaved), ("inplace", inplace)):
        if not isinstance(v, bool):
            raise TypeError(f"{op}: {name} must be a bool, got {type(v).__name__}")
    if rotary_dim is not None and (isinstance(rotary_dim, bool) or not isinstance(rotary_dim, int)):
        raise TypeError(f"{op}: rotary_dim must be an int or None, got {type(rotary_dim).__name__}")

    if position_ids is None:
        if cos.dim() == 4 and cos.shape[1] == 1:  # Hugging Face's (B, 1, S, W), after unsqueeze(1)
            cos, sin = cos[:, 0], sin[:, 0]
        if not ((cos.dim() == 2 and cos.shape[0] == S)
                or (cos.dim() == 3 and cos.shape[0] in (1, B) and cos.shape[1] == S)):
            raise ValueError(f"{op}: without position_ids, cos must have shape ({S}, W), ({B} or 1, {S}, W) or "
                             f"({B} or 1, 1, {S}, W) (one row per token of q, W = rotary_dim or rotary_dim / 2), "
                             f"got {_fmt(cos)}")
    else:
        if not isinstance(position_ids, torch.Tensor):
            raise TypeError(f"{op}: position_ids must be a torch.Tensor or None, got {type(position_ids).__name__}")
        if position_ids.dtype not in _POS_DTYPES:
            raise TypeError(f"{op}: position_ids must have dtype torch.int32 or torch.int64, got {position_ids.dtype}")
        if not ((position_ids.dim() == 1 and position_ids.shape[0] == S)
                or (position_ids.dim() == 2 and position_ids.shape[0] in (1, B) and position_ids.shape[1] == S)):
            raise ValueError(f"{op}: position_ids must have shape ({S},), (1, {S}) or ({B}, {S}) (q's batch and "
                             f"sequence length), got {_fmt(position_ids)}")
        if cos.dim() != 2:
            raise ValueError(f"{op}: with position_ids, cos must be a table of shape (max_positions, W) whose rows "
                             f"the ids select, got {_fmt(cos)}")

    W = cos.shape[-1]
    r = W if rotary_dim is None else rotary_dim
    if r % 2 or not 2 <= r <= D:
        raise ValueError(f"{op}: rotary_dim must be an even number from 2 to q's head dim {D}, got {r}"
                         + (" (the width of cos; pass rotary_dim)" if rotary_dim is None else ""))
    if W not in (r, r // 2):
        raise ValueError(f"{op}: cos must have {r} columns (one per rotated element) or {r // 2} (one per pair) "
                         f"for rotary_dim={r}, got {W}")
    check_same_device(op, "q", q, k=k, cos=cos, sin=sin, position_ids=position_ids)

    if inplace:
        if torch.is_grad_enabled() and (q.requires_grad or k.requires_grad):
            raise ValueError(f"{op}: inplace=True records no autograd, but "
                             f"{'q' if q.requires_grad else 'k'} requires grad; use inplace=False "
                             f"(or torch.no_grad())")
        for name, t in (("q", q), ("k", k)):
            if any(st == 0 and n > 1 for st, n in zip(t.stride(), t.shape)):
                raise ValueError(f"{op}: inplace=True needs {name} to own its elements, got an expanded tensor "
                                 f"(strides {tuple(t.stride())})")
        if q is k or (not torch.compiler.is_compiling() and not is_traced(q, k) and q.numel() and k.numel()
                      and q.data_ptr() == k.data_ptr()):  # (data_ptr is not traceable)
            raise ValueError(f"{op}: inplace=True with q and k in the same memory would rotate it twice")

    check_kernel_device(op, "q", q)
    if (position_ids is not None and position_ids.device.type == "cpu" and position_ids.numel()
            and not is_traced(position_ids) and not torch.compiler.is_compiling()):
        lo, hi = int(position_ids.min()), int(position_ids.max())  # a CPU tensor: no device sync
        if lo < 0 or hi >= cos.shape[0]:
            raise ValueError(f"{op}: position_ids must lie in [0, {cos.shape[0]}) (the rows of cos), "
                             f"got values from {lo} to {hi}")

    if q.numel() == 0 or k.numel() == 0:
        return cos, sin, r, False
    if q.dtype not in KERNEL_DTYPES or cos.dtype not in KERNEL_DTYPES:
        warn_once((op, "dtype", q.dtype, cos.dtype),
                  f"{op}: the kernel takes float16, bfloat16 and float32; got q {q.dtype} and cos {cos.dtype}, "
                  f"so PyTorch's implementation runs instead")
        return cos, sin, r, False
    if torch.is_grad_enabled() and (cos.requires_grad or sin.requires_grad):
        warn_once((op, "angle-grad"), f"{op}: the kernel gives no gradient to cos/sin, which require one, so "
                  f"PyTorch's implementation runs instead")
        return cos, sin, r, False
    return cos, sin, r, True


# ----------------------------------------------------------------------------- public API


def rope(q, k, cos, sin, *, position_ids=None, interleaved=False, rotary_dim=None, inplace=False):
    """Rotate ``q`` (B, Hq, S, D) and ``k`` (B, Hk, S, D) by the angles in ``cos``/``sin``.

    Returns ``(q_rotated, k_rotated)``: new contiguous tensors, or ``q`` and ``k`` themselves
    with ``inplace=True``. See the module docstring for the accepted shapes of ``cos``,
    ``sin`` and ``position_ids``, the layouts, and how autograd works.
    """
    if _common(q, k, cos, sin, position_ids, interleaved, rotary_dim, inplace):
        r, use_kernel = cos.shape[-1], True
    else:
        cos, sin, r, use_kernel = _check("rope", q, k, cos, sin, position_ids, interleaved, rotary_dim, inplace)
    if not use_kernel:
        return rope_reference(q, k, cos, sin, position_ids=position_ids, interleaved=interleaved, rotary_dim=r,
                              inplace=inplace)
    traced = torch.compiler.is_compiling() or is_traced(q, k, cos, sin, position_ids)
    if inplace:
        if traced:
            torch.ops.tritonic.rope_inplace(q, k, cos, sin, position_ids, interleaved, r)
        else:
            _launch(q, k, q, k, cos, sin, position_ids, interleaved, r, False, True)
        return q, k
    if traced:
        return torch.ops.tritonic.rope(q, k, cos, sin, position_ids, interleaved, r)
    if torch.is_grad_enabled() and (q.requires_grad or k.requires_grad):
        return _RopeFn.apply(q, k, cos, sin, position_ids, interleaved, r)
    return _rope_fwd(q, k, cos, sin, position_ids, interleaved, r)
