"""Experiment (not library code yet): LayerNorm folded into the next product's prologue, against
the norm kernel followed by cuBLAS, at the row counts of issue 7's model table.

    PYTHONPATH=src python scripts/ln_gemm_ab.py                 # GPU: correctness, then graph timings
    PYTHONPATH=src python scripts/ln_gemm_ab.py --check         # CPU: the kernel in Triton's interpreter
    PYTHONPATH=src python scripts/ln_gemm_ab.py --compile-check # CPU: sm_90 compile, registers, spills, wgmma

Why: GPT-2 at 1x128 (0.450 ms, 1.17x reduce-overhead; 1.3x needs 0.406) runs ~95 kernels of
~4-5 us, every one latency-bound. Its two LayerNorms a layer are launches of their own (~2.5 us
each in a graph). Here one program of the product computes its rows' statistics itself (one
pass over its BLOCK_M x K rows, chunk by chunk, combined as Chan's parallel variance), then
normalises each A tile in registers on its way to the dot; with a residual, the programs of
the first column block also write the sum x + r (the pre-norm block's next residual).

    y = layer_norm(x [+ r], gamma, beta) @ W^T + bias     W: (N, K) like nn.Linear (any strides)

Timed as CUDA-graph replays of 20 calls (what optimize's graphs run), inputs hot in L2:
(a) tritonic's layer_norm (+ residual) then cuBLAS as shipped (``F.linear``; for c_fc its GELU in
cuBLASLt's epilogue); (b) the norm then tritonic's own GEMM; (c) each config of the fused kernel
(c_fc with the GELU in its epilogue too). The question for the next session: does (b) beat (a) by >= 2 us at 128 rows? If
so, GPT-2 1x128 could lose ~24 launches (~40-60 us); worth building into ops/ and optimize.
"""

from __future__ import annotations

import argparse
import os
import sys

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))
from tritonic.kernels.matmul import _activation  # noqa: E402  (the GEMM epilogue's activations)


@triton.jit
def _rows_tile(x_rows, r_rows, kk, ok, HAS_R: tl.constexpr):
    """Columns kk of the block's rows: x, or x + r rounded to x's dtype (as PyTorch's add rounds)."""
    a = tl.load(x_rows + kk[None, :], mask=ok, other=0.0)
    if HAS_R:
        a = (a.to(tl.float32) + tl.load(r_rows + kk[None, :], mask=ok, other=0.0).to(tl.float32)).to(a.dtype)
    return a


