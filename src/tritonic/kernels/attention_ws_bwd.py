"""Attention backward, warp-specialised (Hopper and later; dense inputs, no mask or bias).

The two-kernel backward of ``kernels/attention_bwd.py`` (dK/dV per key block, dQ per query
block; no atomics, which are pointer operations) in the shape Triton 3.6's Hopper warp
specialisation accepts (see ``kernels/attention_ws.py``): every tile of the loop through a
descriptor (Q, K, V, dO as (B, H, S, D); the log-sum-exp and DELTA as (B·H, Sq) float32 rows),
one loop per kernel, outputs stored through pointers after it.

Tiles past the sequence ends read zeros, which need no mask here: a padded query row has
q = dO = 0 and lse = DELTA = 0, so its p = 1 meets dO = 0 (dV), dP = 0 and DELTA = 0 (dS = 0);
a padded key has k = v = 0, whose dK/dV rows are never stored. Its dQ term ds · 0 would be
NaN if p = 2^(0 - lse) overflowed (a row whose scores are all below about -88), so the dQ
kernel masks keys past Sk when Sk is not a multiple of BLOCK_N (``MASK_KEYS``). The causal
limit is masked on every block when causal (the pass refuses a runtime branch in the loop).
The op's scope: every query row has a key (Sq <= Sk when causal), so lse is finite. The op
sends no causal call here now (``ops/attention_ws.usable_bwd``: on an H100 the causal GQA case
left a dK block non-finite in 2 of 10 runs, not yet understood); the CAUSAL path stays for that
investigation.
"""

import triton
import triton.language as tl

from tritonic.kernels.attention import _heads


