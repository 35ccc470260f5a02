"""Decode attention over a KV cache: tritonic's flash-decoding against PyTorch SDPA.

    python benchmarks/decode.py [--out DIR] [--only b1] [--quick]
    python benchmarks/decode.py --dry-run      # CPU smoke run of the code paths, no GPU

One benchmark, "decode", written to ``<out>/<gpu>/decode.json``: one new token per
sequence, bfloat16, d128, 32 query heads over 8 key/value heads (GQA), every sequence's
cache filled to the case's length. ``tritonic+pdl`` runs the calls as tritonic's own captures do
(``pdl.capturing()``: both kernels with programmatic dependent launch on sm_90+). The metric is GB/s of the cache read (keys and values
of the valid positions), to compare with the device copy bandwidth (about 3.0 TB/s on an
H100). SDPA gets the cache sliced to the valid length and ``enable_gqa=True``.
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

H, HK, D = 32, 8, 128


def _case(B, L):
    return {"name": f"b{B} cache {L // 1024}k", "B": B, "L": L, "modes": ("fwd",)}


CASES = [_case(B, L) for B in (1, 16, 64) for L in (1024, 8192, 32768) if B * L <= 64 * 8192]
SMOKE_CASES = [{"name": "smoke", "B": 2, "L": 40, "modes": ("fwd",)}]


def _inputs(case):
    dev = case["device"]
    dt = torch.bfloat16 if dev == "cuda" else torch.float32
    h, hk, d = (H, HK, D) if dev == "cuda" else (4, 2, 16)
    B, L = case["B"], case["L"]
    q = torch.randn(B, h, 1, d, dtype=dt, device=dev)
    k = torch.randn(B, hk, L, d, dtype=dt, device=dev)
    v = torch.randn(B, hk, L, d, dtype=dt, device=dev)
    return q, k, v, torch.full((B,), L, dtype=torch.int32, device=dev)


def provider(kind):
    def factory(case, mode, n_sets):
        out = []
        for _ in range(n_sets):
            q, k, v, lens = _inputs(case)
            if kind == "sdpa":
                out.append(lambda q=q, k=k, v=v: F.scaled_dot_product_attention(q, k, v, enable_gqa=True))
            else:
                from tritonic.ops import attention_decode
                from tritonic.runtime import pdl

                if kind == "tritonic+pdl":  # as inside tritonic's own captures (generate's decode graphs)
                    def call(q=q, k=k, v=v, lens=lens):
                        with pdl.capturing():
                            return attention_decode(q, k, v, lens)
                    out.append(call)
                else:
                    out.append(lambda q=q, k=k, v=v, lens=lens: attention_decode(q, k, v, lens))
        return out
    return factory


def cache_bytes(case, mode):
    return 2 * case["B"] * HK * case["L"] * D * 2  # keys and values, bf16


BENCH = Benchmark(
    name="decode",
    cases=CASES,
    smoke_cases=SMOKE_CASES,
    providers={"sdpa": provider("sdpa"), "tritonic": provider("tritonic"), "tritonic+pdl": provider("tritonic+pdl")},
    bytes=cache_bytes,
    modes=("fwd",),
    baselines=("sdpa",),
    subject="tritonic",
)


if __name__ == "__main__":
    sys.exit(main(BENCH))
