"""Norm forward, tritonic against torch.compile (and Liger when installed), timed in
alternation: ``--rounds`` rounds, each timing every provider once (graphed, rotated inputs),
so drifts of clock and temperature hit them alike. Prints each provider's median over the
rounds and the ratio; a single benchmark run spreads about ±3 % on these cases.

    PYTHONPATH=src python scripts/norm_ab.py [--rounds 10] [--cases rms_norm:8192x8192,...]
"""

from __future__ import annotations

import argparse
import statistics

import torch
import torch.nn.functional as F

from tritonic.bench.harness import measure
from tritonic.ops import norm as norm_ops

CASES = "layer_norm:4096x16384,rms_norm:8192x8192,rms_norm:4096x16384,rms_norm:16384x4096,layer_norm:8192x8192"


def _fns(op, M, N, provider, n_sets=4):
    sets = [torch.randn(M, N, device="cuda", dtype=torch.bfloat16) for _ in range(n_sets)]
    w = torch.randn(N, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(N, device="cuda", dtype=torch.bfloat16)
    if provider == "tritonic":
        f = (lambda x: norm_ops.layer_norm(x, w, b)) if op == "layer_norm" else (lambda x: norm_ops.rms_norm(x, w))
    elif provider == "torch.compile":
        g = ((lambda x: F.layer_norm(x, (N,), w, b, 1e-5)) if op == "layer_norm"
             else (lambda x: F.rms_norm(x, (N,), w, 1e-6)))
        f = torch.compile(g, dynamic=False)
    else:
        try:
            from liger_kernel.ops.layer_norm import LigerLayerNormFunction
            from liger_kernel.ops.rms_norm import LigerRMSNormFunction
        except Exception:
            return None
        f = ((lambda x: LigerLayerNormFunction.apply(x, w, b, 1e-5)) if op == "layer_norm"
             else (lambda x: LigerRMSNormFunction.apply(x, w, 1e-6, 0.0, "gemma", False)))

    def one(x):
        @torch.no_grad()
        def run():
            f(x)
        return run
    fns = [one(x) for x in sets]
    for fn in fns:
        fn()
    return fns


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--cases", default=CASES)
    a = p.parse_args()
    side = torch.cuda.Stream()
    for spec in a.cases.split(","):
        op, shape = spec.split(":")
        M, N = (int(v) for v in shape.split("x"))
        provs = {k: _fns(op, M, N, k) for k in ("tritonic", "torch.compile", "liger")}
        provs = {k: v for k, v in provs.items() if v is not None}
        times = {k: [] for k in provs}
        for _ in range(a.rounds):
            for k, fns in provs.items():
                side.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(side):
                    times[k].append(measure(fns, use_graph=True, warmup=10, rep=60)[0])
        med = {k: statistics.median(v) for k, v in times.items()}
        spread = {k: (max(v) - min(v)) / statistics.median(v) for k, v in times.items()}
        gbs = 2 * M * N * 2 / med["tritonic"] / 1e6
        print(f"{op} {M}x{N} fwd: " + ", ".join(f"{k} {med[k] * 1e3:.1f} us (spread {spread[k] * 100:.1f}%)"
                                                  for k in med)
              + f"; tritonic {gbs:.0f} GB/s; ratios " +
              ", ".join(f"vs {k} {med[k] / med['tritonic']:.3f}x" for k in med if k != "tritonic"))
        del provs
        torch._dynamo.reset()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
