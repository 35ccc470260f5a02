"""Memory-bound ops: cross-entropy (and, with --flce, the fused linear cross-entropy).

    python benchmarks/memory_bound.py [--out DIR] [--only ce] [--modes fwd] [--quick]
    python benchmarks/memory_bound.py --flce [--out DIR]    # LM head + loss: time and peak memory
    python benchmarks/memory_bound.py --dry-run             # CPU smoke run, no GPU

"memory_bound": bfloat16, against PyTorch eager, torch.compile and Liger-Kernel; GB/s counts
the bytes the op must move (cross-entropy forward: the logits once; forward+backward: read
them twice and write their gradient).

"fused_linear_ce" (--flce): 8192 tokens, hidden 4096, vocabulary 128256, bfloat16; eager is
``F.cross_entropy(F.linear(h, W), t)``; TFLOP/s counts the three GEMMs (6·N·H·V). It also
writes "fused_linear_ce_memory": the peak memory each provider allocates beyond its inputs
during one forward+backward.
"""

from __future__ import annotations

import sys
from pathlib import Path

try:
    import tritonic  # noqa: F401
except ImportError:  # run from a checkout without installing: use ./src
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import torch
import torch.nn.functional as F

from tritonic.bench import Benchmark, main

DT = torch.bfloat16


def _ce(N, V):
    return {"name": f"ce {N}x{V}", "op": "ce", "N": N, "V": V}


CASES = [_ce(8192, 32000), _ce(8192, 128256)]
SMOKE_CASES = [_ce(16, 100)]


# ----------------------------------------------------------------------------- cross-entropy


def _ce_fn(kind):
    if kind == "eager":
        return F.cross_entropy
    if kind == "torch.compile":
        torch._dynamo.reset()
        return torch.compile(F.cross_entropy, dynamic=False)
    if kind == "liger":
        try:
            from liger_kernel.transformers.functional import liger_cross_entropy
        except Exception:
            return None
        return liger_cross_entropy  # note: writes the gradient into the logits in place
    from tritonic.ops.loss import cross_entropy

    return lambda x, t: cross_entropy(x, t, check_targets=False)  # the check's sync is not the kernel's cost


def ce_provider(kind):
    def factory(case, mode, n_sets):
        if kind == "liger" and case["device"] != "cuda":
            return None
        fn = _ce_fn(kind)
        if fn is None:
            return None
        N, V, dev = case["N"], case["V"], case["device"]
        dt = DT if dev == "cuda" else torch.float32
        out = []
        for _ in range(n_sets):
            x = torch.randn(N, V, dtype=dt, device=dev, requires_grad=mode != "fwd")
            t = torch.randint(0, V, (N,), device=dev)
            t[::17] = -100
            if mode == "fwd":
                out.append(lambda x=x, t=t: fn(x, t))
            else:
                out.append(lambda x=x, t=t: torch.autograd.grad(fn(x, t), (x,)))
        return out
    return factory


def ce_bytes(case, mode):
    one = case["N"] * case["V"] * 2  # bfloat16 logits
    return {"fwd": one, "fwd+bwd": 3 * one}[mode]


BENCH = Benchmark(
    name="memory_bound",
    cases=CASES,
    smoke_cases=SMOKE_CASES,
    providers={"eager": ce_provider("eager"), "torch.compile": ce_provider("torch.compile"),
               "liger": ce_provider("liger"), "tritonic": ce_provider("tritonic")},
    bytes=ce_bytes,
    modes=("fwd", "fwd+bwd"),
    baselines=("eager", "torch.compile", "liger"),
)


# ----------------------------------------------------------------------------- fused linear CE

FLCE_CASES = [{"name": "flce 8192x4096->128256", "N": 8192, "H": 4096, "V": 128256, "modes": ("fwd+bwd",)}]
FLCE_SMOKE = [{"name": "flce smoke", "N": 64, "H": 32, "V": 300, "modes": ("fwd+bwd",)}]


