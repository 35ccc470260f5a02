"""Host (CPU) time per call of the norm ops against PyTorch, at a size where the GPU work
is negligible, so the number is what Python, the dispatcher and the launch cost.

    PYTHONPATH=src python scripts/host_overhead.py
"""

import torch
import torch.nn.functional as F

import tritonic.ops as ops
from tritonic.bench.harness import host_us


def main():
    x = torch.randn(64, 768, device="cuda", dtype=torch.bfloat16)
    w = torch.randn(768, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(768, device="cuda", dtype=torch.bfloat16)
    xg, wg, bg = (t.clone().requires_grad_(True) for t in (x, w, b))
    dy = torch.randn_like(x)
    rows = [
        ("F.layer_norm fwd", lambda: F.layer_norm(x, (768,), w, b)),
        ("tritonic layer_norm fwd", lambda: ops.layer_norm(x, w, b)),
        ("F.rms_norm fwd", lambda: F.rms_norm(x, (768,), w, 1e-6)),
        ("tritonic rms_norm fwd", lambda: ops.rms_norm(x, w)),
        ("F.layer_norm fwd+bwd", lambda: torch.autograd.grad(F.layer_norm(xg, (768,), wg, bg), [xg, wg, bg], dy)),
        ("tritonic layer_norm fwd+bwd", lambda: torch.autograd.grad(ops.layer_norm(xg, wg, bg), [xg, wg, bg], dy)),
    ]
    for name, fn in rows:
        print(f"{name:<30} {host_us(fn):8.1f} us/call (host, best of 7 trials)")


if __name__ == "__main__":
    main()
