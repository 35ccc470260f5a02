"""The warp-specialised attention kernels (kernels/attention_ws.py, kernels/attention_ws_bwd.py):
when they apply, and their launches. ``ops/attention.py`` asks ``usable`` / ``usable_bwd``
first and falls back to its general kernels.

TRITONIC_ATTENTION_WS: "auto" (the default), "0", "1" (forward and backward wherever they
apply), "fwd" or "bwd" (one of them, wherever it applies). "auto" takes the forward where it
was measured faster on an H100 (d3172fd, B=4 H=16 S=4096 bf16, against the general kernel:
d128 0.970 against 1.112 ms, 0.91x cuDNN's 0.883; d64 0.604 against 0.627, 0.99x cuDNN's
0.598): Hopper (sm_90), non-causal, head dim 64 or 128, at least ``AUTO_MIN_KEYS`` keys
(``AUTO_MIN_KEYS_BIAS`` with a bias: shorter biased rows ran slower with it), no key-padding
mask (the general kernel skips the padded key blocks and runs the rest unmasked up to the first
padded key: BERT's 8x12x2048 forward 0.212 ms against its 0.278, H100, 8353b23). Causal calls
took longer with it (d128 0.643 against 0.629 ms), and its
backward took longer than the general one (6.06 against 4.96 ms fwd+bwd at d128), so those
stay off unless asked for.

Two Triton 3.6 bugs shaped the kernels (benchmarks/NOTES.md, fourteenth session): the pass
splits a query-row tile between its two consumer groups but leaves a host descriptor's box
whole (the first GPU run hung), and shifts the second group's row index twice. The kernels
make their query-row descriptors on the device (2-D, from the block's first row), which
needs Triton's scratch allocator (``ensure_scratch_allocator``). Every operand comes
through a tensor descriptor, so they take what a descriptor can address: 16-bit inputs with
unit last stride and 16-byte aligned bases and strides. The forward also takes an additive
bias with a row stride (batch and head may broadcast) in a 16-bit type and a key-padding
mask (one row of keys per batch entry, or one for all); the backward neither.
"""

from __future__ import annotations

import os

import torch

from tritonic.kernels.attention_ws import _attn_fwd_ws
from tritonic.kernels.attention_ws_bwd import _attn_bwd_dkdv_ws, _attn_bwd_dq_ws
from tritonic.runtime import num_sms, warn_once
from tritonic.runtime.alloc import ensure_scratch_allocator
from tritonic.runtime.autotune import Autotuner, Config
from tritonic.runtime.launcher import descriptor, launch

_CHOICE = os.environ.get("TRITONIC_ATTENTION_WS", "auto").strip().lower()
ENABLED = _CHOICE in ("1", "on", "true", "fwd")  # forced: wherever the kernel applies
ENABLED_BWD = _CHOICE in ("1", "on", "true", "bwd")
AUTO = _CHOICE == "auto"  # the forward where it was measured faster (module docstring)
# H100 (8599b1d, scripts/ws_short.py, B=4 H=16 Sq=Sk bf16): WS against the general forward 1.04x /
# 1.05x / 1.05x at d64 and 1.07x / 1.10x / 1.12x at d128 for 1k / 2k / 4k keys. With a BERT key-padding
# mask or a T5 bias (benchmarks/attention.py): 1.09x / 1.02x at 2048 keys, 0.90x / 0.88x at 512 (the mask's
# rows lost to the general kernel's padding bounds later: 0.78x at 2048, 8353b23, so a mask never takes it).
AUTO_MIN_KEYS = 1024
AUTO_MIN_KEYS_BIAS = 2048

# num_warps is one consumer group's (the compiler adds a second group and a producer warp,
# and gives up at 8); two stages of 128x128 tiles at d128 take 180 KB of shared memory (a bias
# tile adds 32 KB: too much at d128). Checked on an H100 (58b2a12 / 8060242, scripts/ws_probe.py
# --matrix: d64 and d128, dense, causal, key mask, bias, 1024 and 1000 keys): these two are right
# everywhere they fit; every config with 3 or 4 stages gave NaN (128x128, 128x64, 256x64), and
# 64-key blocks with a key-padding mask stopped on a misaligned address (its [1, 64]-byte TMA box).
TUNER = Autotuner("attention_fwd_ws", [Config.of(num_warps=w, num_stages=st, BLOCK_M=bm, BLOCK_N=bn)
                                       for bm, bn, w, st in [(128, 128, 4, 2), (256, 128, 4, 2)]])

# The backward's two kernels are tuned apart (each its own table name): the dK/dV loop
# compiles warp-specialised only with 64-row query blocks (and spills with 128-key blocks at
# d128), the dQ loop with most tiles.
TUNER_DKDV = Autotuner("attention_bwd_dkdv_ws", [Config.of(num_warps=w, num_stages=st, BLOCK_M=bm, BLOCK_N=bn)
                                                 for bm, bn, w, st in [(64, 64, 4, 2), (64, 64, 4, 3),
                                                                       (64, 128, 4, 2)]])
