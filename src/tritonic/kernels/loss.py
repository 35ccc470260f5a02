"""Cross-entropy kernels: the loss of each row of logits against a class index, and its
gradient, without ever materialising probabilities.

    loss = lse(z) - z[t]                                      z = logits (or softcap·tanh(logits/softcap))
         = (1 - eps) (lse - z[t]) + eps (lse - mean(z))       with label smoothing eps
         + z_loss · lse²                                      with PaLM's z-loss
    dloss/dz_j = p_j (1 + 2 z_loss lse) - (1 - eps) [j == t] - eps / V,    p = softmax(z)

The forward reads each row once (an online max / sum of exponentials over chunks of the
vocabulary) and keeps only the row's log-sum-exp; the backward reads the row once more and
writes the gradient. Rows whose target is ``ignore_index`` give loss 0 and gradient 0.
Math in float32; row offsets in int64 (8192 x 256k logits exceed 2^31 elements).
"""

import triton
import triton.language as tl


@triton.jit
def _tanh(x):
    """tanh through one exponential of -2|x| (never overflows; exact ±1 limits)."""
    e = tl.exp(-2.0 * tl.abs(x))
    t = (1.0 - e) / (1.0 + e)
    return tl.where(x < 0, -t, t)


@triton.jit
def _capped(x, softcap, HAS_SOFTCAP: tl.constexpr):
    if HAS_SOFTCAP:
        x = softcap * _tanh(x / softcap)
    return x


@triton.jit
def _lse_step(x, m, s):
    """One block ``x`` of a row into the running max ``m`` and sum of exponentials past it ``s``."""
    m_new = tl.maximum(m, tl.max(x, axis=0))
    m_use = tl.where(m_new == float("-inf"), 0.0, m_new)  # a row of -inf so far: keep s at 0
    s = s * tl.exp(m - m_use) + tl.sum(tl.exp(x - m_use), axis=0)
    return m_new, s


