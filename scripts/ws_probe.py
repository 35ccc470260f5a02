"""One warp-specialised attention forward launch, one config, on the GPU: does it finish, and is
it right? For finding which configs and flags hang (the WS forward hung on an H100 at
2b8b3c1). Run each probe in its own process under a timeout (a hung kernel cannot be
stopped from inside); device step `wsprobe` walks a matrix of them.

    timeout 60 python scripts/ws_probe.py BM,BN,W,ST [--d 64] [--s 1024] [--causal] [--mask] [--bias]
                                          [--kernel fwd|dkdv|dq]

Prints one line: the probe, then "ok <max error>" or "wrong <max error>"; exit 0 only when
it finished and matched the float32 reference.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
os.environ.setdefault("TRITONIC_AUTOTUNE", "off")  # the one config given, never a cached or tuned one

import torch  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("config", help="BLOCK_M,BLOCK_N,num_warps,num_stages")
    p.add_argument("--d", type=int, default=64)
    p.add_argument("--s", type=int, default=1024, help="sequence length (queries and keys)")
    p.add_argument("--causal", action="store_true")
    p.add_argument("--mask", action="store_true", help="a key-padding mask (MASK_KEYS, KEY_PADDING)")
    p.add_argument("--bias", action="store_true", help="a (1, H, S, S) additive bias")
    p.add_argument("--kernel", default="fwd", choices=["fwd", "dkdv", "dq"])
    p.add_argument("--device", default="cuda", help="cpu: a smoke run of this script in the interpreter")
    p.add_argument("--dtype", default="bfloat16", help="float16 for the interpreter (its bf16 dot is wrong)")
    a = p.parse_args()
    from tritonic.ops import attention_ws as ws
    from tritonic.ops.attention import attention, attention_reference
    from tritonic.runtime.autotune import Config

    bm, bn, w, st = (int(x) for x in a.config.split(","))
    config = Config.of(num_warps=w, num_stages=st, BLOCK_M=bm, BLOCK_N=bn)
    # this one config for the probed kernel, nothing tuned; a backward probe runs both backward
    # kernels: the other one with its tuner's first config (dK/dV takes 64-row query blocks only)
    tuner = {"fwd": ws.TUNER, "dkdv": ws.TUNER_DKDV, "dq": ws.TUNER_DQ}[a.kernel]
    tuner.configs = [config]
    for other in (ws.TUNER_DKDV, ws.TUNER_DQ):
        other.configs = other.configs[:1]
    ws.ENABLED, ws.ENABLED_BWD, ws.MIN_WAVES = a.kernel == "fwd", a.kernel != "fwd", 0.0
    torch.manual_seed(0)
    B, H, S, D = 2, 4, a.s, a.d
    dt = getattr(torch, a.dtype)
    q, k, v = (torch.randn(B, H, S, D, device=a.device, dtype=dt, requires_grad=True) for _ in range(3))
    mask = bias = None
    if a.mask:
        mask = torch.ones(B, 1, 1, S, dtype=torch.bool, device=a.device)
        mask[0, ..., S // 3:] = False
    if a.bias:
        bias = torch.randn(1, H, S, S, device=a.device, dtype=dt)
    name = f"{a.kernel} {a.config} d{D} s{S}{' causal' if a.causal else ''}{' mask' if a.mask else ''}" \
           f"{' bias' if a.bias else ''}"
    print(f"{name}: launching", flush=True)
    t = time.perf_counter()
    out = attention(q, k, v, causal=a.causal, mask=mask, bias=bias)
    grads = None
    if a.kernel != "fwd":
        grads = torch.autograd.grad(out, (q, k, v), torch.ones_like(out))
    if a.device == "cuda":
        torch.cuda.synchronize()
    secs = time.perf_counter() - t
    ref = attention_reference(*(x.float() for x in (q, k, v)), causal=a.causal, mask=mask,
                              bias=None if bias is None else bias.float())
    err = (out.float() - ref).abs().max().item()
    if grads is not None:
        rg = torch.autograd.grad(ref, (q, k, v), torch.ones_like(ref))
        err = max([err] + [(g.float() - r.float()).abs().max().item() for g, r in zip(grads, rg)])
    ok = err < 0.1  # (bf16 outputs of O(1) values: a hang or garbage is what this looks for)
    print(f"{name}: {'ok' if ok else 'wrong'} {err:.3g} ({secs:.1f} s with the compile)", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
