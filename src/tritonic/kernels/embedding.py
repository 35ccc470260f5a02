"""Embedding lookup: rows of a table gathered by integer ids (``_embedding_fwd``); and BERT's
embeddings at inference, three lookups, their sum and its LayerNorm in one pass
(``_embeddings_norm_fwd``).

A program of ``_embedding_fwd`` copies ``BLOCK_T`` tokens' rows, ``BLOCK_D`` columns of each. An id outside
``[0, V)`` reads nothing and writes NaN over its row (PyTorch's lookup would stop the device
with an assertion; a kernel inside a CUDA graph cannot, and a row of NaN cannot pass for an
answer). Offsets are int64.
"""

import triton
import triton.language as tl

from tritonic.kernels.pdl import pdl_enter


@triton.jit
def _embedding_fwd(IDS, W, OUT, T, V, D, stride_w, stride_o,
                   BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr,
                   USE_PDL: tl.constexpr = False):  # programmatic dependent launch (kernels/pdl.py)
    pdl_enter(USE_PDL)
    pid_t = tl.program_id(0)
    pid_d = tl.program_id(1)
    toks = pid_t * BLOCK_T + tl.arange(0, BLOCK_T)
    cols = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    in_t = toks < T
    ids = tl.load(IDS + toks, mask=in_t, other=0).to(tl.int64)
    valid = (ids >= 0) & (ids < V)
    in_d = cols < D
    rows = tl.load(W + ids[:, None] * stride_w + cols[None, :], mask=(in_t & valid)[:, None] & in_d[None, :])
    rows = tl.where(valid[:, None], rows.to(tl.float32), float("nan"))  # (exact: every 16-bit value is a float32)
    tl.store(OUT + toks.to(tl.int64)[:, None] * stride_o + cols[None, :], rows.to(OUT.dtype.element_ty),
             mask=in_t[:, None] & in_d[None, :])


# The token-type mode and the arguments that differ between the modes are not specialised on:
# the probe of optimize() (both modes) and a model's first call (one of them) share one compile.
UNSPECIALISED = ("NB", "stride_tb", "tt_by_pos")


@triton.jit(do_not_specialize=list(UNSPECIALISED))
def _embeddings_norm_fwd(
    IDS,  # (B, S) word ids, strides stride_ib / stride_is
    POS,  # (B or 1, S) positions: rows of P (stride_pb 0 when shared by the batch)
    TT,  # (B or 1, S) token types; with tt_by_pos a buffer read at each token's position (stride_ts)
    W, P, TW,  # word (V, D), position (NP, D) and token-type (NT, D) tables, unit stride along D
    G, BETA,  # (D,) LayerNorm weight and bias
    OUT,  # (T, D) out, T = B * S tokens, row stride stride_o
    T, S, V, NP, NT, NB, D, eps,  # NB: the token-type buffer's length (with tt_by_pos)
    stride_ib, stride_is, stride_pb, stride_ps, stride_tb, stride_ts, stride_w, stride_p, stride_tw, stride_o,
    tt_by_pos,  # 1: token type of token (b, s) = TT[POS[b, s]] (BERT's all-zero buffer; stride_tb 0); 0: TT[b, s]
    BLOCK_T: tl.constexpr,  # tokens per program
    BLOCK_D: tl.constexpr,  # D rounded up to a power of two: a whole row per token
    USE_PDL: tl.constexpr = False,  # programmatic dependent launch (kernels/pdl.py)
):
    """BERT's embeddings at inference in one pass: ``LayerNorm(W[id] + TW[type] + P[pos])``, the
    two sums rounded to the tables' dtype in that order (as the module's two adds round them),
    the statistics in float32 (mean, then the squared deviations of the row held in registers).
    A token whose id, position or type is out of range gets a row of NaN."""
    pdl_enter(USE_PDL)
    tok = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)
    in_t = tok < T
    t64 = tok.to(tl.int64)
    b = t64 // S
    s = t64 - b * S
    ids = tl.load(IDS + b * stride_ib + s * stride_is, mask=in_t, other=0).to(tl.int64)
    pos = tl.load(POS + b * stride_pb + s * stride_ps, mask=in_t, other=0).to(tl.int64)
    tt = tl.load(TT + b * stride_tb + tl.where(tt_by_pos != 0, pos, s) * stride_ts,
                 mask=in_t & ((tt_by_pos == 0) | ((pos >= 0) & (pos < NB))), other=-1).to(tl.int64)
    valid = (ids >= 0) & (ids < V) & (pos >= 0) & (pos < NP) & (tt >= 0) & (tt < NT)
    cols = tl.arange(0, BLOCK_D)
    in_d = cols < D
    m = (in_t & valid)[:, None] & in_d[None, :]
    w = tl.load(W + ids[:, None] * stride_w + cols[None, :], mask=m, other=0.0)
    e = (w.to(tl.float32) + tl.load(TW + tt[:, None] * stride_tw + cols[None, :], mask=m, other=0.0).to(tl.float32))
    e = e.to(w.dtype).to(tl.float32)
    e = e + tl.load(P + pos[:, None] * stride_p + cols[None, :], mask=m, other=0.0).to(tl.float32)
    e = e.to(w.dtype).to(tl.float32)
    mean = tl.sum(e, axis=1) / D
    d = tl.where(in_d[None, :], e - mean[:, None], 0.0)
    rstd = 1.0 / tl.sqrt(tl.sum(d * d, axis=1) / D + eps)
    g = tl.load(G + cols, mask=in_d, other=0.0).to(tl.float32)
    beta = tl.load(BETA + cols, mask=in_d, other=0.0).to(tl.float32)
    y = d * rstd[:, None] * g[None, :] + beta[None, :]
    y = tl.where(valid[:, None], y, float("nan"))
    tl.store(OUT + t64[:, None] * stride_o + cols[None, :], y.to(OUT.dtype.element_ty), mask=in_t[:, None] & in_d[None, :])
