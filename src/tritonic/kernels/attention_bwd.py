"""Attention backward (flash attention): the kernels behind ``ops.attention``'s gradient.

DELTA = rowsum(dO * O) first (``_attn_bwd_delta``); then one program per block of keys walks
the queries and accumulates dK and dV (``_attn_bwd_dkdv``, which can also add dQ with
atomics), or one program per block of queries accumulates dQ (``_attn_bwd_dq``). Scores are
recomputed from Q, K and the forward's log-sum-exp, with the masking of the forward
(``kernels/attention.py``, whose helpers these kernels share).
"""

import triton
import triton.language as tl

from tritonic.kernels.attention import _heads, _key_range, _masked_scores, _padding_bounds, _sequence, _tile


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
def _dkdv_block(dk, dv, k, v, q_base, do_base, dq_base, Q_DESC, DO_DESC, DQ_DESC, dq_row, LSE, DELTA, DBIAS, start,
                rn, rd, b, h, MASK, BIAS,
                stride_lb, stride_lh, stride_lm, stride_qm, stride_qd, stride_om, stride_od, stride_am,
                stride_mb, stride_mh, stride_mm, stride_mn, stride_bb, stride_bh, stride_bm, stride_bn,
                H, Sq, Sk, D, window, qk_scale, slope, MASKED: tl.constexpr, CAUSAL: tl.constexpr,
                HAS_MASK: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_ALIBI: tl.constexpr, HAS_WINDOW: tl.constexpr,
                HAS_DBIAS: tl.constexpr, ATOMIC_DQ: tl.constexpr, TMA_DQ: tl.constexpr, TMA_QDO: tl.constexpr,
                PRECISION: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr,
                KEY_PADDING: tl.constexpr = False):
    """dK, dV of one key block updated with the query rows start + [0, BLOCK_M) of head h.
    MASKED: bounds/causal/window/boolean masks (and rows with no key); otherwise every row
    and key exists and is visible. ATOMIC_DQ: also add this block's share of dQ (unscaled,
    float32) into the accumulator at dq_base, so no second kernel recomputes the scores;
    TMA_DQ: as one bulk reduce-add through DQ_DESC (the accumulator as (B*H*Sq, D) rows, this
    head's from dq_row) instead of an atomic per element. Rows past Sq add zeros (their dO
    rows read as zeros) into the next head's rows, or fall outside the descriptor."""
    rm = start + tl.arange(0, BLOCK_M)
    if TMA_QDO:  # straight to shared memory: no per-element addresses held in registers
        q = Q_DESC.load([b.to(tl.int32), h.to(tl.int32), start, 0]).reshape(BLOCK_M, BLOCK_D)
        do = DO_DESC.load([b.to(tl.int32), h.to(tl.int32), start, 0]).reshape(BLOCK_M, BLOCK_D)
    else:
        q = _tile(q_base, rm, rd, stride_qm, stride_qd, Sq, D)
        do = _tile(do_base, rm, rd, stride_om, stride_od, Sq, D)
    row = b * stride_lb + h * stride_lh + rm * stride_lm
    s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * qk_scale
    if MASKED:
        lse = tl.load(LSE + row, mask=rm < Sq, other=float("-inf")) * 1.4426950408889634
        delta = tl.load(DELTA + row, mask=rm < Sq, other=0.0)
        s = _masked_scores(s, rm, rn, rm + (Sk - Sq), b, h, MASK, BIAS, stride_mb, stride_mh, stride_mm,
                           stride_mn, stride_bb, stride_bh, stride_bm, stride_bn, Sq, Sk, window, slope,
                           CAUSAL, HAS_MASK, HAS_BIAS, HAS_ALIBI, HAS_WINDOW, KEY_PADDING=KEY_PADDING)
        p = tl.exp2(s - tl.where(lse == float("-inf"), 0.0, lse)[:, None])  # rows with no key: p = 0
    else:
        lse = tl.load(LSE + row) * 1.4426950408889634
        delta = tl.load(DELTA + row)
        if HAS_BIAS:
            b_ptr = BIAS + b * stride_bb + h * stride_bh + rm[:, None].to(tl.int64) * stride_bm + rn[None, :] * stride_bn
            s += tl.load(b_ptr).to(tl.float32) * 1.4426950408889634
        if HAS_ALIBI:
            s -= slope * tl.abs(rm[:, None] + (Sk - Sq) - rn[None, :]).to(tl.float32)
        if HAS_BIAS:  # rows of -inf biases (an additive mask) have no key: p = 0
            lse = tl.where(lse == float("-inf"), 0.0, lse)
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
        if TMA_DQ:
            DQ_DESC.atomic_add([dq_row + start, 0], dq)
        else:
            tl.atomic_add(dq_base + rm[:, None].to(tl.int64) * stride_am + rd[None, :], dq,
                          mask=(rm[:, None] < Sq) & (rd[None, :] < D), sem="relaxed")
    return dk, dv


