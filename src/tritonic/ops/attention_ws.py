"""The warp-specialised attention forward (kernels/attention_ws.py): when it applies, and its
launch. ``ops/attention.py`` asks ``usable`` first and falls back to its general kernel.

TRITONIC_ATTENTION_WS: "0" (the default until a GPU run has timed it against the general
kernel) or "1". Every operand comes through a tensor descriptor, so it takes what a
descriptor can address: 16-bit inputs with unit last stride and 16-byte aligned bases and
strides; an additive bias with a row stride (batch and head may broadcast) in a 16-bit type;
a key-padding mask (one row of keys per batch entry, or one for all).
"""

from __future__ import annotations

import os

import torch

from tritonic.kernels.attention_ws import _attn_fwd_ws
from tritonic.runtime.autotune import Autotuner, Config
from tritonic.runtime.launcher import descriptor, launch

ENABLED = os.environ.get("TRITONIC_ATTENTION_WS", "0").strip().lower() in ("1", "on", "true")

# num_warps is one consumer group's (the compiler adds a second group and a producer warp,
# and gives up at 8); two stages of 128x128 tiles at d128 take 180 KB of shared memory (a bias
# tile adds 32 KB); 256 rows (128 a group) compile without spills at d64 only.
TUNER = Autotuner("attention_fwd_ws", [Config.of(num_warps=w, num_stages=st, BLOCK_M=bm, BLOCK_N=bn)
                                       for bm, bn, w, st in [(128, 128, 4, 2), (128, 64, 4, 3), (128, 128, 4, 3),
                                                             (128, 64, 4, 4), (256, 128, 4, 2), (256, 64, 4, 3)]])


def _addressable(t: torch.Tensor) -> bool:
    """Can a descriptor address ``t`` (zero strides aside: broadcast axes get size 1)?"""
    size = t.element_size()
    return (t.stride(-1) == 1 and t.data_ptr() % 16 == 0
            and all(st * size % 16 == 0 for st in t.stride()[:-1]))


def usable(q, k, m, bb, slopes, window, varlen, causal, tma) -> bool:
    """Dense 16-bit inputs whose K/V the general kernel's descriptors already take (``tma``),
    Q addressable too; no ALiBi, window or general boolean mask; every query row with a key
    when causal (Sq <= Sk)."""
    if not ENABLED or not tma or varlen is not None or slopes is not None or window is not None:
        return False
    if q.dtype == torch.float32 or (causal and q.shape[2] > k.shape[2]) or k.shape[2] == 0 or not _addressable(q):
        return False
    if m is not None:  # a (B or 1, Sk) key-padding mask: the expanded view's head and query strides are 0
        if m.stride(1) != 0 or m.stride(2) != 0 or not _addressable(m[:, 0, 0, :]):
            return False
    if bb is not None:
        if bb.element_size() != 2 or bb.stride(2) == 0 or not _addressable(bb):
            return False
    return True


def _bias_descriptor(bb, bm, bn):
    """(descriptor, has batch axis, has head axis) of the expanded bias: broadcast axes become
    size 1 (index 0 in the kernel), with any 16-byte multiple as their unused stride."""
    shape, strides = list(bb.shape), list(bb.stride())
    axes = []
    for i in (0, 1):
        if strides[i] == 0:
            shape[i], strides[i] = 1, shape[2] * strides[2]
        axes.append(bb.stride(i) != 0)
    return descriptor(bb, shape, strides, [1, 1, bm, bn]), axes[0], axes[1]


def _mask_descriptor(m, bn):
    """The key-padding mask as (B or 1, Sk) bytes, block [1, BLOCK_N]."""
    rows = m[:, 0, 0, :].view(torch.uint8)
    shape, strides = list(rows.shape), list(rows.stride())
    if strides[0] == 0:
        shape[0], strides[0] = 1, (shape[1] + 15) // 16 * 16
    return descriptor(rows, shape, strides, [1, bn]), rows


def forward(q, k, v, o, lse, m, bb, scalars, block_d, causal, pdl, traced) -> None:
    """Fill ``o`` and ``lse`` (tuned apart from the general kernel: its own table name)."""
    from tritonic.ops.attention import _tuned_run

    B, H, Sq, _ = q.shape
    Sk = k.shape[2]

    def run(config):
        meta = config.meta()
        bm, bn = meta["BLOCK_M"], meta["BLOCK_N"]
        qd = descriptor(q, list(q.shape), list(q.stride()), [1, 1, bm, block_d])
        kd = descriptor(k, list(k.shape), list(k.stride()), [1, 1, bn, block_d])
        vd = descriptor(v, list(v.shape), list(v.stride()), [1, 1, bn, block_d])
        bd, bias_b, bias_h = _bias_descriptor(bb, bm, bn) if bb is not None else (None, False, False)
        md, rows = _mask_descriptor(m, bn) if m is not None else (None, None)
        launch(_attn_fwd_ws, ((Sq + bm - 1) // bm, B * H), qd, kd, vd, bd, md, rows, o, lse, *o.stride(),
               *lse.stride(), rows.stride(0) if rows is not None else 0, *scalars[:6], CAUSAL=bool(causal),
               MASK_KEYS=bool(causal) or Sk % bn != 0 or m is not None, HAS_BIAS=bb is not None, BIAS_B=bias_b,
               BIAS_H=bias_h, KEY_PADDING=m is not None, BLOCK_D=block_d, **meta, **pdl)

    _tuned_run(TUNER, run, (q.dtype, Sq, Sk, block_d, bool(causal), m is not None, bb is not None), traced)
