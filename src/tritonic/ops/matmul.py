"""GEMM with fused epilogues: the launches (``_gemm``) that ``linear`` (``ops/linear.py``) and
``gated_linear`` (``ops/gated.py``) run, and ``matmul``.

    y = linear(x, weight, bias, activation="gelu", residual=h)   # act(x @ weight.T + bias) + h
    c = matmul(a, b)                                             # (m, k) @ (k, n), or batched

float16 and bfloat16 accumulate in float32; float32 uses TF32 when
``torch.backends.cuda.matmul.allow_tf32`` is set, exact float32 otherwise. The backward of
``linear`` computes ``G = dY * act'(Z)`` once (the pre-activation is kept from the forward;
the same pass sums the bias gradient), then ``dX = G @ W`` and ``dW = G^T @ X``; those two
bare products go to cuBLAS on the GPU in 16-bit (no epilogue to fuse; ``TRITONIC_PLAIN_GEMM
=triton`` keeps them on our kernels). Launch parameters come from the tritonic autotuner (``runtime/autotune.py``).

On Hopper and newer GPUs, float16/bfloat16 products whose operands tensor descriptors can
address (16-byte aligned rows, one unit stride) take ``_matmul_tma`` (TMA, a persistent
grid); everything else, and the interpreter, the portable ``_matmul``. ``TRITONIC_GEMM``
= ``portable`` / ``tma`` forces one (``tma`` also in the interpreter, for tests).
float64 falls back to PyTorch with a warning.
"""

from __future__ import annotations

import os

import torch

from tritonic.kernels.matmul import _matmul, _matmul_tma
from tritonic.ops._register import register
from tritonic.runtime import empty, has_tma, interpreter_active, num_sms, warn_once
from tritonic.runtime.autotune import Autotuner, Config, bucket, run_with_fallback, time_run
from tritonic.runtime.checks import KERNEL_DTYPES, check_kernel_device, check_same_device, check_tensor
from tritonic.runtime.launcher import descriptor, is_traced, launch_meta, shared_meta
from tritonic.runtime import pdl as _pdl

__all__ = ["matmul", "ACTIVATIONS"]

ACTIVATIONS = {None: 0, "relu": 1, "gelu": 2, "gelu_tanh": 3, "silu": 4, "tanh": 5}

_CONFIGS = [Config.of(num_warps=w, num_stages=s, BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, GROUP_M=8)
            for bm, bn, bk, w, s in [(128, 128, 64, 8, 3), (128, 256, 64, 8, 3), (256, 128, 64, 8, 3),
                                     (64, 128, 64, 4, 4), (128, 64, 64, 4, 4), (64, 64, 64, 4, 4),
                                     (32, 64, 64, 4, 4), (16, 64, 128, 4, 4)]]
# Few rows (inference at batch 1..32): narrow tiles, so that enough programs stream the weight.
# 16 columns: a 2048-wide projection gets 128 programs for 132 SMs (cuBLAS ran Llama's 2048 x 2048
# at 16 rows on 32 thread blocks, 10.4 us on an H100 for 8 MB of weight).
_SMALL_M_CONFIGS = [Config.of(num_warps=w, num_stages=s, BLOCK_M=16, BLOCK_N=bn, BLOCK_K=bk, GROUP_M=1)
                    for bn, bk, w, s in [(32, 256, 4, 4), (64, 128, 4, 4), (64, 256, 4, 3), (32, 128, 4, 5),
                                         (128, 128, 4, 3), (16, 256, 4, 4), (16, 512, 4, 3)]]
_TMA_CONFIGS = [Config.of(num_warps=w, num_stages=s, BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, GROUP_M=8)
                for bm, bn, bk, w, s in [(128, 128, 64, 8, 4), (128, 256, 64, 8, 3), (256, 128, 64, 8, 3),
                                         (128, 128, 64, 4, 4), (128, 64, 64, 4, 5), (64, 128, 64, 4, 5),
                                         # 33-256 rows (inference at small batch): 64 x 64 tiles give a
                                         # 128 x 3072 product 96 programs for 132 SMs (cuBLAS picks
                                         # 64 x 64 there; our 64 x 128 took 7.7 us against its 5.2 + GELU)
                                         (64, 64, 64, 4, 6)]]