@triton.jit
def _attn_bwd_dkdv(
    Q, K, V, DO, LSE, DELTA,  # as in the forward; DO like O; DELTA (B, H, Sq) float32 = rowsum(dO * O)
    DK, DV,  # out, laid out like K (strides stride_gb / stride_gh / stride_gn, unit along D)
    DBIAS,  # (B, H, Sq, Sk) float32 out, contiguous: the scores' gradient; if HAS_DBIAS
    DQ_ACC,  # float32 accumulator laid out like Q (unit along D), zeroed: dQ / scale; if ATOMIC_DQ
    DQ_DESC,  # with TMA_DQ: a descriptor over DQ_ACC as (B*H*Sq, D) rows, block [BLOCK_M, BLOCK_D]
    Q_DESC, DO_DESC,  # with TMA_QDO: descriptors of Q and DO as (B, H, Sq, D), block [1, 1, BLOCK_M, BLOCK_D]
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
    HAS_WINDOW: tl.constexpr, HAS_DBIAS: tl.constexpr, ATOMIC_DQ: tl.constexpr, TMA_DQ: tl.constexpr,
    TMA_QDO: tl.constexpr, PRECISION: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
    HEAD_MAJOR: tl.constexpr,  # programs ordered head-major (kernels/attention._heads): a bias shared by the batch
):
    """dK and dV of one key block of one key/value head: the scores are recomputed against
    every query block of every query head in its group (FlashAttention-2's backward). With
    ATOMIC_DQ the same pass adds dQ into a float32 accumulator (one product more here, instead
    of a second kernel's three: the scores, dP and dQ)."""
    pid_n = tl.program_id(0)
    bhk = tl.program_id(1)
    H_KV = H // GROUP
    b, h_kv, _ = _heads(bhk, H_KV, 1, HEAD_MAJOR)
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
    dense = Sk  # keys before this are kept for every query
    if KEY_PADDING:  # a key block past the last kept key: no query sees it, dK = dV = 0
        dense, kept = _padding_bounds(MASK, b, stride_mb, stride_mn, Sk, 1024)
        lo = tl.where(pid_n * BLOCK_N < kept, lo, Sq)
    # Query blocks [m1, m2) need no mask: the key block is full (and before any padded key),
    # every row exists and sees every key of it (causal: from the first query block past the
    # diagonal). The rest, [lo, m1) and [m2, Sq), is masked; a general boolean mask or a window
    # masks everything, and so does a key-padding mask with a bias: with both, ptxas (CUDA
    # 12.8, Triton 3.6) crashed on several tile configs (tests/test_sm90_compile.py).
    m1 = lo
    m2 = lo
    if (not HAS_MASK or (KEY_PADDING and not HAS_BIAS)) and not HAS_WINDOW:
        if pid_n * BLOCK_N + BLOCK_N <= dense:
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
        dq_row = ((b * H + h) * Sq).to(tl.int32)
        if ATOMIC_DQ:
            dq_base = DQ_ACC + b * stride_ab + h * stride_ah
        for start in range(lo, m1, BLOCK_M):
            dk, dv = _dkdv_block(dk, dv, k, v, q_base, do_base, dq_base, Q_DESC, DO_DESC, DQ_DESC, dq_row, LSE, DELTA,
                                 DBIAS, start,
                                 rn, rd, b, h, MASK, BIAS, stride_lb, stride_lh, stride_lm, stride_qm, stride_qd,
                                 stride_om, stride_od, stride_am, stride_mb, stride_mh, stride_mm, stride_mn,
                                 stride_bb, stride_bh, stride_bm, stride_bn, H, Sq, Sk, D, window, qk_scale, slope,
                                 True, CAUSAL, HAS_MASK, HAS_BIAS, HAS_ALIBI, HAS_WINDOW, HAS_DBIAS, ATOMIC_DQ,
                                 TMA_DQ, TMA_QDO, PRECISION, BLOCK_M, BLOCK_D, KEY_PADDING=KEY_PADDING)
        for start in range(m1, m2, BLOCK_M):
            dk, dv = _dkdv_block(dk, dv, k, v, q_base, do_base, dq_base, Q_DESC, DO_DESC, DQ_DESC, dq_row, LSE, DELTA,
                                 DBIAS, start,
                                 rn, rd, b, h, MASK, BIAS, stride_lb, stride_lh, stride_lm, stride_qm, stride_qd,
                                 stride_om, stride_od, stride_am, stride_mb, stride_mh, stride_mm, stride_mn,
                                 stride_bb, stride_bh, stride_bm, stride_bn, H, Sq, Sk, D, window, qk_scale, slope,
                                 False, CAUSAL, HAS_MASK, HAS_BIAS, HAS_ALIBI, HAS_WINDOW, HAS_DBIAS, ATOMIC_DQ,
                                 TMA_DQ, TMA_QDO, PRECISION, BLOCK_M, BLOCK_D, KEY_PADDING=KEY_PADDING)
        for start in range(m2, Sq, BLOCK_M):
            dk, dv = _dkdv_block(dk, dv, k, v, q_base, do_base, dq_base, Q_DESC, DO_DESC, DQ_DESC, dq_row, LSE, DELTA,
                                 DBIAS, start,
                                 rn, rd, b, h, MASK, BIAS, stride_lb, stride_lh, stride_lm, stride_qm, stride_qd,
                                 stride_om, stride_od, stride_am, stride_mb, stride_mh, stride_mm, stride_mn,
                                 stride_bb, stride_bh, stride_bm, stride_bn, H, Sq, Sk, D, window, qk_scale, slope,
                                 True, CAUSAL, HAS_MASK, HAS_BIAS, HAS_ALIBI, HAS_WINDOW, HAS_DBIAS, ATOMIC_DQ,
                                 TMA_DQ, TMA_QDO, PRECISION, BLOCK_M, BLOCK_D, KEY_PADDING=KEY_PADDING)
    out = b * stride_gb + h_kv * stride_gh + rn[:, None].to(tl.int64) * stride_gn + rd[None, :]
    tl.store(DK + out, (dk * scale).to(DK.dtype.element_ty), mask=kv_mask)
    tl.store(DV + out, dv.to(DV.dtype.element_ty), mask=kv_mask)


