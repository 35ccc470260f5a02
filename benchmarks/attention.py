"""Attention: tritonic against PyTorch SDPA (default, flash and cuDNN backends) and
FlexAttention (compiled, with a block mask for causal and key padding, a score
modification for T5's bias).

    python benchmarks/attention.py [--out DIR] [--only d128] [--modes fwd] [--quick]
    python benchmarks/attention.py --dry-run      # CPU smoke run of the code paths, no GPU

One benchmark, "attention", written to ``<out>/<gpu>/attention.json``; bfloat16, SDPA
layout (B, H, S, D). TFLOP/s counts 4·B·H·Sq·Sk·D per forward (halved when causal) and
2.5x that for forward+backward. Cases: B=4, H=16, S=4096 at d128 and d64, causal and not;
a BERT key-padding mask (S = 512, 2048; a quarter of the keys padded) and a T5 additive
bias (S = 512, 2048), where SDPA has to take its masked path.

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


def _case(name, B, H, S, D, causal=False, extra=None):
    return {"name": name, "B": B, "H": H, "S": S, "D": D, "causal": causal, "extra": extra}


CASES = [_case(f"{'causal ' if c else ''}d{d} 4x16x4096", 4, 16, 4096, d, causal=c) for d in (128, 64)
         for c in (False, True)]
CASES += [_case("causal d64 8x12x1024 (GPT-2 training)", 8, 12, 1024, 64, causal=True)]
CASES += [_case(f"bert-mask d64 {s}", 8, 12, s, 64, extra="mask") for s in (512, 2048)]
CASES += [_case(f"t5-bias d64 {s}", 8, 12, s, 64, extra="bias") for s in (512, 2048)]
SMOKE_CASES = [_case("smoke", 1, 2, 32, 16), _case("smoke causal", 1, 2, 32, 16, causal=True),
               _case("smoke mask", 1, 2, 32, 16, extra="mask"), _case("smoke bias", 1, 2, 32, 16, extra="bias")]


def _inputs(case, grad):
    B, H, S, D, dev = case["B"], case["H"], case["S"], case["D"], case["device"]
    dt = DT if dev == "cuda" else torch.float32
    q, k, v = (torch.randn(B, H, S, D, dtype=dt, device=dev, requires_grad=grad) for _ in range(3))
    kw = {}
    if case["extra"] == "mask":  # key padding: the last quarter of every sequence
        keep = torch.ones(B, 1, 1, S, dtype=torch.bool, device=dev)
        keep[..., 3 * S // 4:] = False
        kw["mask"] = keep
    elif case["extra"] == "bias":
        kw["bias"] = torch.randn(1, H, S, S, dtype=dt, device=dev)
    return (q, k, v), kw


def sdpa(backend):
    def make(case):
        if case["device"] != "cuda" and backend is not None:
            return None
        from torch.nn.attention import SDPBackend, sdpa_kernel

        chosen = {"flash": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION,
                  "any": None}[backend or "any"]

        def fn(q, k, v, mask=None, bias=None):
            attn_mask = mask if bias is None else bias
            scale = 1.0 if bias is not None else None
            if chosen is None:
                return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=case["causal"],
                                                      scale=scale)
            with sdpa_kernel([chosen]):
                return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=case["causal"],
                                                      scale=scale)
        return fn
    return make


def flex(case):
    """FlexAttention (compiled): the causal limit and key padding as a block mask, T5's bias as
    a score modification. None off the GPU."""
    if case["device"] != "cuda":
        return None
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    compiled = torch.compile(flex_attention, dynamic=False)
    B, H, S = case["B"], case["H"], case["S"]
    pad_from = 3 * S // 4 if case["extra"] == "mask" else S
    causal = case["causal"]

    def mask_mod(b, h, q_idx, kv_idx):
        keep = kv_idx < pad_from
        return keep & (q_idx >= kv_idx) if causal else keep

    block_mask = create_block_mask(mask_mod, B, None, S, S, device="cuda")

    def fn(q, k, v, mask=None, bias=None):
        if bias is None:
            return compiled(q, k, v, block_mask=block_mask)

        def score_mod(score, b, h, q_idx, kv_idx):
            return score + bias[0, h, q_idx, kv_idx]

        return compiled(q, k, v, score_mod=score_mod, block_mask=block_mask, scale=1.0)
    return fn


def tritonic_op(case):
    from tritonic.ops import attention

    def fn(q, k, v, mask=None, bias=None):
        return attention(q, k, v, causal=case["causal"], mask=mask, bias=bias,
                         scale=1.0 if bias is not None else None)
    return fn


def provider(make):
    def factory(case, mode, n_sets):
        fn = make(case)
        if fn is None:
            return None
        out = []
        for _ in range(n_sets):
            (q, k, v), kw = _inputs(case, mode != "fwd")
            if mode == "fwd":
                out.append(lambda q=q, k=k, v=v, kw=kw: fn(q, k, v, **kw))
                continue
            do = torch.randn_like(q)
            if mode == "bwd":
                y = fn(q, k, v, **kw)
                out.append(lambda y=y, q=q, k=k, v=v, do=do: torch.autograd.grad(y, (q, k, v), do, retain_graph=True))
            else:
                out.append(lambda q=q, k=k, v=v, kw=kw, do=do: torch.autograd.grad(fn(q, k, v, **kw), (q, k, v), do))
        return out
    return factory


def attn_flops(case, mode):
    B, H, S, D = case["B"], case["H"], case["S"], case["D"]
    fwd = 4 * B * H * S * S * D * (0.5 if case["causal"] else 1.0)
    return {"fwd": fwd, "bwd": 2.5 * fwd, "fwd+bwd": 3.5 * fwd}[mode]


def attn_bytes(case, mode):
    B, H, S, D = case["B"], case["H"], case["S"], case["D"]
    one = 4 * B * H * S * D * 2  # q, k, v, o in bf16
    return {"fwd": one, "bwd": 2 * one, "fwd+bwd": 3 * one}[mode]


BENCH = Benchmark(
    name="attention",
    cases=CASES,
    smoke_cases=SMOKE_CASES,
    providers={
        "sdpa": provider(sdpa(None)),
        "sdpa-flash": provider(sdpa("flash")),
        "sdpa-cudnn": provider(sdpa("cudnn")),
        "flex": provider(flex),
        "tritonic": provider(tritonic_op),
    },
    bytes=attn_bytes,
    flops=attn_flops,
    modes=("fwd", "fwd+bwd"),
    baselines=("sdpa", "sdpa-flash", "sdpa-cudnn", "flex"),
    subject="tritonic",
)


if __name__ == "__main__":
    sys.exit(main(BENCH))
