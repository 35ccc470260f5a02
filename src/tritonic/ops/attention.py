"""Scaled dot-product attention in the SDPA layout ``(B, H, S, D)``.

    o = attention(q, k, v, causal=True)                       # GPT-2 / Llama
    o = attention(q, k, v, mask=key_padding[:, None, None])   # BERT: True = attend
    o = attention(q, k, v, bias=position_bias, scale=1.0)     # T5: additive bias, no 1/sqrt(d)
    o = attention(q, k, v, alibi_slopes=slopes, causal=True)  # ALiBi
    o = attention(q, k, v, causal=True, window=4096)          # sliding window (Mistral)

``k``/``v`` may have fewer heads than ``q`` (GQA/MQA) when that number divides H. Causal
and window limits are aligned to the bottom-right corner when Sq != Sk (query i sits at key
position i + Sk - Sq). Rows whose keys are all masked give zeros.

Forward and backward are Triton flash-attention kernels (``kernels/attention.py``); the
bias gets its gradient when it requires one. ``attention`` is registered as the custom op
``tritonic::attention`` (with its backward) for ``torch.compile``; ``attention_varlen``
is not registered yet (``torch.compile`` traces its reference). Decoding over a KV cache:
``ops/attention_decode.py``.
"""

from __future__ import annotations

import math
import os

import torch


from tritonic.kernels.attention import _attn_fwd
from tritonic.kernels.attention_bwd import _attn_bwd_delta, _attn_bwd_dkdv, _attn_bwd_dq
from tritonic.ops import attention_ws as _ws
from tritonic.ops._register import register
from tritonic.runtime import empty, has_tma, interpreter_active, warn_once
from tritonic.runtime.autotune import Autotuner, Config, bucket, run_with_fallback, time_run
from tritonic.runtime.checks import KERNEL_DTYPES, check_kernel_device, check_same_device, check_tensor
from tritonic.runtime.launcher import descriptor, is_traced, launch
from tritonic.runtime import pdl as _pdl

__all__ = ["attention", "attention_reference", "attention_varlen", "attention_varlen_reference"]

MAX_HEAD_DIM = 256


