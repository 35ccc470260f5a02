"""GPT-2 124M's attention (8×12×1024, d64, causal, bfloat16) with and without attention
dropout: SDPA's backends against tritonic's kernel, forward and forward+backward.

    PYTHONPATH=src python scripts/attn_dropout_ab.py [--shape 8,12,1024,64]

Three timings per case: "queued" (20 calls back to back behind a sleep kernel, so each launch
waits in the queue, as inside a CUDA graph or a fast host) and "alone" (one call after a
sync, the GPU idle when it is launched, as in a host-bound eager step) and "graph" (20 calls
captured in one CUDA graph and replayed). The profile of
GPT-2's training step had cuDNN's attention kernels at 1.2+1.8 ms per step in host-bound
eager and 2.7+3.8 ms in graph replays; this says whether that is the kernels or the
profiler.
"""

from __future__ import annotations

import argparse
import statistics

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel


def timed(fn, queued, iters: int = 20) -> float:
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    if queued == "graph":
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            fn()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            for _ in range(iters):
                fn()
        graph.replay()
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        torch.cuda.synchronize()
        return start.elapsed_time(end) / iters
    if queued:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda._sleep(50_000_000)  # tens of ms: every launch below waits in the queue
        start.record()
        for _ in range(iters):
            fn()
        end.record()
        torch.cuda.synchronize()
        return start.elapsed_time(end) / iters
    times = []
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--shape", default="8,12,1024,64")
    a = p.parse_args()
    B, H, S, D = map(int, a.shape.split(","))
    torch.manual_seed(0)
    q, k, v = (torch.randn(B, H, S, D, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
    do = torch.randn(B, H, S, D, device="cuda", dtype=torch.bfloat16)
    fwd_flops = 4 * B * H * S * S * D / 2
    print(f"{torch.cuda.get_device_name()} torch {torch.__version__}: B={B} H={H} S={S} D={D} causal bf16")
    cases = []
    for name, backend in (("cudnn", SDPBackend.CUDNN_ATTENTION), ("flash", SDPBackend.FLASH_ATTENTION),
                          ("efficient", SDPBackend.EFFICIENT_ATTENTION)):
        for p_drop in (0.1, 0.0):
            def f(backend=backend, p_drop=p_drop):
                with sdpa_kernel(backend):
                    return F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=p_drop)
            cases.append((f"sdpa-{name} dropout {p_drop}", f))
    try:
        from tritonic.ops.attention import attention

        cases.append(("tritonic dropout 0.0", lambda: attention(q, k, v, causal=True)))
        if "dropout" in attention.__doc__ or "dropout_p" in attention.__code__.co_varnames:
            cases.append(("tritonic dropout 0.1", lambda: attention(q, k, v, causal=True, dropout_p=0.1)))
    except Exception as e:  # noqa: BLE001
        print("tritonic:", type(e).__name__, e)
    for name, f in cases:
        row = []
        try:
            for mode in ("fwd", "fwd+bwd"):
                fn = f if mode == "fwd" else (lambda f=f: torch.autograd.backward(f(), do))
                flops = fwd_flops * (1 if mode == "fwd" else 3.5)
                for queued in (True, False, "graph"):
                    ms = timed(fn, queued)
                    how = {True: "queued", False: "alone", "graph": "graph"}[queued]
                    row.append(f"{mode} {how} {ms:6.3f} ms {flops / ms / 1e9:4.0f} TF/s")
        except Exception as e:  # noqa: BLE001
            row.append(f"{type(e).__name__}: {str(e)[:120]}")
        print(f"{name:24s} " + " | ".join(row))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
