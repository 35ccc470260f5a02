"""``linear``: ``activation(x @ weight.T + bias) + residual`` on the GEMM of ``ops/matmul.py``,
forward and backward.

The forward keeps the pre-activation ``Z`` when a gradient is wanted. The backward computes
``G = dY * act'(Z)`` once (``_act_grad``, which also sums the bias gradient), then
``dX = G @ W`` and ``dW = G^T @ X``; those two bare products go to cuBLAS on the GPU in
16-bit (``ops/matmul.py``'s ``_plain_gemm``). Without autograd, GELU (tanh) after a bias takes
cuBLASLt's own epilogue, and everything else the GEMM with its fused epilogue.
"""

from __future__ import annotations

import os
from importlib import import_module

import torch
import torch.nn.functional as F

from tritonic.kernels.matmul import _act_grad
from tritonic.ops._register import register
from tritonic.ops.matmul import ACTIVATIONS, _cdiv, _gemm, _plain_gemm, _rows
from tritonic.runtime import empty, interpreter_active, warn_once
from tritonic.runtime.autotune import Autotuner, Config, bucket, run_with_fallback, time_run
from tritonic.runtime import checks as _checks
from tritonic.runtime.checks import KERNEL_DTYPES, check_kernel_device, check_same_device, check_tensor
from tritonic.runtime.launcher import is_traced, launch

__all__ = ["linear", "linear_reference"]

_mm = import_module("tritonic.ops.matmul")  # the module (the package's name ``matmul`` is the function)

# The activation's backward (elementwise, memory-bound): rows x columns per program.
_act_grad_tuner = Autotuner("act_grad", [Config.of(num_warps=w, num_stages=1, BLOCK_M=bm, BLOCK_N=bn)
                                         for bm, bn, w in [(32, 256, 8), (64, 128, 4), (16, 256, 4), (64, 256, 8),
                                                           (128, 64, 4), (16, 512, 8)]])
_ACT_GRAD_INTERPRETER = Config.of(num_warps=4, num_stages=1, BLOCK_M=16, BLOCK_N=16)
_LT_GELU = os.environ.get("TRITONIC_INFER_GEMM", "").strip().lower() != "triton"  # see integrations/gemm_route


def _act_torch(z, activation):
    if activation is None:
        return z
    if activation == "gelu_tanh":
        return F.gelu(z, approximate="tanh")
    return {"relu": F.relu, "gelu": F.gelu, "silu": F.silu, "tanh": torch.tanh}[activation](z)


def linear_reference(x, weight, bias=None, activation=None, residual=None):
    """PyTorch: ``act(F.linear(x, weight, bias)) + residual``."""
    y = _act_torch(F.linear(x, weight, bias), activation)
    return y if residual is None else y + residual


def _linear_fwd(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, residual: torch.Tensor | None,
                act: int, keep_z: bool) -> tuple[torch.Tensor, torch.Tensor]:
    M, N = x.shape[0], weight.shape[0]
    y = empty((M, N), dtype=x.dtype, device=x.device)
    z = empty((M, N), dtype=x.dtype, device=x.device) if keep_z else None
    _gemm(x, weight.t(), y, bias=bias, residual=residual, z=z, act=act)
    return y, (z if z is not None else x.new_empty(0))