@triton.jit
def _attn_bwd_dkdv_ws(
    Q_DESC, K_DESC, V_DESC, DO_DESC,  # (B, H, Sq, D) / (B, H_KV, Sk, D) / like K / like Q; blocks of BLOCK_M or BLOCK_N rows
    LSE_DESC, DELTA_DESC,  # (B·H, Sq) float32, block [1, BLOCK_M]
    DK, DV,  # out, laid out like K (strides stride_gb / stride_gh / stride_gn, unit along D)
    stride_gb, stride_gh, stride_gn,
    H, GROUP, Sq, Sk, D, scale,
    CAUSAL: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """dK and dV of one key block of one key/value head, over every query block of every
    query head of its group (one flattened loop: the pass takes a single loop)."""
    pid_n = tl.program_id(0)
    bhk = tl.program_id(1)
    H_KV = H // GROUP
    b = bhk // H_KV
    h_kv = bhk % H_KV
    k = K_DESC.load([b, h_kv, pid_n * BLOCK_N, 0]).reshape(BLOCK_N, BLOCK_D)
    v = V_DESC.load([b, h_kv, pid_n * BLOCK_N, 0]).reshape(BLOCK_N, BLOCK_D)
    dk = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    qk_scale = tl.cast(scale, tl.float32) * 1.4426950408889634
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    lo = 0
    if CAUSAL:  # queries before this key block's first key see none of it
        lo = tl.maximum(0, pid_n * BLOCK_N - (Sk - Sq))
        lo = (lo // BLOCK_M) * BLOCK_M
    n_blocks = tl.cdiv(Sq - lo, BLOCK_M)
    for it in tl.range(0, GROUP * n_blocks, warp_specialize=True):
        h = h_kv * GROUP + it // n_blocks
        start = lo + (it % n_blocks) * BLOCK_M
        q = Q_DESC.load([b, h, start, 0]).reshape(BLOCK_M, BLOCK_D)
        do = DO_DESC.load([b, h, start, 0]).reshape(BLOCK_M, BLOCK_D)
        lse = LSE_DESC.load([b * H + h, start]).reshape(BLOCK_M) * 1.4426950408889634
        delta = DELTA_DESC.load([b * H + h, start]).reshape(BLOCK_M)
        s = tl.dot(q, tl.trans(k)) * qk_scale
        if CAUSAL:
            rm = start + tl.arange(0, BLOCK_M)
            s = tl.where(rn[None, :] <= rm[:, None] + (Sk - Sq), s, float("-inf"))
        p = tl.exp2(s - lse[:, None])
        dv += tl.dot(tl.trans(p.to(do.dtype)), do)
        dp = tl.dot(do, tl.trans(v))
        ds = p * (dp - delta[:, None])
        dk += tl.dot(tl.trans(ds.to(q.dtype)), q)
    rd = tl.arange(0, BLOCK_D)
    out = b.to(tl.int64) * stride_gb + h_kv.to(tl.int64) * stride_gh + rn[:, None].to(tl.int64) * stride_gn + rd[None, :]
    kv_mask = (rn[:, None] < Sk) & (rd[None, :] < D)
    tl.store(DK + out, (dk * tl.cast(scale, tl.float32)).to(DK.dtype.element_ty), mask=kv_mask)
    tl.store(DV + out, dv.to(DV.dtype.element_ty), mask=kv_mask)


@triton.jit
def _attn_bwd_dq_ws(
    Q, K_DESC, V_DESC, DO, LSE, DELTA,  # Q and dO as pointers (B, H, Sq, D), K/V descriptors as in _attn_bwd_dkdv_ws,
    # the log-sum-exp and DELTA as contiguous (B, H, Sq) float32
    DQ,  # out, laid out like Q (strides stride_gb / stride_gh / stride_gm, unit along D)
    stride_qb, stride_qh, stride_qm,  # Q's strides (unit along D)
    stride_db, stride_dh, stride_dm,  # dO's
    stride_gb, stride_gh, stride_gm,
    H, GROUP, Sq, Sk, D, scale,
    CAUSAL: tl.constexpr,
    MASK_KEYS: tl.constexpr,  # Sk is not a multiple of BLOCK_N
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """dQ of one query block of one query head, over the key blocks it sees. The query-row
    tiles (Q, dO, lse, DELTA) are split between the two consumer groups, so their descriptors
    are made here, 2-D (1-D) from this block's first row: see ``kernels/attention_ws.py``."""
    pid_m = tl.program_id(0)
    b, h, h_kv = _heads(tl.program_id(1), H, GROUP)
    b32 = b.to(tl.int32)
    hk32 = h_kv.to(tl.int32)
    row0 = pid_m.to(tl.int64) * BLOCK_M
    n_rows = Sq - pid_m * BLOCK_M
    top = tl.program_id(2)  # 0, not known to be (see kernels/attention_ws.py: the row coordinate)
    q = tl.make_tensor_descriptor(Q + b * stride_qb + h * stride_qh + row0 * stride_qm, [n_rows, D], [stride_qm, 1],
                                  [BLOCK_M, BLOCK_D]).load([top, 0])
    do = tl.make_tensor_descriptor(DO + b * stride_db + h * stride_dh + row0 * stride_dm, [n_rows, D], [stride_dm, 1],
                                   [BLOCK_M, BLOCK_D]).load([top, 0])
    rows = (b * H + h) * Sq + row0
    lse = tl.make_tensor_descriptor(LSE + rows, [n_rows], [1], [BLOCK_M]).load([top]) * 1.4426950408889634
    delta = tl.make_tensor_descriptor(DELTA + rows, [n_rows], [1], [BLOCK_M]).load([top])
    qk_scale = tl.cast(scale, tl.float32) * 1.4426950408889634
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    dq = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    hi = Sk
    if CAUSAL:
        hi = tl.minimum(Sk, pid_m * BLOCK_M + BLOCK_M + (Sk - Sq))
    for start in tl.range(0, hi, BLOCK_N, warp_specialize=True):
        k = K_DESC.load([b32, hk32, start, 0]).reshape(BLOCK_N, BLOCK_D)
        v = V_DESC.load([b32, hk32, start, 0]).reshape(BLOCK_N, BLOCK_D)
        s = tl.dot(q, tl.trans(k)) * qk_scale
        if CAUSAL or MASK_KEYS:
            rn = start + tl.arange(0, BLOCK_N)
            keep = rn[None, :] < Sk
            if CAUSAL:
                keep = keep & (rn[None, :] <= rm[:, None] + (Sk - Sq))
            s = tl.where(keep, s, float("-inf"))
        p = tl.exp2(s - lse[:, None])
        dp = tl.dot(do, tl.trans(v))
        ds = p * (dp - delta[:, None])
        dq += tl.dot(ds.to(k.dtype), k)
    rd = tl.arange(0, BLOCK_D)
    out = b * stride_gb + h * stride_gh + rm[:, None].to(tl.int64) * stride_gm + rd[None, :]
    tl.store(DQ + out, (dq * tl.cast(scale, tl.float32)).to(DQ.dtype.element_ty),
             mask=(rm[:, None] < Sq) & (rd[None, :] < D))
