"""Embedding lookup: rows of a table gathered by integer ids.

A program copies ``BLOCK_T`` tokens' rows, ``BLOCK_D`` columns of each. An id outside
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
