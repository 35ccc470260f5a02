"""The projections of issue 7's models at inference sizes, each variant timed as CUDA graph
replays (how ``optimize``'s graphs run them): 20 calls captured in one graph, so a row is the
per-call time including the gaps between a graph's kernels.

    PYTHONPATH=src python scripts/infer_gemm_ab.py [--rows 16,128,1024,8192] [--out FILE]

Variants, per model shape:
- qkv: three ``F.linear`` (what HF runs) against one over the stacked weight (cuBLAS) and
  tritonic's ``linear`` over it;
- gate/up: ``F.linear`` x2 + ``swiglu`` (today's GatedMLPBlock at inference) against one
  ``F.linear`` over the stacked weight + ``swiglu`` on its halves, and ``gated_linear``
  (the product in the GEMM's epilogue), concat and interleaved;
- out + residual: ``F.linear`` + add against tritonic ``linear(residual=)``;
- fc + gelu_tanh (GPT-2, BERT's erf gelu): ``F.linear`` + gelu, tritonic ``linear(activation=)``,
  ``torch._addmm_activation`` (cuBLASLt's GELU epilogue, tanh form only).
"""

from __future__ import annotations

import argparse
import json

import torch
import torch.nn.functional as F

from tritonic import ops
from tritonic.ops.gated import interleave_gate_up

DT = torch.float16


def graph_us(fn, reps: int = 20, rounds: int = 30) -> float:
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side), torch.no_grad():
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    g = torch.cuda.CUDAGraph()
    with torch.no_grad(), torch.cuda.graph(g):
        for _ in range(reps):
            fn()
    g.replay()
    torch.cuda.synchronize()
    times = []
    for _ in range(rounds):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        g.replay()
        e.record()
        e.synchronize()
        times.append(s.elapsed_time(e) * 1e3 / reps)
    times.sort()
    return times[len(times) // 2]


def w(n, k):
    return torch.randn(n, k, device="cuda", dtype=DT) / k ** 0.5


def cases(M: int):
    # Llama-style 1B: hidden 2048, 32 q heads / 8 kv heads of 64, MLP 5632
    out = _cases(M, "llama", 2048, 512, 5632) + _cases(M, "bert/gpt2", 768, 768, 3072)
    table = torch.randn(30522, 768, device="cuda", dtype=DT)
    ids = torch.randint(0, 30522, (M,), device="cuda")
    out.append((f"embedding 30522x768 M={M}", {
        "F.embedding": lambda: F.embedding(ids, table),
        "table[ids]": lambda: table[ids],
        "tritonic embedding": lambda: ops.embedding(ids, table),
    }))
    return out


def _cases(M, name, h, kv, f):  # (a function per model: each lambda keeps its own tensors)
    out = []
    if True:
        x = torch.randn(M, h, device="cuda", dtype=DT)
        wq, wk, wv = w(h, h), w(kv, h), w(kv, h)
        wqkv = torch.cat([wq, wk, wv])
        out.append((f"{name} qkv M={M}", {
            "3x F.linear": lambda: (F.linear(x, wq), F.linear(x, wk), F.linear(x, wv)),
            "F.linear stacked": lambda: F.linear(x, wqkv),
            "tritonic linear stacked": lambda: ops.linear(x, wqkv),
        }))
        for n_out, k_in in ((h, h), (h, f), (kv + 2 * h, h)):  # plain products: out proj, MLP down, stacked qkv
            wp_, bp_ = w(n_out, k_in), torch.randn(n_out, device="cuda", dtype=DT)
            xp_ = torch.randn(M, k_in, device="cuda", dtype=DT)
            out.append((f"{name} plain {k_in}->{n_out} M={M}", {
                "F.linear": lambda wp_=wp_, bp_=bp_, xp_=xp_: F.linear(xp_, wp_, bp_),
                "tritonic linear": lambda wp_=wp_, bp_=bp_, xp_=xp_: ops.linear(xp_, wp_, bp_),
            }))
        wo = w(h, h)
        xo, r = torch.randn(M, h, device="cuda", dtype=DT), torch.randn(M, h, device="cuda", dtype=DT)
        out.append((f"{name} out+residual M={M}", {
            "F.linear + add": lambda: F.linear(xo, wo) + r,
            "tritonic linear(residual)": lambda: ops.linear(xo, wo, residual=r),
        }))
        if name == "llama":
            wg, wu, wd = w(f, h), w(f, h), w(h, f)
            wgu = torch.cat([wg, wu])
            wgi = interleave_gate_up(wgu)
            out.append((f"llama gate/up M={M}", {
                "2x F.linear + swiglu": lambda: ops.swiglu(F.linear(x, wg), F.linear(x, wu)),
                "F.linear stacked + swiglu": lambda: ops.swiglu(F.linear(x, wgu)),
                "gated_linear concat": lambda: ops.gated_linear(x, wgu, "silu"),
                "gated_linear interleaved": lambda: ops.gated_linear(x, wgi, "silu", layout="interleaved"),
            }))
            xd = torch.randn(M, f, device="cuda", dtype=DT)
            out.append((f"llama down+residual M={M}", {
                "F.linear + add": lambda: F.linear(xd, wd) + xo,
                "tritonic linear(residual)": lambda: ops.linear(xd, wd, residual=xo),
            }))
        else:
            wf, bf = w(f, h), torch.randn(f, device="cuda", dtype=DT)
            wp, bp = w(h, f), torch.randn(h, device="cuda", dtype=DT)
            xf = torch.randn(M, f, device="cuda", dtype=DT)
            out.append((f"gpt2 fc+gelu_tanh M={M}", {
                "F.linear + gelu": lambda: F.gelu(F.linear(x, wf, bf), approximate="tanh"),
                "tritonic linear(gelu_tanh)": lambda: ops.linear(x, wf, bf, activation="gelu_tanh"),
                "addmm_activation (cublasLt gelu)": lambda: torch._addmm_activation(bf, x, wf.t(), use_gelu=True),
            }))
            out.append((f"gpt2 proj+bias+residual M={M}", {
                "F.linear + add": lambda: F.linear(xf, wp, bp) + r,
                "tritonic linear(bias, residual)": lambda: ops.linear(xf, wp, bp, residual=r),
            }))
    return out


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--rows", default="16,128,1024,8192")
    p.add_argument("--out")
    a = p.parse_args()
    rows = []
    for M in (int(v) for v in a.rows.split(",")):
        for name, variants in cases(M):
            line = []
            for label, fn in variants.items():
                try:
                    us = graph_us(fn)
                except Exception as e:  # noqa: BLE001 (report and go on)
                    print(f"{name} {label}: {type(e).__name__}: {str(e)[:200]}", flush=True)
                    continue
                rows.append({"case": name, "variant": label, "us": us})
                line.append(f"{label} {us:7.2f}")
            print(f"{name:34s} " + " | ".join(line), flush=True)
    if a.out:
        with open(a.out, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
