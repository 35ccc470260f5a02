"""LayerNorm and RMSNorm kernels, forward and backward.

One forward and one backward kernel serve both norms (``IS_RMS`` picks the variant):
their only differences are the mean subtraction and the bias. A program normalises
``BLOCK_M`` rows. When a whole row fits in a block (``SINGLE_PASS``) it is read once and
kept in registers; wider rows are walked in ``BLOCK_N`` chunks, twice (statistics, then
output), with the chunk statistics merged by Chan's parallel formula so that the
variance stays accurate when the mean is large.

All arithmetic is float32 whatever the storage dtype. Row offsets are int64, so tensors
over 2**31 elements index correctly.
"""

import triton
import triton.language as tl

from tritonic.kernels.pdl import pdl_enter


@triton.jit
def _load_input(X, R, S, offs_x, offs_r, offs_s, mask, HAS_RESIDUAL: tl.constexpr, STORE_SUM: tl.constexpr,
                EVICT: tl.constexpr):
    """Load a tile of the norm's input as float32: ``X``, or ``X + R`` rounded to
    ``S``'s dtype (so the normalised value is exactly the sum handed back), storing that
    sum when ``STORE_SUM``. ``EVICT`` is the loads' L2 eviction policy."""
    x = tl.load(X + offs_x, mask=mask, other=0.0, eviction_policy=EVICT).to(tl.float32)
    if HAS_RESIDUAL:
        r = tl.load(R + offs_r, mask=mask, other=0.0, eviction_policy=EVICT).to(tl.float32)
        s = (x + r).to(X.dtype.element_ty)  # (the sum's dtype is the input's)
        if STORE_SUM:
            tl.store(S + offs_s, s, mask=mask)
        x = s.to(tl.float32)
    return x


@triton.jit
def _scale(W, cols, col_mask, offset, HAS_WEIGHT: tl.constexpr, HAS_OFFSET: tl.constexpr = True):
    """The per-column scale ``W + offset`` as a float32 row vector (1.0 without a weight)."""
    if HAS_WEIGHT:
        w = tl.load(W + cols, mask=col_mask, other=0.0).to(tl.float32)
        if HAS_OFFSET:
            w += offset
    else:
        w = tl.full(cols.shape, 1.0, tl.float32)
    return w


@triton.jit
def _affine(xhat, W, B, cols, col_mask, offset, out_dtype: tl.constexpr, HAS_WEIGHT: tl.constexpr,
            HAS_BIAS: tl.constexpr, UPCAST: tl.constexpr, HAS_OFFSET: tl.constexpr = True):
    """``xhat * (W + offset) + B`` for a [BLOCK_M, BLOCK_N] tile, returned in ``out_dtype``.

    UPCAST=False rounds ``xhat`` to the output dtype before scaling, as Llama and T5 do;
    UPCAST=True scales in float32 and rounds once (torch.nn.RMSNorm, Gemma)."""
    if HAS_WEIGHT:
        if not UPCAST:
            xhat = xhat.to(out_dtype).to(tl.float32)
        xhat = xhat * _scale(W, cols, col_mask, offset, HAS_WEIGHT, HAS_OFFSET)[None, :]
    if HAS_BIAS:
        xhat = xhat + tl.load(B + cols, mask=col_mask, other=0.0).to(tl.float32)[None, :]
    return xhat.to(out_dtype)


