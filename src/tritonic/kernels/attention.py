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

from tritonic.kernels.pdl import pdl_enter

LOG2E = 1.4426950408889634


@triton.jit
def _heads(bh, H, GROUP):
    """(batch, query head, key/value head) of program axis 1, as int64 for offsets."""
    h = bh % H
    return (bh // H).to(tl.int64), h.to(tl.int64), (h // GROUP).to(tl.int64)


@triton.jit
def _tile(BASE, rows, rd, stride_r, stride_d, n_rows, D):
    """A [rows, BLOCK_D] tile of one (batch, head)'s (rows, D) matrix at BASE; zeros past
    n_rows and D."""
    return tl.load(BASE + rows[:, None].to(tl.int64) * stride_r + rd[None, :] * stride_d,
                   mask=(rows[:, None] < n_rows) & (rd[None, :] < D), other=0.0)


@triton.jit
def _sequence(b, CU_Q, CU_K, Sq, Sk, VARLEN: tl.constexpr):
    """(first query row, query rows, first key, keys) of sequence b: packed sequences read
    their bounds from the cumulative lengths; otherwise (0, Sq, 0, Sk)."""
    if VARLEN:
        q0 = tl.load(CU_Q + b).to(tl.int64)
        k0 = tl.load(CU_K + b).to(tl.int64)
        sq = (tl.load(CU_Q + b + 1) - q0).to(tl.int32)
        sk = (tl.load(CU_K + b + 1) - k0).to(tl.int32)
    else:
        q0 = 0
        k0 = 0
        sq = Sq
        sk = Sk
    return q0, sq, k0, sk


@triton.jit
def _key_range(pid_m, Sq, Sk, window, CAUSAL: tl.constexpr, HAS_WINDOW: tl.constexpr, BLOCK_M: tl.constexpr,
               BLOCK_N: tl.constexpr):
    """[lo, hi): the keys that some query row of block pid_m may see (causal limit, window),
    lo rounded down to a key block."""
    lo = 0
    hi = Sk
    if CAUSAL:
        hi = tl.minimum(Sk, pid_m * BLOCK_M + BLOCK_M + (Sk - Sq))
    if HAS_WINDOW:
        lo = tl.maximum(0, pid_m * BLOCK_M + (Sk - Sq) - window + 1)
        lo = (lo // BLOCK_N) * BLOCK_N
        if not CAUSAL:
            hi = tl.minimum(Sk, pid_m * BLOCK_M + BLOCK_M + (Sk - Sq) + window - 1)
    return lo, hi


@triton.jit
def _kept_len(MASK, b, stride_mb, stride_mn, Sk, BLOCK: tl.constexpr):
    """One past the last key that batch b's key-padding mask keeps (0 if none): the keys
    after it are masked for every query, so no block past it needs visiting."""
    n = tl.full([], 0, tl.int32)
    for start in range(0, Sk, BLOCK):
        rn = start + tl.arange(0, BLOCK)
        keep = tl.load(MASK + b * stride_mb + rn.to(tl.int64) * stride_mn, mask=rn < Sk, other=0) != 0
        n = tl.maximum(n, tl.max(tl.where(keep, rn + 1, 0), axis=0))
    return n


@triton.jit
def _masked_scores(s, rm, rn, pos, b, h, MASK, BIAS, stride_mb, stride_mh, stride_mm, stride_mn,
                   stride_bb, stride_bh, stride_bm, stride_bn, Sq, Sk, window, slope,
                   CAUSAL: tl.constexpr, HAS_MASK: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_ALIBI: tl.constexpr,
                   HAS_WINDOW: tl.constexpr):
    """Scores (base 2) of query rows rm against keys rn with the mask, causal limit and window
    applied as -inf, then the bias and ALiBi (slope already in base 2) added."""
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
    return tl.where(keep, s, float("-inf"))


@triton.jit
def _fwd_block(acc, l_i, m_i, q, k_base, v_base, K_DESC, V_DESC, start, rm, rd, pos, b, h, h_kv, MASK, BIAS,
               stride_kn, stride_kd, stride_vn, stride_vd,
               stride_mb, stride_mh, stride_mm, stride_mn, stride_bb, stride_bh, stride_bm, stride_bn,
               Sq, Sk, D, window, qk_scale, slope, MASKED: tl.constexpr, CAUSAL: tl.constexpr,
               HAS_MASK: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_ALIBI: tl.constexpr, HAS_WINDOW: tl.constexpr,
               PRECISION: tl.constexpr, TMA_KV: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
    """One key block of the online softmax: (acc, l_i, m_i) updated with keys start + [0, BLOCK_N).
    MASKED: apply the bounds/causal/window/boolean masks (rows may end up empty); otherwise
    every score is finite and the scale folds into one multiply-add per score. TMA_KV: K and
    V tiles come through (B, H_kv, Sk, D) tensor descriptors (zeros past Sk and D)."""
    rn = start + tl.arange(0, BLOCK_N)
    if TMA_KV:
        k = K_DESC.load([b.to(tl.int32), h_kv.to(tl.int32), start, 0]).reshape(BLOCK_N, BLOCK_D)
    else:
        k = _tile(k_base, rn, rd, stride_kn, stride_kd, Sk, D)
    s = tl.dot(q, tl.trans(k), input_precision=PRECISION)
    if MASKED:
        s = _masked_scores(s * qk_scale, rm, rn, pos, b, h, MASK, BIAS, stride_mb, stride_mh, stride_mm, stride_mn,
                           stride_bb, stride_bh, stride_bm, stride_bn, Sq, Sk, window, slope,
                           CAUSAL, HAS_MASK, HAS_BIAS, HAS_ALIBI, HAS_WINDOW)
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        m_use = tl.where(m_new == float("-inf"), 0.0, m_new)  # empty so far: exponentials of -inf are 0
        p = tl.exp2(s - m_use[:, None])
        alpha = tl.exp2(m_i - m_use)
    elif HAS_BIAS or HAS_ALIBI:
        s = s * qk_scale
        if HAS_BIAS:
            b_ptr = BIAS + b * stride_bb + h * stride_bh + rm[:, None].to(tl.int64) * stride_bm + rn[None, :] * stride_bn
            s += tl.load(b_ptr, mask=(rm[:, None] < Sq) & (rn[None, :] < Sk), other=0.0).to(tl.float32) \
                * 1.4426950408889634
        if HAS_ALIBI:
            s -= slope * tl.abs(pos[:, None] - rn[None, :]).to(tl.float32)
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        p = tl.exp2(s - m_new[:, None])
        alpha = tl.exp2(m_i - m_new)
    else:
        m_new = tl.maximum(m_i, tl.max(s, axis=1) * qk_scale)
        p = tl.exp2(s * qk_scale - m_new[:, None])
        alpha = tl.exp2(m_i - m_new)
    l_i = l_i * alpha + tl.sum(p, axis=1)
    if TMA_KV:
        v = V_DESC.load([b.to(tl.int32), h_kv.to(tl.int32), start, 0]).reshape(BLOCK_N, BLOCK_D)
    else:
        v = _tile(v_base, rn, rd, stride_vn, stride_vd, Sk, D)
    acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PRECISION)
    return acc, l_i, m_new


@triton.jit
def _attn_fwd(
    Q, K, V, O,  # (B, H, Sq, D) / (B, H_KV, Sk, D) / (B, H_KV, Sk, D) / (B, H, Sq, D), any strides
    LSE,  # float32 out, rows by stride_lb/lh/lm: log-sum-exp of each row's scores (natural log); -inf if empty
    MASK,  # bool, broadcast to (B, H, Sq, Sk) through its strides (0 where broadcast); if HAS_MASK
    BIAS,  # additive, broadcast the same way; if HAS_BIAS
    SLOPES,  # (H,) float32 ALiBi slopes; if HAS_ALIBI
    CU_Q, CU_K,  # (B + 1,) int32 cumulative sequence lengths of packed (total, H, D) tensors; if VARLEN
    K_DESC, V_DESC,  # tensor descriptors of K and V as (B, H_KV, Sk, D), block [1, 1, BLOCK_N, BLOCK_D]; if TMA_KV
    stride_lb, stride_lh, stride_lm,
    stride_qb, stride_qh, stride_qm, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_ob, stride_oh, stride_om, stride_od,
    stride_mb, stride_mh, stride_mm, stride_mn,
    stride_bb, stride_bh, stride_bm, stride_bn,
    H, GROUP,  # query heads; query heads per key/value head (GQA)
    Sq, Sk, D,  # VARLEN: the longest sequences (per sequence lengths come from CU_Q / CU_K)
    scale,  # applied to Q K^T (not to the bias)
    window,  # keys further than this before (or, without CAUSAL, after) the query are masked; if HAS_WINDOW
    VARLEN: tl.constexpr,  # packed sequences (batch strides are 0; rows start at CU_Q[b], keys at CU_K[b])
    CAUSAL: tl.constexpr,
    HAS_MASK: tl.constexpr,
    KEY_PADDING: tl.constexpr,  # the mask is a (B, 1, 1, Sk) key-padding mask (broadcast over heads, queries)
    HAS_BIAS: tl.constexpr,
    HAS_ALIBI: tl.constexpr,
    HAS_WINDOW: tl.constexpr,
    PRECISION: tl.constexpr,
    TMA_KV: tl.constexpr,  # K/V through K_DESC/V_DESC (dense inputs on Hopper and later)  # tl.dot input precision for float32: "tf32" or "ieee"
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,  # D rounded up to a power of two
    USE_PDL: tl.constexpr = False,  # programmatic dependent launch (kernels/pdl.py)
):
    pdl_enter(USE_PDL)
    pid_m = tl.program_id(0)
    bh = tl.program_id(1)
    b, h, h_kv = _heads(bh, H, GROUP)
    q0, Sq, k0, Sk = _sequence(b, CU_Q, CU_K, Sq, Sk, VARLEN)
    Q += q0 * stride_qm
    O += q0 * stride_om
    LSE += q0 * stride_lm
    K += k0 * stride_kn
    V += k0 * stride_vn

    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rd = tl.arange(0, BLOCK_D)
    q = _tile(Q + b * stride_qb + h * stride_qh, rm, rd, stride_qm, stride_qd, Sq, D)
    k_base = K + b * stride_kb + h_kv * stride_kh
    v_base = V + b * stride_vb + h_kv * stride_vh

    scale = tl.cast(scale, tl.float32)  # torch.compile hands Python floats over as float64
    qk_scale = scale * 1.4426950408889634  # work in base 2
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    pos = rm + (Sk - Sq)  # each query's position among the keys (bottom-right alignment)
    slope = 0.0
    if HAS_ALIBI:
        slope = tl.load(SLOPES + h) * 1.4426950408889634

    lo, hi = _key_range(pid_m, Sq, Sk, window, CAUSAL, HAS_WINDOW, BLOCK_M, BLOCK_N)
    if KEY_PADDING:  # padded keys at the end: stop at the last kept one
        hi = tl.minimum(hi, _kept_len(MASK, b, stride_mb, stride_mn, Sk, 1024))
    # Key blocks [lo, mid) need no mask at all: every key exists and every query row of the
    # block may see it (rows past Sq read zeros and are never stored). Only [mid, hi) pays
    # for the bounds, causal and window tests. A boolean mask is tested everywhere.
    mid = lo
    if not HAS_MASK and not HAS_WINDOW:
        mid = (Sk // BLOCK_N) * BLOCK_N
        if CAUSAL:  # keys up to the block's first query position are visible to all its rows
            mid = tl.minimum(mid, ((pid_m * BLOCK_M + (Sk - Sq) + 1) // BLOCK_N) * BLOCK_N)
        mid = tl.maximum(lo, tl.minimum(mid, hi))
    for start in range(lo, mid, BLOCK_N):
        acc, l_i, m_i = _fwd_block(acc, l_i, m_i, q, k_base, v_base, K_DESC, V_DESC, start, rm, rd, pos, b, h, h_kv,
                                   MASK, BIAS,
                                   stride_kn, stride_kd, stride_vn, stride_vd,
                                   stride_mb, stride_mh, stride_mm, stride_mn, stride_bb, stride_bh, stride_bm,
                                   stride_bn, Sq, Sk, D, window, qk_scale, slope, False, CAUSAL, HAS_MASK, HAS_BIAS,
                                   HAS_ALIBI, HAS_WINDOW, PRECISION, TMA_KV, BLOCK_N, BLOCK_D)
    for start in range(mid, hi, BLOCK_N):
        acc, l_i, m_i = _fwd_block(acc, l_i, m_i, q, k_base, v_base, K_DESC, V_DESC, start, rm, rd, pos, b, h, h_kv,
                                   MASK, BIAS,
                                   stride_kn, stride_kd, stride_vn, stride_vd,
                                   stride_mb, stride_mh, stride_mm, stride_mn, stride_bb, stride_bh, stride_bm,
                                   stride_bn, Sq, Sk, D, window, qk_scale, slope, True, CAUSAL, HAS_MASK, HAS_BIAS,
                                   HAS_ALIBI, HAS_WINDOW, PRECISION, TMA_KV, BLOCK_N, BLOCK_D)

    empty = l_i == 0.0
    out = acc / tl.where(empty, 1.0, l_i)[:, None]
    o_ptr = O + b * stride_ob + h * stride_oh + rm[:, None].to(tl.int64) * stride_om + rd[None, :] * stride_od
    tl.store(o_ptr, out.to(O.dtype.element_ty), mask=(rm[:, None] < Sq) & (rd[None, :] < D))
    lse = tl.where(empty, float("-inf"), (m_i + tl.log2(tl.where(empty, 1.0, l_i))) / 1.4426950408889634)
    tl.store(LSE + b * stride_lb + h * stride_lh + rm * stride_lm, lse, mask=rm < Sq)


@triton.jit
def _attn_bwd_delta(O, DO, DELTA, rows, N1, N2, D, stride_o0, stride_o1, stride_o2, stride_d0, stride_d1, stride_d2,
                    BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr):
    """DELTA[r] = sum_d O[r, d] * DO[r, d] in float32 (the backward's rowsum(dO * O)), with
    DELTA contiguous over three row dims (N0, N1, N2): (B, H, S), laid out like the
    log-sum-exp, or (1, total, H) for packed sequences. O and DO are strided over those dims
    (an output stored (B, S, H, D) is read in place), unit stride along D."""
    r = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    d = tl.arange(0, BLOCK_D)
    ok = (r[:, None] < rows) & (d[None, :] < D)
    r64 = r.to(tl.int64)
    i2 = r64 % N2
    i1 = (r64 // N2) % N1
    i0 = r64 // (N2 * N1)
    o = tl.load(O + (i0 * stride_o0 + i1 * stride_o1 + i2 * stride_o2)[:, None] + d[None, :], mask=ok,
                other=0.0).to(tl.float32)
    do = tl.load(DO + (i0 * stride_d0 + i1 * stride_d1 + i2 * stride_d2)[:, None] + d[None, :], mask=ok,
                 other=0.0).to(tl.float32)
    tl.store(DELTA + r, tl.sum(o * do, axis=1), mask=r < rows)


@triton.jit
def _dkdv_block(dk, dv, k, v, q_base, do_base, dq_base, LSE, DELTA, DBIAS, start, rn, rd, b, h, MASK, BIAS,
                stride_lb, stride_lh, stride_lm, stride_qm, stride_qd, stride_om, stride_od, stride_am,
                stride_mb, stride_mh, stride_mm, stride_mn, stride_bb, stride_bh, stride_bm, stride_bn,
                H, Sq, Sk, D, window, qk_scale, slope, MASKED: tl.constexpr, CAUSAL: tl.constexpr,
                HAS_MASK: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_ALIBI: tl.constexpr, HAS_WINDOW: tl.constexpr,
                HAS_DBIAS: tl.constexpr, ATOMIC_DQ: tl.constexpr, PRECISION: tl.constexpr, BLOCK_M: tl.constexpr):
    """dK, dV of one key block updated with the query rows start + [0, BLOCK_M) of head h.
    MASKED: bounds/causal/window/boolean masks (and rows with no key); otherwise every row
    and key exists and is visible. ATOMIC_DQ: also add this block's share of dQ (unscaled,
    float32) into the accumulator at dq_base, so no second kernel recomputes the scores."""
    rm = start + tl.arange(0, BLOCK_M)
    q = _tile(q_base, rm, rd, stride_qm, stride_qd, Sq, D)
    do = _tile(do_base, rm, rd, stride_om, stride_od, Sq, D)
    row = b * stride_lb + h * stride_lh + rm * stride_lm
    s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * qk_scale
    if MASKED:
        lse = tl.load(LSE + row, mask=rm < Sq, other=float("-inf")) * 1.4426950408889634
        delta = tl.load(DELTA + row, mask=rm < Sq, other=0.0)
        s = _masked_scores(s, rm, rn, rm + (Sk - Sq), b, h, MASK, BIAS, stride_mb, stride_mh, stride_mm,
                           stride_mn, stride_bb, stride_bh, stride_bm, stride_bn, Sq, Sk, window, slope,
                           CAUSAL, HAS_MASK, HAS_BIAS, HAS_ALIBI, HAS_WINDOW)
        p = tl.exp2(s - tl.where(lse == float("-inf"), 0.0, lse)[:, None])  # rows with no key: p = 0
    else:
        lse = tl.load(LSE + row) * 1.4426950408889634
        delta = tl.load(DELTA + row)
        if HAS_BIAS:
            b_ptr = BIAS + b * stride_bb + h * stride_bh + rm[:, None].to(tl.int64) * stride_bm + rn[None, :] * stride_bn
            s += tl.load(b_ptr).to(tl.float32) * 1.4426950408889634
        if HAS_ALIBI:
            s -= slope * tl.abs(rm[:, None] + (Sk - Sq) - rn[None, :]).to(tl.float32)
        p = tl.exp2(s - lse[:, None])
    dv += tl.dot(tl.trans(p.to(do.dtype)), do, input_precision=PRECISION)
    dp = tl.dot(do, tl.trans(v), input_precision=PRECISION)
    ds = p * (dp - delta[:, None])  # gradient of the (natural-log) scores
    if HAS_DBIAS:
        tl.store(DBIAS + ((b * H + h) * Sq + rm[:, None].to(tl.int64)) * Sk + rn[None, :], ds,
                 mask=(rm[:, None] < Sq) & (rn[None, :] < Sk))
    dk += tl.dot(tl.trans(ds.to(q.dtype)), q, input_precision=PRECISION)
    if ATOMIC_DQ:  # rows past Sq and masked scores have ds = 0; the store mask skips the rows
        dq = tl.dot(ds.to(k.dtype), k, input_precision=PRECISION)
        tl.atomic_add(dq_base + rm[:, None].to(tl.int64) * stride_am + rd[None, :], dq,
                      mask=(rm[:, None] < Sq) & (rd[None, :] < D), sem="relaxed")
    return dk, dv


@triton.jit
def _attn_bwd_dkdv(
    Q, K, V, DO, LSE, DELTA,  # as in the forward; DO like O; DELTA (B, H, Sq) float32 = rowsum(dO * O)
    DK, DV,  # out, laid out like K (strides stride_gb / stride_gh / stride_gn, unit along D)
    DBIAS,  # (B, H, Sq, Sk) float32 out, contiguous: the scores' gradient; if HAS_DBIAS
    DQ_ACC,  # float32 accumulator laid out like Q (unit along D), zeroed: dQ / scale; if ATOMIC_DQ
    MASK, BIAS, SLOPES, CU_Q, CU_K,
    stride_lb, stride_lh, stride_lm,  # of LSE and DELTA
    stride_gb, stride_gh, stride_gn,  # of DK and DV
    stride_ab, stride_ah, stride_am,  # of DQ_ACC
    stride_qb, stride_qh, stride_qm, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_ob, stride_oh, stride_om, stride_od,  # of DO
    stride_mb, stride_mh, stride_mm, stride_mn,
    stride_bb, stride_bh, stride_bm, stride_bn,
    H, GROUP, Sq, Sk, D, scale, window,
    VARLEN: tl.constexpr,
    CAUSAL: tl.constexpr, HAS_MASK: tl.constexpr,
    KEY_PADDING: tl.constexpr,  # the mask is a (B, 1, 1, Sk) key-padding mask
    HAS_BIAS: tl.constexpr, HAS_ALIBI: tl.constexpr,
    HAS_WINDOW: tl.constexpr, HAS_DBIAS: tl.constexpr, ATOMIC_DQ: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """dK and dV of one key block of one key/value head: the scores are recomputed against
    every query block of every query head in its group (FlashAttention-2's backward). With
    ATOMIC_DQ the same pass adds dQ into a float32 accumulator (one product more here, instead
    of a second kernel's three: the scores, dP and dQ)."""
    pid_n = tl.program_id(0)
    bhk = tl.program_id(1)
    H_KV = H // GROUP
    b = (bhk // H_KV).to(tl.int64)
    h_kv = (bhk % H_KV).to(tl.int64)
    q0, Sq, k0, Sk = _sequence(b, CU_Q, CU_K, Sq, Sk, VARLEN)
    Q += q0 * stride_qm
    DO += q0 * stride_om
    LSE += q0 * stride_lm
    DELTA += q0 * stride_lm
    K += k0 * stride_kn
    V += k0 * stride_vn
    DK += k0 * stride_gn
    DV += k0 * stride_gn
    if ATOMIC_DQ:
        DQ_ACC += q0 * stride_am
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rd = tl.arange(0, BLOCK_D)
    kv_mask = (rn[:, None] < Sk) & (rd[None, :] < D)
    k = _tile(K + b * stride_kb + h_kv * stride_kh, rn, rd, stride_kn, stride_kd, Sk, D)
    v = _tile(V + b * stride_vb + h_kv * stride_vh, rn, rd, stride_vn, stride_vd, Sk, D)
    dk = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    scale = tl.cast(scale, tl.float32)  # torch.compile hands Python floats over as float64
    qk_scale = scale * 1.4426950408889634
    lo = 0
    if CAUSAL:  # queries before this key block's first key see none of it
        lo = tl.maximum(0, pid_n * BLOCK_N - (Sk - Sq))
        lo = (lo // BLOCK_M) * BLOCK_M
    if KEY_PADDING:  # a key block past the last kept key: no query sees it, dK = dV = 0
        lo = tl.where(pid_n * BLOCK_N < _kept_len(MASK, b, stride_mb, stride_mn, Sk, 1024), lo, Sq)
    # Query blocks [m1, m2) need no mask: the key block is full, every row exists and sees
    # every key of it (causal: from the first query block past the diagonal). The rest,
    # [lo, m1) and [m2, Sq), is masked; a boolean mask or a window masks everything.
    m1 = lo
    m2 = lo
    if not HAS_MASK and not HAS_WINDOW:
        if pid_n * BLOCK_N + BLOCK_N <= Sk:
            m2 = (Sq // BLOCK_M) * BLOCK_M
            if CAUSAL:
                m1 = ((pid_n * BLOCK_N + BLOCK_N - 1 - (Sk - Sq) + BLOCK_M - 1) // BLOCK_M) * BLOCK_M
            m1 = tl.minimum(tl.maximum(m1, lo), m2)
    for g in range(GROUP):
        h = h_kv * GROUP + g
        slope = 0.0
        if HAS_ALIBI:
            slope = tl.load(SLOPES + h) * 1.4426950408889634
        q_base = Q + b * stride_qb + h * stride_qh
        do_base = DO + b * stride_ob + h * stride_oh
        dq_base = DQ_ACC
        if ATOMIC_DQ:
            dq_base = DQ_ACC + b * stride_ab + h * stride_ah
        for start in range(lo, m1, BLOCK_M):
            dk, dv = _dkdv_block(dk, dv, k, v, q_base, do_base, dq_base, LSE, DELTA, DBIAS, start, rn, rd, b, h,
                                 MASK, BIAS, stride_lb, stride_lh, stride_lm, stride_qm, stride_qd, stride_om,
                                 stride_od, stride_am, stride_mb, stride_mh, stride_mm, stride_mn, stride_bb,
                                 stride_bh, stride_bm, stride_bn, H, Sq, Sk, D, window, qk_scale, slope, True,
                                 CAUSAL, HAS_MASK, HAS_BIAS, HAS_ALIBI, HAS_WINDOW, HAS_DBIAS, ATOMIC_DQ, PRECISION,
                                 BLOCK_M)
        for start in range(m1, m2, BLOCK_M):
            dk, dv = _dkdv_block(dk, dv, k, v, q_base, do_base, dq_base, LSE, DELTA, DBIAS, start, rn, rd, b, h,
                                 MASK, BIAS, stride_lb, stride_lh, stride_lm, stride_qm, stride_qd, stride_om,
                                 stride_od, stride_am, stride_mb, stride_mh, stride_mm, stride_mn, stride_bb,
                                 stride_bh, stride_bm, stride_bn, H, Sq, Sk, D, window, qk_scale, slope, False,
                                 CAUSAL, HAS_MASK, HAS_BIAS, HAS_ALIBI, HAS_WINDOW, HAS_DBIAS, ATOMIC_DQ, PRECISION,
                                 BLOCK_M)
        for start in range(m2, Sq, BLOCK_M):
            dk, dv = _dkdv_block(dk, dv, k, v, q_base, do_base, dq_base, LSE, DELTA, DBIAS, start, rn, rd, b, h,
                                 MASK, BIAS, stride_lb, stride_lh, stride_lm, stride_qm, stride_qd, stride_om,
                                 stride_od, stride_am, stride_mb, stride_mh, stride_mm, stride_mn, stride_bb,
                                 stride_bh, stride_bm, stride_bn, H, Sq, Sk, D, window, qk_scale, slope, True,
                                 CAUSAL, HAS_MASK, HAS_BIAS, HAS_ALIBI, HAS_WINDOW, HAS_DBIAS, ATOMIC_DQ, PRECISION,
                                 BLOCK_M)
    out = b * stride_gb + h_kv * stride_gh + rn[:, None].to(tl.int64) * stride_gn + rd[None, :]
    tl.store(DK + out, (dk * scale).to(DK.dtype.element_ty), mask=kv_mask)
    tl.store(DV + out, dv.to(DV.dtype.element_ty), mask=kv_mask)


@triton.jit
def _dq_block(dq, q, do, lse, delta, k_base, v_base, start, rm, rd, pos, b, h, MASK, BIAS,
              stride_kn, stride_kd, stride_vn, stride_vd, stride_mb, stride_mh, stride_mm, stride_mn,
              stride_bb, stride_bh, stride_bm, stride_bn, Sq, Sk, D, window, qk_scale, slope,
              MASKED: tl.constexpr, CAUSAL: tl.constexpr, HAS_MASK: tl.constexpr, HAS_BIAS: tl.constexpr,
              HAS_ALIBI: tl.constexpr, HAS_WINDOW: tl.constexpr, PRECISION: tl.constexpr, BLOCK_N: tl.constexpr):
    """dQ of one query block updated with keys start + [0, BLOCK_N). Unmasked blocks hold
    only existing, visible keys (rows past Sq read zeros and are never stored)."""
    rn = start + tl.arange(0, BLOCK_N)
    k = _tile(k_base, rn, rd, stride_kn, stride_kd, Sk, D)
    v = _tile(v_base, rn, rd, stride_vn, stride_vd, Sk, D)
    s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * qk_scale
    if MASKED:
        s = _masked_scores(s, rm, rn, pos, b, h, MASK, BIAS, stride_mb, stride_mh, stride_mm, stride_mn,
                           stride_bb, stride_bh, stride_bm, stride_bn, Sq, Sk, window, slope,
                           CAUSAL, HAS_MASK, HAS_BIAS, HAS_ALIBI, HAS_WINDOW)
    else:
        if HAS_BIAS:
            b_ptr = BIAS + b * stride_bb + h * stride_bh + rm[:, None].to(tl.int64) * stride_bm + rn[None, :] * stride_bn
            s += tl.load(b_ptr, mask=(rm[:, None] < Sq) & (rn[None, :] < Sk), other=0.0).to(tl.float32) \
                * 1.4426950408889634
        if HAS_ALIBI:
            s -= slope * tl.abs(pos[:, None] - rn[None, :]).to(tl.float32)
    p = tl.exp2(s - lse[:, None])
    dp = tl.dot(do, tl.trans(v), input_precision=PRECISION)
    ds = p * (dp - delta[:, None])
    dq += tl.dot(ds.to(k.dtype), k, input_precision=PRECISION)
    return dq


@triton.jit
def _attn_bwd_dq(
    Q, K, V, DO, LSE, DELTA,
    DQ,  # out, laid out like Q (strides stride_gb / stride_gh / stride_gm, unit along D)
    MASK, BIAS, SLOPES, CU_Q, CU_K,
    stride_lb, stride_lh, stride_lm,
    stride_gb, stride_gh, stride_gm,
    stride_qb, stride_qh, stride_qm, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_ob, stride_oh, stride_om, stride_od,
    stride_mb, stride_mh, stride_mm, stride_mn,
    stride_bb, stride_bh, stride_bm, stride_bn,
    H, GROUP, Sq, Sk, D, scale, window,
    VARLEN: tl.constexpr,
    CAUSAL: tl.constexpr, HAS_MASK: tl.constexpr,
    KEY_PADDING: tl.constexpr,  # the mask is a (B, 1, 1, Sk) key-padding mask
    HAS_BIAS: tl.constexpr, HAS_ALIBI: tl.constexpr,
    HAS_WINDOW: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """dQ of one query block of one head, recomputing its scores block by block."""
    pid_m = tl.program_id(0)
    bh = tl.program_id(1)
    b, h, h_kv = _heads(bh, H, GROUP)
    q0, Sq, k0, Sk = _sequence(b, CU_Q, CU_K, Sq, Sk, VARLEN)
    Q += q0 * stride_qm
    DO += q0 * stride_om
    LSE += q0 * stride_lm
    DELTA += q0 * stride_lm
    DQ += q0 * stride_gm
    K += k0 * stride_kn
    V += k0 * stride_vn
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rd = tl.arange(0, BLOCK_D)
    q_mask = (rm[:, None] < Sq) & (rd[None, :] < D)
    q = _tile(Q + b * stride_qb + h * stride_qh, rm, rd, stride_qm, stride_qd, Sq, D)
    do = _tile(DO + b * stride_ob + h * stride_oh, rm, rd, stride_om, stride_od, Sq, D)
    row = b * stride_lb + h * stride_lh + rm * stride_lm
    lse = tl.load(LSE + row, mask=rm < Sq, other=float("-inf")) * 1.4426950408889634
    lse = tl.where(lse == float("-inf"), 0.0, lse)
    delta = tl.load(DELTA + row, mask=rm < Sq, other=0.0)
    scale = tl.cast(scale, tl.float32)  # torch.compile hands Python floats over as float64
    qk_scale = scale * 1.4426950408889634
    slope = 0.0
    if HAS_ALIBI:
        slope = tl.load(SLOPES + h) * 1.4426950408889634
    pos = rm + (Sk - Sq)
    dq = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    lo, hi = _key_range(pid_m, Sq, Sk, window, CAUSAL, HAS_WINDOW, BLOCK_M, BLOCK_N)
    if KEY_PADDING:
        hi = tl.minimum(hi, _kept_len(MASK, b, stride_mb, stride_mn, Sk, 1024))
    k_base = K + b * stride_kb + h_kv * stride_kh
    v_base = V + b * stride_vb + h_kv * stride_vh
    mid = lo  # [lo, mid): no mask needed, as in the forward
    if not HAS_MASK and not HAS_WINDOW:
        mid = (Sk // BLOCK_N) * BLOCK_N
        if CAUSAL:
            mid = tl.minimum(mid, ((pid_m * BLOCK_M + (Sk - Sq) + 1) // BLOCK_N) * BLOCK_N)
        mid = tl.maximum(lo, tl.minimum(mid, hi))
    for start in range(lo, mid, BLOCK_N):
        dq = _dq_block(dq, q, do, lse, delta, k_base, v_base, start, rm, rd, pos, b, h, MASK, BIAS,
                       stride_kn, stride_kd, stride_vn, stride_vd, stride_mb, stride_mh, stride_mm, stride_mn,
                       stride_bb, stride_bh, stride_bm, stride_bn, Sq, Sk, D, window, qk_scale, slope, False, CAUSAL,
                       HAS_MASK, HAS_BIAS, HAS_ALIBI, HAS_WINDOW, PRECISION, BLOCK_N)
    for start in range(mid, hi, BLOCK_N):
        dq = _dq_block(dq, q, do, lse, delta, k_base, v_base, start, rm, rd, pos, b, h, MASK, BIAS,
                       stride_kn, stride_kd, stride_vn, stride_vd, stride_mb, stride_mh, stride_mm, stride_mn,
                       stride_bb, stride_bh, stride_bm, stride_bn, Sq, Sk, D, window, qk_scale, slope, True, CAUSAL,
                       HAS_MASK, HAS_BIAS, HAS_ALIBI, HAS_WINDOW, PRECISION, BLOCK_N)
    tl.store(DQ + b * stride_gb + h * stride_gh + rm[:, None].to(tl.int64) * stride_gm + rd[None, :],
             (dq * scale).to(DQ.dtype.element_ty), mask=q_mask)


@triton.jit
def _attn_decode_split(
    Q,  # (B, H, Sq, D): a few new tokens per sequence
    K, V,  # (B, H_KV, S_max, D) caches; keys at positions >= SEQLENS[b] are ignored
    SEQLENS,  # (B,) int32: valid cache length per sequence (it includes the new tokens)
    KMASK,  # (B, S_max) bool, row stride stride_mb: False = this key is not attended; read only if HAS_KMASK
    PO,  # (B, H_KV, SPLITS, GROUP * Sq, D) float32 out: each split's normalised partial output
    PLSE,  # (B, H_KV, SPLITS, GROUP * Sq) float32 out: each split's log-sum-exp (natural log)
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
):
    """Flash-decoding, first pass: one program per (sequence, key/value head, cache split).
    The query rows of all GROUP heads sharing the key/value head are stacked into one tile,
    so the cache is read once per key/value head (GQA). Shapes depend only on the cache's
    capacity, never on SEQLENS, so the launch can be captured in a CUDA graph."""
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
    base = (bk.to(tl.int64) * SPLITS + split) * (GROUP * Sq)
    tl.store(PO + (base + r[:, None]) * D + rd[None, :], acc / tl.where(empty, 1.0, l_i)[:, None],
             mask=row_ok[:, None] & (rd[None, :] < D))
    lse = tl.where(empty, float("-inf"), (m_i + tl.log2(tl.where(empty, 1.0, l_i))) / 1.4426950408889634)
    tl.store(PLSE + base + r, lse, mask=row_ok)


@triton.jit
def _attn_decode_combine(
    PO, PLSE,  # the first pass's partial outputs and log-sum-exps
    O,  # (B, H, Sq, D) out, contiguous
    H_KV, GROUP, Sq, D, SPLITS,
    BLOCK_S: tl.constexpr,  # >= SPLITS
    BLOCK_D: tl.constexpr,
):
    """Flash-decoding, second pass: one program per (sequence, key/value head, query row)
    merges the splits, each weighted by exp(lse_split - lse_total). Splits that saw no key
    (lse = -inf) weigh 0; a row that saw none at all gets zeros."""
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