TUNER_DQ = Autotuner("attention_bwd_dq_ws", [Config.of(num_warps=w, num_stages=st, BLOCK_M=bm, BLOCK_N=bn)
                                             for bm, bn, w, st in [(128, 64, 4, 2), (128, 128, 4, 2), (128, 64, 4, 3),
                                                                   (64, 128, 4, 2), (128, 32, 4, 3)]])

# Programs of 128 query rows (64 keys in the backward): below a wave of them the general
# kernels' smaller tiles fill the GPU better (GPT-2 at 1x128: 12 programs on 132 SMs).
MIN_WAVES = 1.0


def _fills_gpu(programs: int, t: torch.Tensor) -> bool:
    return programs >= MIN_WAVES * num_sms(t.device.index)


def _addressable(t: torch.Tensor) -> bool:
    """Can a descriptor address ``t`` (zero strides aside: broadcast axes get size 1)?"""
    size = t.element_size()
    return (t.stride(-1) == 1 and t.data_ptr() % 16 == 0
            and all(st * size % 16 == 0 for st in t.stride()[:-1]))


def _auto(q, k, m, bb, causal, traced) -> bool:
    """The "auto" choice: where the forward was measured faster (module docstring)."""
    min_keys = AUTO_MIN_KEYS if bb is None else AUTO_MIN_KEYS_BIAS
    return (AUTO and not causal and not traced and m is None and k.shape[2] >= min_keys
            and q.shape[-1] in (64, 128) and q.is_cuda and torch.cuda.get_device_capability(q.device)[0] == 9)


