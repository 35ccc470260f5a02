"""Prototype for issue 4's small-M target: a split-K product for few rows, timed against
cuBLAS inside CUDA graphs (how inference runs it), before any of it goes into ops.matmul.

At 16 rows, our small-M kernel lost to cuBLAS on products with a deep K (16x5632->2048: 12.0
against 8.63 µs on an H100; ``logs/infer_gemm_ab_small_85e01cc.log``): with BLOCK_N = 16..64 a
2048-wide output gives 32..128 programs, each walking all of K. Here the grid is
(column blocks, SPLIT_K): each program multiplies one K slice and stores its float32 partial
tile; the last program of a column block to finish (an acq_rel counter per block) adds the
partials and writes the output, then resets the counter. One launch, no memset, no second
kernel.

    PYTHONPATH=src python scripts/splitk_ab.py            # GPU: the A/B table
    TRITON_INTERPRET=1 PYTHONPATH=src python scripts/splitk_ab.py --check   # CPU: correctness
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

sys.path.insert(0, str(Path(__file__).resolve().parent))

SHAPES = [(16, 2048, 5632), (16, 768, 3072), (16, 4608, 2048), (16, 2048, 2048), (1, 2048, 5632), (32, 2048, 5632)]


@triton.jit
def _splitk(A, B, C, WS, LOCKS, M, N, K, stride_am, stride_ak, stride_bk, stride_bn, stride_cm,
            BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, SPLIT_K: tl.constexpr):
    pid_n = tl.program_id(0)
    pid_k = tl.program_id(1)
    rm = tl.arange(0, BLOCK_M)  # all rows in one block (M <= BLOCK_M)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    per = tl.cdiv(tl.cdiv(K, SPLIT_K), BLOCK_K) * BLOCK_K
    k_lo = pid_k * per
    acc = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
    for k in range(k_lo, tl.minimum(k_lo + per, K), BLOCK_K):
        rk = k + tl.arange(0, BLOCK_K)
        a = tl.load(A + rm[:, None] * stride_am + rk[None, :] * stride_ak, mask=(rm[:, None] < M) & (rk[None, :] < K),
                    other=0.0)
        b = tl.load(B + rk[:, None] * stride_bk + rn[None, :] * stride_bn, mask=(rk[:, None] < K) & (rn[None, :] < N),
                    other=0.0)
        acc = tl.dot(a, b, acc)
    tile = rm[:, None] * N + rn[None, :]
    tl.store(WS + pid_k * BLOCK_M * N + tile, acc, mask=rn[None, :] < N)
    done = tl.atomic_add(LOCKS + pid_n, 1, sem="acq_rel")  # releases the partial, acquires the others'
    if done == SPLIT_K - 1:
        total = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
        for s in range(SPLIT_K):
            total += tl.load(WS + s * BLOCK_M * N + tile, mask=rn[None, :] < N, other=0.0, cache_modifier=".cg")
        tl.store(C + rm[:, None] * stride_cm + rn[None, :], total.to(C.dtype.element_ty),
                 mask=(rm[:, None] < M) & (rn[None, :] < N))
        tl.atomic_xchg(LOCKS + pid_n, 0)  # ready for the next launch


_LOCKS: dict = {}


def splitk_linear(x, w, block_n=64, block_k=128, split_k=4, num_warps=4, num_stages=3):
    """``x @ w.T`` for x (M, K) with M <= 16, w (N, K)."""
    M, K = x.shape
    N = w.shape[0]
    block_m = 16
    assert M <= block_m
    out = torch.empty((M, N), dtype=x.dtype, device=x.device)
    ws = torch.empty((split_k, block_m, N), dtype=torch.float32, device=x.device)
    n_blocks = triton.cdiv(N, block_n)
    locks = _LOCKS.get(x.device)
    if locks is None or locks.numel() < n_blocks:
        locks = _LOCKS[x.device] = torch.zeros(max(4096, n_blocks), dtype=torch.int32, device=x.device)
    _splitk[(n_blocks, split_k)](x, w, out, ws, locks, M, N, K, x.stride(0), x.stride(1), w.stride(1), w.stride(0),
                                 out.stride(0), BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k, SPLIT_K=split_k,
                                 num_warps=num_warps, num_stages=num_stages)
    return out


def check() -> int:
    torch.manual_seed(0)
    for (M, N, K), sk in itertools.product([(3, 40, 300), (16, 64, 257), (1, 33, 512)], (1, 2, 3)):
        x, w = torch.randn(M, K), torch.randn(N, K)
        for _ in range(2):  # the counters must be back at zero for a second launch
            y = splitk_linear(x, w, block_n=16, block_k=32, split_k=sk)
            ref = x.double() @ w.double().T
            err = (y.double() - ref).abs().max().item()
            assert err < 1e-3 * ref.abs().max().item(), (M, N, K, sk, err)
    print("split-K prototype matches float64 (interpreter)")
    return 0


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--check", action="store_true")
    a = p.parse_args()
    if a.check:
        return check()
    from infer_gemm_ab import graph_us

    for M, N, K in SHAPES:
        if M > 16:  # the prototype holds all rows in one 16-row block
            print(f"{M}x{K}->{N}: skipped (the prototype takes at most 16 rows)", flush=True)
            continue
        x = torch.randn(M, K, device="cuda", dtype=torch.float16)
        w = torch.randn(N, K, device="cuda", dtype=torch.float16) / K ** 0.5
        base = graph_us(lambda: F.linear(x, w))
        ref = F.linear(x, w).float()
        best = None
        for bn, bk, sk, nw in itertools.product((32, 64, 128), (64, 128, 256), (2, 4, 8), (4, 8)):
            try:
                y = splitk_linear(x, w, bn, bk, sk, nw)
                if (y.float() - ref).abs().max().item() > 1e-2:
                    print(f"  {M}x{K}->{N} bn{bn} bk{bk} sk{sk} w{nw}: WRONG", flush=True)
                    continue
                us = graph_us(lambda: splitk_linear(x, w, bn, bk, sk, nw))
            except Exception as e:  # noqa: BLE001 (a config that does not fit)
                print(f"  bn{bn} bk{bk} sk{sk} w{nw}: {type(e).__name__}", flush=True)
                continue
            if best is None or us < best[0]:
                best = (us, bn, bk, sk, nw)
        if best is None:
            print(f"{M}x{K}->{N}: cuBLAS {base:.2f} us, no split-K config ran", flush=True)
            continue
        print(f"{M}x{K}->{N}: cuBLAS {base:.2f} us, split-K best {best[0]:.2f} us (bn {best[1]}, bk {best[2]}, "
              f"split {best[3]}, warps {best[4]}): {base / best[0]:.2f}x", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
