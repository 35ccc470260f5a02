"""Sweep the wide-row softmax forward's chunk geometry on the GPU (issue 6's 4096 x 131072).

Times ``kernels.softmax._softmax_fwd`` directly for every (BLOCK_N, num_warps, PREFETCH)
in the grid below, in two interleaved rounds (do_bench flushes L2 between calls), and
prints registers and spills per config: a config with spills or fewer resident programs
moves the L2 reuse of pass 2 (the row read again) as much as its bytes in flight.

    python3 scripts/softmax_sweep.py [--rows 4096] [--cols 131072] [--out sweep.json]
"""
from __future__ import annotations

import argparse
import json
import sys

import torch
import triton

from tritonic.kernels.softmax import _softmax_fwd


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--rows", type=int, default=4096)
    p.add_argument("--cols", type=int, default=131072)
    p.add_argument("--chunks", default="4096,8192,16384")
    p.add_argument("--warps", default="8,16,32")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--store-cs", default="0", help="STORE_CS values to try: 0, 1 or 0,1 (the outputs' .cs hint)")
    p.add_argument("--out", default=None)
    a = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("softmax_sweep: needs a GPU", file=sys.stderr)
        return 2
    M, N = a.rows, a.cols
    x = torch.randn(M, N, device="cuda", dtype=torch.bfloat16)
    y = torch.empty_like(x)
    ref = torch.softmax(x.float(), -1)
    gbytes = 2 * x.numel() * x.element_size() / 1e9
    configs = [(bn, w, pf, cs) for bn in map(int, a.chunks.split(",")) for w in map(int, a.warps.split(","))
               for pf in (False, True) for cs in (v == "1" for v in a.store_cs.split(","))]
    info, times = {}, {c: [] for c in configs}

    def call(c):
        bn, w, pf, cs = c
        return _softmax_fwd[(M,)](
            x, x, y, x.stride(0), N, 0, 0, 0, 0, 1, 1, M, N, 1.0,
            LOG=False, HAS_SCALE=False, HAS_MASK=False, SINGLE_PASS=False,
            BLOCK_M=1, BLOCK_N=bn, num_warps=w, PREFETCH=pf, STORE_CS=cs)

    for c in configs:
        try:
            k = call(c)
            torch.cuda.synchronize()
            err = (y.float() - ref).abs().max().item()
            info[c] = dict(regs=getattr(k, "n_regs", None), spills=getattr(k, "n_spills", None), err=err)
        except Exception as e:  # noqa: BLE001 - report and go on (a config may not compile)
            info[c] = dict(error=f"{type(e).__name__}: {str(e).splitlines()[0][:120]}")
    for _ in range(a.rounds):
        for c in configs:
            if "error" in info[c]:
                continue
            times[c].append(triton.testing.do_bench(lambda: call(c), warmup=10, rep=60, return_mode="median"))
    rows = []
    for c in configs:
        bn, w, pf, cs = c
        r = dict(block_n=bn, warps=w, prefetch=pf, store_cs=cs, **info[c])
        if times[c]:
            r["ms"] = min(times[c])
            r["ms_all"] = times[c]
            r["tb_s"] = gbytes / r["ms"]  # GB per ms = TB/s
        rows.append(r)
        print(json.dumps(r), flush=True)
    best = min((r for r in rows if "ms" in r), key=lambda r: r["ms"])
    print(f"best: {best}", flush=True)
    if a.out:
        with open(a.out, "w") as f:
            json.dump(dict(rows=M, cols=N, device=torch.cuda.get_device_name(), results=rows), f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