def _flce_fn(kind):
    if kind == "eager":
        return lambda h, w, t: F.cross_entropy(F.linear(h, w), t)
    if kind == "torch.compile":
        torch._dynamo.reset()
        return torch.compile(lambda h, w, t: F.cross_entropy(F.linear(h, w), t), dynamic=False)
    if kind == "liger":
        try:
            from liger_kernel.transformers.functional import liger_fused_linear_cross_entropy
        except Exception:
            return None
        return lambda h, w, t: liger_fused_linear_cross_entropy(h, w, t)
    from tritonic.ops.loss import fused_linear_cross_entropy

    return lambda h, w, t: fused_linear_cross_entropy(h, w, t, check_targets=False)


def _flce_inputs(case):
    N, H, V, dev = case["N"], case["H"], case["V"], case["device"]
    dt = DT if dev == "cuda" else torch.float32
    h = torch.randn(N, H, dtype=dt, device=dev, requires_grad=True)
    w = (torch.randn(V, H, dtype=dt, device=dev) / H ** 0.5).requires_grad_(True)
    t = torch.randint(0, V, (N,), device=dev)
    return h, w, t


def flce_provider(kind):
    def factory(case, mode, n_sets):
        if kind == "liger" and case["device"] != "cuda":
            return None
        fn = _flce_fn(kind)
        if fn is None:
            return None
        h, w, t = _flce_inputs(case)  # one set: the weight alone is 1 GiB
        return [lambda: torch.autograd.grad(fn(h, w, t), (h, w))]
    return factory


FLCE_BENCH = Benchmark(
    name="fused_linear_ce",
    cases=FLCE_CASES,
    smoke_cases=FLCE_SMOKE,
    providers={"eager": flce_provider("eager"), "torch.compile": flce_provider("torch.compile"),
               "liger": flce_provider("liger"), "tritonic": flce_provider("tritonic")},
    bytes=lambda case, mode: 2 * 2 * (case["N"] + case["V"]) * case["H"],
    flops=lambda case, mode: 6 * case["N"] * case["H"] * case["V"],
    modes=("fwd+bwd",),
    baselines=("eager", "torch.compile", "liger"),
)


def flce_memory(out: str, dry_run: bool) -> None:
    """Peak bytes allocated beyond the inputs during one forward+backward, per provider."""
    import json

    from tritonic.bench.harness import write_json

    if dry_run or not torch.cuda.is_available():
        print("fused_linear_ce_memory: needs a GPU (skipped)")
        return
    rows = []
    for case in FLCE_CASES:
        case = {**case, "device": "cuda"}
        for kind in ("eager", "torch.compile", "liger", "tritonic"):
            fn = _flce_fn(kind)
            if fn is None:
                continue
            h, w, t = _flce_inputs(case)
            torch.autograd.grad(fn(h, w, t), (h, w))  # warm (compiles, tunes)
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            base = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
            grads = torch.autograd.grad(fn(h, w, t), (h, w))
            torch.cuda.synchronize()
            peak = torch.cuda.max_memory_allocated() - base
            del grads, h, w, t
            print(f"{case['name']} {kind}: peak extra {peak / 2**30:.2f} GiB")
            rows.append({"bench": "fused_linear_ce_memory", "case": case["name"], "mode": "fwd+bwd", "provider": kind,
                         "peak_extra_bytes": peak, "metric": "GiB", "value": peak / 2**30})
    print(json.dumps({r["provider"]: round(r["value"], 3) for r in rows}))
    print(f"wrote {len(rows)} rows to {write_json(rows, out, 'fused_linear_ce_memory')}")


if __name__ == "__main__":
    argv = sys.argv[1:]
    if "--flce" in argv:
        argv.remove("--flce")
        status = main(FLCE_BENCH, argv)
        out = argv[argv.index("--out") + 1] if "--out" in argv else "benchmarks/results"
        flce_memory(out, "--dry-run" in argv)
        sys.exit(status)
    sys.exit(main(BENCH, argv))
