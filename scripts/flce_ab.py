"""Fused linear cross-entropy (8192 tokens, hidden 4096, vocabulary 128256, bf16, forward +
backward), tritonic's ``low_memory=True`` against Liger-Kernel, timed in alternation:
``--rounds`` rounds, each timing every provider once with ``do_bench``. Clock and temperature
drift then hit all providers alike. One benchmark run spreads by ±3 % on this case, more than
the gap being asked about (issue 6: less memory than Liger at equal or better speed).

    PYTHONPATH=src python scripts/flce_ab.py [--rounds 8] [--out DIR]

Prints each provider's median and spread over the rounds, its peak memory beyond the inputs,
and the ratios. With ``--out``, writes "fused_linear_ce_ab" rows (the medians).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import triton

from tritonic.ops.loss import fused_linear_cross_entropy

PROVIDERS = ("tritonic-lowmem", "liger", "tritonic")


def _fn(kind):
    if kind == "liger":
        try:
            from liger_kernel.transformers.functional import liger_fused_linear_cross_entropy
        except Exception:
            return None
        return lambda h, w, t: liger_fused_linear_cross_entropy(h, w, t)
    low = kind == "tritonic-lowmem"
    return lambda h, w, t: fused_linear_cross_entropy(h, w, t, check_targets=False, low_memory=low)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=8)
    p.add_argument("--out")
    a = p.parse_args(argv)
    N, H, V = 8192, 4096, 128256
    h = torch.randn(N, H, dtype=torch.bfloat16, device="cuda", requires_grad=True)
    w = (torch.randn(V, H, dtype=torch.bfloat16, device="cuda") / H ** 0.5).requires_grad_(True)
    t = torch.randint(0, V, (N,), device="cuda")
    steps, peaks = {}, {}
    for kind in PROVIDERS:
        fn = _fn(kind)
        if fn is None:
            print(f"{kind}: not installed")
            continue
        step = (lambda f: lambda: torch.autograd.grad(f(h, w, t), (h, w)))(fn)
        step()
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        g = step()
        torch.cuda.synchronize()
        peaks[kind] = (torch.cuda.max_memory_allocated() - base) / 2**30
        del g
        steps[kind] = step
    times = {k: [] for k in steps}
    for _ in range(a.rounds):
        for k, step in steps.items():
            times[k].append(triton.testing.do_bench(step, warmup=100, rep=500, return_mode="median"))  # ms of runs
    med = {k: statistics.median(v) for k, v in times.items()}
    for k in med:
        spread = (max(times[k]) - min(times[k])) / med[k]
        print(f"{k:<16} {med[k]:7.2f} ms (spread {spread * 100:.1f} %)  peak extra {peaks[k]:.3f} GiB")
    if "tritonic-lowmem" in med and "liger" in med:
        print(f"low_memory vs Liger: speed {med['liger'] / med['tritonic-lowmem']:.3f}x, "
              f"memory {peaks['tritonic-lowmem'] / peaks['liger']:.3f}x; per round "
              + ", ".join(f"{x / y:.3f}" for x, y in zip(times["liger"], times["tritonic-lowmem"])))
    if a.out:
        from tritonic.bench.harness import _commit, write_json

        rows = [{"bench": "fused_linear_ce_ab", "case": f"flce {N}x{H}->{V}", "mode": "fwd+bwd", "provider": k,
                 "ms": med[k], "metric": "ms", "value": med[k], "peak_extra_gib": peaks[k], "rounds": a.rounds,
                 "device": torch.cuda.get_device_name(), "torch": torch.__version__, "triton": triton.__version__,
                 "commit": _commit(), "date": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())}
                for k in med]
        print(f"wrote {len(rows)} rows to {write_json(rows, a.out, 'fused_linear_ce_ab')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
