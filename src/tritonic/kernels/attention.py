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

The backward's kernels are in ``kernels/attention_bwd.py``, the KV-cache decode's in
``kernels/attention_decode.py``; both use the helpers here.
"""

import triton
import triton.language as tl

from tritonic.kernels.pdl import pdl_enter

LOG2E = 1.4426950408889634


@triton.jit
def _heads(bh, H, GROUP, HEAD_MAJOR: tl.constexpr = False):
    """(batch, query head, key/value head) of program axis 1 (B * H programs), as int64 for
    offsets. Batch-major (b * H + h) unless HEAD_MAJOR (h * B + b): then the programs that run
    at the same time share a head across the batch, and a bias broadcast over the batch (T5's)
    is read from memory once per head and served from L2 to the other batch entries."""
    if HEAD_MAJOR:
        B = tl.num_programs(1) // H
        h = bh // B
        return (bh % B).to(tl.int64), h.to(tl.int64), (h // GROUP).to(tl.int64)
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
    return _padding_bounds(MASK, b, stride_mb, stride_mn, Sk, BLOCK)[1]


@triton.jit
def _padding_bounds(MASK, b, stride_mb, stride_mn, Sk, BLOCK: tl.constexpr):
    """(dense, kept) of batch b's key-padding mask: every key before ``dense`` is kept (no key
    block inside [0, dense) needs a mask test) and none from ``kept`` on is (no block past it
    needs visiting). A BERT mask, a prefix of kept keys, has dense == kept."""
    dense = tl.full([], 0, tl.int32) + Sk
    kept = tl.full([], 0, tl.int32)
    for start in range(0, Sk, BLOCK):
        rn = start + tl.arange(0, BLOCK)
        inside = rn < Sk
        keep = tl.load(MASK + b * stride_mb + rn.to(tl.int64) * stride_mn, mask=inside, other=0) != 0
        kept = tl.maximum(kept, tl.max(tl.where(keep, rn + 1, 0), axis=0))
        dense = tl.minimum(dense, tl.min(tl.where(keep | (rn >= Sk), Sk, rn), axis=0))
    return dense, kept


@triton.jit
def _masked_scores(s, rm, rn, pos, b, h, MASK, BIAS, stride_mb, stride_mh, stride_mm, stride_mn,
                   stride_bb, stride_bh, stride_bm, stride_bn, Sq, Sk, window, slope,
                   CAUSAL: tl.constexpr, HAS_MASK: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_ALIBI: tl.constexpr,
                   HAS_WINDOW: tl.constexpr, KEY_PADDING: tl.constexpr = False):
    """Scores (base 2) of query rows rm against keys rn with the mask, causal limit and window
    applied as -inf, then the bias and ALiBi (slope already in base 2) added. KEY_PADDING: the
    mask is one row of keys for every query (one load per key, not per score)."""
    keep = (rm[:, None] < Sq) & (rn[None, :] < Sk)
    if KEY_PADDING:
        kept = tl.load(MASK + b * stride_mb + rn * stride_mn, mask=rn < Sk, other=0) != 0
        keep = keep & kept[None, :]
    elif HAS_MASK:
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
               PRECISION: tl.constexpr, TMA_KV: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
               KEY_PADDING: tl.constexpr = False):
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
                           CAUSAL, HAS_MASK, HAS_BIAS, HAS_ALIBI, HAS_WINDOW, KEY_PADDING=KEY_PADDING)
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
        if HAS_BIAS:  # a row of -inf biases (an additive mask) has no key so far: exponentials of -inf are 0
            m_use = tl.where(m_new == float("-inf"), 0.0, m_new)
            p = tl.exp2(s - m_use[:, None])
            alpha = tl.exp2(m_i - m_use)
        else:
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
    WARP_SPEC: tl.constexpr = False,  # the unmasked key loop warp-specialised (loads / MMA / softmax warps)
    HEAD_MAJOR: tl.constexpr = False,  # programs ordered head-major (_heads): a bias shared by the batch
):
    pdl_enter(USE_PDL)
    pid_m = tl.program_id(0)
    if CAUSAL:  # the longest query blocks first, so the last wave holds the shortest ones
        pid_m = tl.num_programs(0) - 1 - pid_m
    bh = tl.program_id(1)
    b, h, h_kv = _heads(bh, H, GROUP, HEAD_MAJOR)
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
    dense = Sk  # keys before this are kept for every query of the block (before the causal limit)
    if KEY_PADDING:  # padded keys: stop at the last kept one; no mask test before the first padded one
        dense, kept = _padding_bounds(MASK, b, stride_mb, stride_mn, Sk, 1024)
        hi = tl.minimum(hi, kept)
    # Key blocks [lo, mid) need no mask at all: every key exists and every query row of the
    # block may see it (rows past Sq read zeros and are never stored). Only [mid, hi) pays
    # for the bounds, causal and window tests. A general boolean mask is tested everywhere.
    mid = lo
    if (not HAS_MASK or KEY_PADDING) and not HAS_WINDOW:
        mid = (dense // BLOCK_N) * BLOCK_N
        if CAUSAL:  # keys up to the block's first query position are visible to all its rows
            mid = tl.minimum(mid, ((pid_m * BLOCK_M + (Sk - Sq) + 1) // BLOCK_N) * BLOCK_N)
        mid = tl.maximum(lo, tl.minimum(mid, hi))
    for start in tl.range(lo, mid, BLOCK_N, warp_specialize=WARP_SPEC):
        acc, l_i, m_i = _fwd_block(acc, l_i, m_i, q, k_base, v_base, K_DESC, V_DESC, start, rm, rd, pos, b, h, h_kv,
                                   MASK, BIAS,
                                   stride_kn, stride_kd, stride_vn, stride_vd,
                                   stride_mb, stride_mh, stride_mm, stride_mn, stride_bb, stride_bh, stride_bm,
                                   stride_bn, Sq, Sk, D, window, qk_scale, slope, False, CAUSAL, HAS_MASK, HAS_BIAS,
                                   HAS_ALIBI, HAS_WINDOW, PRECISION, TMA_KV, BLOCK_N, BLOCK_D, KEY_PADDING=KEY_PADDING)
    for start in range(mid, hi, BLOCK_N):
        acc, l_i, m_i = _fwd_block(acc, l_i, m_i, q, k_base, v_base, K_DESC, V_DESC, start, rm, rd, pos, b, h, h_kv,
                                   MASK, BIAS,
                                   stride_kn, stride_kd, stride_vn, stride_vd,
                                   stride_mb, stride_mh, stride_mm, stride_mn, stride_bb, stride_bh, stride_bm,
                                   stride_bn, Sq, Sk, D, window, qk_scale, slope, True, CAUSAL, HAS_MASK, HAS_BIAS,
                                   HAS_ALIBI, HAS_WINDOW, PRECISION, TMA_KV, BLOCK_N, BLOCK_D, KEY_PADDING=KEY_PADDING)

    empty = l_i == 0.0
    out = acc / tl.where(empty, 1.0, l_i)[:, None]
    o_ptr = O + b * stride_ob + h * stride_oh + rm[:, None].to(tl.int64) * stride_om + rd[None, :] * stride_od
    tl.store(o_ptr, out.to(O.dtype.element_ty), mask=(rm[:, None] < Sq) & (rd[None, :] < D))
    lse = tl.where(empty, float("-inf"), (m_i + tl.log2(tl.where(empty, 1.0, l_i))) / 1.4426950408889634)
    tl.store(LSE + b * stride_lb + h * stride_lh + rm * stride_lm, lse, mask=rm < Sq)
