"""Host time of ops.layer_norm on a CPU-only machine, with the kernel launch stubbed out: what
Python and torch cost per call around the launch (issue 3's "24 layer_norm calls" stack, whose
GPU host time is the launch plus this). No numbers from here are GPU results; compare runs on
one machine only.

    TRITON_INTERPRET=1 TRITONIC_INTERPRET=1 python scripts/host_norm_cpu.py [--prof]
"""
import cProfile
import importlib
import pstats
import sys
import time

import torch

norm = importlib.import_module("tritonic.ops.norm")
calls = []
norm.launch = norm.launch_meta = lambda *a, **k: calls.append(1)
norm._checks.can_run_kernels = lambda dev: True  # (the CPU tensors stand in for GPU ones)
h = torch.randn(16, 768, dtype=torch.bfloat16)
w, b = torch.randn(768, dtype=torch.bfloat16), torch.randn(768, dtype=torch.bfloat16)


def stack():
    for _ in range(24):
        norm.layer_norm(h, w, b)


def launches_only():
    for _ in range(24):
        norm.launch(None, (4,), h, None, w, b)


def best(fn, n=300):
    for _ in range(20):
        fn()
    r = []
    for _ in range(7):
        t = time.perf_counter()
        for _ in range(n):
            fn()
        r.append((time.perf_counter() - t) / n / 24 * 1e6)
    return min(r)


calls.clear()
stack()
print("launches per call:", len(calls) / 24)
print(f"layer_norm, launch stubbed   {best(stack):6.2f} us a call")
print(f"the stub alone               {best(launches_only):6.2f} us a call")
if "--prof" in sys.argv:
    pr = cProfile.Profile()
    pr.enable()
    for _ in range(2000):
        stack()
    pr.disable()
    pstats.Stats(pr).sort_stats("tottime").print_stats(15)
