"""Host time of ops.linear on a CPU-only machine, with the kernel launches stubbed out and the
Hopper path forced: what Python and torch cost per call, without a GPU (the GPU host is slower
and noisier; compare runs on one machine only). No numbers from here are GPU results.

    TRITON_INTERPRET=1 TRITONIC_INTERPRET=1 python scripts/host_gemm_cpu.py [--prof] [--prof-fwd]
"""
import importlib, time, cProfile, pstats, sys
import torch
import tritonic.ops as ops
mm = importlib.import_module("tritonic.ops.matmul")
lin = importlib.import_module("tritonic.ops.linear")
calls = []
mm.launch = lin.launch = lambda *a, **k: calls.append(1)
mm.interpreter_active = lin.interpreter_active = lambda: False
mm.has_tma = lambda i: True
mm.num_sms = lambda i: 132
mm.GEMM_CHOICE = "auto"
for t in (mm._tma_tuner, mm._small_tuner, mm._tuner, lin._act_grad_tuner):
    t.pick = (lambda t: (lambda key, timer, may_tune=True: t.chosen.setdefault(key, t.configs[0])))(t)
torch.cuda.is_current_stream_capturing = lambda: False
M, K, N = 256, 64, 128
dt = torch.float16
x = torch.randn(M, K, dtype=dt, requires_grad=True)
w = torch.randn(N, K, dtype=dt, requires_grad=True)
b = torch.randn(N, dtype=dt, requires_grad=True)
dy = torch.randn(M, N, dtype=dt)
def fwd_nograd():
    with torch.no_grad():
        return ops.linear(x, w, b, activation="gelu")
def fwdbwd():
    y = ops.linear(x, w, b, activation="gelu")
    return torch.autograd.grad(y, (x, w, b), dy)
def torch_fwdbwd():
    y = torch.nn.functional.gelu(torch.nn.functional.linear(x, w, b))
    return torch.autograd.grad(y, (x, w, b), dy)
def best(fn, n=300):
    for _ in range(20): fn()
    r = []
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(n): fn()
        r.append((time.perf_counter() - t) / n * 1e6)
    return min(r)
print("launches per fwd+bwd:", (calls.clear(), fwdbwd(), len(calls))[2])
for name, fn in [("fwd no grad", fwd_nograd), ("fwd+bwd", fwdbwd), ("torch fwd+bwd (CPU compute!)", torch_fwdbwd)]:
    print(f"{name:30s} {best(fn):8.1f} us")
if "--prof" in sys.argv:
    pr = cProfile.Profile(); pr.enable()
    for _ in range(2000): fwdbwd()
    pr.disable(); pstats.Stats(pr).sort_stats("tottime").print_stats(25)
if "--prof-fwd" in sys.argv:
    pr = cProfile.Profile(); pr.enable()
    for _ in range(5000): fwd_nograd()
    pr.disable(); pstats.Stats(pr).sort_stats("tottime").print_stats(18)