# Two programs per SM (PER_SM, not a kernel parameter): while one runs its epilogue, the
# other keeps the tensor cores busy. Smaller pipelines, so that two fit in shared memory.
_TMA_CONFIGS += [Config.of(num_warps=w, num_stages=s, BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=64, GROUP_M=8, PER_SM=2)
                 for bm, bn, w, s in [(128, 128, 4, 2), (128, 64, 4, 3), (64, 128, 4, 3)]]
# Gated products keep two accumulators (gate and up): half-width tiles of the same area.
_TMA_GATED_CONFIGS = [Config.of(num_warps=w, num_stages=s, BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, GROUP_M=8)
                      for bm, bn, bk, w, s in [(128, 128, 64, 8, 3), (128, 64, 64, 8, 4), (128, 64, 64, 4, 4),
                                               (64, 128, 64, 4, 4), (256, 64, 64, 8, 3), (128, 128, 64, 8, 4)]]
_TMA_GATED_CONFIGS += [Config.of(num_warps=4, num_stages=3, BLOCK_M=128, BLOCK_N=64, BLOCK_K=64, GROUP_M=8, PER_SM=2)]
_INTERPRETER_CONFIG = Config.of(num_warps=4, num_stages=1, BLOCK_M=16, BLOCK_N=16, BLOCK_K=16, GROUP_M=4)
# Products of real models in the interpreter (a MiniLM layer: 30 x 1536 x 384) take larger
# tiles: numpy's cost is per tile, and 16-wide tiles made them 15x slower. Test shapes stay small.
_INTERPRETER_CONFIG_LARGE = Config.of(num_warps=4, num_stages=1, BLOCK_M=32, BLOCK_N=64, BLOCK_K=64, GROUP_M=4)
_INTERPRETER_LARGE_MNK = 2 ** 22
_tuner = Autotuner("matmul", _CONFIGS)
_small_tuner = Autotuner("matmul_small_m", _SMALL_M_CONFIGS)
_tma_tuner = Autotuner("matmul_tma", _TMA_CONFIGS)
_tma_gated_tuner = Autotuner("matmul_tma_gated", _TMA_GATED_CONFIGS)
SMALL_M = 32  # at most this many rows: the small-M configs
_DTYPE_NAMES = {torch.float16: "torch.float16", torch.bfloat16: "torch.bfloat16", torch.float32: "torch.float32"}


# TRITONIC_GEMM: "auto" (default: the Hopper path where it applies), "tma" (also in the
# interpreter, for tests), "portable" (never the Hopper path). Read at import; tests set it here.
GEMM_CHOICE = os.environ.get("TRITONIC_GEMM", "auto").strip().lower()


def _tma_layout(t: torch.Tensor, major: int) -> bool:
    """Can a tensor descriptor address the 2-D view ``t`` whose dimension ``major`` is the
    contiguous one? (unit stride there, 16-byte aligned base and other stride)."""
    other = 1 - major
    return (t.stride(major) == 1 and (t.stride(other) * t.element_size()) % 16 == 0
            and t.data_ptr() % 16 == 0 and t.shape[other] > 0)


def _use_tma(a, b, out, z, batch, gated=False) -> bool:
    choice = GEMM_CHOICE
    if choice == "portable" or batch != 1 or a.dtype not in (torch.float16, torch.bfloat16):
        return False
    a2, b2, c2 = (a, b, out) if a.dim() == 2 else (a[0], b[0], out[0])
    if interpreter_active():
        if choice != "tma":
            return False
    elif choice != "tma" and (a2.shape[0] <= SMALL_M or not has_tma(a.device.index or 0)):
        return False
    ok = (_tma_layout(a2, 1) or _tma_layout(a2, 0)) and (_tma_layout(b2, 0) or _tma_layout(b2, 1))
    if gated == 1:  # the weight (2N, K) must be K-major, and the up half of z 16-byte aligned too
        ok = ok and _tma_layout(b2, 0) and (z is None or (_tma_layout(z, 1) and _tma_layout(z[:, c2.shape[1]:], 1)))
    elif gated == 2:
        ok = ok and _tma_layout(b2, 0) and (z is None or _tma_layout(z, 1))
    else:
        ok = ok and (z is None or (z.stride() == c2.stride() and _tma_layout(z, 1)))
    return ok and _tma_layout(c2, 1)


# ----------------------------------------------------------------------------- launches


