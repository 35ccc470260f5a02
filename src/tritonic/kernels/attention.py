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
def _attn_fwd(
    Q, K, V, O,  # (B, H, Sq, D) / (B, H_KV, Sk, D) / (B, H_KV, Sk, D) / (B, H, Sq, D), any strides
    LSE,  # float32 out, rows by stride_lb/lh/lm: log-sum-exp of each row's scores (natural log); -inf if empty
    MASK,  # bool, broadcast to (B, H, Sq, Sk) through its strides (0 where broadcast); if HAS_MASK
    BIAS,  # additive, broadcast the same way; if HAS_BIAS
    SLOPES,  # (H,) float32 ALiBi slopes; if HAS_ALIBI
    CU_Q, CU_K,  # (B + 1,) int32 cumulative sequence lengths of packed (total, H, D) tensors; if VARLEN
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

    qk_scale = scale * 1.4426950408889634  # work in base 2
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    pos = rm + (Sk - Sq)  # each query's position among the keys (bottom-right alignment)
    slope = 0.0
    if HAS_ALIBI:
        slope = tl.load(SLOPES + h) * 1.4426950408889634

    lo, hi = _key_range(pid_m, Sq, Sk, window, CAUSAL, HAS_WINDOW, BLOCK_M, BLOCK_N)
    for start in range(lo, hi, BLOCK_N):
        rn = start + tl.arange(0, BLOCK_N)
        k = _tile(k_base, rn, rd, stride_kn, stride_kd, Sk, D)
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * qk_scale
        s = _masked_scores(s, rm, rn, pos, b, h, MASK, BIAS, stride_mb, stride_mh, stride_mm, stride_mn,
                           stride_bb, stride_bh, stride_bm, stride_bn, Sq, Sk, window, slope,
                           CAUSAL, HAS_MASK, HAS_BIAS, HAS_ALIBI, HAS_WINDOW)

        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        m_use = tl.where(m_new == float("-inf"), 0.0, m_new)  # empty so far: exponentials of -inf are 0
        p = tl.exp2(s - m_use[:, None])
        alpha = tl.exp2(m_i - m_use)
        l_i = l_i * alpha + tl.sum(p, axis=1)
        v = _tile(v_base, rn, rd, stride_vn, stride_vd, Sk, D)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PRECISION)
        m_i = m_new

    empty = l_i == 0.0
    out = acc / tl.where(empty, 1.0, l_i)[:, None]
    o_ptr = O + b * stride_ob + h * stride_oh + rm[:, None].to(tl.int64) * stride_om + rd[None, :] * stride_od
    tl.store(o_ptr, out.to(O.dtype.element_ty), mask=(rm[:, None] < Sq) & (rd[None, :] < D))
    lse = tl.where(empty, float("-inf"), (m_i + tl.log2(tl.where(empty, 1.0, l_i))) / 1.4426950408889634)
    tl.store(LSE + b * stride_lb + h * stride_lh + rm * stride_lm, lse, mask=rm < Sq)