@triton.jit
def _norm_fwd(
    X,  # input, (M, N) with row stride stride_x and unit column stride
    R,  # residual added to X before normalising, (M, N); read only if HAS_RESIDUAL
    W,  # weight, (N,); read only if HAS_WEIGHT
    B,  # bias, (N,); read only if HAS_BIAS (LayerNorm only)
    Y,  # output, (M, N) with row stride stride_y
    S,  # X + R handed back to the caller, (M, N); written only if HAS_RESIDUAL and STORE_SUM
    MEAN,  # float32 (M,): row means, written for LayerNorm when STORE_STATS
    RSTD,  # float32 (M,): 1 / sqrt(var + eps) (LayerNorm) or 1 / sqrt(mean(x^2) + eps) (RMSNorm), if STORE_STATS
    stride_x, stride_r, stride_y, stride_s,  # row strides, in elements
    M, N,  # rows and hidden size
    eps,  # added to the variance (or mean square) before the square root
    offset,  # added to the weight: the scale is W + offset (1.0 for Gemma-style weights)
    IS_RMS: tl.constexpr,  # RMSNorm: no mean subtraction and no bias
    HAS_RESIDUAL: tl.constexpr,  # fuse the pre-norm residual add and write the sum to S
    HAS_WEIGHT: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    UPCAST: tl.constexpr,  # see _affine
    STORE_STATS: tl.constexpr,  # write MEAN and RSTD (needed by the backward only)
    SINGLE_PASS: tl.constexpr,  # BLOCK_N >= N: the row stays in registers
    BLOCK_M: tl.constexpr,  # rows per program
    BLOCK_N: tl.constexpr,  # columns per chunk (a power of two)
    LOAD_EVICT: tl.constexpr = "",  # L2 eviction policy of the one-pass loads ("" or "evict_first")
    STORE_CS: tl.constexpr = False,  # write Y with the streaming cache hint (.cs): it is not read again soon
    HAS_OFFSET: tl.constexpr = True,  # offset != 0 (else the add is left out)
    EVEN: tl.constexpr = False,  # BLOCK_N divides N (one pass: equals it) and BLOCK_M divides M: no masks
    INT64: tl.constexpr = True,  # row offsets need 64 bits (the tensors hold 2**31 elements or more)
    STORE_SUM: tl.constexpr = True,  # with a residual, write the sum to S (False: the caller wants y alone)
    USE_PDL: tl.constexpr = False,  # programmatic dependent launch (kernels/pdl.py)
):
    pdl_enter(USE_PDL)
    # The per-element instruction count matters here: at ~4 TB/s an SM must turn over about ten
    # elements a cycle, so the common case drops the masks, the offset add and 64-bit indexing.
    pid = tl.program_id(0)
    rows = pid * BLOCK_M + tl.arange(0, BLOCK_M)
    row_mask = rows < M
    if INT64:
        rows = rows.to(tl.int64)
    cols = tl.arange(0, BLOCK_N)
    out_dtype = Y.dtype.element_ty

    if SINGLE_PASS:
        if EVEN:  # constant-true masks, which Triton folds away (unmasked loads and stores)
            row_mask = tl.full([BLOCK_M], 1, tl.int1)
            col_mask = tl.full([BLOCK_N], 1, tl.int1)
        else:
            col_mask = cols < N
        mask = row_mask[:, None] & col_mask[None, :]
        x = _load_input(X, R, S, rows[:, None] * stride_x + cols[None, :], rows[:, None] * stride_r + cols[None, :],
                        rows[:, None] * stride_s + cols[None, :], mask, HAS_RESIDUAL, STORE_SUM, LOAD_EVICT)
        if IS_RMS:
            rstd = tl.rsqrt(tl.sum(x * x, axis=1) / N + eps)
            xhat = x * rstd[:, None]
        else:
            mean = tl.sum(x, axis=1) / N
            xc = tl.where(mask, x - mean[:, None], 0.0)
            rstd = tl.rsqrt(tl.sum(xc * xc, axis=1) / N + eps)
            xhat = xc * rstd[:, None]
            if STORE_STATS:
                tl.store(MEAN + rows, mean, mask=row_mask)
        if STORE_STATS:
            tl.store(RSTD + rows, rstd, mask=row_mask)
        y = _affine(xhat, W, B, cols, col_mask, offset, out_dtype, HAS_WEIGHT, HAS_BIAS, UPCAST, HAS_OFFSET)
        if STORE_CS:
            tl.store(Y + rows[:, None] * stride_y + cols[None, :], y, mask=mask, cache_modifier=".cs")
        else:
            tl.store(Y + rows[:, None] * stride_y + cols[None, :], y, mask=mask)
    else:
        # Pass 1: row statistics, chunk by chunk. For LayerNorm each chunk's mean and
        # sum of squared deviations (m2) are merged into the running ones (Chan et al.).
        count = 0.0
        mean = tl.zeros([BLOCK_M], tl.float32)
        m2 = tl.zeros([BLOCK_M], tl.float32)
        if EVEN:  # BLOCK_N divides N and BLOCK_M divides M: constant-true masks, folded away
            row_mask = tl.full([BLOCK_M], 1, tl.int1)
        for start in range(0, N, BLOCK_N):
            c = start + cols
            if EVEN:
                mask = row_mask[:, None] & tl.full([BLOCK_N], 1, tl.int1)[None, :]
            else:
                mask = row_mask[:, None] & (c < N)[None, :]
            x = _load_input(X, R, S, rows[:, None] * stride_x + c[None, :], rows[:, None] * stride_r + c[None, :],
                            rows[:, None] * stride_s + c[None, :], mask, HAS_RESIDUAL, STORE_SUM, "evict_last")
            if IS_RMS:
                m2 += tl.sum(x * x, axis=1)
            else:
                n_c = tl.minimum(N - start, BLOCK_N).to(tl.float32)
                mean_c = tl.sum(x, axis=1) / n_c
                d = tl.where(mask, x - mean_c[:, None], 0.0)
                total = count + n_c
                delta = mean_c - mean
                mean += delta * (n_c / total)
                m2 += tl.sum(d * d, axis=1) + delta * delta * (count * n_c / total)
                count = total
        rstd = tl.rsqrt(m2 / N + eps)
        if STORE_STATS:
            if not IS_RMS:
                tl.store(MEAN + rows, mean, mask=row_mask)
            tl.store(RSTD + rows, rstd, mask=row_mask)
        # Pass 2: normalise and write, re-reading the inputs: pass 1 asked L2 to keep them
        # (evict_last), this pass lets them go. The residual sum is recomputed identically.
        for start in range(0, N, BLOCK_N):
            c = start + cols
            if EVEN:
                col_mask = tl.full([BLOCK_N], 1, tl.int1)
            else:
                col_mask = c < N
            mask = row_mask[:, None] & col_mask[None, :]
            x = _load_input(X, R, S, rows[:, None] * stride_x + c[None, :], rows[:, None] * stride_r + c[None, :],
                            rows[:, None] * stride_s + c[None, :], mask, HAS_RESIDUAL, False, "evict_first")
            if IS_RMS:
                xhat = x * rstd[:, None]
            else:
                xhat = (x - mean[:, None]) * rstd[:, None]
            y = _affine(xhat, W, B, c, col_mask, offset, out_dtype, HAS_WEIGHT, HAS_BIAS, UPCAST, HAS_OFFSET)
            if STORE_CS:
                tl.store(Y + rows[:, None] * stride_y + c[None, :], y, mask=mask, cache_modifier=".cs")
            else:
                tl.store(Y + rows[:, None] * stride_y + c[None, :], y, mask=mask)


