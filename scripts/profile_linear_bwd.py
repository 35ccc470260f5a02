"""Where the time of ``ops.linear``'s backward goes (issue 4's BERT FFN case by default).

Times the backward (``torch.autograd.grad`` with the forward's graph kept) of tritonic and of
PyTorch's ``F.linear`` + GELU, then lists the GPU kernels of one tritonic backward under the
torch profiler, with the host time of the call. On a GPU only.

    python3 scripts/profile_linear_bwd.py [--m 4096 --n 3072 --k 768 --act gelu] [--json OUT]
"""

import argparse
import json
import time

import torch
import torch.nn.functional as F
from triton.testing import do_bench

import tritonic.ops as ops


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--m", type=int, default=4096)
    p.add_argument("--n", type=int, default=3072)
    p.add_argument("--k", type=int, default=768)
    p.add_argument("--act", default="gelu")
    p.add_argument("--json")
    a = p.parse_args()
    dev, dt = "cuda", torch.float16
    x = torch.randn(a.m, a.k, dtype=dt, device=dev, requires_grad=True)
    w = (torch.randn(a.n, a.k, dtype=dt, device=dev) * a.k ** -0.5).requires_grad_()
    b = torch.randn(a.n, dtype=dt, device=dev, requires_grad=True)
    dy = torch.randn(a.m, a.n, dtype=dt, device=dev)
    act = {"gelu": F.gelu, "silu": F.silu, "none": lambda z: z}[a.act]
    fns = {"torch": lambda: act(F.linear(x, w, b)),
           "tritonic": lambda: ops.linear(x, w, b, activation=None if a.act == "none" else a.act)}
    out = {}
    for name, fn in fns.items():
        y = fn()
        grad = lambda y=y: torch.autograd.grad(y, (x, w, b), dy, retain_graph=True)  # noqa: E731
        for _ in range(3):
            grad()
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(20):
            grad()
        host = (time.perf_counter() - t0) / 20 * 1e3  # (launches queue: host-bound only if GPU idles)
        torch.cuda.synchronize()
        out[name] = {"bwd_ms": do_bench(grad, warmup=10, rep=100, return_mode="median"), "host_ms_per_call": host,
                     "fwd_ms": do_bench(fn, warmup=10, rep=100, return_mode="median")}
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA,
                                                torch.profiler.ProfilerActivity.CPU]) as prof:
            for _ in range(5):
                grad()
            torch.cuda.synchronize()
        kernels = {}
        for e in prof.key_averages():
            dev_us = getattr(e, "device_time_total", None) or getattr(e, "cuda_time_total", 0)
            if dev_us and e.count:
                kernels[e.key] = {"count": e.count / 5, "us_per_call": dev_us / 5}
        out[name]["kernels"] = kernels
        print(f"{name}: bwd {out[name]['bwd_ms']:.4f} ms, fwd {out[name]['fwd_ms']:.4f} ms, "
              f"host {host:.4f} ms per call")
        for k, v in sorted(kernels.items(), key=lambda kv: -kv[1]["us_per_call"])[:12]:
            print(f"    {v['us_per_call']:9.1f} us  x{v['count']:.0f}  {k[:110]}")
        # the host side: the CPU ops by their own time, and a Python profile of the calls
        cpu = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)[:15]
        out[name]["cpu"] = {e.key: {"count": e.count / 5, "self_us_per_call": e.self_cpu_time_total / 5} for e in cpu}
        print("    host, self CPU time per backward:")
        for e in cpu:
            print(f"    {e.self_cpu_time_total / 5:9.1f} us  x{e.count / 5:.0f}  {e.key[:100]}")
        import cProfile
        import io
        import pstats
        pr = cProfile.Profile()
        pr.enable()
        for _ in range(20):
            grad()
        pr.disable()
        torch.cuda.synchronize()
        buf = io.StringIO()
        pstats.Stats(pr, stream=buf).sort_stats("tottime").print_stats(15)
        print(buf.getvalue())
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
