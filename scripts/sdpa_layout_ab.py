"""Does cuDNN's attention care whether GPT-2's key and value are strided views? (``hf._sdpa``
makes them contiguous.) GPT-2 124M's shape (8×12×1024, d64, causal, dropout 0.1, bf16),
forward+backward over a CUDA graph, three layouts: q, k, v all views of one (B, S, 3·H·D)
projection (as GPT-2 hands them); k and v copied contiguous first (the copies timed too);
all three contiguous.

    PYTHONPATH=src python scripts/sdpa_layout_ab.py [--shape 8,12,1024,64] [--dropout 0.1]
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from attn_dropout_ab import timed


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--shape", default="8,12,1024,64")
    p.add_argument("--dropout", type=float, default=0.1)
    a = p.parse_args()
    B, H, S, D = map(int, a.shape.split(","))
    torch.manual_seed(0)
    qkv = torch.randn(B, S, 3 * H * D, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    do = torch.randn(B, H, S, D, device="cuda", dtype=torch.bfloat16)

    def views():
        q, k, v = qkv.split(H * D, dim=2)
        return (t.view(B, S, H, D).transpose(1, 2) for t in (q, k, v))

    layouts = {
        "views": lambda: tuple(views()),
        "k,v contiguous": lambda: (lambda q, k, v: (q, k.contiguous(), v.contiguous()))(*views()),
        "q,k,v contiguous": lambda: tuple(t.contiguous() for t in views()),
    }
    print(f"{torch.cuda.get_device_name()} torch {torch.__version__}: B={B} H={H} S={S} D={D} causal "
          f"dropout {a.dropout}")
    for backend in (SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION):
        for name, make in layouts.items():
            def step(make=make, backend=backend):
                with sdpa_kernel(backend):
                    out = F.scaled_dot_product_attention(*make(), is_causal=True, dropout_p=a.dropout)
                torch.autograd.backward(out, do)
            try:
                print(f"{backend.name:18s} {name:18s} fwd+bwd graph {timed(step, 'graph'):.3f} ms")
            except Exception as e:  # noqa: BLE001
                print(f"{backend.name:18s} {name:18s} {type(e).__name__}: {str(e)[:100]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