@triton.jit
def _ln_matmul(
    X, R,  # (M, K) rows to normalise, and the residual added first (if HAS_R); unit stride along K
    S,  # (M, K) out: x + r, rounded to X's dtype (if WRITE_SUM: written by the first column block)
    G, BETA,  # (K,) LayerNorm weight and bias
    W,  # (N, K) through stride_wn / stride_wk
    BIAS,  # (N,) (if HAS_BIAS)
    Y,  # (M, N) out, unit stride along N
    M, N, K, eps,
    stride_xm, stride_rm, stride_sm, stride_wn, stride_wk, stride_ym,
    HAS_R: tl.constexpr, WRITE_SUM: tl.constexpr, HAS_BIAS: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
    ACT: tl.constexpr = 0,  # epilogue activation (kernels/matmul.py's codes: 3 = GELU tanh, GPT-2's c_fc)
):
    pid = tl.program_id(0)
    num_m = tl.cdiv(M, BLOCK_M)
    num_n = tl.cdiv(N, BLOCK_N)
    per_group = GROUP_M * num_n
    first_m = (pid // per_group) * GROUP_M
    group_size = tl.minimum(num_m - first_m, GROUP_M)
    pid_m = first_m + (pid % per_group) % group_size
    pid_n = (pid % per_group) // group_size
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rk = tl.arange(0, BLOCK_K)
    row_ok = rm < M
    x_rows = X + rm[:, None].to(tl.int64) * stride_xm
    r_rows = R + rm[:, None].to(tl.int64) * stride_rm

    # Statistics: each chunk's mean and squared deviations, combined (Chan et al.) across chunks.
    count = 0.0
    mean = tl.zeros([BLOCK_M], tl.float32)
    m2 = tl.zeros([BLOCK_M], tl.float32)
    for k0 in range(0, K, BLOCK_K):
        kk = k0 + rk
        ok = row_ok[:, None] & (kk[None, :] < K)
        a = _rows_tile(x_rows, r_rows, kk, ok, HAS_R)
        a = a.to(tl.float32)
        nb = tl.minimum(K - k0, BLOCK_K).to(tl.float32)
        mb = tl.sum(a, axis=1) / nb
        d = tl.where(ok, a - mb[:, None], 0.0)
        m2b = tl.sum(d * d, axis=1)
        total = count + nb
        delta = mb - mean
        mean = mean + delta * (nb / total)
        m2 = m2 + m2b + delta * delta * (count * nb / total)
        count = total
    rstd = 1.0 / tl.sqrt(m2 / K + eps)

    acc = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
    for k0 in range(0, K, BLOCK_K):
        kk = k0 + rk
        ok = row_ok[:, None] & (kk[None, :] < K)
        a = _rows_tile(x_rows, r_rows, kk, ok, HAS_R)
        if HAS_R and WRITE_SUM:
            if pid_n == 0:
                tl.store(S + rm[:, None].to(tl.int64) * stride_sm + kk[None, :], a, mask=ok)
        g = tl.load(G + kk, mask=kk < K, other=0.0).to(tl.float32)
        bt = tl.load(BETA + kk, mask=kk < K, other=0.0).to(tl.float32)
        an = ((a.to(tl.float32) - mean[:, None]) * rstd[:, None] * g[None, :] + bt[None, :]).to(W.dtype.element_ty)
        w = tl.load(W + rn[None, :].to(tl.int64) * stride_wn + kk[:, None] * stride_wk,
                    mask=(kk[:, None] < K) & (rn[None, :] < N), other=0.0)
        acc = tl.dot(an, w, acc)
    if HAS_BIAS:
        acc += tl.load(BIAS + rn, mask=rn < N, other=0.0).to(tl.float32)[None, :]
    acc = _activation(acc, ACT)
    tl.store(Y + rm[:, None].to(tl.int64) * stride_ym + rn[None, :], acc.to(Y.dtype.element_ty),
             mask=row_ok[:, None] & (rn[None, :] < N))


CONFIGS = [  # (BLOCK_M, BLOCK_N, BLOCK_K, GROUP_M, num_warps, num_stages)
    (16, 64, 128, 1, 4, 3), (32, 64, 64, 1, 4, 4), (64, 64, 64, 8, 4, 4), (64, 128, 64, 8, 4, 3),
    (128, 64, 64, 8, 4, 3), (128, 128, 64, 8, 8, 3), (64, 256, 64, 8, 8, 3), (128, 256, 64, 8, 8, 3),
]


def ln_linear(x, gamma, beta, eps, w, bias=None, r=None, write_sum=False, config=CONFIGS[2], act=0):
    """(y, s): y = act(layer_norm(x + r) @ w.T + bias), s = x + r (None unless write_sum)."""
    M, K = x.shape
    N = w.shape[0]
    bm, bn, bk, gm, warps, stages = config
    y = torch.empty(M, N, device=x.device, dtype=x.dtype)
    s = torch.empty_like(x) if write_sum and r is not None else None
    grid = (triton.cdiv(M, bm) * triton.cdiv(N, bn),)
    _ln_matmul[grid](x, x if r is None else r, x if s is None else s, gamma, beta, w, w if bias is None else bias, y,
                     M, N, K, eps, x.stride(0), 0 if r is None else r.stride(0), 0 if s is None else s.stride(0),
                     w.stride(0), w.stride(1), y.stride(0),
                     HAS_R=r is not None, WRITE_SUM=s is not None, HAS_BIAS=bias is not None,
                     BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, GROUP_M=gm, ACT=act, num_warps=warps, num_stages=stages)
    return y, s


def reference(x, gamma, beta, eps, w, bias=None, r=None, act=0):
    s = x if r is None else x + r
    h = F.layer_norm(s.float(), (x.shape[1],), gamma.float(), beta.float(), eps).to(x.dtype)
    y = F.linear(h, w, bias)
    return (F.gelu(y, approximate="tanh") if act == 3 else y), s


def _inputs(M, K, N, device, dtype, seed=0):
    g = torch.Generator(device="cpu").manual_seed(seed)
    t = lambda *s, scale=1.0: (torch.randn(*s, generator=g) * scale).to(device=device, dtype=dtype)  # noqa: E731
    # GPT-2-like hidden states: a large common offset in a few columns, as its residual stream has
    x = t(M, K) + 3.0
    x[:, :4] += 40.0
    return x, t(M, K), 1 + t(K, scale=0.1), t(K, scale=0.1), t(N, K, scale=K ** -0.5), t(N, scale=0.1)


def check(device, dtype, configs) -> int:
    bad = 0
    for M, K, N in [(7, 48, 40), (33, 96, 72), (16, 64, 128)]:
        x, r, g, b, w, bias = _inputs(M, K, N, device, dtype)
        for cfg in configs:
            for use_r, act in ((False, 0), (True, 0), (True, 3)):
                y, s = ln_linear(x, g, b, 1e-5, w, bias, r if use_r else None, write_sum=use_r, config=cfg, act=act)
                ref_y, ref_s = reference(x.double(), g.double(), b.double(), 1e-5, w.double(), bias.double(),
                                         r.double() if use_r else None, act=act)
                err = (y.double() - ref_y).abs().max().item()
                serr = 0.0 if s is None else (s.double() - ref_s).abs().max().item()
                # the correctness rule: at most twice PyTorch's own error in this dtype, plus a little
                theirs_y, theirs_s = reference(x, g, b, 1e-5, w, bias, r if use_r else None, act=act)
                tol = 2 * (theirs_y.double() - ref_y).abs().max().item() + 1e-4
                stol = 2 * (theirs_s.double() - ref_s).abs().max().item() + 1e-6
                ok = err <= tol and serr <= stol
                bad += not ok
                print(f"{'ok ' if ok else 'BAD'} {M}x{K}->{N} residual={use_r} act={act} {cfg}: max err {err:.2e} (torch's x2: "
                      f"{tol:.2e}), sum err {serr:.2e}")
    return bad


def compile_check(configs) -> None:
    import glob
    import subprocess
    import tempfile

    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    ptxas = glob.glob(os.path.join(os.path.dirname(triton.__file__), "backends/nvidia/bin/ptxas"))[0]
    for cfg in configs:
        bm, bn, bk, gm, warps, stages = cfg
        for has_r in (False, True):
            sig = {"X": "*fp16", "R": "*fp16", "S": "*fp16", "G": "*fp16", "BETA": "*fp16", "W": "*fp16",
                   "BIAS": "*fp16", "Y": "*fp16", "M": "i32", "N": "i32", "K": "i32", "eps": "fp32",
                   "stride_xm": "i32", "stride_rm": "i32", "stride_sm": "i32", "stride_wn": "i32",
                   "stride_wk": "constexpr", "stride_ym": "i32", "HAS_R": "constexpr", "WRITE_SUM": "constexpr",
                   "HAS_BIAS": "constexpr", "BLOCK_M": "constexpr", "BLOCK_N": "constexpr", "BLOCK_K": "constexpr",
                   "GROUP_M": "constexpr", "ACT": "constexpr"}
            names = list(sig)
            consts = {"stride_wk": 1, "HAS_R": has_r, "WRITE_SUM": has_r, "HAS_BIAS": True, "BLOCK_M": bm,
                      "BLOCK_N": bn, "BLOCK_K": bk, "GROUP_M": gm, "ACT": 3 if has_r else 0}
            constexprs = {(names.index(k),): v for k, v in consts.items()}
            attrs = {(i,): [["tt.divisibility", 16]] for i, n in enumerate(names)
                     if sig[n].startswith("*") or n in ("K", "N", "stride_xm", "stride_rm", "stride_sm",
                                                         "stride_wn", "stride_ym")}
            k = triton.compile(ASTSource(_ln_matmul, sig, constexprs=constexprs, attrs=attrs),
                               target=GPUTarget("cuda", 90, 128), options={"num_warps": warps, "num_stages": stages})
            ptx = k.asm["ptx"]
            with tempfile.NamedTemporaryFile("w", suffix=".ptx", delete=False) as f:
                f.write(ptx)
            rep = subprocess.run([ptxas, "-arch=sm_90a", "-v", f.name, "-o", os.devnull], capture_output=True,
                                 text=True).stderr
            os.unlink(f.name)
            used = " | ".join(line.split("info    :")[-1].strip() for line in rep.splitlines()
                              if "Used" in line or "spill" in line)
            print(f"{cfg} residual={has_r}: wgmma {ptx.count('wgmma.mma_async')}, mma.sync {ptx.count('mma.sync')}, "
                  f"shared {k.metadata.shared} B; {used}", flush=True)


def graph_us(fn, reps=20):
    """Per-call GPU time of ``fn`` inside a CUDA graph of ``reps`` calls (replays timed)."""
    from triton.testing import do_bench

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            fn()
        torch.cuda.synchronize()
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g, stream=side):
            for _ in range(reps):
                fn()
    torch.cuda.synchronize()
    return do_bench(g.replay, warmup=10, rep=100, return_mode="median") * 1e3 / reps