def _gemm(a, b, out, *, bias=None, residual=None, z=None, act=0, batch=1, gated=False):
    """out[i] = act(a[i] @ b[i] + bias) + residual for strided 3-D views (batch, rows, cols),
    or 2-D ones (one product).

    ``z``: keep the pre-activation; ``gated``: out = act(a @ gate) * (a @ up) where ``b``
    holds the gate columns then the up columns (1) or the two alternating (2); z then holds
    both, in ``b``'s column order."""
    traced = is_traced(a, b)
    if not traced and PLANS_ON:  # a call like an earlier one (shapes, strides, alignments, flags): its launch again
        pkey = (a.shape, a.stride(), b.shape, b.stride(), out.shape, out.stride(), a.dtype, a.device,
                a.data_ptr() & 15, b.data_ptr() & 15, out.data_ptr() & 15, bias is None,
                None if residual is None else residual.stride(), None if z is None else (z.stride(), z.data_ptr() & 15),
                act, batch, gated, _pdl.ACTIVE, GEMM_CHOICE, torch.backends.cuda.matmul.allow_tf32,
                interpreter_active())
        plan = _PLANS.get(pkey)
        if plan is not None:
            plan(a, b, out, bias, residual, z)
            return out
    flat = a.dim() == 2
    if flat:
        (M, K), N2 = a.shape, b.shape[1]
    else:
        _, M, K = a.shape
        N2 = b.shape[2]
    N = N2 // 2 if gated == 1 else N2
    precision = "tf32" if a.dtype != torch.float32 or torch.backends.cuda.matmul.allow_tf32 else "ieee"
    pdl = _pdl.pdl_meta(a.device, M) if _pdl.ACTIVE and not traced else _pdl.OFF
    if not traced and _use_tma(a, b, out, z, batch, gated):
        run = _tma_runner(a, b, out, bias, residual, z, act, gated, pdl)
        tuner = _tma_gated_tuner if gated == 1 else _tma_tuner
    else:  # the portable kernel (its arguments are built only here: host time on every call)
        if flat:  # one product: batch strides 0 (no [None] views: they cost host time)
            sa, sb, so = (0, *a.stride()), (0, *b.stride()), (0, *out.stride())
        else:
            sa, sb, so = a.stride(), b.stride(), out.stride()
        sr = residual.stride() if residual is not None else (0, 0)
        tail = (M, N, K, *sa, *sb, *so, *sr, z.stride(0) if z is not None and gated else 0)
        flags = dict(ACT=act, HAS_BIAS=bias is not None, HAS_RESIDUAL=residual is not None, STORE_Z=z is not None,
                     GATED=gated, PRECISION=precision,
                     ROUND_TF32=a.dtype == torch.float32 and precision == "tf32" and not interpreter_active())
        flags.update(pdl)  # (USE_PDL=False too: see runtime/pdl.OFF)

        def run(config):
            kw = shared_meta({**flags, **config.meta()})
            grid = (_cdiv(M, kw["BLOCK_M"]) * _cdiv(N, kw["BLOCK_N"]), batch)

            def plan(a, b, out, bias, residual, z):
                launch_meta(_matmul, grid, kw, a, b, out, bias, residual, z, *tail)  # (kw: this plan's, never changed)
            plan(a, b, out, bias, residual, z)
            return plan

        tuner = _small_tuner if M <= SMALL_M else _tuner
    key = None
    if interpreter_active() or traced:
        config = tuner.configs[0]
        if interpreter_active():
            config = _INTERPRETER_CONFIG_LARGE if M * N * K >= _INTERPRETER_LARGE_MNK and not gated \
                else _INTERPRETER_CONFIG
    else:
        key = (bucket(M), N, K, _DTYPE_NAMES[a.dtype], precision, act, bias is not None, residual is not None,
               z is not None, gated)
        config = tuner.chosen.get(key)
        if config is None:  # not decided in this process yet (no timing inside a CUDA graph)
            config = tuner.pick(key, lambda c: time_run(run, c), may_tune=not torch.cuda.is_current_stream_capturing())
    plan, config = run_with_fallback(tuner, key, config, run)  # (a config too large for this GPU, say)
    if not traced and PLANS_ON and (key is None or tuner.chosen.get(key) is config) and len(_PLANS) < 4096:
        _PLANS[pkey] = plan  # (only a decided config: one picked inside a capture may be tuned later)
    return out


