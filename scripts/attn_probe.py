"""Attention probes for a GPU session (not a benchmark): where the time of a small masked
forward+backward goes, and how decode's GB/s moves with the split count.

    PYTHONPATH=src python scripts/attn_probe.py [profile] [decode] [kernels] [masked]

``kernels``: the dense B=4 H=16 S=4096 bf16 forward+backward (d128, d64, causal and not),
each kernel's own GPU time from the profiler (which share of the step is the forward, the
dK/dV kernel, the dQ kernel, the delta pass). ``masked``: the same split for the BERT
key-padding and T5-bias cases of ``benchmarks/attention.py`` (B=8 H=12 d64, S = 512 and 2048).
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


def _split(title, step, n=5):
    """Each kernel's own GPU time in ``step`` (per step, from the profiler), the 8 largest."""
    from torch.profiler import ProfilerActivity, profile

    for _ in range(3):
        step()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(n):
            step()
        torch.cuda.synchronize()
    total = sum(e.self_device_time_total for e in prof.key_averages()) / n
    try:
        replay = f"{graphed(step) * 1e3:.1f} us"
    except Exception as e:  # (a capture failure is a finding too, not the end of the probe)
        replay = f"capture failed: {repr(e)[:200]}"
    print(f"== {title}: {total:.1f} us of kernels per step; graphed step {replay}")
    for e in sorted(prof.key_averages(), key=lambda e: -e.self_device_time_total)[:8]:
        print(f"  {e.self_device_time_total / n:9.1f}  x{e.count // n}  {e.key[:90]}", flush=True)


def _fwd_bwd(q, k, v, **kw):
    do = torch.randn_like(q)
    return lambda: torch.autograd.grad(attention(q, k, v, **kw), (q, k, v), do)


def kernel_split():
    for D in (128, 64):
        for causal in (False, True):
            q, k, v = (torch.randn(4, 16, 4096, D, device="cuda", dtype=torch.bfloat16, requires_grad=True)
                       for _ in range(3))
            _split(f"d{D} causal={causal}", _fwd_bwd(q, k, v, causal=causal))


def kernel_split_masked():
    """The key-padding (a quarter of the keys padded) and T5-bias cases of benchmarks/attention.py,
    B=8 H=12 d64, forward + backward: which kernel holds the backward's time (the masked
    backward ran at ~250 TFLOP/s where the dense d64 one runs ~360)."""
    for S in (512, 2048):
        q, k, v = (torch.randn(8, 12, S, 64, device="cuda", dtype=torch.bfloat16, requires_grad=True)
                   for _ in range(3))
        keep = torch.ones(8, 1, 1, S, dtype=torch.bool, device="cuda")
        keep[..., 3 * S // 4:] = False
        _split(f"bert-mask {S}", _fwd_bwd(q, k, v, mask=keep))
        _split(f"bert-mask {S}, forward", lambda: attention(q, k, v, mask=keep))
        bias = torch.randn(1, 12, S, S, device="cuda", dtype=torch.bfloat16)
        _split(f"t5-bias {S}", _fwd_bwd(q, k, v, bias=bias, scale=1.0))


if __name__ == "__main__":
    what = sys.argv[1:] or ["profile", "decode"]
    if "profile" in what:
        profile_small()
    if "decode" in what:
        decode_sweep()
    if "kernels" in what:
        kernel_split()
    if "masked" in what:
        kernel_split_masked()