def attention_reference(q, k, v, *, causal=False, mask=None, bias=None, alibi_slopes=None, window=None,
                        scale=None):
    """PyTorch: the full score matrix, in the inputs' dtype (float64 inputs for a reference)."""
    B, H, Sq, D = q.shape
    Hk, Sk = k.shape[1], k.shape[2]
    if Hk != H:
        k = k.repeat_interleave(H // Hk, dim=1)
        v = v.repeat_interleave(H // Hk, dim=1)
    scale = 1.0 / math.sqrt(D) if scale is None else scale
    s = torch.matmul(q, k.transpose(-1, -2)) * scale
    pos = torch.arange(Sq, device=q.device)[:, None] + (Sk - Sq)
    key = torch.arange(Sk, device=q.device)[None, :]
    keep = torch.ones(Sq, Sk, dtype=torch.bool, device=q.device)
    if causal:
        keep = keep & (key <= pos)
    if window is not None:
        keep = keep & (key > pos - window)
        if not causal:
            keep = keep & (key < pos + window)
    keep = keep.expand(B, H, Sq, Sk)
    if mask is not None:
        keep = keep & mask
    if bias is not None:
        s = s + bias
    if alibi_slopes is not None:
        s = s - alibi_slopes.to(s.dtype)[None, :, None, None] * (pos - key).abs().to(s.dtype)
    s = s.masked_fill(~keep, float("-inf"))
    p = torch.softmax(s, dim=-1).nan_to_num(0.0)  # rows with every key masked: zeros
    return torch.matmul(p, v)


def _bcast(name, t, B, H, Sq, Sk):
    """``t`` expanded to (B, H, Sq, Sk), or an error that shows both shapes."""
    if t.dim() <= 4:
        try:
            return t.expand(B, H, Sq, Sk)
        except RuntimeError:
            pass
    raise ValueError(f"attention: {name} of shape {tuple(t.shape)} does not broadcast to (B, H, Sq, Sk) = "
                     f"{(B, H, Sq, Sk)}")


def _check_qkv(op, named, layout, head_axis, scale):
    """What every attention entry point checks of its three inputs: tensors of the rank
    ``layout`` names, one dtype, key/value heads (at ``head_axis``) that divide the query
    heads, a head dim the kernels take; and a positive, finite ``scale`` (or None)."""
    if scale is not None:
        if isinstance(scale, bool) or not isinstance(scale, (int, float)):
            raise TypeError(f"{op}: scale must be a number, got {type(scale).__name__}")
        if not (0 < scale < math.inf):
            raise ValueError(f"{op}: scale must be positive and finite, got {scale!r}")
    for name, t in named:
        check_tensor(op, name, t)
        if t.dim() != layout.count(",") + 1:
            raise ValueError(f"{op}: {name} must be {layout.count(',') + 1}-D {layout}, got shape {tuple(t.shape)}")
    (qn, q), (kn, k), (vn, v) = named
    if q.dtype != k.dtype or q.dtype != v.dtype:
        raise TypeError(f"{op}: {qn}, {kn}, {vn} must have one dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if q.shape[head_axis] % k.shape[head_axis]:
        raise ValueError(f"{op}: {qn} has {q.shape[head_axis]} heads, which {k.shape[head_axis]} key/value heads do "
                         f"not divide (grouped-query attention needs H % H_kv == 0)")
    if q.shape[-1] > MAX_HEAD_DIM:
        raise ValueError(f"{op}: head dim {q.shape[-1]} is above {MAX_HEAD_DIM}, the largest the kernels take")


def _check(q, k, v, mask, bias, alibi_slopes, window, scale):
    op = "attention"
    _check_qkv(op, (("q", q), ("k", k), ("v", v)), "(B, H, S, D)", 1, scale)
    B, H, Sq, D = q.shape
    if k.shape[0] != B or v.shape[0] != B or k.shape[1] != v.shape[1] or k.shape[2] != v.shape[2]:
        raise ValueError(f"attention: q {tuple(q.shape)}, k {tuple(k.shape)} and v {tuple(v.shape)} disagree on "
                         f"batch, key/value heads or key length")
    if k.shape[3] != D or v.shape[3] != D:
        raise ValueError(f"attention: head dims differ: q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}")
    Sk = k.shape[2]
    if mask is not None:
        if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
            raise TypeError("attention: mask must be a boolean tensor (True = attend); add a float mask as bias")
        _bcast("mask", mask, B, H, Sq, Sk)
    if bias is not None:
        check_tensor(op, "bias", bias)
        _bcast("bias", bias, B, H, Sq, Sk)
    if alibi_slopes is not None:
        check_tensor(op, "alibi_slopes", alibi_slopes)
        if tuple(alibi_slopes.shape) != (H,):
            raise ValueError(f"attention: alibi_slopes must have shape ({H},) (one per query head), "
                             f"got {tuple(alibi_slopes.shape)}")
    if window is not None and (not isinstance(window, int) or window < 1):
        raise ValueError(f"attention: window must be a positive int, got {window!r}")
    check_same_device(op, "q", q, k=k, v=v, mask=mask, bias=bias, alibi_slopes=alibi_slopes)
    check_kernel_device(op, "q", q)
    if q.dtype not in KERNEL_DTYPES:
        warn_once((op, "dtype"), f"attention: the kernels take float16, bfloat16 and float32; got {q.dtype}, "
                  f"so PyTorch's implementation runs instead")
        return False
    return q.numel() > 0 and k.numel() > 0


def _bhm(t: torch.Tensor, varlen) -> tuple:
    """Strides of ``t`` as (batch, head, row[, d]): packed (total, H[, D]) tensors have no batch
    stride (rows of sequence b start at its cumulative offset)."""
    if varlen is None:
        return t.stride()
    st = t.stride()
    return (0, st[1], st[0], *st[2:])


def _tma_kv(k, v, varlen) -> bool:
    """Load K/V tiles through tensor descriptors? TRITONIC_ATTENTION_TMA: "auto" (default:
    dense inputs on Hopper or later whose layout a descriptor can address), "1" (also in the
    interpreter, for tests), "0" (never)."""
    choice = os.environ.get("TRITONIC_ATTENTION_TMA", "auto").strip().lower()
    if choice in ("0", "off", "false") or varlen is not None or is_traced(k, v):
        return False
    if choice not in ("1", "on", "true"):
        if interpreter_active() or k.device.type != "cuda" or not has_tma(k.device.index or 0):
            return False
    size = k.element_size()  # (a broadcast dim, stride 0, takes pointer loads: a gradient expanded over the batch)
    return all(t.stride(-1) == 1 and t.data_ptr() % 16 == 0 and
               all(st * size % 16 == 0 and (st > 0 or n == 1) for st, n in zip(t.stride()[:-1], t.shape[:-1]))
               for t in (k, v))


def _forward_impl(q, k, v, mask, bias, alibi_slopes, window, scale, causal, varlen=None):
    """(output, row log-sum-exp) from the Triton kernel. ``varlen``: (cu_seqlens_q,
    cu_seqlens_k, max_seqlen_q, max_seqlen_k) for packed (total, H, D) tensors."""
    B, H, Sq, Sk, D, Hk = _dims(q, k, varlen)
    m, bb, slopes, strides, scalars, precision, block_d = _launch_setup(q, k, mask, bias, alibi_slopes, window,
                                                                         scale, varlen)
    if varlen is None:  # stored (B, S, H, D): the caller's transpose back to (B, S, H·D) is free
        o = empty((B, Sq, H, D), dtype=q.dtype, device=q.device).transpose(1, 2)
    else:
        o = empty(tuple(q.shape), dtype=q.dtype, device=q.device)
    lse = empty(tuple(q.shape[:-1]), dtype=torch.float32, device=q.device)
    cu_q, cu_k = (varlen[0], varlen[1]) if varlen is not None else (None, None)
    flags = dict(VARLEN=varlen is not None, CAUSAL=bool(causal), HAS_MASK=m is not None,
                 KEY_PADDING=_key_padding(m), HAS_BIAS=bb is not None,
                 HAS_ALIBI=slopes is not None, HAS_WINDOW=window is not None, PRECISION=precision)

    tma = _tma_kv(k, v, varlen)
    flags["TMA_KV"] = tma
    head_major = _head_major(bb, B, varlen)
    traced = is_traced(q, k, v)
    pdl = (_pdl.pdl_meta(q.device, B * Sq if varlen is None else q.shape[0]) if _pdl.ACTIVE and not traced
           else _pdl.OFF)
    if _ws.usable(q, k, m, bb, slopes, window, varlen, causal, tma, traced) and _ws.forward_or_off(
            q, k, v, o, lse, m, bb, scalars, block_d, causal, pdl, traced):
        return o, lse

    def run(config):
        meta = config.meta()
        kd = vd = None
        if tma:  # the descriptors' block follows the config's BLOCK_N
            kd, vd = _ws.head_tiles(k, meta["BLOCK_N"], block_d), _ws.head_tiles(v, meta["BLOCK_N"], block_d)
        launch(_attn_fwd, ((Sq + meta["BLOCK_M"] - 1) // meta["BLOCK_M"], B * H), q, k, v, o, lse, m, bb, slopes,
               cu_q, cu_k, kd, vd, *_bhm(lse, varlen), *_bhm(q, varlen), *_bhm(k, varlen), *_bhm(v, varlen),
               *_bhm(o, varlen), *strides, *scalars, **flags, BLOCK_D=block_d, **meta, **pdl,
               HEAD_MAJOR=head_major)

    _tuned_run(_fwd_tuner(block_d), run, (q.dtype, Sq, Sk, block_d, tuple(flags.values())), traced)
    return o, lse


# Launch parameters (BLOCK_M, BLOCK_N, warps, stages), autotuned per (dtype, bucketed lengths,
# head dim, flags); the lists for wide heads hold smaller tiles (shared memory).
def _attn_configs(rows):
    return [Config.of(num_warps=w, num_stages=st, BLOCK_M=bm, BLOCK_N=bn) for bm, bn, w, st in rows]


_FWD_TUNERS = {
    # the last two: short sequences at batch 1, where BLOCK_M = 128 leaves a grid of one program per head
    "narrow": Autotuner("attention_fwd", _attn_configs([(128, 64, 8, 3), (128, 128, 8, 2), (64, 64, 4, 3),
                                                        (128, 32, 4, 3), (64, 128, 4, 2), (128, 64, 4, 3),
                                                        (32, 64, 4, 3), (16, 64, 4, 3)])),
    "wide": Autotuner("attention_fwd_d256", _attn_configs([(64, 32, 4, 2), (64, 64, 8, 2), (128, 32, 8, 2)])),
}
# The backward's dQ either comes from a second kernel that recomputes the scores
# (ATOMIC_DQ=0) or is added from the dK/dV pass into a float32 accumulator with atomics
# (ATOMIC_DQ=1: five products per block instead of seven, plus a memset and a conversion);
# the tuner times both. TRITONIC_ATTENTION_DQ=atomic / kernel forces one. Atomics add in any
# order, so under torch.use_deterministic_algorithms(True) the second kernel always runs.
_BWD_TUNERS = {  # (pruned at 435f16d: the configs at >= 1.36x the best on every key H100-timed in the fifteenth
    # session went, 8-warp 64-row ones above all; 64x64 at 3 stages added: fewest spills with TMA_QDO)
    "narrow": Autotuner("attention_bwd2", [
        *_attn_configs([(64, 64, 4, 2), (128, 64, 8, 2), (64, 32, 4, 2), (64, 64, 4, 3),
                        (32, 64, 4, 2)]),  # (the smallest: what fits with float32 inputs at d128)
        # dK/dV on 64x64 blocks with 4 warps, dQ on its own larger blocks with 8 (offline, sm_90,
        # d128: 218 / 255 registers and no spills, where dQ's 128-row blocks with 4 warps spill)
        *(Config.of(num_warps=4, num_stages=2, BLOCK_M=64, BLOCK_N=64, DQ_BLOCK_M=qm, DQ_BLOCK_N=qn,
                    DQ_WARPS=8, DQ_STAGES=2) for qm, qn in [(128, 64), (128, 128)]),
        *(Config.of(num_warps=w, num_stages=st, BLOCK_M=bm, BLOCK_N=bn, ATOMIC_DQ=1)
          for bm, bn, w, st in [(64, 64, 4, 2), (128, 128, 8, 2), (64, 64, 4, 3)])]),
    "wide": Autotuner("attention_bwd_d256", _attn_configs([(32, 32, 4, 2), (32, 32, 8, 1), (64, 32, 8, 1)])),
}
_INTERPRETER_CONFIG = Config.of(num_warps=4, num_stages=1, BLOCK_M=16, BLOCK_N=16)
_DQ_MODE = {"atomic": "atomic", "kernel": "kernel"}.get(os.environ.get("TRITONIC_ATTENTION_DQ", "").strip().lower())


def _head_major(bb, B, varlen) -> bool:
    """Order the programs head-major (kernels/attention._heads)? Where a bias is shared by the
    batch (T5's relative-position bias, (1, H, Sq, Sk)): the programs running together then read
    one head's bias, once from memory for the whole batch, instead of every head's for one
    batch entry (B times over). TRITONIC_ATTENTION_HEAD_MAJOR=0 keeps the batch-major order."""
    if os.environ.get("TRITONIC_ATTENTION_HEAD_MAJOR", "1").strip() == "0":
        return False
    return bb is not None and varlen is None and B > 1 and bb.stride(0) == 0


def _tma_dq(q, varlen, traced) -> bool:
    """Add the atomic dQ's blocks as bulk reduce-adds through a descriptor (TMA) rather than
    one atomic per element? TRITONIC_ATTENTION_TMA_DQ: "auto" (default: Hopper or later, dense,
    not traced, head dim a multiple of 4) or "0". Never in the interpreter, which has no
    descriptor reduce."""
    if os.environ.get("TRITONIC_ATTENTION_TMA_DQ", "auto").strip().lower() in ("0", "off", "false"):
        return False
    if varlen is not None or traced or interpreter_active() or q.device.type != "cuda":
        return False
    return has_tma(q.device.index or 0) and q.shape[-1] % 4 == 0 and q.numel() // q.shape[-1] < 2 ** 31


def _tma_bwd(q, k, v, do, varlen) -> bool:
    """The backward's tiles through descriptors: Q and dO in the dK/dV kernel (TMA_QDO), K and V
    in the dQ kernel (TMA_KV)? TRITONIC_ATTENTION_TMA_BWD: "auto" (default: wherever the
    forward's K/V descriptors apply, ``_tma_kv``, to both pairs) or "0". The per-element
    addresses of pointer loads stay out of registers: offline (scripts/bwd_compile_check.py,
    sm_90) the dK/dV kernel's spills at d128, 64x64 blocks, 4 warps, fall from 680 to 120 bytes
    (784 to 184 with TMA_DQ), at d64 from 44 to none. On an H100 (6d68985, B=4 H=16 S=4096,
    best config each) the backward took 3.23 against 3.62 ms at d128, 1.73 / 1.92 causal,
    1.85 / 2.04 at d64, 1.03 / 1.11 causal d64."""
    if os.environ.get("TRITONIC_ATTENTION_TMA_BWD", "auto").strip().lower() in ("0", "off", "false"):
        return False
    return _tma_kv(q, do, varlen) and _tma_kv(k, v, varlen)


def _fwd_tuner(block_d):
    return _FWD_TUNERS["wide" if block_d > 128 else "narrow"]


def _bwd_tuner(block_d):
    return _BWD_TUNERS["wide" if block_d > 128 else "narrow"]


def _tuned_run(tuner, run, key, traced: bool = False) -> None:
    """Run with the tuned config for ``key`` (times the configs the first time, outside
    CUDA-graph capture and tracing, whose graph would record every timed launch); a config that
    does not build here (out of shared memory, a compiler failure) falls back to the first one
    that does, with a warning for a compiler failure. Each run writes every output afresh (the
    atomic dQ's accumulator is zeroed inside it), so a retry after a partial run is safe."""
    if interpreter_active():
        run(_INTERPRETER_CONFIG)
        return
    dtype, Sq, Sk, *rest = key
    key = (str(dtype), bucket(Sq), bucket(Sk), *rest)
    config = tuner.chosen.get(key)
    if config is None:
        config = tuner.pick(key, lambda c: time_run(run, c),
                            may_tune=not (traced or torch.cuda.is_current_stream_capturing()))
    run_with_fallback(tuner, key, config, run)  # (ptxas 12.8 crashed on masked-backward tiles once, 90a7dcd)


def _dims(q, k, varlen):
    """(B, H, Sq, Sk, D, H_kv); with ``varlen`` the lengths are the longest sequences'."""
    if varlen is None:
        B, H, Sq, D = q.shape
        return B, H, Sq, k.shape[2], D, k.shape[1]
    cu_q, _, max_q, max_k = varlen
    return cu_q.shape[0] - 1, q.shape[1], max_q, max_k, q.shape[2], k.shape[1]


def _key_padding(m) -> bool:
    """Is the (expanded) mask one row of keys per batch, shared by every head and query?"""
    return m is not None and (m.shape[1] == 1 or m.stride(1) == 0) and (m.shape[2] == 1 or m.stride(2) == 0)


def _launch_setup(q, k, mask, bias, alibi_slopes, window, scale, varlen=None):
    """What the forward and backward launches share: broadcast views, slopes, scalars, blocks."""
    B, H, Sq, Sk, D, Hk = _dims(q, k, varlen)
    m = None if mask is None else mask.expand(B, H, Sq, Sk)
    bb = None if bias is None else bias.expand(B, H, Sq, Sk)
    slopes = None if alibi_slopes is None else alibi_slopes.to(torch.float32).contiguous()
    zeros4 = (0, 0, 0, 0)
    strides = (*(m.stride() if m is not None else zeros4), *(bb.stride() if bb is not None else zeros4))
    scalars = (H, H // Hk, Sq, Sk, D, float(1.0 / math.sqrt(D) if scale is None else scale),
               int(window) if window is not None else 0)
    precision = "tf32" if q.dtype != torch.float32 or torch.backends.cuda.matmul.allow_tf32 else "ieee"
    block_d = max(16, 1 << (D - 1).bit_length())
    return m, bb, slopes, strides, scalars, precision, block_d


def _delta(do, o, block_d):
    """rowsum(dO * O) in float32, shaped like the log-sum-exp (contiguous): one small kernel
    that reads ``o`` and ``do`` in their own strides (unit stride along D)."""
    if o.stride(-1) != 1 or do.stride(-1) != 1:
        return (do.float() * o.float()).sum(-1)
    delta = empty(tuple(o.shape[:-1]), dtype=torch.float32, device=o.device)
    rows, D = delta.numel(), o.shape[-1]
    if rows == 0:
        return delta
    so, sd = o.stride()[:-1], do.stride()[:-1]
    if o.dim() == 3:  # packed (total, H, D): (1, total, H)
        so, sd = (0, *so), (0, *sd)
    n1, n2 = o.shape[-3] if o.dim() == 4 else o.shape[0], o.shape[-2]
    block_r = max(1, 4096 // block_d)
    launch(_attn_bwd_delta, ((rows + block_r - 1) // block_r,), o, do, delta, rows, n1, n2, D, *so, *sd,
           BLOCK_R=block_r, BLOCK_D=block_d, num_warps=4)
    return delta


def _backward_impl(do, q, k, v, o, lse, mask, bias, alibi_slopes, window, scale, causal, need_dbias, varlen=None):
    """(dq, dk, dv, dbias as (B, H, Sq, Sk) float32 or None) from the two backward kernels."""
    B, H, Sq, Sk, D, Hk = _dims(q, k, varlen)
    m, bb, slopes, strides, scalars, precision, block_d = _launch_setup(q, k, mask, bias, alibi_slopes, window,
                                                                         scale, varlen)
    delta = _delta(do, o, block_d)  # rowsum(dO * O), laid out like lse
    dq = empty(tuple(q.shape), dtype=q.dtype, device=q.device)
    dk = empty(tuple(k.shape), dtype=k.dtype, device=k.device)
    dv = empty(tuple(v.shape), dtype=v.dtype, device=v.device)
    if not need_dbias and _ws.ENABLED_BWD and _ws.usable_bwd(q, k, v, do, lse, delta, m, bb, slopes, window,
                                                             varlen, causal, _tma_kv(k, v, varlen)):
        _ws.backward(q, k, v, do, lse, delta, dq, dk, dv, scalars, block_d, causal, is_traced(q, k, v))
        return dq, dk, dv, None
    dbias = torch.zeros((B, H, Sq, Sk), dtype=torch.float32, device=q.device) if need_dbias else None
    flags = dict(VARLEN=varlen is not None, CAUSAL=bool(causal), HAS_MASK=m is not None,
                 KEY_PADDING=_key_padding(m), HAS_BIAS=bb is not None,
                 HAS_ALIBI=slopes is not None, HAS_WINDOW=window is not None, PRECISION=precision)
    cu_q, cu_k = (varlen[0], varlen[1]) if varlen is not None else (None, None)
    common = (*_bhm(q, varlen), *_bhm(k, varlen), *_bhm(v, varlen), *_bhm(do, varlen), *strides, *scalars)
    traced = is_traced(q, k, v)
    tma_dq_ok = _tma_dq(q, varlen, traced)
    tma_bwd = _tma_bwd(q, k, v, do, varlen)
    head_major = _head_major(bb, B, varlen)

    def run(config):  # both kernels (or the one with atomic dQ) under one config, timed together
        meta = config.meta()
        atomic = meta.pop("ATOMIC_DQ", 0)  # popped in every mode: the launch passes its own
        dq_meta = meta  # the dQ kernel's blocks, warps and stages: the config's, or its DQ_* own
        if "DQ_BLOCK_M" in meta:
            dq_meta = {"BLOCK_M": meta.pop("DQ_BLOCK_M"), "BLOCK_N": meta.pop("DQ_BLOCK_N"),
                       "num_warps": meta.pop("DQ_WARPS"), "num_stages": meta.pop("DQ_STAGES")}
        atomic = atomic if _DQ_MODE is None else _DQ_MODE == "atomic"
        atomic = atomic and not torch.are_deterministic_algorithms_enabled()  # atomics add in any order
        bm, bn = meta["BLOCK_M"], meta["BLOCK_N"]
        acc = torch.zeros(tuple(dq.shape), dtype=torch.float32, device=q.device) if atomic else None
        tma_dq = bool(atomic) and tma_dq_ok
        acc_desc = descriptor(acc, [acc.numel() // D, D], [D, 1], [bm, block_d]) if tma_dq else None
        qd = dod = None
        if tma_bwd:
            qd, dod = _ws.head_tiles(q, bm, block_d), _ws.head_tiles(do, bm, block_d)
        launch(_attn_bwd_dkdv, ((Sk + bn - 1) // bn, B * Hk), q, k, v, do, lse, delta, dk, dv, dbias, acc, acc_desc,
               qd, dod, m, bb, slopes, cu_q, cu_k, *_bhm(lse, varlen), *_bhm(dk, varlen)[:3],
               *(_bhm(acc, varlen)[:3] if atomic else (0, 0, 0)), *common, **flags,
               HAS_DBIAS=need_dbias, ATOMIC_DQ=bool(atomic), TMA_DQ=tma_dq, TMA_QDO=tma_bwd, BLOCK_D=block_d,
               HEAD_MAJOR=head_major, **meta)
        if atomic:  # the accumulator holds dQ / scale in float32
            torch.mul(acc, scalars[5], out=dq)
        else:
            qm, qn = dq_meta["BLOCK_M"], dq_meta["BLOCK_N"]
            kd = vd = None
            if tma_bwd:
                kd, vd = _ws.head_tiles(k, qn, block_d), _ws.head_tiles(v, qn, block_d)
            launch(_attn_bwd_dq, ((Sq + qm - 1) // qm, B * H), q, k, v, do, lse, delta, dq, kd, vd, m, bb, slopes,
                   cu_q, cu_k, *_bhm(lse, varlen), *_bhm(dq, varlen)[:3], *common, **flags, TMA_KV=tma_bwd,
                   BLOCK_D=block_d, HEAD_MAJOR=head_major, **dq_meta)

    _tuned_run(_bwd_tuner(block_d), run, (q.dtype, Sq, Sk, block_d, need_dbias, tuple(flags.values())), traced)
    return dq, dk, dv, dbias


# ----------------------------------------------------------------------------- ops
# Registered as tritonic::attention / tritonic::attention_backward (torch.compile sees the
# Triton kernels); in eager mode the Function returned by register() runs the same code.
# window <= 0 stands for "no window" (custom op schemas take plain ints).


def _attn_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
             bias: torch.Tensor | None, alibi_slopes: torch.Tensor | None, window: int, scale: float,
             causal: bool) -> tuple[torch.Tensor, torch.Tensor]:
    return _forward_impl(q, k, v, mask, bias, alibi_slopes, window if window > 0 else None, scale, causal)


def _attn_op_bwd(do: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, o: torch.Tensor,
                 lse: torch.Tensor, mask: torch.Tensor | None, bias: torch.Tensor | None,
                 alibi_slopes: torch.Tensor | None, window: int, scale: float, causal: bool,
                 need_dbias: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    dq, dk, dv, dbias = _backward_impl(do, q, k, v, o, lse, mask, bias, alibi_slopes,
                                       window if window > 0 else None, scale, causal, need_dbias)
    if dbias is None:
        dbias = q.new_empty(0)
    elif bias is not None:  # a broadcast bias: sum over the broadcast dimensions
        dbias = dbias.sum_to_size(bias.shape).to(bias.dtype)
    return dq, dk, dv, dbias


def _attn_setup(ctx, inputs, output, backward_impl):
    q, k, v, mask, bias, alibi_slopes, window, scale, causal = inputs
    o, lse = output
    ctx.save_for_backward(q, k, v, o, lse, mask, bias, alibi_slopes)
    ctx.opts, ctx.backward_impl = (window, scale, causal), backward_impl


def _attn_grad(ctx, do, _dlse):
    q, k, v, o, lse, mask, bias, alibi_slopes = ctx.saved_tensors
    window, scale, causal = ctx.opts
    need = ctx.needs_input_grad
    need_dbias = bias is not None and need[4]
    do = torch.zeros_like(o) if do is None else (do if do.stride(-1) == 1 else do.contiguous())
    dq, dk, dv, dbias = ctx.backward_impl(do, q, k, v, o, lse, mask, bias, alibi_slopes, window, scale, causal,
                                          need_dbias)
    return (dq if need[0] else None, dk if need[1] else None, dv if need[2] else None, None,
            dbias if need_dbias else None, None, None, None, None)


_AttentionFn = register("attention", _attn_op, _attn_op_bwd, _attn_setup, _attn_grad, n_nondiff=1)


def attention(q, k, v, *, causal=False, mask=None, bias=None, alibi_slopes=None, window=None, scale=None):
    """``softmax(scale * q @ k^T + bias + alibi, masked) @ v`` for ``(B, H, S, D)`` tensors.

    ``mask``: boolean, True = attend, broadcastable to (B, H, Sq, Sk). ``bias``: additive,
    broadcastable the same way (gradients flow to it). ``alibi_slopes``: (H,), adds
    ``-slope * |i - j|``. ``window``: keys more than ``window - 1`` positions before the
    query (and, without ``causal``, after it) are masked. ``scale`` defaults to 1/sqrt(D)."""
    if not _check(q, k, v, mask, bias, alibi_slopes, window, scale):
        return attention_reference(q, k, v, causal=causal, mask=mask, bias=bias, alibi_slopes=alibi_slopes,
                                   window=window, scale=scale)
    args = (q, k, v, mask, bias, alibi_slopes, window if window is not None else 0,
            float(1.0 / math.sqrt(q.shape[-1]) if scale is None else scale), bool(causal))
    if torch.compiler.is_compiling() or is_traced(q, k, v, mask, bias, alibi_slopes):
        return torch.ops.tritonic.attention(*args)[0]
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (q, k, v, bias)):
        return _AttentionFn.apply(*args)[0]
    return _attn_op(*args)[0]


# ----------------------------------------------------------------------------- varlen


def attention_varlen_reference(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q=None, max_seqlen_k=None, *,
                               causal=False, alibi_slopes=None, window=None, scale=None):
    """PyTorch, one packed sequence at a time."""
    outs = []
    for b in range(cu_seqlens_q.shape[0] - 1):
        q0, q1, k0, k1 = (int(x) for x in (cu_seqlens_q[b], cu_seqlens_q[b + 1], cu_seqlens_k[b], cu_seqlens_k[b + 1]))
        o = attention_reference(q[q0:q1].transpose(0, 1)[None], k[k0:k1].transpose(0, 1)[None],
                                v[k0:k1].transpose(0, 1)[None], causal=causal, alibi_slopes=alibi_slopes,
                                window=window, scale=scale)
        outs.append(o[0].transpose(0, 1))
    return torch.cat(outs)


class _VarlenFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, cu_q, cu_k, max_q, max_k, alibi_slopes, window, scale, causal):
        varlen = (cu_q, cu_k, max_q, max_k)
        o, lse = _forward_impl(q, k, v, None, None, alibi_slopes, window, scale, causal, varlen)
        ctx.save_for_backward(q, k, v, o, lse, cu_q, cu_k, alibi_slopes)
        ctx.opts = (max_q, max_k, window, scale, causal)
        return o

    @staticmethod
    def backward(ctx, do):
        q, k, v, o, lse, cu_q, cu_k, alibi_slopes = ctx.saved_tensors
        max_q, max_k, window, scale, causal = ctx.opts
        dq, dk, dv, _ = _backward_impl(do.contiguous(), q, k, v, o, lse, None, None, alibi_slopes, window, scale,
                                       causal, False, (cu_q, cu_k, max_q, max_k))
        need = ctx.needs_input_grad
        return (dq if need[0] else None, dk if need[1] else None, dv if need[2] else None, *([None] * 8))


def attention_varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, *, causal=False,
                     alibi_slopes=None, window=None, scale=None):
    """Attention over packed variable-length sequences, with no padding: ``q`` (total_q, H, D),
    ``k``/``v`` (total_k, H_kv, D); sequence b holds query rows ``cu_seqlens_q[b]:cu_seqlens_q[b+1]``
    and keys ``cu_seqlens_k[b]:cu_seqlens_k[b+1]`` (int32 tensors of B + 1 cumulative lengths
    on the device); ``max_seqlen_q``/``max_seqlen_k`` (ints) size the grid. Causal, ALiBi,
    window, GQA and scale as in :func:`attention`; forward and backward."""
    op = "attention_varlen"
    _check_qkv(op, (("q", q), ("k", k), ("v", v)), "(total, heads, D)", 1, scale)
    if k.shape != v.shape or k.shape[2] != q.shape[2]:
        raise ValueError(f"attention_varlen: q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)} disagree "
                         f"on heads or head dim")
    for name, cu in (("cu_seqlens_q", cu_seqlens_q), ("cu_seqlens_k", cu_seqlens_k)):
        if not isinstance(cu, torch.Tensor) or cu.dim() != 1 or cu.dtype not in (torch.int32, torch.int64):
            raise ValueError(f"attention_varlen: {name} must be a 1-D int32/int64 tensor of B + 1 offsets")
    if cu_seqlens_q.shape != cu_seqlens_k.shape:
        raise ValueError(f"attention_varlen: cu_seqlens_q has {cu_seqlens_q.shape[0]} offsets, cu_seqlens_k "
                         f"{cu_seqlens_k.shape[0]}: one per sequence plus one each")
    check_same_device(op, "q", q, k=k, v=v, cu_seqlens_q=cu_seqlens_q, cu_seqlens_k=cu_seqlens_k)
    check_kernel_device(op, "q", q)
    kw = dict(causal=causal, alibi_slopes=alibi_slopes, window=window, scale=scale)
    if q.dtype not in KERNEL_DTYPES or q.numel() == 0 or k.numel() == 0 or torch.compiler.is_compiling():
        return attention_varlen_reference(q, k, v, cu_seqlens_q, cu_seqlens_k, **kw)
    cu_q, cu_k = cu_seqlens_q.to(torch.int32), cu_seqlens_k.to(torch.int32)
    args = (q, k, v, cu_q, cu_k, int(max_seqlen_q), int(max_seqlen_k), alibi_slopes, window, scale, causal)
    if torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad):
        return _VarlenFn.apply(*args)
    return _forward_impl(q, k, v, None, None, alibi_slopes, window, scale, causal,
                         (cu_q, cu_k, int(max_seqlen_q), int(max_seqlen_k)))[0]
