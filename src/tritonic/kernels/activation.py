"""Elementwise activation kernels, forward and backward: GELU (erf or tanh form), SiLU and
the gated products SwiGLU / GeGLU (``act(gate) * up``).

The math is the GEMM epilogue's (``_activation`` / ``_activation_grad`` and the
``ACT`` codes of ``kernels/matmul.py``), imported rather than repeated, so a fused
``linear(..., activation="gelu")`` and a separate ``gelu`` round the same float32 value.

These kernels are bound by memory bandwidth (a few flops per byte): each program moves a
contiguous ``BLOCK`` of elements of every operand (8 KB in 16-bit dtypes, 16 KB in
float32) with 16-byte vector accesses. Only the block holding the end of a row (or of the
array) is masked: Triton vectorises a masked access only when it knows the length is a
multiple of 16, so full blocks take an unmasked copy of the same code. Two layouts, one
``tl.constexpr`` flag:

* ``ROWS=False``: every operand is contiguous and the tensor is walked as one flat array
  (offsets ``pid * BLOCK + arange``), which keeps Triton's alignment analysis exact;
* ``ROWS=True``: operands are ``(n_rows, n_cols)`` with unit column stride and their own
  row stride (a sliced last dimension, the two halves of a concatenated ``[gate, up]``
  tensor, an expanded gradient). Program ``pid`` takes column block ``pid % n_blocks``
  of row ``pid // n_blocks`` (one scalar division per program, none per element).

Offsets are int64, so tensors over 2**31 elements index correctly. Arithmetic is float32
whatever the storage dtype; results are rounded once, to the output's dtype.
"""

import triton
import triton.language as tl

from tritonic.kernels.pdl import pdl_enter

from tritonic.kernels.matmul import GELU, GELU_TANH, SILU, _activation, _activation_grad

__all__ = ["GELU", "GELU_TANH", "SILU", "_act_fwd", "_act_bwd"]


@triton.jit
def _block(n_cols, n_blocks, ROWS: tl.constexpr, BLOCK: tl.constexpr):
    """This program's row (int64; meaningless without ROWS) and first column (int64)."""
    pid = tl.program_id(0)
    if ROWS:
        row = pid // n_blocks
        start = (pid - row * n_blocks).to(tl.int64) * BLOCK
        row = row.to(tl.int64)
    else:
        row = pid  # unused: _at leaves the row term out
        start = pid.to(tl.int64) * BLOCK
    return row, start


@triton.jit
def _at(P, row, stride, cols, ROWS: tl.constexpr):
    """Pointers to ``cols`` of ``row`` of P. Without ROWS the row term is left out entirely:
    Triton's alignment analysis then sees ``P + multiple of BLOCK + arange`` and vectorises."""
    if ROWS:
        return P + row * stride + cols
    else:
        return P + cols


@triton.jit
def _load(ptrs, mask, MASKED: tl.constexpr):
    """A float32 tile; masked (zeros past the end) only in the last block."""
    if MASKED:
        v = tl.load(ptrs, mask=mask, other=0.0)
    else:
        v = tl.load(ptrs)
    return v.to(tl.float32)


@triton.jit
def _store(ptrs, v, mask, MASKED: tl.constexpr):
    """Store ``v`` rounded to the pointers' dtype."""
    v = v.to(ptrs.dtype.element_ty)
    if MASKED:
        tl.store(ptrs, v, mask=mask)
    else:
        tl.store(ptrs, v)


@triton.jit
def _fwd_tile(X, U, Y, row, cols, mask, stride_x, stride_u, stride_y, ACT: tl.constexpr, GATED: tl.constexpr,
              ROWS: tl.constexpr, MASKED: tl.constexpr):
    y = _activation(_load(_at(X, row, stride_x, cols, ROWS), mask, MASKED), ACT)
    if GATED:
        y = y * _load(_at(U, row, stride_u, cols, ROWS), mask, MASKED)
    _store(_at(Y, row, stride_y, cols, ROWS), y, mask, MASKED)


