"""Sweeps behind the memory-bound defaults (GPU machine): FLCE chunk rows (time and peak
    memory), wide-softmax chunk width and warps, RoPE heads x tokens per program.

    PYTHONPATH=src python scripts/sweep_memory_bound.py flce softmax rope

Results of 2026-11-23 (H100) are in benchmarks/results/h100-80gb-hbm3/logs/sweep_flce_softmax_rope.log
(its GB/s column is mis-scaled: read the microseconds)."""
import sys
import torch
import triton
import tritonic.ops as T
import importlib
R = importlib.import_module("tritonic.ops.rope")
SM = importlib.import_module("tritonic.ops.softmax")
L = importlib.import_module("tritonic.ops.loss")

bench = lambda f: triton.testing.do_bench(f, warmup=25, rep=100, return_mode="median")
dt = torch.bfloat16
what = sys.argv[1:]
def rope_sweep():
    B, H, Hk, S, D = 4, 32, 8, 4096, 128
    q = torch.randn(B, H, S, D, dtype=dt, device="cuda"); k = torch.randn(B, Hk, S, D, dtype=dt, device="cuda")
    ang = torch.arange(S, device="cuda")[:, None] * torch.rand(D // 2, device="cuda").repeat(2)
    cos, sin = ang.cos().to(dt)[None], ang.sin().to(dt)[None]
    nbytes = 2 * (q.numel() + k.numel()) * 2
    print("rope default", R._config(S, 32, 64, 0))
    orig = R._config
    for bh in (1, 2, 4, 8, 16, 32):
        for bs in (1, 2, 4, 8, 16, 32):
            for w in (4, 8):
                if bh * bs * 64 > 16384 or bh * bs * 64 < 256:
                    continue
                R._config = lambda *a, bh=bh, bs=bs, w=w: (bh, bs, 64, 1, w)
                ms = bench(lambda: T.rope(q, k, cos, sin))
                print(f"rope bh={bh} bs={bs} w={w}: {ms*1e3:.1f} us {nbytes/ms/1e6:.0f} GB/s", flush=True)
    R._config = orig
def softmax_sweep():
    x = torch.randn(4096, 131072, dtype=dt, device="cuda")
    nbytes = 2 * x.numel() * 2
    for chunk in (2048, 4096, 8192, 16384):
        for w in (4, 8, 16):
            SM.CHUNK = chunk; SM._CHUNKED = (1, w); SM._config.cache_clear()
            ms = bench(lambda: T.softmax(x))
            print(f"softmax chunk={chunk} w={w}: {ms*1e3:.1f} us {nbytes/ms/1e6:.0f} GB/s", flush=True)
def flce_sweep():
    N, H, V = 8192, 4096, 128256
    h = torch.randn(N, H, dtype=dt, device="cuda", requires_grad=True)
    w = (torch.randn(V, H, dtype=dt, device="cuda") / 64).requires_grad_()
    t = torch.randint(0, V, (N,), device="cuda")
    for c, low in ((256, False), (512, False), (1024, False), (2048, False), (256, True), (512, True), (1024, True),
                   (2048, True), (4096, True)):
        f = lambda: torch.autograd.grad(L.fused_linear_cross_entropy(h, w, t, check_targets=False, chunk_rows=c,
                                                                     low_memory=low), (h, w))
        f(); torch.cuda.synchronize(); torch.cuda.empty_cache()
        base = torch.cuda.memory_allocated(); torch.cuda.reset_peak_memory_stats()
        g = f(); torch.cuda.synchronize()
        peak = (torch.cuda.max_memory_allocated() - base) / 2**30
        del g
        ms = bench(f)
        print(f"flce chunk={c}{' low_memory' if low else ''}: {ms:.2f} ms peak extra {peak:.3f} GiB", flush=True)


for name in what:
    try:
        globals()[name + "_sweep"]()
    except Exception:
        import traceback
        traceback.print_exc()