def bench(rows, shapes) -> None:
    from tritonic.ops import layer_norm, linear

    dt = torch.float16
    for M in rows:
        for K, N in shapes:
            act = 3 if N == 4 * K else 0  # c_fc: its GELU (tanh) in the epilogue, as shipped (cuBLASLt's)
            x, r, g, b, w, bias = _inputs(M, K, N, "cuda", dt)
            for use_r in (False, True):
                rr = r if use_r else None
                ref, _ = reference(x.double(), g.double(), b.double(), 1e-5, w.double(), bias.double(),
                                   None if rr is None else rr.double(), act=act)

                def normed():
                    return layer_norm(x, g, b, 1e-5) if rr is None else layer_norm(x, g, b, 1e-5, residual=rr)[0]

                def shipped():
                    with torch.no_grad():
                        if act:  # what ops.linear runs for GPT-2's c_fc at inference
                            return torch._addmm_activation(bias, normed(), w.t(), use_gelu=True)
                        return F.linear(normed(), w, bias)

                def ours_unfused():
                    with torch.no_grad():
                        return linear(normed(), w, bias, activation="gelu_tanh" if act else None)
                found = {"norm + cuBLAS (shipped)": graph_us(shipped),
                         "norm + tritonic linear": graph_us(ours_unfused),
                         "cuBLAS alone": graph_us(lambda: F.linear(x, w, bias))}
                for cfg in CONFIGS:
                    try:
                        y, _ = ln_linear(x, g, b, 1e-5, w, bias, rr, write_sum=use_r, config=cfg, act=act)
                        err = (y.double() - ref).abs().max().item()
                        if err > 0.05 * max(1.0, ref.abs().max().item()):
                            found[f"fused {cfg}"] = float("nan")
                            print(f"  fused {cfg}: WRONG (max err {err:.3g})")
                            continue
                        found[f"fused {cfg}"] = graph_us(
                            lambda c=cfg: ln_linear(x, g, b, 1e-5, w, bias, rr, write_sum=use_r, config=c, act=act))
                    except Exception as e:  # noqa: BLE001 (a config that does not fit)
                        print(f"  fused {cfg}: {type(e).__name__}: {str(e)[:100]}")
                fused = {k: v for k, v in found.items() if k.startswith("fused") and v == v}
                best = min(fused, key=fused.get) if fused else None
                print(f"== {M}x{K}->{N}{' +gelu_tanh' if act else ''} residual={use_r}: shipped {found['norm + cuBLAS (shipped)']:.2f} us, "
                      f"cuBLAS alone {found['cuBLAS alone']:.2f}, best fused {best} "
                      f"{fused.get(best, float('nan')):.2f}", flush=True)
                for k, v in sorted(found.items(), key=lambda kv: kv[1] if kv[1] == kv[1] else 1e9):
                    print(f"   {k:40s} {v:8.2f} us")


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--check", action="store_true", help="interpreter correctness run (CPU)")
    p.add_argument("--compile-check", action="store_true", help="sm_90 compile of every config (CPU)")
    p.add_argument("--rows", default="16,128,512,1024,8192")
    p.add_argument("--shapes", default="768x2304,768x3072", help="KxN products (GPT-2 c_attn and c_fc)")
    a = p.parse_args()
    if a.compile_check:
        compile_check(CONFIGS)
        return 0
    if a.check:
        return check("cpu", torch.float16, [(16, 16, 16, 1, 4, 1), (16, 32, 32, 2, 4, 1)]) > 0
    if not torch.cuda.is_available():
        print("no GPU: use --check or --compile-check")
        return 1
    bad = check("cuda", torch.float16, CONFIGS)
    bench([int(v) for v in a.rows.split(",")], [tuple(int(v) for v in s.split("x")) for s in a.shapes.split(",")])
    return bad > 0


if __name__ == "__main__":
    sys.exit(main())
