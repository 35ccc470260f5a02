"""GEMM with a fused prologue and epilogue (portable path: tl.dot on any GPU and in the
interpreter).

    C[b] = act(A[b] @ B[b] + bias) + residual
    C    = act(A @ B_gate) * (A @ B_up)               if GATED (SwiGLU / GeGLU; B's gate and up
                                                      columns either in two halves or alternating)

``_matmul`` is the portable kernel (pointers and masks; any GPU and the interpreter),
``_matmul_tma`` the Hopper one (tensor descriptors, persistent grid) with the same
epilogue. They serve the forward of ``linear`` (bias, activation, residual; optionally
keeping the pre-activation Z for the backward) and of ``gated_linear``, the GEMMs of both
backwards, and plain or batched ``matmul``. Every operand is addressed by strides, so
transposes are free. Accumulation is float32; row and column offsets are int64.

The backward of an activation is one elementwise pass (``_act_grad``: G = dY * act'(Z),
with partial column sums for the bias gradient) followed by plain GEMMs ``dX = G @ W`` and
``dW = G^T @ X``. Applying act' inside those GEMMs instead recomputes it once per tile
column; that measured 8x slower on an H100 (benchmarks/NOTES.md).
"""

import triton
import triton.language as tl

from tritonic.kernels.pdl import pdl_enter

# Activation codes (constexpr ACT): the same numbers in ops/matmul.py.
NONE, RELU, GELU, GELU_TANH, SILU, TANH = 0, 1, 2, 3, 4, 5


@triton.jit
def _normal_cdf(z, LOW: tl.constexpr = False):
    """Phi(z) = (1 + erf(z / sqrt 2)) / 2 in float32, to 9e-8 absolute. With a = |z| and
    h = erfc(a / sqrt 2) / 2 = 2^(-a q(a) - 1), q a degree-8 polynomial fitted to
    -log2(erfc) (scripts/fit_erf.py, in z's units): Phi = 1 - h for z >= 0, h below. One
    special-function op (the exp2) and nine multiply-adds: the special-function unit runs at
    1/8 of the multiply-add rate, and a GELU epilogue is bound by it (Abramowitz & Stegun
    7.1.26 took two, a reciprocal and an exponential). h is 0 past |z| = 4 sqrt 2, where it
    is below float32's resolution of 1 - h. ``LOW``: degree 4 (3.4e-7 absolute;
    ``fit_erf.py --degree 4``), for 16-bit outputs, whose rounding is a thousand times
    coarser: four multiply-adds fewer in an epilogue that costs about as much as the
    product's own main loop at K = 768."""
    a = tl.minimum(tl.abs(z), 5.656854249492381)
    if LOW:
        q = 0.000520452274940908
        q = q * a - 0.007397483102977276
        q = q * a + 0.0525611974298954
        q = q * a + 0.4592547118663788
        q = q * a + 1.151091456413269
    else:
        q = -5.128675866217236e-07
        q = q * a + 9.560305443301331e-06
        q = q * a - 7.497421029256657e-05
        q = q * a + 0.0002843486436177045
        q = q * a - 1.499230620538583e-05
        q = q * a - 0.006931118201464415
        q = q * a + 0.0524347648024559
        q = q * a + 0.4592214524745941
        q = q * a + 1.1511043310165405
    h = tl.where(a < 5.656854249492381, tl.exp2(-a * q - 1.0), 0.0)
    return tl.where(z >= 0.0, 1.0 - h, h)


@triton.jit
def _activation(z, ACT: tl.constexpr, LOW: tl.constexpr = False):
    """act(z) in float32 (``LOW``: GELU's erf to 3.4e-7, enough for a 16-bit output)."""
    if ACT == 1:
        z = tl.maximum(z, 0.0)
    elif ACT == 2:
        z = z * _normal_cdf(z, LOW)
    elif ACT == 3:  # tanh(u) written as 2 sigmoid(2u) - 1: no libdevice needed
        u = 0.7978845608028654 * (z + 0.044715 * z * z * z)
        z = z * tl.sigmoid(2.0 * u)
    elif ACT == 4:
        z = z * tl.sigmoid(z)
    elif ACT == 5:  # tanh as 2 sigmoid(2z) - 1 (no libdevice); absolute error ~1e-7
        z = 2.0 * tl.sigmoid(2.0 * z) - 1.0
    return z