@triton.jit
def _norm_bwd(
    S,  # the normalised input (X, or X + R when the residual was fused), (M, N)
    DY,  # gradient of Y, (M, N)
    DS,  # gradient of the returned sum S, (M, N); read only if HAS_DS
    W,  # weight, (N,); read only if HAS_WEIGHT
    MEAN,  # float32 (M,) from the forward; read only for LayerNorm
    RSTD,  # float32 (M,) from the forward
    DX,  # gradient of X (equal to that of R), (M, N)
    DW,  # float32 (G, N): this program's partial sum of dW in row pid; used if HAS_DW
    DB,  # float32 (G, N): partial sums of dB; used if HAS_DB. Zeroed first unless SINGLE_PASS.
    stride_s, stride_dy, stride_ds, stride_dx,  # row strides, in elements
    M, N,  # rows and hidden size
    offset,  # the scale is W + offset, as in the forward
    IS_RMS: tl.constexpr,
    HAS_DS: tl.constexpr,  # add the gradient flowing into the returned residual sum
    HAS_WEIGHT: tl.constexpr,  # the forward scaled by W + offset
    HAS_DW: tl.constexpr,  # compute dW (the weight wants a gradient)
    HAS_DB: tl.constexpr,  # compute dB
    UPCAST: tl.constexpr,  # as in the forward: False means dW sees xhat rounded to S's dtype
    SINGLE_PASS: tl.constexpr,  # BLOCK_N >= N
    BLOCK_M: tl.constexpr,  # rows per step
    BLOCK_N: tl.constexpr,  # columns per chunk
):
    # Program pid handles row blocks pid, pid + G, pid + 2G, ... and keeps its share of
    # dW and dB, which the caller sums over the G programs afterwards.
    pid = tl.program_id(0)
    G = tl.num_programs(0)
    n_blocks = tl.cdiv(M, BLOCK_M)
    cols = tl.arange(0, BLOCK_N)
    in_dtype = S.dtype.element_ty

    if SINGLE_PASS:
        col_mask = cols < N
        w = _scale(W, cols, col_mask, offset, HAS_WEIGHT)
        # Accumulated as row vectors: summing a tile over its rows each step is cheap
        # (rows of a tile sit in the same thread) and keeps register pressure low.
        dw = tl.zeros([BLOCK_N], tl.float32)
        db = tl.zeros([BLOCK_N], tl.float32)
        for blk in range(pid, n_blocks, G):
            rows = blk * BLOCK_M + tl.arange(0, BLOCK_M)
            row_mask = rows < M
            rows = rows.to(tl.int64)
            mask = row_mask[:, None] & col_mask[None, :]
            x = tl.load(S + rows[:, None] * stride_s + cols[None, :], mask=mask, other=0.0).to(tl.float32)
            dy = tl.load(DY + rows[:, None] * stride_dy + cols[None, :], mask=mask, other=0.0).to(tl.float32)
            rstd = tl.load(RSTD + rows, mask=row_mask, other=0.0)
            if IS_RMS:
                xhat = x * rstd[:, None]
            else:
                mean = tl.load(MEAN + rows, mask=row_mask, other=0.0)
                xhat = tl.where(mask, (x - mean[:, None]) * rstd[:, None], 0.0)
            wdy = dy * w[None, :]
            c1 = tl.sum(xhat * wdy, axis=1) / N
            if IS_RMS:
                dx = (wdy - xhat * c1[:, None]) * rstd[:, None]
            else:
                c2 = tl.sum(wdy, axis=1) / N
                dx = (wdy - (xhat * c1[:, None] + c2[:, None])) * rstd[:, None]
            if HAS_DS:
                dx += tl.load(DS + rows[:, None] * stride_ds + cols[None, :], mask=mask, other=0.0).to(tl.float32)
            tl.store(DX + rows[:, None] * stride_dx + cols[None, :], dx.to(DX.dtype.element_ty), mask=mask)
            if HAS_DW:
                if not UPCAST:
                    xhat = xhat.to(in_dtype).to(tl.float32)
                dw += tl.sum(dy * xhat, axis=0)
            if HAS_DB:
                db += tl.sum(dy, axis=0)
        if HAS_DW:
            tl.store(DW + pid * N + cols, dw, mask=col_mask)
        if HAS_DB:
            tl.store(DB + pid * N + cols, db, mask=col_mask)
    else:
        for blk in range(pid, n_blocks, G):
            rows = blk * BLOCK_M + tl.arange(0, BLOCK_M)
            row_mask = rows < M
            rows = rows.to(tl.int64)
            rstd = tl.load(RSTD + rows, mask=row_mask, other=0.0)
            mean = tl.zeros([BLOCK_M], tl.float32)
            if not IS_RMS:
                mean = tl.load(MEAN + rows, mask=row_mask, other=0.0)
            # Pass A: the two row reductions the input gradient needs.
            c1 = tl.zeros([BLOCK_M], tl.float32)
            c2 = tl.zeros([BLOCK_M], tl.float32)
            for start in range(0, N, BLOCK_N):
                c = start + cols
                col_mask = c < N
                mask = row_mask[:, None] & col_mask[None, :]
                x = tl.load(S + rows[:, None] * stride_s + c[None, :], mask=mask, other=0.0).to(tl.float32)
                dy = tl.load(DY + rows[:, None] * stride_dy + c[None, :], mask=mask, other=0.0).to(tl.float32)
                xhat = tl.where(mask, (x - mean[:, None]) * rstd[:, None], 0.0)
                wdy = dy * _scale(W, c, col_mask, offset, HAS_WEIGHT)[None, :]
                c1 += tl.sum(xhat * wdy, axis=1)
                c2 += tl.sum(wdy, axis=1)
            c1 = c1 / N
            c2 = c2 / N
            # The partial sums below are read back by this program on its next row
            # block; the barrier orders those accesses across its threads.
            tl.debug_barrier()
            # Pass B: the input gradient, and this program's dW / dB contributions.
            for start in range(0, N, BLOCK_N):
                c = start + cols
                col_mask = c < N
                mask = row_mask[:, None] & col_mask[None, :]
                x = tl.load(S + rows[:, None] * stride_s + c[None, :], mask=mask, other=0.0).to(tl.float32)
                dy = tl.load(DY + rows[:, None] * stride_dy + c[None, :], mask=mask, other=0.0).to(tl.float32)
                xhat = tl.where(mask, (x - mean[:, None]) * rstd[:, None], 0.0)
                wdy = dy * _scale(W, c, col_mask, offset, HAS_WEIGHT)[None, :]
                if IS_RMS:
                    dx = (wdy - xhat * c1[:, None]) * rstd[:, None]
                else:
                    dx = (wdy - (xhat * c1[:, None] + c2[:, None])) * rstd[:, None]
                if HAS_DS:
                    dx += tl.load(DS + rows[:, None] * stride_ds + c[None, :], mask=mask, other=0.0).to(tl.float32)
                tl.store(DX + rows[:, None] * stride_dx + c[None, :], dx.to(DX.dtype.element_ty), mask=mask)
                if HAS_DW:
                    if not UPCAST:
                        xhat = xhat.to(in_dtype).to(tl.float32)
                    part = tl.load(DW + pid * N + c, mask=col_mask, other=0.0)
                    tl.store(DW + pid * N + c, part + tl.sum(dy * xhat, axis=0), mask=col_mask)
                if HAS_DB:
                    part = tl.load(DB + pid * N + c, mask=col_mask, other=0.0)
                    tl.store(DB + pid * N + c, part + tl.sum(dy, axis=0), mask=col_mask)