# (call key -> plan(a, b, out, bias, residual, z)): the launch of a call like an earlier one,
# everything but the tensors worked out (descriptor shapes, grid, keywords): ~18 -> ~6 us of
# host time per product on the CPU box, launches stubbed. Keyed by all _gemm's decisions read.
_PLANS: dict = {}
PLANS_ON = os.environ.get("TRITONIC_GEMM_PLANS", "1").strip() != "0"  # 0: build every launch afresh


# TRITONIC_PLAIN_GEMM=triton keeps the backward's plain products on our kernels (for A/B runs)
_CUBLAS_PLAIN = os.environ.get("TRITONIC_PLAIN_GEMM", "cublas").strip().lower() != "triton"


def _plain_gemm(a, b, out):
    """``out = a @ b`` with no epilogue, for the backward's products: cuBLAS on the GPU in
    16-bit, our kernel in the interpreter and while torch traces. Our kernels earn their
    place by fusing epilogues (bias, activation, kept pre-activation, gating); a bare product
    has none, and on the H200 cuBLAS ran GPT-2's MLP backward products at 8192×3072×768 in
    ~56 µs against our 70."""
    if _CUBLAS_PLAIN and a.is_cuda and a.dtype in (torch.float16, torch.bfloat16) and not interpreter_active() \
            and not is_traced(a, b):
        return torch.mm(a, b, out=out)
    return _gemm(a, b, out)


