"""A whole gated MLP, ``down(act(x @ W_gate.T) * (x @ W_up.T))``, that keeps less for its
backward than the same layers chained by autograd.

Chained, autograd saves four activations of the MLP's width F per token: the gate and up
projections (for the gated product's backward) and the product itself (for the down
projection's weight gradient). ``gated_mlp`` saves the gate and up projections only and
recomputes the product in the backward with the same forward kernel: one elementwise pass
(read 2F, write F per token) in exchange for F values per token held from the forward to
the backward. For a Llama-style 1B model training on 4096 tokens that is 64 MiB a layer,
about 1 GiB over 16 layers.

The projections are PyTorch's (cuBLAS) GEMMs; the gated product and its gradient are
tritonic's kernels (``_gated_fwd_op``, ``_gated_bwd_op`` of ``ops/activation.py``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tritonic.ops.activation import (_GELU_KIND, _check, _gated, _gated_bwd_op, _gated_fwd_op, _kernel_layout,
                                     geglu_reference, swiglu_reference)
from tritonic.runtime.checks import check_same_device, check_same_dtype, check_shape, check_tensor

__all__ = ["gated_mlp", "gated_mlp_reference"]

_KINDS = {"silu": "silu", "gelu": _GELU_KIND["none"], "gelu_tanh": _GELU_KIND["tanh"]}


def gated_mlp_reference(x, w_gate, w_up, w_down, activation="silu"):
    """The same MLP as PyTorch layers chained (what ``gated_mlp`` must equal)."""
    g, u = F.linear(x, w_gate), F.linear(x, w_up)
    if activation == "silu":
        h = swiglu_reference(g, u)
    else:
        h = geglu_reference(g, u, "tanh" if activation == "gelu_tanh" else "none")
    return F.linear(h, w_down)


class _GatedMLP(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w_gate, w_up, w_down, kind):
        g = _kernel_layout(F.linear(x, w_gate))
        u = _kernel_layout(F.linear(x, w_up))
        y = F.linear(_gated_fwd_op(g, u, kind), w_down)  # the product is not kept
        ctx.kind = kind
        ctx.save_for_backward(x, w_gate, w_up, w_down, g, u)
        return y

    @staticmethod
    def backward(ctx, dy):
        x, w_gate, w_up, w_down, g, u = ctx.saved_tensors
        need_x, need_wg, need_wu, need_wd = ctx.needs_input_grad[:4]
        dy2 = dy.reshape(-1, dy.shape[-1])
        dw_down = None
        if need_wd:  # the product again, for the down projection's weight gradient only
            h = _gated_fwd_op(g, u, ctx.kind)
            dw_down = dy2.t().mm(h.reshape(-1, h.shape[-1]))
            del h
        dh = _kernel_layout(dy.matmul(w_down))
        dg, du = _gated_bwd_op(dh, g, u, ctx.kind)
        del dh
        x2, dg2, du2 = x.reshape(-1, x.shape[-1]), dg.reshape(-1, dg.shape[-1]), du.reshape(-1, du.shape[-1])
        dx = dg2.mm(w_gate).addmm_(du2, w_up).view(x.shape) if need_x else None
        dw_gate = dg2.t().mm(x2) if need_wg else None
        dw_up = du2.t().mm(x2) if need_wu else None
        return dx, dw_gate, dw_up, dw_down, None


def gated_mlp(x, w_gate, w_up, w_down, activation="silu"):
    """``F.linear(act(F.linear(x, w_gate)) * F.linear(x, w_up), w_down)``, the MLP of Llama-family
    models (``activation`` "silu") and of Gemma / T5 v1.1 ("gelu_tanh", "gelu"), without biases.

    ``x`` is ``(..., H)``; ``w_gate`` and ``w_up`` are ``(F, H)``, ``w_down`` is ``(H, F)``, all of
    ``x``'s dtype and device. With autograd the product ``act(gate) * up`` is recomputed in
    the backward rather than saved (see the module docstring); without autograd this is
    the chained layers with tritonic's gated-product kernel."""
    kind = _KINDS.get(activation)
    if kind is None:
        raise ValueError(f"gated_mlp: activation must be 'silu', 'gelu' or 'gelu_tanh', got {activation!r}")
    for name, t in (("x", x), ("w_gate", w_gate), ("w_up", w_up), ("w_down", w_down)):
        check_tensor("gated_mlp", name, t, min_dim=1 if name == "x" else 2)
    H, Fw = x.shape[-1], w_gate.shape[0]
    check_shape("gated_mlp", "w_gate", w_gate, (Fw, H), "(F, x's last dimension)")
    check_shape("gated_mlp", "w_up", w_up, (Fw, H), "(the shape of w_gate)")
    check_shape("gated_mlp", "w_down", w_down, (H, Fw), "(x's last dimension, w_gate's rows)")
    for name, t in (("w_gate", w_gate), ("w_up", w_up), ("w_down", w_down)):
        check_same_dtype("gated_mlp", "x", x, name, t)
    check_same_device("gated_mlp", "x", x, w_gate=w_gate, w_up=w_up, w_down=w_down)
    if not _check("gated_mlp", x):  # the activation kernels' checks: dtype, device, empty input
        return gated_mlp_reference(x, w_gate, w_up, w_down, activation)
    if torch.is_autocast_enabled(x.device.type) or torch.compiler.is_compiling():
        # autocast casts inside, and torch.compile traces the registered custom ops best: the
        # layers chained, each through its own path
        return F.linear(_gated(F.linear(x, w_gate), F.linear(x, w_up), kind), w_down)
    if torch.is_grad_enabled() and any(t.requires_grad for t in (x, w_gate, w_up, w_down)):
        return _GatedMLP.apply(x, w_gate, w_up, w_down, kind)
    g, u = _kernel_layout(F.linear(x, w_gate)), _kernel_layout(F.linear(x, w_up))
    return F.linear(_gated_fwd_op(g, u, kind), w_down)
