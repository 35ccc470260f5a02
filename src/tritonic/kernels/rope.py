"""Rotary position embedding (RoPE) kernel: forward and backward in one.

One launch rotates both ``q`` and ``k`` (they may have different head counts, GQA/MQA):
program axis 1 walks the head blocks of ``q`` first, then those of ``k``. A program
handles ``BLOCK_S`` tokens of one batch entry and ``BLOCK_H`` heads, so the angles of its
tokens are loaded once and reused for every head of the block.

Each pair ``(x1, x2)`` of rotated elements becomes

    y1 = x1 * c1 - x2 * s1
    y2 = x2 * c2 + x1 * s2

where ``c1, s1`` are the cos / sin entries at ``x1``'s column and ``c2, s2`` those at
``x2``'s column. With the usual tables (``c1 == c2`` and ``s1 == s2``) this is the rotation
by the pair's angle; taking the entries per column reproduces Hugging Face's elementwise
formula ``x * cos + rotate_half(x) * sin`` exactly for any tables. The backward applies the
transposed matrix (``s1, s2 -> -s2, -s1``): for the usual tables, the rotation by ``-θ``.

Pairs are ``(x[i], x[i + r/2])`` (half-split: GPT-NeoX, Llama) or ``(x[2i], x[2i + 1])``
(``INTERLEAVED``: GPT-J), for rotary dimension ``r``; columns ``r..D-1`` pass through
(copied when the output is a new tensor). All arithmetic is float32; batch, head and token
offsets are int64, so tensors over 2**31 elements index correctly.
"""

import triton
import triton.language as tl

from tritonic.kernels.pdl import pdl_enter


@triton.jit
def _load_angle(T, row_off, ok, i, HALF, stride_w, INTERLEAVED: tl.constexpr, FULL_TABLE: tl.constexpr):
    """The cos or sin entries of a [BLOCK_S, BLOCK_HALF] block of pairs, as float32 (a, b):
    ``a`` at the first element's column, ``b`` at the second's. ``row_off`` [BLOCK_S] are the
    tokens' row offsets in the table; tokens where ``ok`` is False read NaN (a position out of
    range shows up as NaN instead of reading outside the table)."""
    mask = ok[:, None] & (i < HALF)[None, :]
    if not FULL_TABLE:  # one entry per pair, shared by both elements
        a = tl.load(T + row_off[:, None] + i[None, :] * stride_w, mask=mask, other=float("nan")).to(tl.float32)
        b = a
    elif INTERLEAVED:  # columns 2i and 2i + 1, as two strided loads (the tables are small and cached; one
        # [.., 2] load and tl.split failed Triton 3.6's sm_90 layout pass with 16-bit tables: tests/test_sm90_compile.py)
        a = tl.load(T + row_off[:, None] + (2 * i)[None, :] * stride_w, mask=mask, other=float("nan")).to(tl.float32)
        b = tl.load(T + row_off[:, None] + (2 * i + 1)[None, :] * stride_w, mask=mask,
                    other=float("nan")).to(tl.float32)
    else:  # columns i and i + r/2
        a = tl.load(T + row_off[:, None] + i[None, :] * stride_w, mask=mask, other=float("nan")).to(tl.float32)
        b = tl.load(T + row_off[:, None] + (i + HALF)[None, :] * stride_w, mask=mask,
                    other=float("nan")).to(tl.float32)
    return a, b