@triton.jit
def _activation_grad(z, ACT: tl.constexpr):
    """d act / dz at z, in float32."""
    if ACT == 1:
        g = tl.where(z > 0.0, 1.0, 0.0)
    elif ACT == 2:
        g = _normal_cdf(z) + z * 0.3989422804014327 * tl.exp(-0.5 * z * z)
    elif ACT == 3:  # with s = sigmoid(2u): 1 + tanh(u) = 2s and 1 - tanh(u)^2 = 4s(1 - s);
        # 1 - s is computed as sigmoid(-2u): subtracting from 1 would cancel for large u.
        u = 0.7978845608028654 * (z + 0.044715 * z * z * z)
        s = tl.sigmoid(2.0 * u)
        g = s + 2.0 * z * s * tl.sigmoid(-2.0 * u) * 0.7978845608028654 * (1.0 + 0.134145 * z * z)
    elif ACT == 4:
        s = tl.sigmoid(z)
        g = s * (1.0 + z * tl.sigmoid(-z))
    elif ACT == 5:  # 1 - tanh(z)^2 = 4 s (1 - s) with s = sigmoid(2z), 1 - s as sigmoid(-2z)
        g = 4.0 * tl.sigmoid(2.0 * z) * tl.sigmoid(-2.0 * z)
    else:
        g = tl.full(z.shape, 1.0, tl.float32)
    return g


@triton.jit
def _round_tf32(x):
    """Round float32 to TF32 (nearest, ties away), as cuBLAS does: the tensor cores would
    otherwise drop the low 13 mantissa bits, a biased error twice as large."""
    return tl.inline_asm_elementwise("cvt.rna.tf32.f32 $0, $1;", "=r,r", [x], dtype=tl.float32, is_pure=True,
                                     pack=1)


@triton.jit
def _tile_coords(tile, n_m, n_n, GROUP_M: tl.constexpr):
    """Grouped order: GROUP_M rows of tiles are walked column by column, so B stays in L2."""
    group = tile // (GROUP_M * n_n)
    first_m = group * GROUP_M
    rows_in_group = tl.minimum(n_m - first_m, GROUP_M)
    pid_m = first_m + (tile % (GROUP_M * n_n)) % rows_in_group
    pid_n = (tile % (GROUP_M * n_n)) // rows_in_group
    return pid_m, pid_n


