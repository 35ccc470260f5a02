"""Attention forward, warp-specialised (Hopper and later; dense inputs only).

The same online softmax as ``kernels/attention.py``, written in the one shape Triton's
Hopper warp specialisation accepts (Triton 3.6): every tile comes through a tensor
descriptor (Q, K and V as (B, H, S, D) with blocks [1, 1, rows, BLOCK_D]) and the kernel has
a single key loop, marked ``warp_specialize``. The compiler then splits the program into a
producer warp that issues the TMA loads and two consumer warpgroups, each owning half of
the BLOCK_M query rows, with their registers rebalanced (``setmaxnreg``): the loads and one
group's softmax run while the other group's products are on the tensor cores.

Scope, checked by the op before it picks this kernel: no boolean mask, bias, ALiBi, window
or packed sequences, and no query row without keys (Sq <= Sk when causal). Bounds and the
causal limit are masked in the loop only where needed (``MASK_KEYS``: Sk not a multiple of
BLOCK_N, or causal). num_warps is that of one consumer group (4).
"""

import triton
import triton.language as tl

from tritonic.kernels.attention import _heads
from tritonic.kernels.pdl import pdl_enter


@triton.jit
def _attn_fwd_ws(
    Q_DESC, K_DESC, V_DESC,  # (B, H, Sq, D) / (B, H_KV, Sk, D) descriptors; blocks [1, 1, BLOCK_M or BLOCK_N, BLOCK_D]
    O, LSE,  # (B, H, Sq, D) out, any strides / float32 log-sum-exp rows
    stride_ob, stride_oh, stride_om, stride_od,
    stride_lb, stride_lh, stride_lm,
    H, GROUP,  # query heads; query heads per key/value head
    Sq, Sk, D,
    scale,
    CAUSAL: tl.constexpr,
    MASK_KEYS: tl.constexpr,  # test key bounds / the causal limit inside the loop
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
    USE_PDL: tl.constexpr = False,
):
    pdl_enter(USE_PDL)
    pid_m = tl.program_id(0)
    b, h, h_kv = _heads(tl.program_id(1), H, GROUP)
    b32 = b.to(tl.int32)
    h32 = h.to(tl.int32)
    hk32 = h_kv.to(tl.int32)
    q = Q_DESC.load([b32, h32, pid_m * BLOCK_M, 0]).reshape(BLOCK_M, BLOCK_D)
    qk_scale = tl.cast(scale, tl.float32) * 1.4426950408889634  # base 2
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    pos = rm + (Sk - Sq)  # bottom-right alignment of the causal limit
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    hi = Sk
    if CAUSAL:
        hi = tl.minimum(Sk, pid_m * BLOCK_M + BLOCK_M + (Sk - Sq))
    for start in tl.range(0, hi, BLOCK_N, warp_specialize=True):
        k = K_DESC.load([b32, hk32, start, 0]).reshape(BLOCK_N, BLOCK_D)
        s = tl.dot(q, tl.trans(k))
        if MASK_KEYS:
            rn = start + tl.arange(0, BLOCK_N)
            keep = rn[None, :] < Sk
            if CAUSAL:
                keep = keep & (rn[None, :] <= pos[:, None])
            s = tl.where(keep, s, float("-inf"))
        # every row has a key in the first block (the op's scope), so m_new is finite
        m_new = tl.maximum(m_i, tl.max(s, axis=1) * qk_scale)
        p = tl.exp2(s * qk_scale - m_new[:, None])
        alpha = tl.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, axis=1)
        v = V_DESC.load([b32, hk32, start, 0]).reshape(BLOCK_N, BLOCK_D)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
        m_i = m_new
    out = acc / l_i[:, None]
    rd = tl.arange(0, BLOCK_D)  # (a descriptor store of O fails Triton 3.6's warp specialisation pass)
    o_ptr = O + b * stride_ob + h * stride_oh + rm[:, None].to(tl.int64) * stride_om + rd[None, :] * stride_od
    tl.store(o_ptr, out.to(O.dtype.element_ty), mask=(rm[:, None] < Sq) & (rd[None, :] < D))
    lse = (m_i + tl.log2(l_i)) / 1.4426950408889634
    tl.store(LSE + b * stride_lb + h * stride_lh + rm * stride_lm, lse, mask=rm < Sq)
