"""Time every GEMM config of the tuner lists on a few shapes (GPU machine), to see what
limits a case rather than only what the autotuner picked.

    PYTHONPATH=src python scripts/sweep_matmul.py > sweep_matmul.log
"""

import importlib

import torch
import torch.nn.functional as F
from triton.testing import do_bench

mm = importlib.import_module("tritonic.ops.matmul")
lin = importlib.import_module("tritonic.ops.linear")
gated_ops = importlib.import_module("tritonic.ops.gated")


def bench(fn):
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):
        fn()
        torch.cuda.synchronize()
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g, stream=side):
            fn()
        return do_bench(g.replay, warmup=25, rep=100, return_mode="median") * 1e3


def sweep(name, fn, tuner, flops, baseline):
    print(f"\n== {name}: baseline {baseline:.1f} us", flush=True)
    rows = []
    for config in tuner.configs:
        tuner.chosen.clear()
        mm._PLANS.clear()  # (the GEMM's remembered launches carry the config they were made with)
        orig = tuner.pick
        tuner.pick = lambda key, time_config, config=config, **kw: config
        try:
            us = bench(fn)
            rows.append((us, config))
            print(f"  {us:8.1f} us  {flops / us / 1e6:6.1f} TFLOP/s  {config.meta()}", flush=True)
        except Exception as e:
            print(f"  failed {type(e).__name__}: {str(e)[:80]}  {config.meta()}", flush=True)
        finally:
            tuner.pick = orig
    tuner.chosen.clear()
    mm._PLANS.clear()
    if rows:
        best = min(rows, key=lambda r: r[0])
        print(f"  best {best[0]:.1f} us ({baseline / best[0]:.2f}x baseline) {best[1].meta()}")


def main(only=None):
    torch.manual_seed(0)
    mm.OutOfResources = type("NotCaught", (Exception,), {})  # a config that does not fit fails here
    dev, h = "cuda", torch.float16
    x = torch.randn(4096, 768, device=dev, dtype=h)
    w = torch.randn(3072, 768, device=dev, dtype=h) / 28
    b = torch.randn(3072, device=dev, dtype=h)
    fl = 2 * 4096 * 3072 * 768
    if only == "epilogue":
        sweep("bert-ffn linear+gelu", lambda: lin.linear(x, w, b, activation="gelu"), mm._tma_tuner, fl,
              bench(lambda: F.gelu(F.linear(x, w, b))))
        xl = torch.randn(4096, 4096, device=dev, dtype=torch.bfloat16)
        wl = torch.randn(2 * 14336, 4096, device=dev, dtype=torch.bfloat16) / 64
        sweep("llama gated fwd", lambda: gated_ops.gated_linear(xl, wl), mm._tma_gated_tuner, 2 * 4096 * 2 * 14336 * 4096,
              bench(lambda: gated_ops.gated_linear_reference(xl, wl)))
        return
    sweep("bert-ffn linear only (fp16 4096x768->3072)", lambda: lin.linear(x, w, b), mm._tma_tuner, fl,
          bench(lambda: F.linear(x, w, b)))
    sweep("bert-ffn linear+gelu", lambda: lin.linear(x, w, b, activation="gelu"), mm._tma_tuner, fl,
          bench(lambda: F.gelu(F.linear(x, w, b))))
    # the backward's pieces, each on its own (autotuned as usual)
    dy, z = torch.randn(4096, 3072, device=dev, dtype=h), torch.randn(4096, 3072, device=dev, dtype=h)
    print("\n== bert-ffn backward pieces (us): ours vs torch")
    print(f"  act_grad+db   {bench(lambda: lin._linear_bwd(dy, z, x, w, 2, False, False, True)):8.1f}"
          f"  torch gelu_backward+sum {bench(lambda: (torch.ops.aten.gelu_backward(dy, z), dy.sum(0))):8.1f}")
    print(f"  dX = G @ W    {bench(lambda: lin._linear_bwd(dy, z, x, w, 0, True, False, False)):8.1f}"
          f"  torch {bench(lambda: dy @ w):8.1f}")
    print(f"  dW = G^T @ X  {bench(lambda: lin._linear_bwd(dy, z, x, w, 0, False, True, False)):8.1f}"
          f"  torch {bench(lambda: dy.t() @ x):8.1f}")
    print(f"  all           {bench(lambda: lin._linear_bwd(dy, z, x, w, 2, True, True, True)):8.1f}")
    bf = torch.bfloat16
    xl = torch.randn(4096, 4096, device=dev, dtype=bf)
    wl = torch.randn(2 * 14336, 4096, device=dev, dtype=bf) / 64
    fll = 2 * 4096 * 2 * 14336 * 4096
    sweep("llama gated fwd (bf16 4096x4096->2x14336)", lambda: gated_ops.gated_linear(xl, wl), mm._tma_gated_tuner, fll,
          bench(lambda: gated_ops.gated_linear_reference(xl, wl)))
    a = torch.randn(4096, 4096, device=dev, dtype=bf)
    c = torch.randn(4096, 4096, device=dev, dtype=bf)
    sweep("mm bf16 4096^3", lambda: mm.matmul(a, c), mm._tma_tuner, 2 * 4096 ** 3, bench(lambda: torch.matmul(a, c)))


if __name__ == "__main__":
    import sys

    main(sys.argv[1] if len(sys.argv) > 1 else None)  # "epilogue": only the two epilogue-heavy cases