def _linear_bwd(dy: torch.Tensor, z: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, act: int,
                need_dx: bool, need_dw: bool, need_db: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    M, N, K = x.shape[0], weight.shape[0], x.shape[1]
    dx = dw = db = None  # (those not wanted: one empty tensor at the end; each call costs host time)
    g = dy  # dY * act'(Z): one elementwise pass, which also sums the bias gradient
    if act or need_db:
        if act:
            g = empty((M, N), dtype=dy.dtype, device=dy.device)
        partials = []

        def run(config):
            meta = config.meta()
            rows = _cdiv(M, meta["BLOCK_M"])
            partial = torch.empty((rows, N), dtype=torch.float32, device=x.device) if need_db else None
            launch(_act_grad, (rows, _cdiv(N, meta["BLOCK_N"])), dy, z if act else None, g if act else None,
                   partial, M, N, dy.stride(0), z.stride(0) if act else 0, g.stride(0), ACT=act, HAS_DB=need_db,
                   **meta)
            partials[:] = [partial]

        if interpreter_active():
            run(_ACT_GRAD_INTERPRETER)
        else:  # (no timing while torch traces: the timed launches would be recorded into its graph)
            key = (bucket(M), N, str(dy.dtype), act, need_db)
            config = _act_grad_tuner.chosen.get(key)  # (decided in this process: no other check per call)
            if config is None:
                config = _act_grad_tuner.pick(key, lambda c: time_run(run, c),
                                              may_tune=not (is_traced(dy, z) or torch.cuda.is_current_stream_capturing()))
            run_with_fallback(_act_grad_tuner, key, config, run)
        if need_db:
            db = partials[0].sum(0).to(weight.dtype)
    if need_dx:  # G @ W
        dx = empty((M, K), dtype=x.dtype, device=x.device)
        _plain_gemm(g, weight, dx)
    if need_dw:  # G^T @ X
        dw = empty((N, K), dtype=weight.dtype, device=x.device)
        _plain_gemm(g.t(), x, dw)
    if dx is None or dw is None or db is None:
        none = x.new_empty(0)
        dx, dw, db = (none if t is None else t for t in (dx, dw, db))
    return dx, dw, db


def _setup(ctx, inputs, output, backward_impl):
    x, weight, bias, residual, act, _ = inputs
    ctx.act, ctx.has_bias, ctx.backward_impl = act, bias is not None, backward_impl
    ctx.bias_dtype = bias.dtype if bias is not None else None
    ctx.save_for_backward(x, weight, output[1])


def _grad(ctx, dy, _dz):
    x, weight, z = ctx.saved_tensors
    need_x, need_w, need_b, need_r = ctx.needs_input_grad[:4]
    dy = torch.zeros(x.shape[0], weight.shape[0], dtype=x.dtype, device=x.device) if dy is None else _rows(dy)
    dx, dw, db = ctx.backward_impl(dy, z, x, weight, ctx.act, need_x, need_w, need_b and ctx.has_bias)
    return (dx if need_x else None, dw if need_w else None,
            (db if db.dtype == ctx.bias_dtype else db.to(ctx.bias_dtype)) if need_b and ctx.has_bias else None,
            dy if need_r else None, None, None)


_LinearFn = register("linear", _linear_fwd, _linear_bwd, _setup, _grad, n_nondiff=1)


# ----------------------------------------------------------------------------- public API


def _check_linear(x, weight, bias, activation, residual) -> bool:
    """Validate; True when the kernels run it. The common case passes a few cheap
    comparisons (this runs on every call); anything else takes the full checks, which name
    the bad argument."""
    if (residual is None and isinstance(x, torch.Tensor) and isinstance(weight, torch.Tensor) and x.dim() >= 1
            and weight.dim() == 2 and x.shape[-1] == weight.shape[1] and x.dtype in KERNEL_DTYPES
            and weight.dtype == x.dtype and weight.device == x.device and activation in ACTIVATIONS
            and (bias is None or (isinstance(bias, torch.Tensor) and bias.dim() == 1
                                  and bias.shape[0] == weight.shape[0] and bias.dtype == x.dtype
                                  and bias.device == x.device))
            and _checks.can_run_kernels(x.device) and x.numel() > 0 and weight.numel() > 0):
        return True
    op = "linear"
    check_tensor(op, "x", x, min_dim=1)
    check_tensor(op, "weight", weight)
    if weight.dim() != 2:
        raise ValueError(f"linear: weight must be 2-D (out_features, in_features), got shape {tuple(weight.shape)}")
    if x.shape[-1] != weight.shape[1]:
        raise ValueError(f"linear: inner dimensions differ: x has {x.shape[-1]} features (shape {tuple(x.shape)}) "
                         f"but weight expects {weight.shape[1]} (shape {tuple(weight.shape)})")
    if activation not in ACTIVATIONS:
        raise ValueError(f"linear: activation must be one of {list(ACTIVATIONS)}, got {activation!r}")
    N = weight.shape[0]
    if bias is not None:
        check_tensor(op, "bias", bias)
        if tuple(bias.shape) != (N,):
            raise ValueError(f"linear: bias must have shape ({N},) (weight's out_features), got {tuple(bias.shape)}")
    if residual is not None:
        check_tensor(op, "residual", residual)
        if tuple(residual.shape) != (*x.shape[:-1], N):
            raise ValueError(f"linear: residual must have the output's shape {(*x.shape[:-1], N)}, "
                             f"got {tuple(residual.shape)}")
    for name, t in (("weight", weight), ("bias", bias), ("residual", residual)):
        if t is not None and t.dtype != x.dtype:
            raise TypeError(f"linear: {name} must have x's dtype ({x.dtype}), got {t.dtype}")
    check_same_device(op, "x", x, weight=weight, bias=bias, residual=residual)
    check_kernel_device(op, "x", x)
    if x.numel() == 0 or weight.numel() == 0:
        return False
    if x.dtype not in KERNEL_DTYPES:
        warn_once(("linear", "dtype"), f"linear: the kernels take float16, bfloat16 and float32; got {x.dtype}, "
                  f"so PyTorch's implementation runs instead")
        return False
    return True


def _lt_gelu(x, weight, bias) -> bool:
    """cuBLASLt's GELU (tanh) epilogue applies: CUDA, 16-bit, a 1-D bias, not traced, no env forcing ours."""
    return (_LT_GELU and x.is_cuda and x.dtype in (torch.float16, torch.bfloat16) and weight.dtype == x.dtype
            and bias.dtype == x.dtype and bias.dim() == 1 and not interpreter_active()
            and _mm.GEMM_CHOICE == "auto" and hasattr(torch, "_addmm_activation"))


def linear(x, weight, bias=None, activation=None, residual=None):
    """``activation(x @ weight.T + bias) + residual`` over any leading dimensions of ``x``.

    ``activation`` is one of None, "relu", "gelu" (erf), "gelu_tanh", "silu", "tanh". Gradients
    flow to x, weight, bias and residual."""
    if not _check_linear(x, weight, bias, activation, residual):
        return linear_reference(x, weight, bias, activation, residual)
    K, N = x.shape[-1], weight.shape[0]
    flat = x.dim() == 2
    x2 = x if flat else x.reshape(-1, K)
    r2 = None if residual is None else (residual if flat else residual.reshape(-1, N))
    act = ACTIVATIONS[activation]
    needs_grad = torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad
                                              or (bias is not None and bias.requires_grad)
                                              or (residual is not None and residual.requires_grad))
    args = (x2, weight, bias, r2, act, bool(act) and needs_grad)
    if torch.compiler.is_compiling() or is_traced(x, weight, bias, residual):
        y, _ = torch.ops.tritonic.linear(*args)
    elif needs_grad:
        y, _ = _LinearFn.apply(*args)
    elif activation == "gelu_tanh" and bias is not None and r2 is None and _lt_gelu(x2, weight, bias):
        # no autograd, GELU (tanh) after a bias: cuBLASLt's own GELU epilogue was faster than our
        # kernel at every size on an H100 (16 x 3072 x 768: 3.85 us against 4.10; 8192 rows: 72.6
        # against 79.5; scripts/infer_gemm_ab.py)
        y = torch._addmm_activation(bias, x2, weight.t(), use_gelu=True)
    else:  # no autograd and no pre-activation to keep: the product alone
        y = empty((x2.shape[0], N), dtype=x.dtype, device=x.device)
        _gemm(x2, weight.t(), y, bias=bias, residual=r2, act=act)
    return y if flat else y.view(*x.shape[:-1], N)
