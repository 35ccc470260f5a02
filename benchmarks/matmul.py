"""GEMM: tritonic's matmul, linear with a fused epilogue and gated_linear against cuBLAS
through PyTorch and torch.compile.

    python benchmarks/matmul.py [--out DIR] [--only ffn] [--modes fwd] [--quick]
    python benchmarks/matmul.py --dry-run      # CPU smoke run of the code paths, no GPU

One benchmark, "matmul", written to ``<out>/<gpu>/matmul.json``. The metric is TFLOP/s of
the GEMM work (2·M·N·K per product; the backward does two products). Cases:

- ``mm <dtype> <n>^3``: plain square products, forward only (cuBLAS is ``torch.matmul``);
- ``bert-ffn``: BERT-base FFN up-projection, 4096 tokens, 768 -> 3072, float16, bias + erf
  GELU (PyTorch: ``F.linear`` then ``F.gelu``), forward and backward;
- ``llama-mlp``: gated MLP up-projection, 4096 tokens, 4096 -> 2x14336, bfloat16,
  ``silu(gate) * up`` (PyTorch: one ``F.linear`` against the concatenated weight, then
  the SiLU-multiply), forward and backward; ``llama-mlp interleaved``: the same with the
  weight's gate and up rows alternating (PyTorch takes the even and odd output columns);
- ``decode m=<m>``: inference at batch 1..16 tokens, 4096 -> 4096 and 4096 -> 14336,
  bfloat16, forward only.

Providers: ``torch`` (eager PyTorch: cuBLAS plus separate elementwise kernels),
``torch.compile`` (default mode), ``compile-max-autotune`` (``max-autotune-no-cudagraphs``;
only on the cases marked ``autotune``: its tuning takes minutes per shape) and ``tritonic``.
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

FP16, BF16 = torch.float16, torch.bfloat16
_NAMES = {FP16: "fp16", BF16: "bf16", torch.float32: "fp32"}


def _mm(dtype, n, autotune=False):
    return {"name": f"mm {_NAMES[dtype]} {n}^3", "kind": "mm", "M": n, "N": n, "K": n, "dtype": dtype,
            "modes": ("fwd",), "autotune": autotune}


def _lin(name, kind, m, n, k, dtype, act=None, bias=False, modes=("fwd", "bwd", "fwd+bwd"), autotune=False,
         layout="concat"):
    return {"name": name, "kind": kind, "M": m, "N": n, "K": k, "dtype": dtype, "act": act, "bias": bias,
            "modes": modes, "autotune": autotune, "layout": layout}


CASES = [
    _mm(BF16, 4096, autotune=True), _mm(FP16, 4096), _mm(BF16, 8192), _mm(FP16, 8192),
    _lin("bert-ffn 4096x768->3072 gelu", "linear", 4096, 3072, 768, FP16, act="gelu", bias=True, autotune=True),
    _lin("llama-mlp 4096x4096->2x14336 silu", "gated", 4096, 2 * 14336, 4096, BF16, act="silu"),
    _lin("llama-mlp interleaved 4096x4096->2x14336 silu", "gated", 4096, 2 * 14336, 4096, BF16, act="silu",
         layout="interleaved"),
    *(_lin(f"decode m={m} 4096->{n}", "linear", m, n, 4096, BF16, modes=("fwd",))
      for m in (1, 16) for n in (4096, 14336)),
]
SMOKE_CASES = [
    _mm(torch.float32, 32),
    _lin("ffn smoke", "linear", 16, 32, 24, torch.float32, act="gelu", bias=True),
    _lin("gated smoke", "gated", 16, 32, 24, torch.float32, act="silu"),
    _lin("gated interleaved smoke", "gated", 16, 32, 24, torch.float32, act="silu", layout="interleaved"),
]


# ----------------------------------------------------------------------------- the ops


def _act(name):
    return {None: lambda z: z, "gelu": F.gelu, "silu": F.silu}[name]


def torch_op(case):
    """What a PyTorch user writes: cuBLAS, then separate elementwise kernels."""
    if case["kind"] == "mm":
        return torch.matmul
    act = _act(case["act"])
    if case["kind"] == "gated":
        def gated(x, w):
            y = F.linear(x, w)
            gate, up = y.chunk(2, dim=-1) if case["layout"] == "concat" else (y[..., 0::2], y[..., 1::2])
            return act(gate) * up
        return gated
    return lambda x, w, *b: act(F.linear(x, w, *b))


def tritonic_op(case):
    import tritonic.ops as ops

    if case["kind"] == "mm":
        return ops.matmul
    if case["kind"] == "gated":
        if not hasattr(ops, "gated_linear"):
            return None
        return lambda x, w: ops.gated_linear(x, w, activation=case["act"], layout=case["layout"])
    return lambda x, w, *b: ops.linear(x, w, *b, activation=case["act"])


def compiled(mode=None):
    def make(case):
        if mode is not None and not case.get("autotune"):
            return None
        torch._dynamo.reset()  # every (case, mode) compiles afresh: no recompile limit to hit
        return torch.compile(torch_op(case), dynamic=False, mode=mode)
    return make


# ----------------------------------------------------------------------------- factories


def _inputs(case, grad):
    M, N, K, dt, dev = case["M"], case["N"], case["K"], case["dtype"], case["device"]
    if case["kind"] == "mm":
        a = torch.randn(M, K, dtype=dt, device=dev, requires_grad=grad)
        b = torch.randn(K, N, dtype=dt, device=dev, requires_grad=grad)
        return (a, b), (M, N)
    x = torch.randn(M, K, dtype=dt, device=dev, requires_grad=grad)
    w = (torch.randn(N, K, dtype=dt, device=dev) * K ** -0.5).requires_grad_(grad)
    out_n = N // 2 if case["kind"] == "gated" else N
    if case.get("bias"):
        return (x, w, torch.randn(N, dtype=dt, device=dev, requires_grad=grad)), (M, out_n)
    return (x, w), (M, out_n)


def provider(make):
    def factory(case, mode, n_sets):
        fn = make(case)
        if fn is None:
            return None
        out = []
        for _ in range(n_sets):
            inputs, out_shape = _inputs(case, mode != "fwd")
            if mode == "fwd":
                out.append(lambda inputs=inputs: fn(*inputs))
                continue
            dy = torch.randn(out_shape, dtype=case["dtype"], device=case["device"])
            if mode == "bwd":
                y = fn(*inputs)
                out.append(lambda y=y, inputs=inputs, dy=dy: torch.autograd.grad(y, inputs, dy, retain_graph=True))
            else:
                out.append(lambda inputs=inputs, dy=dy: torch.autograd.grad(fn(*inputs), inputs, dy))
        return out
    return factory


def gemm_flops(case, mode):
    one = 2 * case["M"] * case["N"] * case["K"]
    return {"fwd": one, "bwd": 2 * one, "fwd+bwd": 3 * one}[mode]


def gemm_bytes(case, mode):
    """Operands and result once each (decides input rotation and graphs, not the metric)."""
    M, N, K = case["M"], case["N"], case["K"]
    size = torch.empty(0, dtype=case["dtype"]).element_size()
    one = (M * K + N * K + M * N) * size
    return {"fwd": one, "bwd": 2 * one, "fwd+bwd": 3 * one}[mode]


BENCH = Benchmark(
    name="matmul",
    cases=CASES,
    smoke_cases=SMOKE_CASES,
    providers={
        "torch": provider(torch_op),
        "torch.compile": provider(compiled()),
        "compile-max-autotune": provider(compiled("max-autotune-no-cudagraphs")),
        "tritonic": provider(tritonic_op),
    },
    bytes=gemm_bytes,
    flops=gemm_flops,
    modes=("fwd", "bwd", "fwd+bwd"),
    baselines=("torch", "torch.compile", "compile-max-autotune"),
    subject="tritonic",
)


if __name__ == "__main__":
    sys.exit(main(BENCH))
