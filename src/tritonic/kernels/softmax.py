"""Softmax and log-softmax kernels over the last dimension, forward and backward.

One forward and one backward kernel serve both ops (``LOG`` picks log-softmax): they share
the row maximum, the sum of exponentials and the masking; only the final expression
differs. A program handles ``BLOCK_M`` rows. When a whole row fits in a block
(``SINGLE_PASS``) it is read once and kept in registers; wider rows are walked in
``BLOCK_N`` chunks, twice: an online pass that keeps a running maximum and a running sum
of exponentials rescaled whenever the maximum grows, then a pass that writes the outputs.

The logits are ``z = x * scale`` (``HAS_SCALE``), with ``-inf`` where a boolean mask says
False (``HAS_MASK``). A row with no finite logit (every position masked) gives zeros
(softmax) or ``-inf`` everywhere (log-softmax), never NaN, and a zero gradient.

All arithmetic is float32 whatever the storage dtype. Row offsets are int64, so tensors
over 2**31 elements index correctly.
"""

import triton
import triton.language as tl


@triton.jit
def _mask_offsets(rows, D1, D2, stride_m0, stride_m1, stride_m2):
    """Offsets (int64) of the mask rows of output rows ``rows``. The op collapses the input's
    leading dimensions, as the mask sees them, to at most three (D0, D1, D2), so row
    ``r = (r0 * D1 + r1) * D2 + r2`` reads mask row ``r0 * s0 + r1 * s1 + r2 * s2``;
    a stride is 0 where the mask is broadcast."""
    r2 = rows % D2
    t = rows // D2
    return (t // D1) * stride_m0 + (t % D1) * stride_m1 + r2 * stride_m2


@triton.jit
def _keep(MASK, m_offs, cols, stride_mn, bounds, HAS_MASK: tl.constexpr, EVICT: tl.constexpr):
    """The positions of a [BLOCK_M, BLOCK_N] tile that take part: in bounds and, with a
    mask, True there (``m_offs`` from _mask_offsets; ``stride_mn`` is 0 for one mask value per row)."""
    if HAS_MASK:
        keep = tl.load(MASK + m_offs[:, None] + cols[None, :] * stride_mn, mask=bounds, other=0,
                       eviction_policy=EVICT)
        return bounds & (keep != 0)
    return bounds


@triton.jit
def _logits(X, x_offs, keep, bounds, scale, HAS_SCALE: tl.constexpr, EVICT: tl.constexpr):
    """``x * scale`` as float32, ``-inf`` where ``keep`` is False. The scale is applied before
    the masking so that a negative scale cannot turn a padding ``-inf`` into ``+inf``, and
    the values at masked positions (possibly non-finite) are discarded, never used. The load
    itself is predicated on the bounds only: predicating it on the mask too would make it
    wait for the mask's load."""
    x = tl.load(X + x_offs, mask=bounds, other=0.0, eviction_policy=EVICT)
    return _as_logits(x, keep, scale, HAS_SCALE)


@triton.jit
def _as_logits(x, keep, scale, HAS_SCALE: tl.constexpr):
    """The second half of :func:`_logits`, for a tile already loaded (``x`` in X's dtype)."""
    z = x.to(tl.float32)
    if HAS_SCALE:
        z = z * scale
    return tl.where(keep, z, float("-inf"))


@triton.jit
def _finite_max(m):
    """The row maximum with ``-inf`` (a row with nothing kept) replaced by 0, so that
    ``exp(z - m)`` is ``exp(-inf) = 0`` there instead of ``exp(-inf + inf) = NaN``."""
    return tl.where(m == float("-inf"), 0.0, m)


@triton.jit
def _outputs(z, m, s, LOG: tl.constexpr):
    """Softmax ``exp(z - m) / s`` or log-softmax ``z - m - log(s)`` of a tile, given the row
    maximum ``m`` (from _finite_max) and sum ``s = sum(exp(z - m))``. ``s`` is at least 1
    when the row has a kept position (its maximum contributes exp(0)) and 0 otherwise;
    then it is taken as 1, and every ``z`` being ``-inf`` gives zeros (softmax) or ``-inf``
    (log-softmax) rather than ``0 / 0``."""
    d = z - m[:, None]
    s = tl.where(s > 0, s, 1.0)
    if LOG:
        return d - tl.log(s)[:, None]
    return tl.exp(d) / s[:, None]


@triton.jit
def _softmax_fwd(
    X,  # input, (M, N) with row stride stride_x and unit column stride
    MASK,  # boolean mask, True = keep; read only if HAS_MASK (row offsets from _mask_offsets)
    Y,  # output, (M, N) with row stride stride_y
    stride_x, stride_y,  # row strides, in elements
    stride_m0, stride_m1, stride_m2,  # mask strides of the three collapsed leading dims (0 = broadcast)
    stride_mn,  # mask column stride (0 when one value serves a whole row)
    D1, D2,  # sizes of the two inner collapsed leading dims (M = D0 * D1 * D2)
    M, N,  # rows and row width
    scale,  # multiplies the input before the softmax; used only if HAS_SCALE
    LOG: tl.constexpr,  # log-softmax instead of softmax
    HAS_SCALE: tl.constexpr,  # scale != 1: one multiply per element saved otherwise
    HAS_MASK: tl.constexpr,
    SINGLE_PASS: tl.constexpr,  # BLOCK_N >= N: the row stays in registers
    BLOCK_M: tl.constexpr,  # rows per program
    BLOCK_N: tl.constexpr,  # columns per chunk (a power of two)
    PREFETCH: tl.constexpr = False,  # multi-pass: load the next chunk before reducing this one
    STORE_CS: tl.constexpr = False,  # multi-pass: write Y with the streaming hint (.cs), so that the
    # outputs take less of L2 from the rows pass 2 reads again
):
    pid = tl.program_id(0)
    rows = pid * BLOCK_M + tl.arange(0, BLOCK_M)
    row_mask = rows < M
    rows = rows.to(tl.int64)
    cols = tl.arange(0, BLOCK_N)
    m_offs = rows  # unused without a mask
    if HAS_MASK:
        m_offs = _mask_offsets(rows, D1, D2, stride_m0, stride_m1, stride_m2)
    out_dtype = Y.dtype.element_ty

    if SINGLE_PASS:
        bounds = row_mask[:, None] & (cols < N)[None, :]
        keep = _keep(MASK, m_offs, cols, stride_mn, bounds, HAS_MASK, "")
        z = _logits(X, rows[:, None] * stride_x + cols[None, :], keep, bounds, scale, HAS_SCALE, "")
        m = _finite_max(tl.max(z, axis=1))
        s = tl.sum(tl.exp(z - m[:, None]), axis=1)
        y = _outputs(z, m, s, LOG)
        tl.store(Y + rows[:, None] * stride_y + cols[None, :], y.to(out_dtype), mask=bounds)
    else:
        # Pass 1: running row maximum m and sums of exponentials relative to it. When a chunk
        # raises the maximum from m to m', the sums so far are rescaled by exp(m - m'). The
        # sums are kept per column of the tile (an FMA per element) and added up once at the
        # end: one reduction per chunk (the maximum) instead of two, and the rounding errors
        # of the rescaling stay independent from lane to lane rather than hitting the whole
        # row's sum at each chunk.
        # PREFETCH: each chunk's load is issued one iteration ahead, into registers, so that it
        # is in flight while this chunk's maximum is reduced across the warps (a barrier) and
        # its exponentials computed; otherwise the loads and the reduction alternate, and a
        # program has one chunk in flight at most (the last prefetch is out of bounds: no traffic).
        m = tl.full([BLOCK_M], float("-inf"), tl.float32)
        acc = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
        if PREFETCH:
            x_next = tl.load(X + rows[:, None] * stride_x + cols[None, :],
                             mask=row_mask[:, None] & (cols < N)[None, :], other=0.0, eviction_policy="evict_last")
        for start in range(0, N, BLOCK_N):
            c = start + cols
            bounds = row_mask[:, None] & (c < N)[None, :]
            keep = _keep(MASK, m_offs, c, stride_mn, bounds, HAS_MASK, "evict_last")
            if PREFETCH:
                x_cur = x_next
                cn = c + BLOCK_N
                x_next = tl.load(X + rows[:, None] * stride_x + cn[None, :],
                                 mask=row_mask[:, None] & (cn < N)[None, :], other=0.0, eviction_policy="evict_last")
                z = _as_logits(x_cur, keep, scale, HAS_SCALE)
            else:
                z = _logits(X, rows[:, None] * stride_x + c[None, :], keep, bounds, scale, HAS_SCALE, "evict_last")
            m_new = tl.maximum(m, tl.max(z, axis=1))  # -inf until something is kept
            m_safe = _finite_max(m_new)
            # exp(m - m_safe) is exp(-inf) = 0 while nothing was kept, when acc is 0 anyway.
            acc = acc * tl.exp(m - m_safe)[:, None] + tl.exp(z - m_safe[:, None])
            m = m_new
        m = _finite_max(m)
        s = tl.sum(acc, axis=1)
        # Pass 2: the outputs, re-reading the row: pass 1 asked L2 to keep it (evict_last),
        # this pass lets it go. Backwards, last chunk first: the chunks pass 1 read last are
        # the likeliest still to be in L2.
        last = (N - 1) // BLOCK_N * BLOCK_N
        if PREFETCH:
            c0 = last + cols
            x_next = tl.load(X + rows[:, None] * stride_x + c0[None, :],
                             mask=row_mask[:, None] & (c0 < N)[None, :], other=0.0, eviction_policy="evict_first")
        for start in range(0, N, BLOCK_N):
            c = (last - start) + cols
            bounds = row_mask[:, None] & (c < N)[None, :]
            keep = _keep(MASK, m_offs, c, stride_mn, bounds, HAS_MASK, "evict_first")
            if PREFETCH:  # the chunk before this one (pass 2 walks backwards); none after the first
                x_cur = x_next
                cp = c - BLOCK_N
                x_next = tl.load(X + rows[:, None] * stride_x + cp[None, :],
                                 mask=row_mask[:, None] & (cp >= 0)[None, :], other=0.0, eviction_policy="evict_first")
                z = _as_logits(x_cur, keep, scale, HAS_SCALE)
            else:
                z = _logits(X, rows[:, None] * stride_x + c[None, :], keep, bounds, scale, HAS_SCALE, "evict_first")
            y = _outputs(z, m, s, LOG)
            if STORE_CS:
                tl.store(Y + rows[:, None] * stride_y + c[None, :], y.to(out_dtype), mask=bounds, cache_modifier=".cs")
            else:
                tl.store(Y + rows[:, None] * stride_y + c[None, :], y.to(out_dtype), mask=bounds)


@triton.jit
def _bwd_tile(y, dy, keep, LOG: tl.constexpr):
    """The per-element terms of a tile: (what the row sum adds up, its own factors).
    Softmax: dx = y * (dy - sum(dy * y)); log-softmax: dx = dy - exp(y) * sum(dy), over the
    kept positions only (a masked output is a constant: its gradient flows nowhere)."""
    if LOG:
        dy = tl.where(keep, dy, 0.0)
        return dy, dy
    return dy * y, dy


@triton.jit
def _bwd_dx(y, dy, c, keep, scale, HAS_SCALE: tl.constexpr, LOG: tl.constexpr):
    """dx of a tile given the row sum ``c`` (see _bwd_tile); 0 where not kept. ``scale``
    multiplied the input, so it multiplies the gradient (chain rule)."""
    if LOG:
        # exp(y) is exp(-inf) = 0 at masked positions and in rows with nothing kept.
        dx = dy - tl.exp(y) * c[:, None]
        dx = tl.where(keep, dx, 0.0)
    else:
        dx = y * (dy - c[:, None])  # y is 0 where masked: so is dx
    if HAS_SCALE:
        dx = dx * scale
    return dx


@triton.jit
def _softmax_bwd(
    Y,  # forward output, (M, N) with row stride stride_y
    DY,  # gradient of Y, (M, N) with row stride stride_dy
    MASK,  # the forward's mask; read only if HAS_MASK (log-softmax needs it, softmax's y is 0 there)
    DX,  # gradient of X, (M, N) with row stride stride_dx
    stride_y, stride_dy, stride_dx,  # row strides, in elements
    stride_m0, stride_m1, stride_m2, stride_mn,  # mask strides, as in _softmax_fwd
    D1, D2,  # inner collapsed leading dims, as in _softmax_fwd
    M, N,  # rows and row width
    scale,  # the forward's scale; used only if HAS_SCALE
    LOG: tl.constexpr,
    HAS_SCALE: tl.constexpr,
    HAS_MASK: tl.constexpr,
    SINGLE_PASS: tl.constexpr,  # BLOCK_N >= N
    BLOCK_M: tl.constexpr,  # rows per program
    BLOCK_N: tl.constexpr,  # columns per chunk
    PIPE: tl.constexpr = False,  # multi-pass: the forward's scheme (see _bwd_pipelined)
):
    pid = tl.program_id(0)
    rows = pid * BLOCK_M + tl.arange(0, BLOCK_M)
    row_mask = rows < M
    rows = rows.to(tl.int64)
    cols = tl.arange(0, BLOCK_N)
    m_offs = rows
    if HAS_MASK:
        m_offs = _mask_offsets(rows, D1, D2, stride_m0, stride_m1, stride_m2)
    out_dtype = DX.dtype.element_ty
    if not SINGLE_PASS and PIPE:
        _bwd_pipelined(Y, DY, MASK, DX, stride_y, stride_dy, stride_dx, stride_mn, m_offs, rows, row_mask, cols, N,
                       scale, LOG, HAS_SCALE, HAS_MASK, BLOCK_M, BLOCK_N)
        return

    if SINGLE_PASS:
        bounds = row_mask[:, None] & (cols < N)[None, :]
        keep = _keep(MASK, m_offs, cols, stride_mn, bounds, HAS_MASK, "")
        y = tl.load(Y + rows[:, None] * stride_y + cols[None, :], mask=bounds, other=0.0).to(tl.float32)
        dy = tl.load(DY + rows[:, None] * stride_dy + cols[None, :], mask=bounds, other=0.0).to(tl.float32)
        term, dy = _bwd_tile(y, dy, keep, LOG)
        c = tl.sum(term, axis=1)
        dx = _bwd_dx(y, dy, c, keep, scale, HAS_SCALE, LOG)
        tl.store(DX + rows[:, None] * stride_dx + cols[None, :], dx.to(out_dtype), mask=bounds)
    else:
        # Pass A: the row sum; pass B: dx, re-reading y and dy (kept in L2 by pass A's hint).
        c = tl.zeros([BLOCK_M], tl.float32)
        for start in range(0, N, BLOCK_N):
            col = start + cols
            bounds = row_mask[:, None] & (col < N)[None, :]
            keep = _keep(MASK, m_offs, col, stride_mn, bounds, HAS_MASK, "evict_last")
            y = tl.load(Y + rows[:, None] * stride_y + col[None, :], mask=bounds, other=0.0,
                        eviction_policy="evict_last").to(tl.float32)
            dy = tl.load(DY + rows[:, None] * stride_dy + col[None, :], mask=bounds, other=0.0,
                         eviction_policy="evict_last").to(tl.float32)
            term, dy = _bwd_tile(y, dy, keep, LOG)
            c += tl.sum(term, axis=1)
        last = (N - 1) // BLOCK_N * BLOCK_N  # pass B backwards: pass A's last chunks are likeliest in L2
        for start in range(0, N, BLOCK_N):
            col = (last - start) + cols
            bounds = row_mask[:, None] & (col < N)[None, :]
            keep = _keep(MASK, m_offs, col, stride_mn, bounds, HAS_MASK, "evict_first")
            y = tl.load(Y + rows[:, None] * stride_y + col[None, :], mask=bounds, other=0.0,
                        eviction_policy="evict_first").to(tl.float32)
            dy = tl.load(DY + rows[:, None] * stride_dy + col[None, :], mask=bounds, other=0.0,
                         eviction_policy="evict_first").to(tl.float32)
            _, dy = _bwd_tile(y, dy, keep, LOG)
            dx = _bwd_dx(y, dy, c, keep, scale, HAS_SCALE, LOG)
            tl.store(DX + rows[:, None] * stride_dx + col[None, :], dx.to(out_dtype), mask=bounds)


@triton.jit
def _bwd_pipelined(Y, DY, MASK, DX, stride_y, stride_dy, stride_dx, stride_mn, m_offs, rows, row_mask, cols, N,
                   scale, LOG: tl.constexpr, HAS_SCALE: tl.constexpr, HAS_MASK: tl.constexpr,
                   BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """The multi-pass backward as the forward does it: pass A sums per column of the tile and
    reduces once at the end (no barrier per chunk), each chunk's y and dy are loaded one
    iteration ahead (in flight while this chunk is computed), and dx is stored with the
    streaming hint (.cs) so that it takes less of L2 from the rows pass B reads again."""
    y_off = rows[:, None] * stride_y
    dy_off = rows[:, None] * stride_dy
    acc = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
    y_next = tl.load(Y + y_off + cols[None, :], mask=row_mask[:, None] & (cols < N)[None, :], other=0.0,
                     eviction_policy="evict_last")
    dy_next = tl.load(DY + dy_off + cols[None, :], mask=row_mask[:, None] & (cols < N)[None, :], other=0.0,
                      eviction_policy="evict_last")
    for start in range(0, N, BLOCK_N):
        col = start + cols
        bounds = row_mask[:, None] & (col < N)[None, :]
        keep = _keep(MASK, m_offs, col, stride_mn, bounds, HAS_MASK, "evict_last")
        y, dy = y_next.to(tl.float32), dy_next.to(tl.float32)
        cn = col + BLOCK_N  # (past the row's end at the last chunk: masked, no traffic)
        y_next = tl.load(Y + y_off + cn[None, :], mask=row_mask[:, None] & (cn < N)[None, :], other=0.0,
                         eviction_policy="evict_last")
        dy_next = tl.load(DY + dy_off + cn[None, :], mask=row_mask[:, None] & (cn < N)[None, :], other=0.0,
                          eviction_policy="evict_last")
        term, _ = _bwd_tile(y, dy, keep, LOG)
        acc += term
    c = tl.sum(acc, axis=1)
    last = (N - 1) // BLOCK_N * BLOCK_N  # pass B backwards: pass A's last chunks are likeliest in L2
    c0 = last + cols
    y_next = tl.load(Y + y_off + c0[None, :], mask=row_mask[:, None] & (c0 < N)[None, :], other=0.0,
                     eviction_policy="evict_first")
    dy_next = tl.load(DY + dy_off + c0[None, :], mask=row_mask[:, None] & (c0 < N)[None, :], other=0.0,
                      eviction_policy="evict_first")
    for start in range(0, N, BLOCK_N):
        col = (last - start) + cols
        bounds = row_mask[:, None] & (col < N)[None, :]
        keep = _keep(MASK, m_offs, col, stride_mn, bounds, HAS_MASK, "evict_first")
        y, dy = y_next.to(tl.float32), dy_next.to(tl.float32)
        cp = col - BLOCK_N  # the chunk before (none after the first)
        y_next = tl.load(Y + y_off + cp[None, :], mask=row_mask[:, None] & (cp >= 0)[None, :], other=0.0,
                         eviction_policy="evict_first")
        dy_next = tl.load(DY + dy_off + cp[None, :], mask=row_mask[:, None] & (cp >= 0)[None, :], other=0.0,
                          eviction_policy="evict_first")
        _, dy = _bwd_tile(y, dy, keep, LOG)
        dx = _bwd_dx(y, dy, c, keep, scale, HAS_SCALE, LOG)
        tl.store(DX + rows[:, None] * stride_dx + col[None, :], dx.to(DX.dtype.element_ty), mask=bounds,
                 cache_modifier=".cs")
