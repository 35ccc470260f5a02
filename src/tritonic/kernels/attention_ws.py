"""Attention forward, warp-specialised (Hopper and later; dense inputs only).

The same online softmax as ``kernels/attention.py``, written in the one shape Triton's
Hopper warp specialisation accepts (Triton 3.6): every tile comes through a tensor
descriptor (Q, K and V as (B, H, S, D) with blocks [1, 1, rows, BLOCK_D]) and the kernel has
a single key loop, marked ``warp_specialize``. The compiler then splits the program into a
producer warp that issues the TMA loads and two consumer warpgroups, each owning half of
the BLOCK_M query rows, with their registers rebalanced (``setmaxnreg``): the loads and one
group's softmax run while the other group's products are on the tensor cores.

Pointer loads inside the loop make the pass give up (Triton 3.6), so the extras come through
descriptors too: an additive bias (T5) as (B or 1, H or 1, Sq, Sk) tiles, and a key-padding
mask (BERT) as (B or 1, Sk) bytes; the keys after the last kept one are never visited
(``_kept_len``, before the loop). Scope, checked by the op: no general boolean mask, ALiBi,
window or packed sequences; without a key-padding mask every query row has a key (Sq <= Sk
when causal). The key mask comes in as one additive row per block (0 or -inf, zeros past Sk);
bounds and the causal limit are applied in the loop only where needed (``MASK_KEYS``); a row
left without keys gives zeros and a -inf log-sum-exp, as in the general kernel. num_warps is
that of one consumer group (4).
"""

import triton
import triton.language as tl

from tritonic.kernels.attention import _heads, _kept_len
from tritonic.kernels.pdl import pdl_enter