@triton.jit
def _attn_bwd_dkdv(
    Q, K, V, DO, LSE, DELTA,  # as in the forward; DO like O; DELTA (B, H, Sq) float32 = rowsum(dO * O)
    DK, DV,  # out, laid out like K (strides stride_gb / stride_gh / stride_gn, unit along D)
    DBIAS,  # (B, H, Sq, Sk) float32 out, contiguous: the scores' gradient; if HAS_DBIAS
    MASK, BIAS, SLOPES, CU_Q, CU_K,
    stride_lb, stride_lh, stride_lm,  # of LSE and DELTA
    stride_gb, stride_gh, stride_gn,  # of DK and DV
    stride_qb, stride_qh, stride_qm, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_ob, stride_oh, stride_om, stride_od,  # of DO
    stride_mb, stride_mh, stride_mm, stride_mn,
    stride_bb, stride_bh, stride_bm, stride_bn,
    H, GROUP, Sq, Sk, D, scale, window,
    VARLEN: tl.constexpr,
    CAUSAL: tl.constexpr, HAS_MASK: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_ALIBI: tl.constexpr,
    HAS_WINDOW: tl.constexpr, HAS_DBIAS: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """dK and dV of one key block of one key/value head: the scores are recomputed against
    every query block of every query head in its group (FlashAttention-2's backward)."""
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
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rd = tl.arange(0, BLOCK_D)
    kv_mask = (rn[:, None] < Sk) & (rd[None, :] < D)
    k = _tile(K + b * stride_kb + h_kv * stride_kh, rn, rd, stride_kn, stride_kd, Sk, D)
    v = _tile(V + b * stride_vb + h_kv * stride_vh, rn, rd, stride_vn, stride_vd, Sk, D)
    dk = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    qk_scale = scale * 1.4426950408889634
    lo = 0
    if CAUSAL:  # queries before this key block's first key see none of it
        lo = tl.maximum(0, pid_n * BLOCK_N - (Sk - Sq))
        lo = (lo // BLOCK_M) * BLOCK_M
    for g in range(GROUP):
        h = h_kv * GROUP + g
        slope = 0.0
        if HAS_ALIBI:
            slope = tl.load(SLOPES + h) * 1.4426950408889634
        for start in range(lo, Sq, BLOCK_M):
            rm = start + tl.arange(0, BLOCK_M)
            q = _tile(Q + b * stride_qb + h * stride_qh, rm, rd, stride_qm, stride_qd, Sq, D)
            do = _tile(DO + b * stride_ob + h * stride_oh, rm, rd, stride_om, stride_od, Sq, D)
            row = b * stride_lb + h * stride_lh + rm * stride_lm
            lse = tl.load(LSE + row, mask=rm < Sq, other=float("-inf")) * 1.4426950408889634
            delta = tl.load(DELTA + row, mask=rm < Sq, other=0.0)
            s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * qk_scale
            s = _masked_scores(s, rm, rn, rm + (Sk - Sq), b, h, MASK, BIAS, stride_mb, stride_mh, stride_mm,
                               stride_mn, stride_bb, stride_bh, stride_bm, stride_bn, Sq, Sk, window, slope,
                               CAUSAL, HAS_MASK, HAS_BIAS, HAS_ALIBI, HAS_WINDOW)
            p = tl.exp2(s - tl.where(lse == float("-inf"), 0.0, lse)[:, None])  # rows with no key: p = 0
            dv += tl.dot(tl.trans(p.to(do.dtype)), do, input_precision=PRECISION)
            dp = tl.dot(do, tl.trans(v), input_precision=PRECISION)
            ds = p * (dp - delta[:, None])  # gradient of the (natural-log) scores
            if HAS_DBIAS:
                tl.store(DBIAS + ((b * H + h) * Sq + rm[:, None].to(tl.int64)) * Sk + rn[None, :], ds,
                         mask=(rm[:, None] < Sq) & (rn[None, :] < Sk))
            dk += tl.dot(tl.trans(ds.to(q.dtype)), q, input_precision=PRECISION)
    out = b * stride_gb + h_kv * stride_gh + rn[:, None].to(tl.int64) * stride_gn + rd[None, :]
    tl.store(DK + out, (dk * scale).to(DK.dtype.element_ty), mask=kv_mask)
    tl.store(DV + out, dv.to(DV.dtype.element_ty), mask=kv_mask)


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
    CAUSAL: tl.constexpr, HAS_MASK: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_ALIBI: tl.constexpr,
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
    qk_scale = scale * 1.4426950408889634
    slope = 0.0
    if HAS_ALIBI:
        slope = tl.load(SLOPES + h) * 1.4426950408889634
    pos = rm + (Sk - Sq)
    dq = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    lo, hi = _key_range(pid_m, Sq, Sk, window, CAUSAL, HAS_WINDOW, BLOCK_M, BLOCK_N)
    k_base = K + b * stride_kb + h_kv * stride_kh
    v_base = V + b * stride_vb + h_kv * stride_vh
    for start in range(lo, hi, BLOCK_N):
        rn = start + tl.arange(0, BLOCK_N)
        k = _tile(k_base, rn, rd, stride_kn, stride_kd, Sk, D)
        v = _tile(v_base, rn, rd, stride_vn, stride_vd, Sk, D)
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * qk_scale
        s = _masked_scores(s, rm, rn, pos, b, h, MASK, BIAS, stride_mb, stride_mh, stride_mm, stride_mn,
                           stride_bb, stride_bh, stride_bm, stride_bn, Sq, Sk, window, slope,
                           CAUSAL, HAS_MASK, HAS_BIAS, HAS_ALIBI, HAS_WINDOW)
        p = tl.exp2(s - lse[:, None])
        dp = tl.dot(do, tl.trans(v), input_precision=PRECISION)
        ds = p * (dp - delta[:, None])
        dq += tl.dot(ds.to(k.dtype), k, input_precision=PRECISION)
    tl.store(DQ + b * stride_gb + h * stride_gh + rm[:, None].to(tl.int64) * stride_gm + rd[None, :],
             (dq * scale).to(DQ.dtype.element_ty), mask=q_mask)


@triton.jit
def _attn_decode_split(
    Q,  # (B, H, Sq, D): a few new tokens per sequence
    K, V,  # (B, H_KV, S_max, D) caches; keys at positions >= SEQLENS[b] are ignored
    SEQLENS,  # (B,) int32: valid cache length per sequence (it includes the new tokens)
    PO,  # (B, H_KV, SPLITS, GROUP * Sq, D) float32 out: each split's normalised partial output
    PLSE,  # (B, H_KV, SPLITS, GROUP * Sq) float32 out: each split's log-sum-exp (natural log)
    stride_qb, stride_qh, stride_qm, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    H_KV, GROUP, Sq, D, scale, window, split_len,  # split_len: cache positions per split (a multiple of BLOCK_N)
    CAUSAL: tl.constexpr,
    HAS_WINDOW: tl.constexpr,
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