@triton.jit
def _matmul(
    A,  # (batch, M, K) left operand, strides stride_ab / stride_am / stride_ak
    B,  # (batch, K, N) right operand, strides stride_bb / stride_bk / stride_bn (0 batch stride: shared)
        # GATED 1: (K, 2N), the gate columns then the up columns; GATED 2: (K, N) alternating
    C,  # (batch, M, N) output, strides stride_cb / stride_cm / stride_cn
    BIAS,  # (N,) added before the activation; read only if HAS_BIAS
    RES,  # (M, N) added after the activation, strides stride_rm / stride_rn; read only if HAS_RESIDUAL
    Z,  # (M, N) pre-activation written for the backward, same strides as C; written only if STORE_Z
        # GATED 1: (M, 2N), gate pre-activation then up; GATED 2: (M, N) as B; row stride stride_zm
    M, N, K,  # problem size
    stride_ab, stride_am, stride_ak,
    stride_bb, stride_bk, stride_bn,
    stride_cb, stride_cm, stride_cn,
    stride_rm, stride_rn,
    stride_zm,
    ACT: tl.constexpr,  # epilogue activation code (NONE, RELU, GELU, GELU_TANH, SILU, TANH)
    HAS_BIAS: tl.constexpr,
    HAS_RESIDUAL: tl.constexpr,
    STORE_Z: tl.constexpr,  # keep the pre-activation (the backward needs it)
    GATED: tl.constexpr,  # 1: C = act(A @ B_gate) * (A @ B_up), two accumulators share the A tile;
                          # 2: the same with B's columns alternating gate, up (N counts both)
    PRECISION: tl.constexpr,  # tl.dot input precision for float32 operands: "tf32" or "ieee"
    ROUND_TF32: tl.constexpr,  # round float32 operands to TF32 before the product (GPU only)
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr,  # tiles of GROUP_M rows are walked column by column, so B stays in L2
    USE_PDL: tl.constexpr = False,  # programmatic dependent launch (kernels/pdl.py)
):
    pdl_enter(USE_PDL)
    pid = tl.program_id(0)
    batch = tl.program_id(1).to(tl.int64)
    n_m, n_n = tl.cdiv(M, BLOCK_M), tl.cdiv(N, BLOCK_N)
    pid_m, pid_n = _tile_coords(pid, n_m, n_n, GROUP_M)

    rm = (pid_m * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)
    rn = (pid_n * BLOCK_N + tl.arange(0, BLOCK_N)).to(tl.int64)
    rk = tl.arange(0, BLOCK_K)
    a_ptr = A + batch * stride_ab + rm[:, None] * stride_am + rk[None, :] * stride_ak
    b_ptr = B + batch * stride_bb + rk[:, None] * stride_bk + rn[None, :] * stride_bn
    acc = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
    if GATED == 1:
        acc_u = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
    for k in range(0, K, BLOCK_K):
        a_mask = (rm[:, None] < M) & (rk[None, :] < K - k)
        b_mask = (rk[:, None] < K - k) & (rn[None, :] < N)
        a = tl.load(a_ptr, mask=a_mask, other=0.0)
        b = tl.load(b_ptr, mask=b_mask, other=0.0)
        if ROUND_TF32:
            a = _round_tf32(a)
            b = _round_tf32(b)
        acc = tl.dot(a, b, acc, input_precision=PRECISION)
        if GATED == 1:
            b_u = tl.load(b_ptr + N * stride_bn, mask=b_mask, other=0.0)
            if ROUND_TF32:
                b_u = _round_tf32(b_u)
            acc_u = tl.dot(a, b_u, acc_u, input_precision=PRECISION)
        a_ptr += BLOCK_K * stride_ak
        b_ptr += BLOCK_K * stride_bk

    mask = (rm[:, None] < M) & (rn[None, :] < N)
    if GATED == 2:  # columns alternate gate, up: each thread holds the pairs, split them
        if STORE_Z:
            tl.store(Z + rm[:, None] * stride_zm + rn[None, :], acc.to(Z.dtype.element_ty), mask=mask)
        gate, up = tl.split(tl.reshape(acc, [BLOCK_M, BLOCK_N // 2, 2]))
        rc = pid_n * (BLOCK_N // 2) + tl.arange(0, BLOCK_N // 2)
        tl.store(C + rm[:, None] * stride_cm + rc[None, :] * stride_cn,
                 (_activation(gate, ACT) * up).to(C.dtype.element_ty),
                 mask=(rm[:, None] < M) & (rc[None, :] < N // 2))
    else:
        if HAS_BIAS:
            acc += tl.load(BIAS + rn, mask=rn < N, other=0.0).to(tl.float32)[None, :]
        if STORE_Z:
            if GATED == 1:
                z_ptr = Z + rm[:, None] * stride_zm + rn[None, :]
                tl.store(z_ptr, acc.to(Z.dtype.element_ty), mask=mask)
                tl.store(z_ptr + N, acc_u.to(Z.dtype.element_ty), mask=mask)
            else:
                tl.store(Z + batch * stride_cb + rm[:, None] * stride_cm + rn[None, :] * stride_cn,
                         acc.to(Z.dtype.element_ty), mask=mask)
        acc = _activation(acc, ACT)
        if GATED == 1:
            acc = acc * acc_u
        if HAS_RESIDUAL:
            acc += tl.load(RES + rm[:, None] * stride_rm + rn[None, :] * stride_rn, mask=mask,
                           other=0.0).to(tl.float32)
        tl.store(C + batch * stride_cb + rm[:, None] * stride_cm + rn[None, :] * stride_cn,
                 acc.to(C.dtype.element_ty), mask=mask)


@triton.jit
def _matmul_tma(
    A_DESC,  # tensor descriptor of A: over (M, K) blocks [BLOCK_M, BLOCK_K] if A_KMAJOR, else over (K, M)
    B_DESC,  # tensor descriptor of B: over (N, K) blocks [BLOCK_N, BLOCK_K] if B_KMAJOR, else over (K, N)
             # GATED: over the (2N, K) weight, gate rows then up rows (B_KMAJOR only)
    C_DESC,  # tensor descriptor of C (M, N), blocks [BLOCK_M, BLOCK_N]
    Z_DESC,  # like C_DESC, for the pre-activation (GATED: the gate half); used only if STORE_Z
    ZU_DESC,  # like C_DESC, for the up half of a GATED pre-activation; used only if GATED and STORE_Z
    BIAS,  # (N,) added before the activation; read only if HAS_BIAS
    RES,  # (M, N) added after the activation, row stride stride_rm, unit column stride; if HAS_RESIDUAL
    M, N, K, stride_rm,
    n_programs,  # the persistent grid's size: each program walks every n_programs-th tile
    ACT: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    HAS_RESIDUAL: tl.constexpr,
    STORE_Z: tl.constexpr,
    GATED: tl.constexpr,
    A_KMAJOR: tl.constexpr,  # A's contiguous dimension is K (row-major A); otherwise M
    B_KMAJOR: tl.constexpr,  # B's contiguous dimension is K (a torch Linear weight); otherwise N
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr,
    FLATTEN: tl.constexpr = True,  # the tile loop flattened with the K loop (software pipelining across tiles)
    WARP_SPEC: tl.constexpr = False,  # warp-specialised tile loop (loads, MMA and epilogue in their own warps)
    USE_PDL: tl.constexpr = False,  # programmatic dependent launch (kernels/pdl.py)
):
    """Hopper path of :func:`_matmul` for float16/bfloat16: the same prologue and epilogue,
    operands brought in by the tensor memory accelerator (out-of-range rows and columns
    read as zero and are never written, so no masks), a persistent grid of one program
    per SM walking the tiles in grouped order, the tile loop flattened with the K loop so
    the loads of the next tile overlap the epilogue of this one."""
    pdl_enter(USE_PDL)
    n_m, n_n = tl.cdiv(M, BLOCK_M), tl.cdiv(N, BLOCK_N)
    k_tiles = tl.cdiv(K, BLOCK_K)
    for tile in tl.range(tl.program_id(0), n_m * n_n, n_programs, flatten=FLATTEN, warp_specialize=WARP_SPEC):
        pid_m, pid_n = _tile_coords(tile, n_m, n_n, GROUP_M)
        off_m, off_n = pid_m * BLOCK_M, pid_n * BLOCK_N
        acc = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
        if GATED == 1:
            acc_u = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
        for kk in range(k_tiles):
            off_k = kk * BLOCK_K
            if A_KMAJOR:
                a = A_DESC.load([off_m, off_k])
            else:
                a = A_DESC.load([off_k, off_m]).T
            if B_KMAJOR:
                b = B_DESC.load([off_n, off_k]).T
            else:
                b = B_DESC.load([off_k, off_n])
            acc = tl.dot(a, b, acc)
            if GATED == 1:
                acc_u = tl.dot(a, B_DESC.load([N + off_n, off_k]).T, acc_u)

        if GATED == 2:  # columns alternate gate, up: one wide product, split in registers
            if STORE_Z:
                Z_DESC.store([off_m, off_n], acc.to(Z_DESC.dtype))
            gate, up = tl.split(tl.reshape(acc, [BLOCK_M, BLOCK_N // 2, 2]))
            C_DESC.store([off_m, off_n // 2], (_activation(gate, ACT, True) * up).to(C_DESC.dtype))
        else:
            rm = (off_m + tl.arange(0, BLOCK_M)).to(tl.int64)
            rn = off_n + tl.arange(0, BLOCK_N)
            if HAS_BIAS:
                acc += tl.load(BIAS + rn, mask=rn < N, other=0.0).to(tl.float32)[None, :]
            if STORE_Z:
                Z_DESC.store([off_m, off_n], acc.to(Z_DESC.dtype))
                if GATED == 1:
                    ZU_DESC.store([off_m, off_n], acc_u.to(ZU_DESC.dtype))
            acc = _activation(acc, ACT, True)  # (this kernel's outputs are 16-bit)
            if GATED == 1:
                acc = acc * acc_u
            if HAS_RESIDUAL:
                acc += tl.load(RES + rm[:, None] * stride_rm + rn[None, :],
                               mask=(rm[:, None] < M) & (rn[None, :] < N), other=0.0).to(tl.float32)
            C_DESC.store([off_m, off_n], acc.to(C_DESC.dtype))


@triton.jit
def _gated_grad(
    DH,  # (M, N) gradient of h = act(gate) * up, row stride stride_dh
    Z,  # (M, 2N) pre-activations: gate columns then up columns, row stride stride_z
    DZ,  # (M, 2N) out: d gate = dh * up * act'(gate), d up = dh * act(gate), row stride stride_z
    M, N, stride_dh, stride_z,
    ACT: tl.constexpr,
    INTERLEAVED: tl.constexpr,  # gate and up columns alternate (gate j at 2j, up j at 2j + 1)
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    """The elementwise backward of a gated product, between the forward's stored
    pre-activations and the two GEMMs of the backward (dX = dZ @ W, dW = dZ^T @ X); dZ has
    Z's layout, which is the weight rows' layout."""
    rm = (tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)
    rn = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    mask = (rm[:, None] < M) & (rn[None, :] < N)
    dh = tl.load(DH + rm[:, None] * stride_dh + rn[None, :], mask=mask, other=0.0).to(tl.float32)
    if INTERLEAVED:  # contiguous [BLOCK_M, 2 * BLOCK_N] tiles, split into and joined from pairs
        rc = tl.program_id(1) * (2 * BLOCK_N) + tl.arange(0, 2 * BLOCK_N)
        mask2 = (rm[:, None] < M) & (rc[None, :] < 2 * N)
        z = tl.load(Z + rm[:, None] * stride_z + rc[None, :], mask=mask2, other=0.0).to(tl.float32)
        g, u = tl.split(tl.reshape(z, [BLOCK_M, BLOCK_N, 2]))
        dz = tl.reshape(tl.join(dh * u * _activation_grad(g, ACT), dh * _activation(g, ACT)),
                        [BLOCK_M, 2 * BLOCK_N])
        tl.store(DZ + rm[:, None] * stride_z + rc[None, :], dz.to(DZ.dtype.element_ty), mask=mask2)
    else:
        z_row = Z + rm[:, None] * stride_z + rn[None, :]
        g = tl.load(z_row, mask=mask, other=0.0).to(tl.float32)
        u = tl.load(z_row + N, mask=mask, other=0.0).to(tl.float32)
        dz_row = DZ + rm[:, None] * stride_z + rn[None, :]
        tl.store(dz_row, (dh * u * _activation_grad(g, ACT)).to(DZ.dtype.element_ty), mask=mask)
        tl.store(dz_row + N, (dh * _activation(g, ACT)).to(DZ.dtype.element_ty), mask=mask)


@triton.jit
def _act_grad(
    DY,  # (M, N) gradient of the activation's output, row stride stride_dy, unit column stride
    Z,  # (M, N) pre-activation kept by the forward, row stride stride_z; read only if ACT
    G,  # (M, N) out: DY * act'(Z), row stride stride_g; written only if ACT (else G is DY itself)
    DB,  # (cdiv(M, BLOCK_M), N) float32 out: per-program column sums of G; written only if HAS_DB
    M, N, stride_dy, stride_z, stride_g,
    ACT: tl.constexpr,
    HAS_DB: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    """The backward of a fused activation, once per element, and the bias gradient's
    partial column sums (the caller adds the partials of the programs)."""
    pid_m = tl.program_id(0)
    rm = (pid_m * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)
    rn = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    mask = (rm[:, None] < M) & (rn[None, :] < N)
    g = tl.load(DY + rm[:, None] * stride_dy + rn[None, :], mask=mask, other=0.0).to(tl.float32)
    if ACT != 0:
        z = tl.load(Z + rm[:, None] * stride_z + rn[None, :], mask=mask, other=0.0).to(tl.float32)
        g = (g * _activation_grad(z, ACT)).to(G.dtype.element_ty)
        tl.store(G + rm[:, None] * stride_g + rn[None, :], g, mask=mask)
    if HAS_DB:
        tl.store(DB + pid_m * N + rn, tl.sum(g.to(tl.float32), axis=0), mask=rn < N)
