"""LayerNorm and RMSNorm: tritonic against PyTorch eager, torch.compile and Liger.

    python benchmarks/norm.py [--out DIR] [--only rms_norm] [--modes fwd] [--quick]
    python benchmarks/norm.py --dry-run      # CPU smoke run of the code paths, no GPU

One benchmark, "norm", written to ``<out>/<gpu>/norm.json``; the case names say the op
("layer_norm 16384x4096" is 16384 tokens of hidden size 4096). bfloat16 throughout,
random inputs and weights. The metric is GB/s of the bytes a norm must move.
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

DTYPE = torch.bfloat16
EPS = {"layer_norm": 1e-5, "rms_norm": 1e-6}
SHAPES = [(4096, 768), (16384, 4096), (8192, 8192), (4096, 16384)]  # (tokens, hidden)


def _case(op, m, n):
    return {"name": f"{op} {m}x{n}", "op": op, "M": m, "N": n}


CASES = [_case(op, m, n) for op in ("layer_norm", "rms_norm") for m, n in SHAPES]
SMOKE_CASES = [_case(op, 64, 256) for op in ("layer_norm", "rms_norm")]


# ----------------------------------------------------------------------------- the ops
# Each takes (x, weight, bias) for LayerNorm or (x, weight) for RMSNorm.


def eager(op):
    if op == "layer_norm":
        return lambda x, w, b: F.layer_norm(x, (x.shape[-1],), w, b, EPS[op])
    return lambda x, w: F.rms_norm(x, (x.shape[-1],), w, EPS[op])


def tritonic_op(op):
    import tritonic.ops

    if op == "layer_norm":
        return lambda x, w, b: tritonic.ops.layer_norm(x, w, b, eps=EPS[op])
    return lambda x, w: tritonic.ops.rms_norm(x, w, eps=EPS[op], upcast=True)


def liger_op(op):
    """Liger-Kernel's autograd functions, or None when liger_kernel does not import."""
    try:
        if op == "layer_norm":
            from liger_kernel.ops.layer_norm import LigerLayerNormFunction
        else:
            from liger_kernel.ops.rms_norm import LigerRMSNormFunction
    except Exception:  # not installed, or broken against this torch/triton
        return None
    if op == "layer_norm":
        return lambda x, w, b: LigerLayerNormFunction.apply(x, w, b, EPS[op])
    # offset 0, "gemma" casting: all in float32, one cast at the end (as torch and upcast=True)
    return lambda x, w: LigerRMSNormFunction.apply(x, w, EPS[op], 0.0, "gemma", False)


def compiled(op):
    torch._dynamo.reset()  # every (case, mode) compiles afresh: no recompile limit to hit
    return torch.compile(eager(op), dynamic=False)


# ----------------------------------------------------------------------------- factories


def callables(fn, case, mode, n_sets):
    """One zero-argument callable per independently allocated input set (see the harness)."""
    M, N, dev, grad = case["M"], case["N"], case["device"], mode != "fwd"
    out = []
    for _ in range(n_sets):
        x = torch.randn(M, N, dtype=DTYPE, device=dev, requires_grad=grad)
        params = [torch.randn(N, dtype=DTYPE, device=dev, requires_grad=grad)
                  for _ in range(2 if case["op"] == "layer_norm" else 1)]
        inputs = (x, *params)
        if mode == "fwd":
            out.append(lambda inputs=inputs: fn(*inputs))
            continue
        dy = torch.randn(M, N, dtype=DTYPE, device=dev)
        if mode == "bwd":
            y = fn(*inputs)
            out.append(lambda y=y, inputs=inputs, dy=dy:
                       torch.autograd.grad(y, inputs, dy, retain_graph=True))
        else:
            out.append(lambda inputs=inputs, dy=dy: torch.autograd.grad(fn(*inputs), inputs, dy))
    return out


def provider(make):
    def factory(case, mode, n_sets):
        fn = make(case["op"])
        return None if fn is None else callables(fn, case, mode, n_sets)
    return factory


def norm_bytes(case, mode):
    """bf16 bytes one call must move: rows of x, y, dy, dx plus the parameters once."""
    M, N, n_params, size = case["M"], case["N"], 2 if case["op"] == "layer_norm" else 1, 2
    fwd = (2 * M * N + n_params * N) * size  # read x, write y; read weight (and bias)
    bwd = (3 * M * N + (1 + n_params) * N) * size  # read x, dy, write dx; read w, write dw (db)
    return {"fwd": fwd, "bwd": bwd, "fwd+bwd": fwd + bwd}[mode]


BENCH = Benchmark(
    name="norm",
    cases=CASES,
    smoke_cases=SMOKE_CASES,
    providers={
        "eager": provider(eager),
        "torch.compile": provider(compiled),
        "liger": provider(liger_op),
        "tritonic": provider(tritonic_op),
    },
    bytes=norm_bytes,
    modes=("fwd", "bwd", "fwd+bwd"),
    baselines=("eager", "torch.compile", "liger"),
    subject="tritonic",
)


if __name__ == "__main__":
    sys.exit(main(BENCH))
