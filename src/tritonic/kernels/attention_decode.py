"""Attention over a KV cache for a few new tokens (flash-decoding): the cache is split
along its length, each split writes a partial output and log-sum-exp
(``_attn_decode_split``), and ``_attn_decode_combine`` merges the splits. With one split
(DIRECT) the first pass writes the output itself and the second does not run.
"""

import triton
import triton.language as tl

from tritonic.kernels.attention import _tile
from tritonic.kernels.pdl import pdl_enter


@triton.jit
def _attn_decode_split(
    Q,  # (B, H, Sq, D): a few new tokens per sequence
    K, V,  # (B, H_KV, S_max, D) caches; keys at positions >= SEQLENS[b] are ignored
    SEQLENS,  # (B,) int32: valid cache length per sequence (it includes the new tokens)
    KMASK,  # (B, S_max) bool, row stride stride_mb: False = this key is not attended; read only if HAS_KMASK
    PO,  # (B, H_KV, SPLITS, GROUP * Sq, D) float32 out: each split's normalised partial output
    PLSE,  # (B, H_KV, SPLITS, GROUP * Sq) float32 out: each split's log-sum-exp (natural log)
    O,  # (B, H, Sq, D) out, contiguous: written here instead of PO / PLSE when DIRECT
    stride_qb, stride_qh, stride_qm, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_mb,
    H_KV, GROUP, Sq, D, scale, window, split_len,  # split_len: cache positions per split (a multiple of BLOCK_N)
    CAUSAL: tl.constexpr,
    HAS_WINDOW: tl.constexpr,
    HAS_KMASK: tl.constexpr,  # a key-padding mask (left-padded prompts leave holes before SEQLENS)
    PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr,  # >= GROUP * Sq: every query head of the group and every new token, one tile
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
    DIRECT: tl.constexpr,  # one split: the output itself, normalised, and no second pass
    USE_PDL: tl.constexpr = False,  # programmatic dependent launch (kernels/pdl.py)
):
    """Flash-decoding, first pass: one program per (sequence, key/value head, cache split).
    The query rows of all GROUP heads sharing the key/value head are stacked into one tile,
    so the cache is read once per key/value head (GQA). Shapes depend only on the cache's
    capacity, never on SEQLENS, so the launch can be captured in a CUDA graph."""
    pdl_enter(USE_PDL)  # the new tokens' keys and values were written by the kernel before
    split = tl.program_id(0)
    bk = tl.program_id(1)
    SPLITS = tl.num_programs(0)
    b = (bk // H_KV).to(tl.int64)
    h_kv = (bk % H_KV).to(tl.int64)
    Sk = tl.load(SEQLENS + b)
    r = tl.arange(0, BLOCK_M)  # row = g * Sq + t: head h_kv * GROUP + g, new token t
    g = r // Sq
    t = r % Sq
    row_ok = r < GROUP * Sq
    rd = tl.arange(0, BLOCK_D)
    h = h_kv * GROUP + g
    q = tl.load(Q + b * stride_qb + h[:, None] * stride_qh + t[:, None] * stride_qm + rd[None, :] * stride_qd,
                mask=row_ok[:, None] & (rd[None, :] < D), other=0.0)
    pos = t + (Sk - Sq)  # the new tokens are the last Sq entries of the cache
    scale = tl.cast(scale, tl.float32)  # torch.compile hands Python floats over as float64
    qk_scale = scale * 1.4426950408889634
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    k_base = K + b * stride_kb + h_kv * stride_kh
    v_base = V + b * stride_vb + h_kv * stride_vh
    lo = split * split_len
    hi = tl.minimum(lo + split_len, Sk)
    for start in range(lo, hi, BLOCK_N):
        rn = start + tl.arange(0, BLOCK_N)
        k = _tile(k_base, rn, rd, stride_kn, stride_kd, hi, D)
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * qk_scale
        keep = row_ok[:, None] & (rn[None, :] < hi)
        if CAUSAL:
            keep = keep & (rn[None, :] <= pos[:, None])
        if HAS_WINDOW:
            keep = keep & (rn[None, :] > pos[:, None] - window)
        if HAS_KMASK:
            kept = tl.load(KMASK + b * stride_mb + rn, mask=rn < hi, other=0) != 0
            keep = keep & kept[None, :]
        s = tl.where(keep, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        m_use = tl.where(m_new == float("-inf"), 0.0, m_new)
        p = tl.exp2(s - m_use[:, None])
        alpha = tl.exp2(m_i - m_use)
        l_i = l_i * alpha + tl.sum(p, axis=1)
        v = _tile(v_base, rn, rd, stride_vn, stride_vd, hi, D)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PRECISION)
        m_i = m_new
    empty = l_i == 0.0
    out = acc / tl.where(empty, 1.0, l_i)[:, None]  # a row that saw no key: zeros
    if DIRECT:
        o_ptr = O + ((b * (H_KV * GROUP) + h[:, None]) * Sq + t[:, None]) * D + rd[None, :]
        tl.store(o_ptr, out.to(O.dtype.element_ty), mask=row_ok[:, None] & (rd[None, :] < D))
    else:  # (an early return would not do: Triton compiles what follows it, with PO = None)
        base = (bk.to(tl.int64) * SPLITS + split) * (GROUP * Sq)
        tl.store(PO + (base + r[:, None]) * D + rd[None, :], out, mask=row_ok[:, None] & (rd[None, :] < D))
        lse = tl.where(empty, float("-inf"), (m_i + tl.log2(tl.where(empty, 1.0, l_i))) / 1.4426950408889634)
        tl.store(PLSE + base + r, lse, mask=row_ok)


@triton.jit
def _attn_decode_combine(
    PO, PLSE,  # the first pass's partial outputs and log-sum-exps
    O,  # (B, H, Sq, D) out, contiguous
    H_KV, GROUP, Sq, D, SPLITS,
    BLOCK_S: tl.constexpr,  # >= SPLITS
    BLOCK_D: tl.constexpr,
    USE_PDL: tl.constexpr = False,
):
    """Flash-decoding, second pass: one program per (sequence, key/value head, query row)
    merges the splits, each weighted by exp(lse_split - lse_total). Splits that saw no key
    (lse = -inf) weigh 0; a row that saw none at all gets zeros. With PDL its programs start
    while the first pass finishes and wait for it in ``pdl_enter``: a launch gap saved."""
    pdl_enter(USE_PDL)
    row = tl.program_id(0)  # g * Sq + t
    bk = tl.program_id(1).to(tl.int64)
    rs = tl.arange(0, BLOCK_S)
    rd = tl.arange(0, BLOCK_D)
    GS = GROUP * Sq
    lse = tl.load(PLSE + (bk * SPLITS + rs) * GS + row, mask=rs < SPLITS, other=float("-inf"))
    m = tl.max(lse, axis=0)
    m_use = tl.where(m == float("-inf"), 0.0, m)
    w = tl.exp(lse - m_use)
    total = tl.sum(w, axis=0)
    po = tl.load(PO + ((bk * SPLITS + rs[:, None]) * GS + row) * D + rd[None, :],
                 mask=(rs[:, None] < SPLITS) & (rd[None, :] < D), other=0.0)
    out = tl.sum(po * w[:, None], axis=0) / tl.where(total == 0.0, 1.0, total)
    b = bk // H_KV
    h = (bk % H_KV) * GROUP + row // Sq
    t = row % Sq
    tl.store(O + ((b * (H_KV * GROUP) + h) * Sq + t) * D + rd, out.to(O.dtype.element_ty), mask=rd < D)