@triton.jit
def _ce_fwd(
    LOGITS,  # (N, V) rows with stride stride_l, unit stride along V
    TARGET,  # (N,) int32/int64 class indices
    LOSS,  # (N,) float32 out: each row's loss (0 where ignored, NaN where the target is out of range)
    LSE,  # (N, 2) float32 out: each row's max m and log(sum(exp(z - m))) (lse = their sum), kept
          # apart so that z - lse keeps its precision when m is large (1e4: an ulp of 1e-3)
    stride_l, V, ignore_index,
    smoothing,  # label smoothing eps; if HAS_SMOOTHING
    z_coef,  # z-loss coefficient; if HAS_Z
    softcap,  # logits become softcap * tanh(logits / softcap); if HAS_SOFTCAP
    HAS_SMOOTHING: tl.constexpr, HAS_Z: tl.constexpr, HAS_SOFTCAP: tl.constexpr,
    BLOCK_V: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    base = LOGITS + row * stride_l
    t = tl.load(TARGET + row)
    m = tl.full([], float("-inf"), tl.float32)
    s = tl.zeros([], tl.float32)
    total = tl.zeros([], tl.float32)
    full = V - V % BLOCK_V
    for start in range(0, full, BLOCK_V):  # whole blocks: no mask, so the loads can be vectors
        x = _capped(tl.load(base + start + tl.arange(0, BLOCK_V)).to(tl.float32), softcap, HAS_SOFTCAP)
        m, s = _lse_step(x, m, s)
        if HAS_SMOOTHING:
            total += tl.sum(x, axis=0)
    if full < V:  # the last, partial block
        cols = full + tl.arange(0, BLOCK_V)
        inside = cols < V
        x = tl.load(base + cols, mask=inside, other=float("-inf")).to(tl.float32)
        if HAS_SOFTCAP:  # tanh would turn the padding's -inf into -softcap: mask again
            x = tl.where(inside, _capped(x, softcap, HAS_SOFTCAP), float("-inf"))
        m, s = _lse_step(x, m, s)
        if HAS_SMOOTHING:
            total += tl.sum(tl.where(inside, x, 0.0), axis=0)
    log_s = tl.log(s)
    lse = m + log_s
    valid = t != ignore_index
    in_range = (t >= 0) & (t < V)
    x_t = tl.load(base + tl.where(in_range, t, 0)).to(tl.float32)
    x_t = _capped(x_t, softcap, HAS_SOFTCAP)
    loss = (m - x_t) + log_s
    if HAS_SMOOTHING:
        loss = (1.0 - smoothing) * loss + smoothing * ((m - total / V) + log_s)
    if HAS_Z:
        loss += z_coef * lse * lse
    loss = tl.where(in_range, loss, float("nan"))
    tl.store(LOSS + row, tl.where(valid, loss, 0.0))
    tl.store(LSE + 2 * row, m)
    tl.store(LSE + 2 * row + 1, log_s)


@triton.jit
def _ce_slice_stats(
    LOGITS,  # (N, width) logits of the classes col0 .. col0 + width - 1, rows with stride stride_l
    TARGET,  # (N,) class indices
    STATS,  # (N, 4) float32, updated in place: running max m, sum of exp(z - m), sum of z (for
            # label smoothing), the target's z (once its slice comes by); start as (-inf, 0, 0, 0)
    stride_l, width, col0,
    softcap,  # if HAS_SOFTCAP
    HAS_SMOOTHING: tl.constexpr, HAS_SOFTCAP: tl.constexpr,
    BLOCK_V: tl.constexpr,
):
    """One vocabulary slice of every row into the row's running softmax statistics (the
    low-memory linear cross-entropy's first pass: each slice's logits are one GEMM over all
    tokens, so the head is read once per pass)."""
    row = tl.program_id(0).to(tl.int64)
    base = LOGITS + row * stride_l
    at = STATS + 4 * row
    m = tl.load(at)
    s = tl.load(at + 1)
    total = tl.load(at + 2)
    full = width - width % BLOCK_V
    for start in range(0, full, BLOCK_V):
        x = _capped(tl.load(base + start + tl.arange(0, BLOCK_V)).to(tl.float32), softcap, HAS_SOFTCAP)
        m, s = _lse_step(x, m, s)
        if HAS_SMOOTHING:
            total += tl.sum(x, axis=0)
    if full < width:
        cols = full + tl.arange(0, BLOCK_V)
        inside = cols < width
        x = tl.load(base + cols, mask=inside, other=float("-inf")).to(tl.float32)
        if HAS_SOFTCAP:
            x = tl.where(inside, _capped(x, softcap, HAS_SOFTCAP), float("-inf"))
        m, s = _lse_step(x, m, s)
        if HAS_SMOOTHING:
            total += tl.sum(tl.where(inside, x, 0.0), axis=0)
    tl.store(at, m)
    tl.store(at + 1, s)
    tl.store(at + 2, total)
    t = tl.load(TARGET + row) - col0
    if (t >= 0) & (t < width):
        tl.store(at + 3, _capped(tl.load(base + t).to(tl.float32), softcap, HAS_SOFTCAP))


@triton.jit
def _ce_grad_block(x, cols, t, m, log_s, p_scale, hit, floor, g, softcap, HAS_SOFTCAP: tl.constexpr):
    """The gradient of one block of a row's logits ``x`` (columns ``cols``; ``t`` the target's)."""
    z = _capped(x, softcap, HAS_SOFTCAP)
    d = tl.exp((z - m) - log_s) * p_scale - tl.where(cols == t, hit, 0.0) - floor
    if HAS_SOFTCAP:  # d softcap·tanh(x/softcap) / dx = 1 - tanh²
        r = z / softcap
        d = d * (1.0 - r * r)
    return tl.where(g == 0.0, 0.0, d * g)  # ignored rows: exact zeros even where p is NaN


@triton.jit
def _ce_bwd(
    LOGITS,  # (N, V) as in the forward
    TARGET, LSE,
    DLOSS,  # gradient of each row's loss, row stride stride_g (0: one value for every row)
    DLOGITS,  # (N, V) out, row stride stride_d, unit stride along V; may be LOGITS itself
    stride_l, stride_d, stride_g, V, ignore_index, smoothing, z_coef, softcap,
    col0, width,  # LOGITS / DLOGITS hold the classes col0 .. col0 + width - 1 of V (0, V: all)
    HAS_SMOOTHING: tl.constexpr, HAS_Z: tl.constexpr, HAS_SOFTCAP: tl.constexpr,
    BLOCK_V: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    base = LOGITS + row * stride_l
    out = DLOGITS + row * stride_d
    t = tl.load(TARGET + row)
    g = tl.load(DLOSS + row * stride_g).to(tl.float32)
    g = tl.where(t != ignore_index, g, 0.0)
    t = t - col0  # the target's column within this window
    m = tl.load(LSE + 2 * row)
    log_s = tl.load(LSE + 2 * row + 1)
    lse = m + log_s
    p_scale = 1.0
    if HAS_Z:
        p_scale = 1.0 + 2.0 * z_coef * lse
    hit = 1.0
    floor = 0.0
    if HAS_SMOOTHING:
        hit = 1.0 - smoothing
        floor = smoothing / V
    full = width - width % BLOCK_V
    for start in range(0, full, BLOCK_V):  # whole blocks: no mask, so the loads and stores can be vectors
        cols = start + tl.arange(0, BLOCK_V)
        x = tl.load(base + cols).to(tl.float32)
        d = _ce_grad_block(x, cols, t, m, log_s, p_scale, hit, floor, g, softcap, HAS_SOFTCAP)
        tl.store(out + cols, d.to(DLOGITS.dtype.element_ty))
    if full < width:  # the last, partial block
        cols = full + tl.arange(0, BLOCK_V)
        inside = cols < width
        x = tl.load(base + cols, mask=inside, other=0.0).to(tl.float32)
        d = _ce_grad_block(x, cols, t, m, log_s, p_scale, hit, floor, g, softcap, HAS_SOFTCAP)
        tl.store(out + cols, d.to(DLOGITS.dtype.element_ty), mask=inside)
