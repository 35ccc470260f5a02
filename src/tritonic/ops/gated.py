"""The gated GEMM ``gated_linear``: ``act(x @ W_gate.T) * (x @ W_up.T)`` from one product
against a stacked weight, the gated product in the epilogue (SwiGLU, GeGLU). It runs on the
launches of :mod:`tritonic.ops.matmul` (``_gemm`` with ``gated=1`` for the concatenated layout,
``gated=2`` for the interleaved one); its backward is one elementwise pass (``_gated_grad``)
and two plain products.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tritonic.kernels.matmul import _gated_grad
from tritonic.ops._register import register
from tritonic.ops.linear import _act_torch
from tritonic.ops.matmul import ACTIVATIONS, _cdiv, _gemm, _plain_gemm, _rows
from tritonic.runtime import empty, interpreter_active, warn_once
from tritonic.runtime.checks import KERNEL_DTYPES, check_kernel_device, check_same_device, check_tensor
from tritonic.runtime.launcher import is_traced, launch

__all__ = ["gated_linear", "gated_linear_reference", "interleave_gate_up", "GATED_ACTIVATIONS"]


def gated_linear_reference(x, weight_gate_up, activation="silu", layout="concat"):
    """PyTorch: one ``F.linear`` against the stacked weight, then ``act(gate) * up``."""
    y = F.linear(x, weight_gate_up)
    gate, up = y.chunk(2, dim=-1) if layout == "concat" else (y[..., 0::2], y[..., 1::2])
    return _act_torch(gate, activation) * up


def interleave_gate_up(weight_gate_up: torch.Tensor) -> torch.Tensor:
    """``torch.cat([w_gate, w_up])`` (2F, K) -> rows alternating gate, up (``layout="interleaved"``)."""
    F2, K = weight_gate_up.shape
    return weight_gate_up.view(2, F2 // 2, K).transpose(0, 1).reshape(F2, K)


def _gated_fwd(x: torch.Tensor, weight: torch.Tensor, act: int, keep_z: bool,
               interleaved: bool) -> tuple[torch.Tensor, torch.Tensor]:
    M, F2 = x.shape[0], weight.shape[0]
    h = empty((M, F2 // 2), dtype=x.dtype, device=x.device)
    z = empty((M, F2), dtype=x.dtype, device=x.device) if keep_z else None
    _gemm(x, weight.t(), h, z=z, act=act, gated=2 if interleaved else 1)
    return h, (z if z is not None else x.new_empty(0))


def _gated_bwd(dh: torch.Tensor, z: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, act: int,
               interleaved: bool, need_dx: bool, need_dw: bool) -> tuple[torch.Tensor, torch.Tensor]:
    M, F2 = z.shape
    dz = empty((M, F2), dtype=z.dtype, device=z.device)
    block_m, block_n = (16, 16) if interpreter_active() else (32, 128)
    launch(_gated_grad, (_cdiv(M, block_m), _cdiv(F2 // 2, block_n)), dh, z, dz, M, F2 // 2, dh.stride(0),
           z.stride(0), ACT=act, INTERLEAVED=interleaved, BLOCK_M=block_m, BLOCK_N=block_n, num_warps=4)
    dx = dw = x.new_empty(0)
    if need_dx:  # dZ @ W
        dx = empty(tuple(x.shape), dtype=x.dtype, device=x.device)
        _plain_gemm(dz, weight, dx)
    if need_dw:  # dZ^T @ X
        dw = empty(tuple(weight.shape), dtype=weight.dtype, device=x.device)
        _plain_gemm(dz.t(), x, dw)
    return dx, dw


def _gated_setup(ctx, inputs, output, backward_impl):
    x, weight, act, _, interleaved = inputs
    ctx.act, ctx.interleaved, ctx.backward_impl = act, interleaved, backward_impl
    ctx.save_for_backward(x, weight, output[1])


def _gated_grad_fn(ctx, dh, _dz):
    x, weight, z = ctx.saved_tensors
    need_x, need_w = ctx.needs_input_grad[:2]
    dh = torch.zeros(z.shape[0], z.shape[1] // 2, dtype=z.dtype, device=z.device) if dh is None else _rows(dh)
    dx, dw = ctx.backward_impl(dh, z, x, weight, ctx.act, ctx.interleaved, need_x, need_w)
    return (dx if need_x else None), (dw if need_w else None), None, None, None


_GatedFn = register("gated_linear", _gated_fwd, _gated_bwd, _gated_setup, _gated_grad_fn, n_nondiff=1)

GATED_ACTIVATIONS = ("silu", "gelu", "gelu_tanh", "relu")


def gated_linear(x, weight_gate_up, activation="silu", layout="concat"):
    """``act(x @ W_gate.T) * (x @ W_up.T)`` for gated MLPs (SwiGLU with "silu", GeGLU with
    "gelu"/"gelu_tanh"), from one GEMM against ``weight_gate_up`` of shape ``(2 * F, K)``.
    The epilogue multiplies gate and up, so neither reaches memory unless a gradient needs
    them. ``layout="concat"``: the gate rows over the up rows (``torch.cat([w_gate, w_up])``);
    ``layout="interleaved"``: rows alternate gate, up (:func:`interleave_gate_up`), which lets
    one wide tile product serve both and is faster on Hopper (docs/matmul.md)."""
    op = "gated_linear"
    if layout not in ("concat", "interleaved"):
        raise ValueError(f"gated_linear: layout must be 'concat' or 'interleaved', got {layout!r}")
    check_tensor(op, "x", x, min_dim=1)
    check_tensor(op, "weight_gate_up", weight_gate_up)
    w = weight_gate_up
    if w.dim() != 2 or w.shape[0] % 2:
        raise ValueError(f"gated_linear: weight_gate_up must be 2-D (2 * F, in_features), the gate rows over the "
                         f"up rows, got shape {tuple(w.shape)}")
    if x.shape[-1] != w.shape[1]:
        raise ValueError(f"gated_linear: inner dimensions differ: x has {x.shape[-1]} features (shape "
                         f"{tuple(x.shape)}) but weight_gate_up expects {w.shape[1]} (shape {tuple(w.shape)})")
    if activation not in GATED_ACTIVATIONS:
        raise ValueError(f"gated_linear: activation must be one of {list(GATED_ACTIVATIONS)}, got {activation!r}")
    if w.dtype != x.dtype:
        raise TypeError(f"gated_linear: weight_gate_up must have x's dtype ({x.dtype}), got {w.dtype}")
    check_same_device(op, "x", x, weight_gate_up=w)
    check_kernel_device(op, "x", x)
    if x.numel() == 0 or w.numel() == 0 or x.dtype not in KERNEL_DTYPES:
        if x.dtype not in KERNEL_DTYPES:
            warn_once((op, "dtype"), f"gated_linear: the kernels take float16, bfloat16 and float32; got "
                      f"{x.dtype}, so PyTorch's implementation runs instead")
        return gated_linear_reference(x, w, activation, layout)
    lead, K = x.shape[:-1], x.shape[-1]
    x2 = _rows(x.reshape(-1, K))
    w2 = _rows(w)
    act = ACTIVATIONS[activation]
    needs_grad = torch.is_grad_enabled() and (x.requires_grad or w.requires_grad)
    inter = layout == "interleaved"
    if torch.compiler.is_compiling() or is_traced(x, w):
        h, _ = torch.ops.tritonic.gated_linear(x2, w2, act, needs_grad, inter)
    elif needs_grad:
        h, _ = _GatedFn.apply(x2, w2, act, True, inter)
    else:
        h, _ = _gated_fwd(x2, w2, act, False, inter)
    return h.view(*lead, w.shape[0] // 2)
