"""The FFN-up product with its GELU (BERT's erf form, GPT-2's tanh form) at inference sizes,
every Hopper-kernel config against cuBLAS, each timed as CUDA graph replays (how
``optimize``'s graphs run them; ``infer_gemm_ab.graph_us``).

    PYTHONPATH=src python scripts/gelu_gemm_ab.py [--rows 128,512,1024,8192] [--out FILE]

Rows per (rows, activation): ``F.linear`` alone (the floor a fused epilogue can reach),
``F.linear`` + ``F.gelu``, ``torch._addmm_activation`` (cuBLASLt's epilogue, tanh form
only), tritonic's ``linear`` as shipped (the tuned table's config), and each config of the
Hopper kernel's tuner.
"""

from __future__ import annotations

import argparse
import importlib
import json

import torch
import torch.nn.functional as F
from infer_gemm_ab import graph_us

from tritonic import ops

from tritonic.runtime.autotune import Config  # noqa: E402

mm = importlib.import_module("tritonic.ops.matmul")  # (tritonic.ops.matmul the name is the function)

DT = torch.float16


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--rows", default="128,512,1024,8192")
    p.add_argument("--k", type=int, default=768)
    p.add_argument("--n", type=int, default=3072)
    p.add_argument("--out")
    p.add_argument("--acts", default="gelu,gelu_tanh")
    p.add_argument("--ws", action="store_true", help="also warp-specialised configs (WARP_SPEC, not flattened)")
    a = p.parse_args()
    K, N = a.k, a.n
    rows = []
    for M in (int(r) for r in a.rows.split(",")):
        x = torch.randn(M, K, device="cuda", dtype=DT)
        w = torch.randn(N, K, device="cuda", dtype=DT) / K ** 0.5
        b = torch.randn(N, device="cuda", dtype=DT) * 0.1
        flop = 2 * M * N * K
        for act, approx in (("gelu", "none"), ("gelu_tanh", "tanh"), (None, None)):
            if str(act) not in a.acts.split(","):
                continue
            ref = F.linear(x, w, b).float()
            ref = ref if act is None else F.gelu(ref, approximate=approx)
            found = {"linear alone": graph_us(lambda: F.linear(x, w, b))}
            if act is not None:
                found["linear + gelu"] = graph_us(lambda: F.gelu(F.linear(x, w, b), approximate=approx))
            if approx == "tanh":
                found["addmm_activation"] = graph_us(lambda: torch._addmm_activation(b, x, w.t(), use_gelu=True))
            with torch.no_grad():
                err = (ops.linear(x, w, b, activation=act).float() - ref).abs().max().item()
                found["tritonic (shipped)"] = graph_us(lambda: ops.linear(x, w, b, activation=act))
            out = torch.empty(M, N, device="cuda", dtype=DT)
            run = mm._tma_runner(x, w.t(), out, b, None, None, mm.ACTIVATIONS[act], 0)
            configs = list(mm._tma_tuner.configs)
            if a.ws:
                configs += [Config.of(num_warps=nw, num_stages=st, BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=64, GROUP_M=8,
                                      FLATTEN=False, WARP_SPEC=True)
                            for bm, bn, nw, st in [(128, 128, 4, 3), (128, 128, 8, 4), (128, 256, 8, 3),
                                                   (256, 128, 8, 3), (128, 64, 4, 4), (64, 128, 4, 4)]]
            for cfg in configs:
                name = "tma " + " ".join(f"{k}={v}" for k, v in cfg.kwargs) \
                    + f" w{cfg.num_warps} s{cfg.num_stages}"
                try:
                    run(cfg)
                    bad = (out.float() - ref).abs().max().item()
                    found[name] = graph_us(lambda: run(cfg)) if bad < 0.05 else float("nan")
                except Exception as e:  # noqa: BLE001 (a config that does not fit)
                    print(f"  {name}: {type(e).__name__}: {str(e)[:80]}", flush=True)
            best = min((v, k) for k, v in found.items() if k.startswith("tma") and v == v)
            print(f"{M}x{K}->{N} {act}: max err {err:.2e} (shipped)", flush=True)
            for k, v in found.items():
                print(f"  {k:60s} {v:8.2f} us  {flop / v / 1e6:6.1f} TFLOP/s", flush=True)
            print(f"  best tma: {best[1]} {best[0]:.2f} us", flush=True)
            rows.append({"rows": M, "k": K, "n": N, "act": act, "us": found})
    if a.out:
        with open(a.out, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