@triton.jit
def _attn_fwd_ws(
    Q, K_DESC, V_DESC,  # (B, H, Sq, D) queries / (B, H_KV, Sk, D) descriptors, blocks [1, 1, BLOCK_N, BLOCK_D]
    BIAS,  # (B or 1, H or 1, Sq, Sk) additive bias; if HAS_BIAS
    MASK_DESC, MASK,  # (B or 1, Sk) key-padding mask as bytes (block [1, BLOCK_N]) and its base; if KEY_PADDING
    O, LSE,  # (B, H, Sq, D) out, any strides / float32 log-sum-exp rows
    stride_qb, stride_qh, stride_qm,  # Q's strides (unit along D)
    stride_bb, stride_bh, stride_bm,  # the bias's strides (unit along Sk)
    stride_ob, stride_oh, stride_om, stride_od,
    stride_lb, stride_lh, stride_lm,
    stride_mb,  # the mask's batch stride (0 when shared by the batch)
    H, GROUP,  # query heads; query heads per key/value head
    Sq, Sk, D,
    scale,
    CAUSAL: tl.constexpr,
    MASK_KEYS: tl.constexpr,  # test key bounds / the causal limit inside the loop (a key mask bounds itself)
    HAS_BIAS: tl.constexpr,
    BIAS_B: tl.constexpr,  # the bias has a batch axis (else row 0 for every batch entry)
    BIAS_H: tl.constexpr,  # ... a head axis
    KEY_PADDING: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
    USE_PDL: tl.constexpr = False,
    HEAD_MAJOR: tl.constexpr = False,  # programs ordered head-major (_heads): a bias shared by the batch
):
    pdl_enter(USE_PDL)
    pid_m = tl.program_id(0)
    b, h, h_kv = _heads(tl.program_id(1), H, GROUP, HEAD_MAJOR)
    b32 = b.to(tl.int32)
    hk32 = h_kv.to(tl.int32)
    # Q and the bias are split between the two consumer groups (BLOCK_M / 2 rows each). Two
    # workarounds for Triton 3.6's Hopper data partitioning:
    # - it halves a descriptor's box only for a 2-D descriptor made here, on the device (a host
    #   descriptor's box stays whole, a 3-D or 4-D one gets its half offset on the wrong axis:
    #   the TMA copy overran its half-size buffer and its barrier's byte count, and hung);
    # - it adds the second half's 64-row offset to the load's row coordinate, and again to the
    #   arange of any row index computed from that same value (the second group then stored
    #   its rows 64 too far): so the descriptors start at this block's first row, their loads
    #   take row coordinate `top`, which is 0 but not known to be (program axis 2 of a 2-D
    #   grid: a constant 0 would be one value with the column coordinate, and both would move),
    #   and pid_m * BLOCK_M feeds the row indices alone.
    top = tl.program_id(2)
    row0 = pid_m.to(tl.int64) * BLOCK_M
    q_desc = tl.make_tensor_descriptor(Q + b * stride_qb + h * stride_qh + row0 * stride_qm, [Sq - pid_m * BLOCK_M, D],
                                       [stride_qm, 1], [BLOCK_M, BLOCK_D])
    q = q_desc.load([top, 0])
    qk_scale = tl.cast(scale, tl.float32) * 1.4426950408889634  # base 2
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    pos = rm + (Sk - Sq)  # bottom-right alignment of the causal limit
    # With a key-padding mask a row may have no key yet: its running maximum starts at a finite
    # floor instead of -inf, so the loop needs no test for it (-inf - floor is -inf, whose
    # exponential is 0) and keeps the dense path's one multiply-add per score
    m_i = tl.full([BLOCK_M], -3.0e38 if KEY_PADDING and not HAS_BIAS else float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    hi = Sk
    if CAUSAL:
        hi = tl.minimum(Sk, pid_m * BLOCK_M + BLOCK_M + (Sk - Sq))
    if KEY_PADDING:  # padded keys at the end: stop at the last kept one
        hi = tl.minimum(hi, _kept_len(MASK, b, stride_mb, 1, Sk, 1024))
    bias_b = b if BIAS_B else 0
    bias_h = h if BIAS_H else 0
    if HAS_BIAS:
        bias_desc = tl.make_tensor_descriptor(BIAS + bias_b * stride_bb + bias_h * stride_bh + row0 * stride_bm,
                                              [Sq - pid_m * BLOCK_M, Sk], [stride_bm, 1], [BLOCK_M, BLOCK_N])
    mask_b = b32 if KEY_PADDING and stride_mb != 0 else 0
    for start in tl.range(0, hi, BLOCK_N, warp_specialize=True):
        k = K_DESC.load([b32, hk32, start, 0]).reshape(BLOCK_N, BLOCK_D)
        s = tl.dot(q, tl.trans(k))
        if HAS_BIAS:
            bias = bias_desc.load([top, start])
            s = s * qk_scale + bias.to(tl.float32) * 1.4426950408889634
        if KEY_PADDING:  # one additive row per block: 0 for a kept key, -inf for a padded one or one
            # past Sk (the descriptor reads zeros there)
            kept = MASK_DESC.load([mask_b, start]).reshape(1, BLOCK_N) != 0
            s = s + tl.where(kept, 0.0, float("-inf"))
        if MASK_KEYS:
            rn = start + tl.arange(0, BLOCK_N)
            keep = rn[None, :] < Sk
            if CAUSAL:
                keep = keep & (rn[None, :] <= pos[:, None])
            s = tl.where(keep, s, float("-inf"))
        if HAS_BIAS:  # (a row may still have no key: exponentials of -inf are 0)
            m_new = tl.maximum(m_i, tl.max(s, axis=1))
            m_use = tl.where(m_new == float("-inf"), 0.0, m_new)
            p = tl.exp2(s - m_use[:, None])
            alpha = tl.exp2(m_i - m_use)
        else:  # m_new is finite: every row has a key in the first block (the op's scope), or a
            # key-padding mask's floor (above); scale > 0, so the row maximum scales
            m_new = tl.maximum(m_i, tl.max(s, axis=1) * qk_scale)
            p = tl.exp2(s * qk_scale - m_new[:, None])
            alpha = tl.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, axis=1)
        v = V_DESC.load([b32, hk32, start, 0]).reshape(BLOCK_N, BLOCK_D)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
        m_i = m_new
    empty = l_i == 0.0
    out = acc / tl.where(empty, 1.0, l_i)[:, None]
    rd = tl.arange(0, BLOCK_D)  # (a descriptor store of O fails Triton 3.6's warp specialisation pass)
    o_ptr = O + b * stride_ob + h * stride_oh + rm[:, None].to(tl.int64) * stride_om + rd[None, :] * stride_od
    tl.store(o_ptr, out.to(O.dtype.element_ty), mask=(rm[:, None] < Sq) & (rd[None, :] < D))
    lse = tl.where(empty, float("-inf"), (m_i + tl.log2(tl.where(empty, 1.0, l_i))) / 1.4426950408889634)
    tl.store(LSE + b * stride_lb + h * stride_lh + rm * stride_lm, lse, mask=rm < Sq)