@triton.jit
def _norm_bwd_reduce(
    DW_PART,  # float32 (G, N): per-program partial sums of dW from _norm_bwd; read if HAS_DW
    DB_PART,  # float32 (G, N): partial sums of dB; read if HAS_DB
    DW,  # (N,) output dW, in the weight's dtype
    DB,  # (N,) output dB, in the bias's dtype
    G, N,  # partial rows and hidden size
    HAS_DW: tl.constexpr,
    HAS_DB: tl.constexpr,
    BLOCK_G: tl.constexpr,  # partial rows summed per step
    BLOCK_N: tl.constexpr,  # columns per program
):
    """Sum the backward's G partial rows of dW and dB (column block per program) in float32
    and write them in the parameters' dtypes: one launch instead of a sum and a cast each."""
    cols = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    col_mask = cols < N
    dw = tl.zeros([BLOCK_N], tl.float32)
    db = tl.zeros([BLOCK_N], tl.float32)
    for start in range(0, G, BLOCK_G):
        g = start + tl.arange(0, BLOCK_G)
        offs = g[:, None] * N + cols[None, :]
        mask = (g < G)[:, None] & col_mask[None, :]
        if HAS_DW:
            dw += tl.sum(tl.load(DW_PART + offs, mask=mask, other=0.0), axis=0)
        if HAS_DB:
            db += tl.sum(tl.load(DB_PART + offs, mask=mask, other=0.0), axis=0)
    if HAS_DW:
        tl.store(DW + cols, dw.to(DW.dtype.element_ty), mask=col_mask)
    if HAS_DB:
        tl.store(DB + cols, db.to(DB.dtype.element_ty), mask=col_mask)