def usable(q, k, m, bb, slopes, window, varlen, causal, tma, traced=False) -> bool:
    """Dense 16-bit inputs whose K/V the general kernel's descriptors already take (``tma``),
    Q addressable too; no ALiBi, window or general boolean mask; every query row with a key
    when causal (Sq <= Sk); head dim <= 128; at least a wave of 128-row programs. Unless
    forced (TRITONIC_ATTENTION_WS=1 or fwd), only where ``_auto`` says."""
    if not tma or varlen is not None or slopes is not None or window is not None:
        return False
    if not ENABLED and not _auto(q, k, m, bb, causal, traced):
        return False
    if q.dtype == torch.float32 or (causal and q.shape[2] > k.shape[2]) or k.shape[2] == 0 or q.shape[-1] > 128:
        return False  # (head dims above 128: no config's tiles fit in shared memory)
    if not _addressable(q) or not _fills_gpu((q.shape[2] + 127) // 128 * q.shape[0] * q.shape[1], q):
        return False
    if m is not None:  # a (B or 1, Sk) key-padding mask: the expanded view's head and query strides are 0
        if m.stride(1) != 0 or m.stride(2) != 0 or not _addressable(m[:, 0, 0, :]):
            return False
    if bb is not None:
        if bb.element_size() != 2 or bb.stride(2) == 0 or not _addressable(bb):
            return False
    return True


def head_tiles(t, rows, block_d):
    """A descriptor over a (B, H, S, D) tensor as it is laid out, in tiles of ``rows`` rows of
    one head (block [1, 1, rows, block_d]): the Q / K / V / dO tiles of every attention kernel."""
    return descriptor(t, list(t.shape), list(t.stride()), [1, 1, rows, block_d])


def _mask_descriptor(m, bn):
    """The key-padding mask as (B or 1, Sk) bytes, block [1, BLOCK_N]."""
    rows = m[:, 0, 0, :].view(torch.uint8)
    shape, strides = list(rows.shape), list(rows.stride())
    if strides[0] == 0:
        shape[0], strides[0] = 1, (shape[1] + 15) // 16 * 16
    return descriptor(rows, shape, strides, [1, bn]), rows


def forward(q, k, v, o, lse, m, bb, scalars, block_d, causal, pdl, traced) -> None:
    """Fill ``o`` and ``lse`` (tuned apart from the general kernel: its own table name)."""
    from tritonic.ops.attention import _head_major, _tuned_run

    B, H, Sq, _ = q.shape
    Sk = k.shape[2]
    bias_strides, bias_b, bias_h = (bb.stride()[:3], bb.stride(0) != 0, bb.stride(1) != 0) if bb is not None \
        else ((0, 0, 0), False, False)
    head_major = _head_major(bb, B, None)

    def run(config):
        meta = config.meta()
        bm, bn = meta["BLOCK_M"], meta["BLOCK_N"]
        kd = head_tiles(k, bn, block_d)
        vd = head_tiles(v, bn, block_d)
        md, rows = _mask_descriptor(m, bn) if m is not None else (None, None)
        ensure_scratch_allocator()  # (Q's and the bias's descriptors are made on the device)
        launch(_attn_fwd_ws, ((Sq + bm - 1) // bm, B * H), q, kd, vd, bb, md, rows, o, lse, *q.stride()[:3],
               *bias_strides, *o.stride(), *lse.stride(), rows.stride(0) if rows is not None else 0, *scalars[:6],
               CAUSAL=bool(causal), MASK_KEYS=bool(causal) or (Sk % bn != 0 and m is None),
               HAS_BIAS=bb is not None, BIAS_B=bias_b, BIAS_H=bias_h, KEY_PADDING=m is not None, BLOCK_D=block_d,
               HEAD_MAJOR=head_major, **meta, **pdl)

    _tuned_run(TUNER, run, (q.dtype, Sq, Sk, block_d, bool(causal), m is not None, bb is not None), traced)


def forward_or_off(q, k, v, o, lse, m, bb, scalars, block_d, causal, pdl, traced) -> bool:
    """``forward``; under the "auto" choice a failure to compile (a Triton whose warp
    specialisation or device descriptors differ from 3.6's) turns the kernel off for the
    process with one warning, and the caller runs the general kernel (False). Forced, it raises."""
    global AUTO
    if ENABLED:
        forward(q, k, v, o, lse, m, bb, scalars, block_d, causal, pdl, traced)
        return True
    try:
        forward(q, k, v, o, lse, m, bb, scalars, block_d, causal, pdl, traced)
    except Exception as e:  # (compile errors come before any launch: the general kernel can still run)
        if "CUDA error" in str(e) or type(e).__name__ == "AcceleratorError":
            raise  # (the context is broken: nothing can fall back)
        AUTO = False
        warn_once(("attention-ws-off",), f"tritonic: the warp-specialised attention forward failed "
                  f"({type(e).__name__}: {str(e)[:200]}); the general kernel runs from now on "
                  f"(TRITONIC_ATTENTION_WS=0 keeps it off)")
        return False
    return True


def _rows_addressable(t: torch.Tensor) -> bool:
    """A contiguous (B, H, Sq) float32 tensor as (B·H, Sq) rows a descriptor can address."""
    return t.is_contiguous() and t.data_ptr() % 16 == 0 and (t.shape[-1] * t.element_size()) % 16 == 0


def usable_bwd(q, k, v, do, lse, delta, m, bb, slopes, window, varlen, causal, tma) -> bool:
    """The warp-specialised backward takes what its forward takes, without mask or bias, with
    dO addressable and the log-sum-exp and DELTA rows 16-byte aligned (Sq a multiple of 4).
    Not causal: on an H100 (50feaaf, 7b1a9ea) its causal GQA case with 300 queries and 1000 keys
    left a block of dK non-finite in 2 of 10 runs (d64 once, d128 once), never the dense cases."""
    if not ENABLED_BWD or not tma or varlen is not None or m is not None or bb is not None or slopes is not None:
        return False
    if window is not None or q.dtype == torch.float32 or causal or k.shape[2] == 0:
        return False
    if q.shape[-1] > 128 or not _fills_gpu((k.shape[2] + 63) // 64 * k.shape[0] * k.shape[1], q):
        return False
    return (_addressable(q) and _addressable(do) and lse.dtype == torch.float32 and _rows_addressable(lse)
            and _rows_addressable(delta))


def backward(q, k, v, do, lse, delta, dq, dk, dv, scalars, block_d, causal, traced) -> None:
    """Fill ``dq``, ``dk`` and ``dv`` (``delta`` = rowsum(dO * O), laid out like ``lse``)."""
    from tritonic.ops.attention import _tuned_run

    B, H, Sq, _ = q.shape
    Hk, Sk = k.shape[1], k.shape[2]
    lse2, delta2 = lse.view(B * H, Sq), delta.view(B * H, Sq)

    def kv_descriptors(bn):
        return (head_tiles(k, bn, block_d),
                head_tiles(v, bn, block_d))

    def run_dkdv(config):
        meta = config.meta()
        bm, bn = meta["BLOCK_M"], meta["BLOCK_N"]
        launch(_attn_bwd_dkdv_ws, ((Sk + bn - 1) // bn, B * Hk),
               head_tiles(q, bm, block_d), *kv_descriptors(bn),
               head_tiles(do, bm, block_d),
               descriptor(lse2, [B * H, Sq], [Sq, 1], [1, bm]), descriptor(delta2, [B * H, Sq], [Sq, 1], [1, bm]),
               dk, dv, *dk.stride()[:3], *scalars[:6], CAUSAL=bool(causal), BLOCK_D=block_d, **meta)

    def run_dq(config):  # (its query-row tiles are split between its consumer groups: it makes their
        meta = config.meta()  # descriptors itself, from pointers; see kernels/attention_ws.py)
        bm, bn = meta["BLOCK_M"], meta["BLOCK_N"]
        ensure_scratch_allocator()
        launch(_attn_bwd_dq_ws, ((Sq + bm - 1) // bm, B * H), q, *kv_descriptors(bn), do, lse, delta, dq,
               *q.stride()[:3], *do.stride()[:3], *dq.stride()[:3], *scalars[:6], CAUSAL=bool(causal),
               MASK_KEYS=Sk % bn != 0, BLOCK_D=block_d, **meta)

    key = (q.dtype, Sq, Sk, block_d, bool(causal))
    _tuned_run(TUNER_DKDV, run_dkdv, key, traced)
    _tuned_run(TUNER_DQ, run_dq, key, traced)