@triton.jit
def _dq_block(dq, q, do, lse, delta, k_base, v_base, K_DESC, V_DESC, start, rm, rd, pos, b, h, h_kv, MASK, BIAS,
              stride_kn, stride_kd, stride_vn, stride_vd, stride_mb, stride_mh, stride_mm, stride_mn,
              stride_bb, stride_bh, stride_bm, stride_bn, Sq, Sk, D, window, qk_scale, slope,
              MASKED: tl.constexpr, CAUSAL: tl.constexpr, HAS_MASK: tl.constexpr, HAS_BIAS: tl.constexpr,
              HAS_ALIBI: tl.constexpr, HAS_WINDOW: tl.constexpr, PRECISION: tl.constexpr, TMA_KV: tl.constexpr,
              BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, KEY_PADDING: tl.constexpr = False):
    """dQ of one query block updated with keys start + [0, BLOCK_N). Unmasked blocks hold
    only existing, visible keys (rows past Sq read zeros and are never stored). TMA_KV: K and
    V tiles through descriptors, as in the forward."""
    rn = start + tl.arange(0, BLOCK_N)
    if TMA_KV:
        k = K_DESC.load([b.to(tl.int32), h_kv.to(tl.int32), start, 0]).reshape(BLOCK_N, BLOCK_D)
        v = V_DESC.load([b.to(tl.int32), h_kv.to(tl.int32), start, 0]).reshape(BLOCK_N, BLOCK_D)
    else:
        k = _tile(k_base, rn, rd, stride_kn, stride_kd, Sk, D)
        v = _tile(v_base, rn, rd, stride_vn, stride_vd, Sk, D)
    s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * qk_scale
    if MASKED:
        s = _masked_scores(s, rm, rn, pos, b, h, MASK, BIAS, stride_mb, stride_mh, stride_mm, stride_mn,
                           stride_bb, stride_bh, stride_bm, stride_bn, Sq, Sk, window, slope,
                           CAUSAL, HAS_MASK, HAS_BIAS, HAS_ALIBI, HAS_WINDOW, KEY_PADDING=KEY_PADDING)
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
    K_DESC, V_DESC,  # with TMA_KV: descriptors of K and V as (B, H_KV, Sk, D), block [1, 1, BLOCK_N, BLOCK_D]
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
    HAS_WINDOW: tl.constexpr, PRECISION: tl.constexpr, TMA_KV: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    HEAD_MAJOR: tl.constexpr,  # programs ordered head-major (kernels/attention._heads)
):
    """dQ of one query block of one head, recomputing its scores block by block."""
    pid_m = tl.program_id(0)
    if CAUSAL:  # the longest query blocks first, so the last wave holds the shortest ones
        pid_m = tl.num_programs(0) - 1 - pid_m
    bh = tl.program_id(1)
    b, h, h_kv = _heads(bh, H, GROUP, HEAD_MAJOR)
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
    dense = Sk
    if KEY_PADDING:
        dense, kept = _padding_bounds(MASK, b, stride_mb, stride_mn, Sk, 1024)
        hi = tl.minimum(hi, kept)
    k_base = K + b * stride_kb + h_kv * stride_kh
    v_base = V + b * stride_vb + h_kv * stride_vh
    mid = lo  # [lo, mid): no mask needed, as in the forward
    if (not HAS_MASK or (KEY_PADDING and not HAS_BIAS)) and not HAS_WINDOW:
        mid = (dense // BLOCK_N) * BLOCK_N
        if CAUSAL:
            mid = tl.minimum(mid, ((pid_m * BLOCK_M + (Sk - Sq) + 1) // BLOCK_N) * BLOCK_N)
        mid = tl.maximum(lo, tl.minimum(mid, hi))
    for start in range(lo, mid, BLOCK_N):
        dq = _dq_block(dq, q, do, lse, delta, k_base, v_base, K_DESC, V_DESC, start, rm, rd, pos, b, h, h_kv, MASK,
                       BIAS,
                       stride_kn, stride_kd, stride_vn, stride_vd, stride_mb, stride_mh, stride_mm, stride_mn,
                       stride_bb, stride_bh, stride_bm, stride_bn, Sq, Sk, D, window, qk_scale, slope, False, CAUSAL,
                       HAS_MASK, HAS_BIAS, HAS_ALIBI, HAS_WINDOW, PRECISION, TMA_KV, BLOCK_N, BLOCK_D, KEY_PADDING=KEY_PADDING)
    for start in range(mid, hi, BLOCK_N):
        dq = _dq_block(dq, q, do, lse, delta, k_base, v_base, K_DESC, V_DESC, start, rm, rd, pos, b, h, h_kv, MASK,
                       BIAS,
                       stride_kn, stride_kd, stride_vn, stride_vd, stride_mb, stride_mh, stride_mm, stride_mn,
                       stride_bb, stride_bh, stride_bm, stride_bn, Sq, Sk, D, window, qk_scale, slope, True, CAUSAL,
                       HAS_MASK, HAS_BIAS, HAS_ALIBI, HAS_WINDOW, PRECISION, TMA_KV, BLOCK_N, BLOCK_D, KEY_PADDING=KEY_PADDING)
    tl.store(DQ + b * stride_gb + h * stride_gh + rm[:, None].to(tl.int64) * stride_gm + rd[None, :],
             (dq * scale).to(DQ.dtype.element_ty), mask=q_mask)
