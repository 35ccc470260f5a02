"""The language-model head's three GEMMs at a vocabulary that is not a multiple of 8
(GPT-2's 50257), with the logits' row stride as is, padded, or the weight padded too.

    PYTHONPATH=src python scripts/head_gemm_ab.py [--rows 1024] [--vocab 50257] [--hidden 768]

An odd row stride leaves cuBLAS only kernels without 16-byte vector access (on the H200 a
cutlass kernel at ~120 TFLOP/s for GPT-2's head). Prints ms and TFLOP/s of each variant.
"""

from __future__ import annotations

import argparse

import torch


def timed(fn, reps: int = 20) -> float:
    for _ in range(3):
        fn()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(reps):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / reps


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rows", type=int, default=1024)
    p.add_argument("--vocab", type=int, default=50257)
    p.add_argument("--hidden", type=int, default=768)
    a = p.parse_args()
    M, V, H = a.rows, a.vocab, a.hidden
    Vp = (V + 63) // 64 * 64
    dt = torch.bfloat16
    h = torch.randn(M, H, device="cuda", dtype=dt)
    w = torch.randn(V, H, device="cuda", dtype=dt) * 0.02
    wp = torch.zeros(Vp, H, device="cuda", dtype=dt)
    wp[:V] = w
    flat = torch.empty(M, V, device="cuda", dtype=dt)
    padded = torch.empty(M, Vp, device="cuda", dtype=dt)
    strided = padded[:, :V]
    dh = torch.empty(M, H, device="cuda", dtype=dt)
    dw = torch.empty(V, H, device="cuda", dtype=dt)
    dwp = torch.empty(Vp, H, device="cuda", dtype=dt)
    flops = 2 * M * V * H
    cases = {
        "logits  contiguous (M,V)": lambda: torch.mm(h, w.t(), out=flat),
        "logits  row stride Vp": lambda: torch.mm(h, w.t(), out=strided),
        "logits  weight padded": lambda: torch.mm(h, wp.t(), out=padded),
        "dX      contiguous": lambda: torch.mm(flat, w, out=dh),
        "dX      row stride Vp": lambda: torch.mm(strided, w, out=dh),
        "dX      padded": lambda: torch.mm(padded, wp, out=dh),
        "dW      contiguous": lambda: torch.mm(flat.t(), h, out=dw),
        "dW      row stride Vp": lambda: torch.mm(strided.t(), h, out=dw),
        "dW      padded": lambda: torch.mm(padded.t(), h, out=dwp),
        "dW+=    contiguous": lambda: dw.addmm_(flat.t(), h),
        "dW+=    row stride Vp": lambda: dw.addmm_(strided.t(), h),
        "pad weight copy": lambda: wp[:V].copy_(w),
    }
    # the loss kernels over one chunk of logits at both row strides (their time went from
    # 117 to 204 us per 1024-row chunk in GPT-2's step once the head was padded: why?)
    from tritonic.ops.loss import _launch_bwd, _launch_fwd

    target = torch.randint(0, V, (M,), device="cuda")
    scale = torch.full((), 1.0 / M, device="cuda").expand(M)
    for name, logits in (("contiguous", flat), ("row stride Vp", strided)):
        logits.normal_()
        _, lse = _launch_fwd(logits, target, -100, 0.0, 0.0, 0.0)
        cases[f"ce fwd  {name}"] = lambda lg=logits: _launch_fwd(lg, target, -100, 0.0, 0.0, 0.0)
        cases[f"ce bwd  {name}"] = lambda lg=logits, lse=lse: _launch_bwd(scale, lg, target, lse, -100, 0.0, 0.0,
                                                                           0.0, out=lg)
    print(f"{torch.cuda.get_device_name()} torch {torch.__version__}: M={M} V={V} (padded {Vp}) H={H}")
    for name, fn in cases.items():
        ms = timed(fn)
        rate = f"{2 * M * V * 2 / ms / 1e9:6.2f} TB/s (read + write)" if name.startswith("ce") else \
            f"{flops / ms / 1e9:6.0f} TFLOP/s"
        print(f"  {name:24s} {ms * 1e3:8.1f} us  {rate}")


if __name__ == "__main__":
    main()
