"""Attention forward (flash attention: one pass over the keys with an online softmax).

    O = softmax(scale * Q K^T + bias + alibi, masked) V        per (batch, head)

One program owns BLOCK_M query rows of one (batch, head) and walks the keys BLOCK_N at a
time, keeping the running row maximum m, the running sum l and the output accumulator in
registers; exponentials are base 2 (scale folded with log2 e). Masking, in the order it is
applied: the boolean mask (True = attend), the causal limit and the sliding window, all
as -inf; then the additive bias and the ALiBi term. Rows whose keys are all masked keep
m = -inf and produce zeros (never NaN). The log-sum-exp of every row is stored for the
backward.

Causal and window limits are aligned to the bottom-right corner when Sq != Sk (query i sits
at key position i + Sk - Sq), as in a KV-cache continuation; with Sq == Sk this is the
usual lower triangle.
"""

import triton
import triton.language as tl

LOG2E = 1.4426950408889634


@triton.jit
def _attn_fwd(
    Q, K, V, O,  # (B, H, Sq, D) / (B, H_KV, Sk, D) / (B, H_KV, Sk, D) / (B, H, Sq, D), any strides
    LSE,  # (B, H, Sq) float32 out: log-sum-exp of each row's scores (natural log); -inf for empty rows
    MASK,  # bool, broadcast to (B, H, Sq, Sk) through its strides (0 where broadcast); if HAS_MASK
    BIAS,  # additive, broadcast the same way; if HAS_BIAS
    SLOPES,  # (H,) float32 ALiBi slopes; if HAS_ALIBI
    stride_qb, stride_qh, stride_qm, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_ob, stride_oh, stride_om, stride_od,
    stride_mb, stride_mh, stride_mm, stride_mn,
    stride_bb, stride_bh, stride_bm, stride_bn,
    H, GROUP,  # query heads; query heads per key/value head (GQA)
    Sq, Sk, D,
    scale,  # applied to Q K^T (not to the bias)
    window,  # keys further than this before (or, without CAUSAL, after) the query are masked; if HAS_WINDOW
    CAUSAL: tl.constexpr,
    HAS_MASK: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    HAS_ALIBI: tl.constexpr,
    HAS_WINDOW: tl.constexpr,
    PRECISION: tl.constexpr,  # tl.dot input precision for float32: "tf32" or "ieee"
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,  # D rounded up to a power of two
):
    pid_m = tl.program_id(0)
    bh = tl.program_id(1)
    b = (bh // H).to(tl.int64)
    h = bh % H
    h_kv = (h // GROUP).to(tl.int64)
    h = h.to(tl.int64)

    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rd = tl.arange(0, BLOCK_D)
    q_ptr = Q + b * stride_qb + h * stride_qh + rm[:, None].to(tl.int64) * stride_qm + rd[None, :] * stride_qd
    q = tl.load(q_ptr, mask=(rm[:, None] < Sq) & (rd[None, :] < D), other=0.0)
    k_base = K + b * stride_kb + h_kv * stride_kh
    v_base = V + b * stride_vb + h_kv * stride_vh

    qk_scale = scale * 1.4426950408889634  # work in base 2
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    pos = rm + (Sk - Sq)  # each query's position among the keys (bottom-right alignment)
    if HAS_ALIBI:
        slope = tl.load(SLOPES + h) * 1.4426950408889634

    # key blocks that can hold an unmasked key for some row of this block
    lo = 0
    hi = Sk
    if CAUSAL:
        hi = tl.minimum(Sk, pid_m * BLOCK_M + BLOCK_M + (Sk - Sq))
    if HAS_WINDOW:
        lo = tl.maximum(0, pid_m * BLOCK_M + (Sk - Sq) - window + 1)
        lo = (lo // BLOCK_N) * BLOCK_N
        if not CAUSAL:
            hi = tl.minimum(Sk, pid_m * BLOCK_M + BLOCK_M + (Sk - Sq) + window - 1)
    for start in range(lo, hi, BLOCK_N):
        rn = start + tl.arange(0, BLOCK_N)
        kv_mask = (rn[:, None] < Sk) & (rd[None, :] < D)
        k = tl.load(k_base + rn[:, None].to(tl.int64) * stride_kn + rd[None, :] * stride_kd, mask=kv_mask, other=0.0)
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * qk_scale
        keep = (rm[:, None] < Sq) & (rn[None, :] < Sk)
        if HAS_MASK:
            m_ptr = MASK + b * stride_mb + h * stride_mh + rm[:, None].to(tl.int64) * stride_mm + rn[None, :] * stride_mn
            keep = keep & (tl.load(m_ptr, mask=keep, other=0) != 0)
        if CAUSAL:
            keep = keep & (rn[None, :] <= pos[:, None])
        if HAS_WINDOW:
            keep = keep & (rn[None, :] > pos[:, None] - window)
            if not CAUSAL:
                keep = keep & (rn[None, :] < pos[:, None] + window)
        if HAS_BIAS:
            b_ptr = BIAS + b * stride_bb + h * stride_bh + rm[:, None].to(tl.int64) * stride_bm + rn[None, :] * stride_bn
            s += tl.load(b_ptr, mask=keep, other=0.0).to(tl.float32) * 1.4426950408889634
        if HAS_ALIBI:
            s -= slope * tl.abs(pos[:, None] - rn[None, :]).to(tl.float32)
        s = tl.where(keep, s, float("-inf"))

        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        m_use = tl.where(m_new == float("-inf"), 0.0, m_new)  # empty so far: exponentials of -inf are 0
        p = tl.exp2(s - m_use[:, None])
        alpha = tl.exp2(m_i - m_use)
        l_i = l_i * alpha + tl.sum(p, axis=1)
        v = tl.load(v_base + rn[:, None].to(tl.int64) * stride_vn + rd[None, :] * stride_vd, mask=kv_mask, other=0.0)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PRECISION)
        m_i = m_new

    empty = l_i == 0.0
    out = acc / tl.where(empty, 1.0, l_i)[:, None]
    o_ptr = O + b * stride_ob + h * stride_oh + rm[:, None].to(tl.int64) * stride_om + rd[None, :] * stride_od
    tl.store(o_ptr, out.to(O.dtype.element_ty), mask=(rm[:, None] < Sq) & (rd[None, :] < D))
    lse = tl.where(empty, float("-inf"), (m_i + tl.log2(tl.where(empty, 1.0, l_i))) / 1.4426950408889634)
    tl.store(LSE + bh.to(tl.int64) * Sq + rm, lse, mask=rm < Sq)