@triton.jit
def _act_fwd(
    X,  # input: the activation's argument (the gate when GATED)
    U,  # the up projection multiplied with act(X); read only if GATED
    Y,  # output, act(X) or act(X) * U, in Y's dtype
    n_cols,  # elements per row (ROWS), or elements in all
    n_blocks,  # column blocks per row, cdiv(n_cols, BLOCK); used only if ROWS
    stride_x, stride_u, stride_y,  # row strides in elements; used only if ROWS
    ACT: tl.constexpr,  # GELU, GELU_TANH or SILU (codes of kernels/matmul.py)
    GATED: tl.constexpr,  # SwiGLU / GeGLU: multiply by U
    ROWS: tl.constexpr,  # strided rows rather than one flat contiguous array
    BLOCK: tl.constexpr,  # elements per program (a power of two)
    USE_PDL: tl.constexpr = False,  # programmatic dependent launch (kernels/pdl.py)
):
    pdl_enter(USE_PDL)
    row, start = _block(n_cols, n_blocks, ROWS, BLOCK)
    cols = start + tl.arange(0, BLOCK)
    if start + BLOCK <= n_cols:
        _fwd_tile(X, U, Y, row, cols, None, stride_x, stride_u, stride_y, ACT, GATED, ROWS, False)
    else:
        _fwd_tile(X, U, Y, row, cols, cols < n_cols, stride_x, stride_u, stride_y, ACT, GATED, ROWS, True)


@triton.jit
def _bwd_tile(X, U, DY, DX, DU, row, cols, mask, stride_x, stride_u, stride_dy, stride_dx, stride_du,
              ACT: tl.constexpr, GATED: tl.constexpr, ROWS: tl.constexpr, MASKED: tl.constexpr):
    x = _load(_at(X, row, stride_x, cols, ROWS), mask, MASKED)
    dy = _load(_at(DY, row, stride_dy, cols, ROWS), mask, MASKED)
    if GATED:
        u = _load(_at(U, row, stride_u, cols, ROWS), mask, MASKED)
        _store(_at(DU, row, stride_du, cols, ROWS), dy * _activation(x, ACT), mask, MASKED)
        dy = dy * u
    _store(_at(DX, row, stride_dx, cols, ROWS), dy * _activation_grad(x, ACT), mask, MASKED)


@triton.jit
def _act_bwd(
    X,  # the forward's input (the gate when GATED)
    U,  # the forward's up input; read only if GATED
    DY,  # gradient of the output
    DX,  # out: DY * act'(X), times U when GATED
    DU,  # out: DY * act(X); written only if GATED
    n_cols,  # elements per row (ROWS), or elements in all
    n_blocks,  # column blocks per row; used only if ROWS
    stride_x, stride_u, stride_dy, stride_dx, stride_du,  # row strides in elements; used only if ROWS
    ACT: tl.constexpr,
    GATED: tl.constexpr,
    ROWS: tl.constexpr,
    BLOCK: tl.constexpr,
    USE_PDL: tl.constexpr = False,  # programmatic dependent launch (kernels/pdl.py)
):
    """Both gradients of a gated product in one pass: the gate and up values are read once
    and act(gate) is recomputed here rather than saved by the forward (a few flops instead
    of a tensor written and read back)."""
    pdl_enter(USE_PDL)
    row, start = _block(n_cols, n_blocks, ROWS, BLOCK)
    cols = start + tl.arange(0, BLOCK)
    if start + BLOCK <= n_cols:
        _bwd_tile(X, U, DY, DX, DU, row, cols, None, stride_x, stride_u, stride_dy, stride_dx, stride_du,
                  ACT, GATED, ROWS, False)
    else:
        _bwd_tile(X, U, DY, DX, DU, row, cols, cols < n_cols, stride_x, stride_u, stride_dy, stride_dx, stride_du,
                  ACT, GATED, ROWS, True)