@triton.jit
def _rotate_heads(
    X,  # input heads, (B, H, S, D)
    Y,  # output heads, (B, H, S, D); X itself when rotating in place
    stride_xb, stride_xh, stride_xs, stride_xd,  # X strides, in elements
    stride_yb, stride_yh, stride_ys, stride_yd,  # Y strides
    b, h0, s, s_mask,  # batch entry (int64), first head, tokens [BLOCK_S] (int64) and their mask
    H, HALF, D,  # heads of this tensor, r / 2, head dim
    c1, c2, s1, s2,  # float32 [BLOCK_S, BLOCK_HALF] angles (see the module docstring)
    INTERLEAVED: tl.constexpr,
    COPY_PASS: tl.constexpr,
    BLOCK_H: tl.constexpr,
    BLOCK_HALF: tl.constexpr,
    BLOCK_PASS: tl.constexpr,
    STREAM: tl.constexpr,
):
    """Rotate heads ``h0 .. h0 + BLOCK_H`` of ``BLOCK_S`` tokens: a [BLOCK_H, BLOCK_S, BLOCK_HALF] tile of pairs.
    STREAM: heads read with L2 evict-first and written with the streaming hint (.cs): each byte
    is touched once."""
    h = h0 + tl.arange(0, BLOCK_H)
    row_mask = (h < H)[:, None] & s_mask[None, :]
    h = h.to(tl.int64)
    x_row = b * stride_xb + h[:, None] * stride_xh + s[None, :] * stride_xs  # [BLOCK_H, BLOCK_S]
    y_row = b * stride_yb + h[:, None] * stride_yh + s[None, :] * stride_ys
    i = tl.arange(0, BLOCK_HALF)
    mask = row_mask[:, :, None] & (i < HALF)[None, None, :]
    out_dtype = Y.dtype.element_ty
    EVICT: tl.constexpr = "evict_first" if STREAM else ""
    CM: tl.constexpr = ".cs" if STREAM else ""
    if INTERLEAVED:
        # Elements 2i and 2i + 1 sit side by side: load the [.., BLOCK_HALF, 2] block in one
        # contiguous (vectorisable) access and split it, rather than two stride-2 loads.
        col = 2 * i[:, None] + tl.arange(0, 2)[None, :]
        mask2 = mask[:, :, :, None] & (col < 2 * HALF)[None, None, :, :]
        x = tl.load(X + x_row[:, :, None, None] + col[None, None, :, :] * stride_xd, mask=mask2, other=0.0,
                    eviction_policy=EVICT)
        x1, x2 = tl.split(x.to(tl.float32))
    else:
        x_offs = x_row[:, :, None] + i[None, None, :] * stride_xd
        x1 = tl.load(X + x_offs, mask=mask, other=0.0, eviction_policy=EVICT).to(tl.float32)
        x2 = tl.load(X + x_offs + HALF * stride_xd, mask=mask, other=0.0, eviction_policy=EVICT).to(tl.float32)
    y1 = x1 * c1[None, :, :] - x2 * s1[None, :, :]
    y2 = x2 * c2[None, :, :] + x1 * s2[None, :, :]
    if INTERLEAVED:
        y = tl.join(y1, y2).to(out_dtype)
        tl.store(Y + y_row[:, :, None, None] + col[None, None, :, :] * stride_yd, y, mask=mask2, cache_modifier=CM)
    else:
        y_offs = y_row[:, :, None] + i[None, None, :] * stride_yd
        tl.store(Y + y_offs, y1.to(out_dtype), mask=mask, cache_modifier=CM)
        tl.store(Y + y_offs + HALF * stride_yd, y2.to(out_dtype), mask=mask, cache_modifier=CM)
    if COPY_PASS:  # columns r .. D - 1 are not rotated: copy them into the new output
        p = 2 * HALF + tl.arange(0, BLOCK_PASS)
        pmask = row_mask[:, :, None] & (p < D)[None, None, :]
        v = tl.load(X + x_row[:, :, None] + p[None, None, :] * stride_xd, mask=pmask)
        tl.store(Y + y_row[:, :, None] + p[None, None, :] * stride_yd, v.to(out_dtype), mask=pmask)