def _tma_runner(a, b, out, bias, residual, z, act, gated, pdl=None):
    """A launch of the Hopper kernel for one config (descriptors depend on the block shape)."""
    a2, b2, c2 = (a, b, out) if a.dim() == 2 else (a[0], b[0], out[0])
    M, K = a2.shape
    N = b2.shape[1] if gated == 2 else c2.shape[1]  # the kernel's N: columns of the product
    a_kmajor = _tma_layout(a2, 1)
    b_kmajor = not _tma_layout(b2, 1)  # B (K, N) with unit stride along K: a Linear weight

    def layout(t, kmajor, rows, cols):
        """(shape, strides, block) of a descriptor over the 2-D view t (rows x cols) whose
        contiguous dim is cols if kmajor."""
        if kmajor:
            return [t.shape[0], t.shape[1]], [t.stride(0), 1], [rows, cols]
        return [t.shape[1], t.shape[0]], [t.stride(1), 1], [cols, rows]

    def run(config):
        meta = config.meta()
        per_sm = meta.pop("PER_SM", 1)
        bm, bn, bk = meta["BLOCK_M"], meta["BLOCK_N"], meta["BLOCK_K"]
        la = layout(a2, a_kmajor, bm, bk)
        # B is (K, N); "kmajor" descriptors run over its transpose, the (N, K) weight (same address)
        lb = layout(b2.t(), True, bn, bk) if b_kmajor else ([K, N], [b2.stride(0), 1], [bk, bn])
        lc = [M, c2.shape[1]], [c2.stride(0), 1], [bm, bn // 2 if gated == 2 else bn]
        lz = ([M, N], [z.stride(0), 1], [bm, bn]) if z is not None else None
        up = lz is not None and gated == 1  # the up half of z, N columns on
        tiles = _cdiv(M, bm) * _cdiv(N, bn)
        grid = (max(1, min(tiles, per_sm * num_sms(a.device.index))),)
        tail = (M, N, K, residual.stride(0) if residual is not None else 0, grid[0])
        kw = shared_meta(dict(ACT=act, HAS_BIAS=bias is not None, HAS_RESIDUAL=residual is not None,
                              STORE_Z=z is not None, GATED=gated, A_KMAJOR=a_kmajor, B_KMAJOR=b_kmajor, **meta,
                              **(pdl or _pdl.OFF)))

        def plan(a, b, out, bias, residual, z):  # (a descriptor's base gives only the address and dtype)
            launch_meta(_matmul_tma, grid, kw, descriptor(a, *la), descriptor(b, *lb), descriptor(out, *lc),
                        descriptor(z, *lz) if lz else None, descriptor(z[:, N:], *lz) if up else None,
                        bias, residual, *tail)
        plan(a, b, out, bias, residual, z)
        return plan

    return run


def _cdiv(a, b):
    return (a + b - 1) // b


# ----------------------------------------------------------------------------- public API


def _rows(t: torch.Tensor) -> torch.Tensor:
    """Unit stride along the last dimension (what the gated kernels address rows by)."""
    return t if t.stride(-1) == 1 else t.contiguous()


# ----------------------------------------------------------------------------- matmul


def _mm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a @ b with a (B, m, k) and b (B, k, n) strided views (batch stride 0 shares b)."""
    out = empty((a.shape[0], a.shape[1], b.shape[2]), dtype=a.dtype, device=a.device)
    return _gemm(a, b, out, batch=a.shape[0])


def _matmul_fwd(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return _mm(a, b if b.dim() == 3 else b[None].expand(a.shape[0], *b.shape))


def _matmul_bwd(dc: torch.Tensor, a: torch.Tensor, b: torch.Tensor, need_a: bool,
                need_b: bool) -> tuple[torch.Tensor, torch.Tensor]:
    da = db = a.new_empty(0)
    if need_a:  # dA = dC @ B^T
        bt = b.transpose(-1, -2)
        da = _mm(dc, bt if bt.dim() == 3 else bt[None].expand(a.shape[0], *bt.shape))
    if need_b:
        if b.dim() == 3:  # dB = A^T @ dC per batch
            db = _mm(a.transpose(1, 2), dc)
        else:  # b shared by every batch: dB = sum_b A_b^T dC_b = (A as rows)^T @ (dC as rows)
            k, n = b.shape
            db = _mm(a.reshape(1, -1, k).transpose(1, 2), dc.reshape(1, -1, n))[0]
    return da, db


def _mm_setup(ctx, inputs, output, backward_impl):
    ctx.backward_impl = backward_impl
    ctx.save_for_backward(*inputs)


def _mm_grad(ctx, dc):
    a, b = ctx.saved_tensors
    da, db = ctx.backward_impl(dc.contiguous(), a, b, *ctx.needs_input_grad[:2])
    return (da if ctx.needs_input_grad[0] else None), (db if ctx.needs_input_grad[1] else None)


_MatmulFn = register("matmul", _matmul_fwd, _matmul_bwd, _mm_setup, _mm_grad)


def matmul(a, b):
    """``a @ b`` for 2-D ``(m, k) @ (k, n)`` and batched ``(B, m, k) @ (B, k, n)`` or
    ``(B, m, k) @ (k, n)``; any strides; with gradients for both operands."""
    check_tensor("matmul", "a", a, min_dim=2)
    check_tensor("matmul", "b", b, min_dim=2)
    if a.dim() > 3 or b.dim() > 3 or (b.dim() == 3 and a.dim() != 3):
        raise ValueError(f"matmul: takes (m, k) @ (k, n), (B, m, k) @ (B, k, n) or (B, m, k) @ (k, n); "
                         f"got {tuple(a.shape)} @ {tuple(b.shape)}")
    if a.shape[-1] != b.shape[-2]:
        raise ValueError(f"matmul: inner dimensions differ: a {tuple(a.shape)} has k={a.shape[-1]}, "
                         f"b {tuple(b.shape)} has k={b.shape[-2]}")
    if a.dim() == 3 and b.dim() == 3 and a.shape[0] != b.shape[0]:
        raise ValueError(f"matmul: batch sizes differ: {a.shape[0]} and {b.shape[0]}")
    if a.dtype != b.dtype:
        raise TypeError(f"matmul: a and b must have one dtype, got {a.dtype} and {b.dtype}")
    check_same_device("matmul", "a", a, b=b)
    check_kernel_device("matmul", "a", a)
    if a.numel() == 0 or b.numel() == 0:
        return torch.matmul(a, b)
    if a.dtype not in KERNEL_DTYPES:
        warn_once(("matmul", "dtype"), f"matmul: the kernels take float16, bfloat16 and float32; got {a.dtype}, "
                  f"so torch.matmul runs instead")
        return torch.matmul(a, b)
    a3 = a if a.dim() == 3 else a[None]
    if torch.compiler.is_compiling() or is_traced(a, b):
        out = torch.ops.tritonic.matmul(a3, b)
    elif torch.is_grad_enabled() and (a.requires_grad or b.requires_grad):
        out = _MatmulFn.apply(a3, b)
    else:
        out = _matmul_fwd(a3, b)
    return out if a.dim() == 3 else out[0]
