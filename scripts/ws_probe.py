"""One warp-specialised attention launch per probe, one config, on the GPU: does it finish, and
is it right? For finding which configs and flags hang or go wrong (the WS forward hung on an
H100 at 2b8b3c1; at 58b2a12 it finished but 128x64 tiles at 3 stages gave NaN). A hung kernel
cannot be stopped from inside: run each config in its own process under a timeout (device
steps `wsprobe`, `wsverify`).

    timeout 60 python scripts/ws_probe.py BM,BN,W,ST [--d 64] [--s 1024] [--causal] [--mask] [--bias]
                                          [--kernel fwd|dkdv|dq]
    timeout 120 python scripts/ws_probe.py BM,BN,W,ST --matrix   # d64 and d128 x dense, causal,
                                          # key mask, bias, at 1024 and 1000 keys (forward)

Prints a line per probe: "ok <max error>" or "wrong <max error>" (and "skipped" where the
config does not compile, e.g. out of shared memory); exit 0 only when every probe that ran
matched the float32 reference.
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


def probe(config: str, kernel="fwd", d=64, s=1024, causal=False, mask=False, bias=False, device="cuda",
          dtype="bfloat16") -> bool:
    from tritonic.ops import attention_ws as ws
    from tritonic.ops.attention import attention, attention_reference
    from tritonic.runtime.autotune import Config

    bm, bn, w, st = (int(x) for x in config.split(","))
    # this one config for the probed kernel, nothing tuned; a backward probe runs both backward
    # kernels: the other one with its tuner's first config (dK/dV takes 64-row query blocks only)
    tuner = {"fwd": ws.TUNER, "dkdv": ws.TUNER_DKDV, "dq": ws.TUNER_DQ}[kernel]
    tuner.configs = [Config.of(num_warps=w, num_stages=st, BLOCK_M=bm, BLOCK_N=bn)]
    for other in (ws.TUNER_DKDV, ws.TUNER_DQ):
        if other is not tuner:
            other.configs = other.configs[:1]
    ws.ENABLED, ws.ENABLED_BWD, ws.MIN_WAVES = kernel == "fwd", kernel != "fwd", 0.0
    torch.manual_seed(0)
    B, H, S, D = 2, 4, s, d
    dt = getattr(torch, dtype)
    q, k, v = (torch.randn(B, H, S, D, device=device, dtype=dt, requires_grad=True) for _ in range(3))
    m = b = None
    if mask:
        m = torch.ones(B, 1, 1, S, dtype=torch.bool, device=device)
        m[0, ..., S // 3:] = False
    if bias:
        b = torch.randn(1, H, S, S, device=device, dtype=dt)
    name = f"{kernel} {config} d{D} s{S}{' causal' if causal else ''}{' mask' if mask else ''}{' bias' if bias else ''}"
    print(f"{name}: launching", flush=True)
    t = time.perf_counter()
    try:
        out = attention(q, k, v, causal=causal, mask=m, bias=b)
    except Exception as e:  # (a config the compiler refuses: not a wrong answer)
        if "OutOfResources" in type(e).__name__ or "out of resource" in str(e):
            print(f"{name}: skipped ({type(e).__name__})", flush=True)
            return True
        raise
    grads = torch.autograd.grad(out, (q, k, v), torch.ones_like(out)) if kernel != "fwd" else None
    if device == "cuda":
        torch.cuda.synchronize()
    secs = time.perf_counter() - t
    ref = attention_reference(*(x.float() for x in (q, k, v)), causal=causal, mask=m,
                              bias=None if b is None else b.float())
    err = (out.float() - ref).abs().max().item()
    if grads is not None:
        rg = torch.autograd.grad(ref, (q, k, v), torch.ones_like(ref))
        err = max([err] + [(g.float() - r.float()).abs().max().item() for g, r in zip(grads, rg)])
    ok = err < 0.1  # (bf16 outputs of O(1) values: a hang or garbage is what this looks for)
    print(f"{name}: {'ok' if ok else 'wrong'} {err:.3g} ({secs:.1f} s with the compile)", flush=True)
    return ok


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("config", help="BLOCK_M,BLOCK_N,num_warps,num_stages")
    p.add_argument("--d", type=int, default=64)
    p.add_argument("--s", type=int, default=1024, help="sequence length (queries and keys)")
    p.add_argument("--causal", action="store_true")
    p.add_argument("--mask", action="store_true", help="a key-padding mask (MASK_KEYS, KEY_PADDING)")
    p.add_argument("--bias", action="store_true", help="a (1, H, S, S) additive bias")
    p.add_argument("--kernel", default="fwd", choices=["fwd", "dkdv", "dq"])
    p.add_argument("--matrix", action="store_true", help="the forward over head dims, flags and lengths")
    p.add_argument("--device", default="cuda", help="cpu: a smoke run of this script in the interpreter")
    p.add_argument("--dtype", default="bfloat16", help="float16 for the interpreter (its bf16 dot is wrong)")
    a = p.parse_args()
    if not a.matrix:
        return 0 if probe(a.config, a.kernel, a.d, a.s, a.causal, a.mask, a.bias, a.device, a.dtype) else 1
    ok = True
    for d in (64, 128):
        for s in (1024, 1000):
            for flags in ({}, {"causal": True}, {"mask": True}, {"bias": True}):
                if s == 1000 and flags.get("bias"):
                    continue  # (1000 keys: bias rows not 16-byte aligned, the general kernel runs)
                ok &= probe(a.config, "fwd", d, s, device=a.device, dtype=a.dtype, **flags)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