@triton.jit
def _rope(
    Q,  # q, (B, HQ, S, D); in the backward, the gradient of the rotated q
    K,  # k, (B, HK, S, D); in the backward, the gradient of the rotated k
    QO,  # output for q, (B, HQ, S, D): Q itself in place
    KO,  # output for k, (B, HK, S, D): K itself in place
    COS,  # cos: per token (Bc, S, W) if not HAS_POS, else a table (P, W); W = r or r / 2 (FULL_TABLE)
    SIN,  # sin, laid out like COS (its own strides)
    POS,  # integer positions (Bp, S), rows of the tables; read only if HAS_POS
    stride_qb, stride_qh, stride_qs, stride_qd,  # Q strides, in elements
    stride_kb, stride_kh, stride_ks, stride_kd,  # K strides
    stride_qob, stride_qoh, stride_qos, stride_qod,  # QO strides
    stride_kob, stride_koh, stride_kos, stride_kod,  # KO strides
    stride_cb, stride_cs, stride_cw,  # COS: batch (0 when shared or a table), token or table row, column
    stride_sb, stride_ss, stride_sw,  # SIN: the same
    stride_pb, stride_ps,  # POS: batch (0 when shared), token
    S, HQ, HK,  # tokens per sequence, heads of q and of k
    P,  # rows of the tables (positions outside 0..P-1 give NaN); unused without HAS_POS
    HALF, D,  # r / 2 (pairs per head) and the head dim
    Q_BLOCKS,  # head blocks covering q: program axis 1 is q below it, k from it on
    INTERLEAVED: tl.constexpr,  # pairs (x[2i], x[2i+1]) (GPT-J) instead of (x[i], x[i + r/2]) (NeoX, Llama)
    FULL_TABLE: tl.constexpr,  # the tables hold one entry per element (W = r), else one per pair (W = r / 2)
    HAS_POS: tl.constexpr,  # the tables are indexed by POS, else COS / SIN are already per token
    COPY_PASS: tl.constexpr,  # r < D out of place: copy the unrotated columns into QO / KO
    BACKWARD: tl.constexpr,  # apply the transposed rotation (the gradient)
    BLOCK_H: tl.constexpr,  # heads per program
    BLOCK_S: tl.constexpr,  # tokens per program
    BLOCK_HALF: tl.constexpr,  # HALF rounded up to a power of two
    BLOCK_PASS: tl.constexpr,  # D - r rounded up to a power of two (read only if COPY_PASS)
    STREAM: tl.constexpr = False,  # evict-first loads and streaming stores of the heads (ops/rope.py)
    USE_PDL: tl.constexpr = False,  # programmatic dependent launch (kernels/pdl.py)
):
    pdl_enter(USE_PDL)
    # Axis 0: batch entry and token block (token blocks of one entry are neighbours, and so
    # are their addresses); axis 1: head block.
    s_blocks = tl.cdiv(S, BLOCK_S)
    pid = tl.program_id(0)
    b = (pid // s_blocks).to(tl.int64)
    pid_s = pid % s_blocks
    pid_h = tl.program_id(1)
    s = pid_s * BLOCK_S + tl.arange(0, BLOCK_S)
    s_mask = s < S
    s = s.to(tl.int64)

    if HAS_POS:
        pos = tl.load(POS + b * stride_pb + s * stride_ps, mask=s_mask, other=0).to(tl.int64)
        ok = s_mask & (pos >= 0) & (pos < P)
        c_row = pos * stride_cs
        s_row = pos * stride_ss
    else:
        ok = s_mask
        c_row = b * stride_cb + s * stride_cs
        s_row = b * stride_sb + s * stride_ss
    i = tl.arange(0, BLOCK_HALF)
    c1, c2 = _load_angle(COS, c_row, ok, i, HALF, stride_cw, INTERLEAVED, FULL_TABLE)
    s1, s2 = _load_angle(SIN, s_row, ok, i, HALF, stride_sw, INTERLEAVED, FULL_TABLE)
    if BACKWARD:  # the transpose of [[c1, -s1], [s2, c2]]
        s1, s2 = -s2, -s1

    if pid_h < Q_BLOCKS:
        _rotate_heads(Q, QO, stride_qb, stride_qh, stride_qs, stride_qd, stride_qob, stride_qoh, stride_qos,
                      stride_qod, b, pid_h * BLOCK_H, s, s_mask, HQ, HALF, D, c1, c2, s1, s2,
                      INTERLEAVED, COPY_PASS, BLOCK_H, BLOCK_HALF, BLOCK_PASS, STREAM)
    else:
        _rotate_heads(K, KO, stride_kb, stride_kh, stride_ks, stride_kd, stride_kob, stride_koh, stride_kos,
                      stride_kod, b, (pid_h - Q_BLOCKS) * BLOCK_H, s, s_mask, HK, HALF, D, c1, c2, s1, s2,
                      INTERLEAVED, COPY_PASS, BLOCK_H, BLOCK_HALF, BLOCK_PASS, STREAM)
