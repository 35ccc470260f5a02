"""Attention probes for a GPU session (not a benchmark): where the time of a small masked
forward+backward goes, and how decode's GB/s moves with the split count.

    PYTHONPATH=src python scripts/attn_probe.py [profile] [decode] [kernels]

``kernels``: the dense B=4 H=16 S=4096 bf16 forward+backward (d128, d64, causal and not),
each kernel's own GPU time from the profiler (which share of the step is the forward, the
dK/dV kernel, the dQ kernel, the delta pass).
"""

import sys

import torch
from triton.testing import do_bench

from tritonic.ops import attention, attention_decode


def graphed(fn):
    fn()
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        fn()
    return do_bench(g.replay, warmup=10, rep=50, return_mode="median")


def profile_small():
    from torch.profiler import ProfilerActivity, profile

    B, H, S, D = 8, 12, 512, 64
    q, k, v = (torch.randn(B, H, S, D, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
    keep = torch.ones(B, 1, 1, S, dtype=torch.bool, device="cuda")
    keep[..., 3 * S // 4:] = False
    do = torch.randn_like(q)

    def step():
        return torch.autograd.grad(attention(q, k, v, mask=keep), (q, k, v), do)

    for _ in range(5):
        step()
    torch.cuda.synchronize()
    print("fwd+bwd plain ms", do_bench(step, warmup=10, rep=50, return_mode="median"))
    try:
        print("fwd+bwd graph ms", graphed(step))
    except Exception as e:
        print("graph capture failed:", repr(e)[:300])
    import cProfile
    import pstats
    import time

    for name, fn in (("fwd", lambda: attention(q, k, v, mask=keep)), ("fwd+bwd", step)):
        torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(200):
            fn()
        host = (time.perf_counter() - t) / 200 * 1e6
        torch.cuda.synchronize()
        print(f"host-side loop {name}: {host:.1f} us per call (wall, includes any GPU wait)")
    a = torch.randn(1024, device="cuda")
    t = time.perf_counter()
    for _ in range(2000):
        torch.add(a, a)
    print(f"host calibration: torch.add {(time.perf_counter() - t) / 2000 * 1e6:.1f} us per call")
    from tritonic.runtime import launcher as L

    for kern, fast in L._fast.items():
        if fast is None:
            print("launcher:", getattr(kern, "__name__", kern), "no fast kernel")
            continue
        entries = [e for e in fast.compiled.values() if e]
        print("launcher:", kern.fn.__name__, "bind_fast", fast.bind_fast is not None, "entries", len(fast.compiled),
              "C-launch", sum(e[0] is not None for e in entries),
              "scratch", [(getattr(e[5].run, "global_scratch_size", "?"), getattr(e[5].run, "profile_scratch_size", "?"))
                          for e in entries if e[0] is None][:3])
    cProfile.runctx("for _ in range(100): step()", globals(), {"step": step}, "/tmp/attn.prof")
    torch.cuda.synchronize()
    pstats.Stats("/tmp/attn.prof").sort_stats("tottime").print_stats(25)
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(10):
            step()
        torch.cuda.synchronize()
    print(prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=15))
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))


def decode_sweep():
    H, HK, D = 32, 8, 128
    for B, L in ((1, 1024), (1, 8192), (1, 32768), (16, 1024), (16, 8192), (16, 32768), (64, 1024), (64, 8192)):
        q = torch.randn(B, H, 1, D, device="cuda", dtype=torch.bfloat16)
        k, v = (torch.randn(B, HK, L, D, device="cuda", dtype=torch.bfloat16) for _ in range(2))
        lens = torch.full((B,), L, dtype=torch.int32, device="cuda")
        nbytes = 2 * k.numel() * k.element_size()
        row = [f"b{B} {L // 1024}k"]
        ms = graphed(lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v, enable_gqa=True))
        row.append(f"sdpa {nbytes / ms / 1e6:.0f}")
        for splits in (None, 8, 16, 32, 64, 128, 256, 512):
            if splits is not None and splits > L // 64:
                continue
            ms = graphed(lambda: attention_decode(q, k, v, lens, num_splits=splits))
            row.append(f"{splits or 'auto'}:{nbytes / ms / 1e6:.0f}")
        print("GB/s", " ".join(row), flush=True)


def kernel_split():
    from torch.profiler import ProfilerActivity, profile

    for D in (128, 64):
        for causal in (False, True):
            q, k, v = (torch.randn(4, 16, 4096, D, device="cuda", dtype=torch.bfloat16, requires_grad=True)
                       for _ in range(3))
            do = torch.randn_like(q)

            def step():
                return torch.autograd.grad(attention(q, k, v, causal=causal), (q, k, v), do)

            for _ in range(3):
                step()
            torch.cuda.synchronize()
            with profile(activities=[ProfilerActivity.CUDA]) as prof:
                for _ in range(5):
                    step()
                torch.cuda.synchronize()
            print(f"== d{D} causal={causal}: per step, us")
            for e in sorted(prof.key_averages(), key=lambda e: -e.self_device_time_total)[:8]:
                print(f"  {e.self_device_time_total / 5:9.1f}  x{e.count // 5}  {e.key[:90]}", flush=True)


if __name__ == "__main__":
    what = sys.argv[1:] or ["profile", "decode"]
    if "profile" in what:
        profile_small()
    if "decode" in what:
        decode_sweep()
    if "kernels" in what:
        kernel_split()
