"""Memory-bound ops: cross-entropy, activations (and, with --flce, the fused linear cross-entropy).

    python benchmarks/memory_bound.py [--out DIR] [--only ce] [--modes fwd] [--quick]
    python benchmarks/memory_bound.py --flce [--out DIR]    # LM head + loss: time and peak memory
    python benchmarks/memory_bound.py --dry-run             # CPU smoke run, no GPU

"memory_bound": bfloat16, against PyTorch eager, torch.compile and Liger-Kernel (where it has
the op); GB/s counts the bytes the op must move (cross-entropy forward: the logits once;
forward+backward: read them twice and write their gradient; elementwise ops: every input
and output once per pass). The forward+backward of an elementwise op is timed as
``autograd.grad`` of a fresh forward.

"fused_linear_ce" (--flce): 8192 tokens, hidden 4096, vocabulary 128256, bfloat16; eager is
``F.cross_entropy(F.linear(h, W), t)``; TFLOP/s counts the three GEMMs (6·N·H·V). It also
writes "fused_linear_ce_memory": the peak memory each provider allocates beyond its inputs
during one forward+backward. "tritonic-lowmem" is ``low_memory=True`` (shown beside the
others; the ratios are the default tritonic's).
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


def _ew(op, M, N):
    return {"name": f"{op} {M}x{N}", "op": op, "M": M, "N": N}


def _rope(B, H, Hk, S, D):
    return {"name": f"rope {B}x{H}/{Hk}x{S}x{D}", "op": "rope", "B": B, "H": H, "Hk": Hk, "S": S, "D": D}


CASES = [_ce(8192, 32000), _ce(8192, 128256),
         _ew("gelu", 16384, 4096), _ew("swiglu", 8192, 14336), _ew("geglu_tanh", 8192, 14336),
         _ew("softmax", 16384, 4096), _ew("softmax", 4096, 131072),
         _rope(4, 32, 8, 4096, 128)]  # Llama-3-8B prefill
SMOKE_CASES = [_ce(16, 100), _ew("softmax", 8, 64), _ew("gelu", 8, 64), _ew("swiglu", 8, 64), _ew("geglu_tanh", 8, 64),
               _rope(1, 4, 2, 8, 16)]


def _rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


def _rope_eager(q, k, cos, sin):  # Hugging Face Llama's formula, cos/sin (B, S, D)
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
    return q * cos + _rotate_half(q) * sin, k * cos + _rotate_half(k) * sin


# ----------------------------------------------------------------------------- the ops
# fn(kind, op) -> a function of the op's inputs, or None where the provider lacks the op.


def _eager(op):
    return {
        "ce": F.cross_entropy,
        "gelu": F.gelu,
        "softmax": lambda x: torch.softmax(x, -1),
        "swiglu": lambda g, u: F.silu(g) * u,
        "geglu_tanh": lambda g, u: F.gelu(g, approximate="tanh") * u,
        "rope": _rope_eager,
    }[op]


def _liger(op):
    try:
        if op == "ce":
            from liger_kernel.transformers.functional import liger_cross_entropy
            return liger_cross_entropy  # note: writes the gradient into the logits in place; syncs (.item())
        if op == "swiglu":
            from liger_kernel.ops.swiglu import LigerSiLUMulFunction
            return LigerSiLUMulFunction.apply
        if op == "geglu_tanh":  # Liger's GeGLU uses the tanh form
            from liger_kernel.ops.geglu import LigerGELUMulFunction
            return LigerGELUMulFunction.apply
        if op == "softmax":
            from liger_kernel.ops.softmax import LigerSoftmaxFunction
            return LigerSoftmaxFunction.apply
        if op == "rope":
            from liger_kernel.transformers.rope import liger_rotary_pos_emb
            return liger_rotary_pos_emb
    except Exception:
        return None
    return None


def _tritonic(op):
    import tritonic.ops as T

    return {
        "ce": lambda x, t: T.cross_entropy(x, t, check_targets=False),  # the check's sync is not the kernel's cost
        "gelu": T.gelu,
        "softmax": T.softmax,
        "swiglu": T.swiglu,
        "geglu_tanh": lambda g, u: T.geglu(g, u, approximate="tanh"),
        "rope": T.rope,
    }[op]


def _fn(kind, op):
    if kind == "eager":
        return _eager(op)
    if kind == "torch.compile":
        torch._dynamo.reset()
        return torch.compile(_eager(op), dynamic=False)
    if kind == "liger":
        return _liger(op)
    return _tritonic(op)


def _inputs(case, grad):
    """(differentiable inputs, other inputs) of one call."""
    dev = case["device"]
    dt = DT if dev == "cuda" else torch.float32
    if case["op"] == "ce":
        N, V = case["N"], case["V"]
        t = torch.randint(0, V, (N,), device=dev)
        t[::17] = -100
        return [torch.randn(N, V, dtype=dt, device=dev, requires_grad=grad)], [t]
    if case["op"] == "rope":
        B, H, Hk, S, D = (case[x] for x in ("B", "H", "Hk", "S", "D"))
        q = torch.randn(B, H, S, D, dtype=dt, device=dev, requires_grad=grad)
        k = torch.randn(B, Hk, S, D, dtype=dt, device=dev, requires_grad=grad)
        angle = torch.arange(S, device=dev)[:, None] * torch.rand(D // 2, device=dev).repeat(2)
        return [q, k], [angle.cos().to(dt)[None], angle.sin().to(dt)[None]]
    M, N = case["M"], case["N"]
    n = 1 if case["op"] in ("gelu", "softmax") else 2
    return [torch.randn(M, N, dtype=dt, device=dev, requires_grad=grad) for _ in range(n)], []


def provider(kind):
    def factory(case, mode, n_sets):
        if kind == "liger" and case["device"] != "cuda":
            return None
        fn = _fn(kind, case["op"])
        if fn is None:
            return None
        out = []
        for _ in range(n_sets):
            diff, other = _inputs(case, mode != "fwd")
            if mode == "fwd":
                out.append(lambda d=diff, o=other: fn(*d, *o))
            else:
                y = fn(*diff, *other) if case["op"] != "ce" else None
                dy = None if y is None else (tuple(map(torch.randn_like, y)) if isinstance(y, tuple)
                                             else torch.randn_like(y))
                del y
                out.append(lambda d=diff, o=other, dy=dy: torch.autograd.grad(fn(*d, *o), d, dy))
            if kind == "liger" and case["op"] == "ce":
                out[-1].no_graph = True  # its forward reads a count back to the host: not capturable
        return out
    return factory


def mb_bytes(case, mode):
    """bfloat16 bytes one call must move. Cross-entropy: the logits once forward, three
    times forward+backward. Elementwise: inputs read and outputs written, dy read and
    input gradients written in the backward."""
    if case["op"] == "ce":
        one = case["N"] * case["V"] * 2
        return {"fwd": one, "fwd+bwd": 3 * one}[mode]
    if case["op"] == "rope":  # q and k read and written (the angles are small)
        qk = case["B"] * (case["H"] + case["Hk"]) * case["S"] * case["D"] * 2
        return {"fwd": 2 * qk, "fwd+bwd": 4 * qk}[mode]
    one = case["M"] * case["N"] * 2
    n_in = 1 if case["op"] in ("gelu", "softmax") else 2
    fwd = (n_in + 1) * one
    bwd = (n_in + 1 + n_in) * one  # read inputs (softmax: its output) and dy, write the input gradients
    return {"fwd": fwd, "fwd+bwd": fwd + bwd}[mode]


BENCH = Benchmark(
    name="memory_bound",
    cases=CASES,
    smoke_cases=SMOKE_CASES,
    providers={"eager": provider("eager"), "torch.compile": provider("torch.compile"),
               "liger": provider("liger"), "tritonic": provider("tritonic")},
    bytes=mb_bytes,
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

    if kind == "tritonic-lowmem":  # the two-pass variant: vocabulary slices, their logits in dW's free rows
        return lambda h, w, t: fused_linear_cross_entropy(h, w, t, check_targets=False, low_memory=True)
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
               "liger": flce_provider("liger"), "tritonic-lowmem": flce_provider("tritonic-lowmem"),
               "tritonic": flce_provider("tritonic")},
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
        for kind in ("eager", "torch.compile", "liger", "tritonic-lowmem", "tritonic"):
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
