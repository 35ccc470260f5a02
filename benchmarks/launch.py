"""Host time per kernel launch: tritonic's launcher against Triton's own path, a PyTorch op,
a CUDA-graph replay and the bare driver call (cuLaunchKernelEx repeated from C: the floor of
any launcher), for a 3-argument and a 12-argument kernel; and the end-to-end
effect on a stack of 24 small norm calls in eager mode.

    python benchmarks/launch.py [--out DIR]

Host time is wall-clock time per call over a loop of calls (best of several trials: the
host is shared), with the GPU work kept tiny so the host is what is measured. Writes
``<out>/<gpu>/launch.json`` rows with metric "us".
"""

from __future__ import annotations

import os

os.environ.setdefault("TRITONIC_C_LAUNCH", "2")  # the default; set 0 or 1 to time the other paths

import argparse
import datetime
import sys
from pathlib import Path

try:
    import tritonic  # noqa: F401
except ImportError:  # run from a checkout without installing: use ./src
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import torch
import triton
import triton.language as tl

from tritonic.bench.harness import DEFAULT_OUT, _commit, host_us, write_json
from tritonic.runtime import device_name
from tritonic.runtime import launcher as launch_mod


@triton.jit
def _copy3(X, Y, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    tl.store(Y + offs, tl.load(X + offs, mask=offs < n), mask=offs < n)


@triton.jit
def _axpby12(X, Y, Z, W, a, b, c, n, stride_x, stride_y, stride_z, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    m = offs < n
    x = tl.load(X + offs * stride_x, mask=m)
    y = tl.load(Y + offs * stride_y, mask=m)
    w = tl.load(W + offs, mask=m)
    tl.store(Z + offs * stride_z, a * x + b * y + c * w, mask=m)


def graph_of(fn):
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        fn()
    torch.cuda.current_stream().wait_stream(side)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        fn()
    return g.replay


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=DEFAULT_OUT)
    args, _ = p.parse_known_args(argv)  # gpu_check.sh may pass benchmark flags this one ignores
    if not torch.cuda.is_available():
        print("launch: needs a CUDA GPU", file=sys.stderr)
        return 1
    x, y, z, w = (torch.randn(256, device="cuda") for _ in range(4))
    a3, a12 = (x, y, 256), (x, y, z, w, 1.0, 2.0, 3.0, 256, 1, 1, 1)
    launch_mod.launch(_copy3, (1,), *a3, BLOCK=256)  # the first launch builds the C path
    launch, launch_py = launch_mod.launch, launch_mod._launch_py  # (C where it was built, and Python)
    cases = {
        "3-argument kernel": {
            "triton": lambda: _copy3[(1,)](*a3, BLOCK=256),
            "tritonic": lambda: launch(_copy3, (1,), *a3, BLOCK=256),
            "tritonic, Python path": lambda: launch_py(_copy3, (1,), *a3, BLOCK=256),
            "torch op": lambda: torch.add(x, y, out=z),
        },
        "12-argument kernel": {
            "triton": lambda: _axpby12[(1,)](*a12, BLOCK=256),
            "tritonic": lambda: launch(_axpby12, (1,), *a12, BLOCK=256),
            "tritonic, Python path": lambda: launch_py(_axpby12, (1,), *a12, BLOCK=256),
            "torch op": lambda: torch.add(x, y, alpha=2.0, out=z),
        },
    }
    print(f"C launch path: {'on' if launch_mod._C is not None else 'off'}")
    rows, common = [], {"device": device_name(), "torch": torch.__version__, "triton": triton.__version__,
                        "commit": _commit()}

    def row(case, provider, us):
        print(f"{case:<34} {provider:<22} {us:8.2f} us/call (host)")
        rows.append({"bench": "launch", "case": case, "mode": "fwd", "provider": provider, "ms": us / 1e3,
                     "metric": "us", "value": us, **common,
                     "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                     "graph": provider == "cuda graph replay"})

    floor = getattr(launch_mod._C, "driver_floor", None) if launch_mod._C_DIRECT else None
    for case, providers in cases.items():
        for name, fn in providers.items():
            row(case, name, host_us(fn))
        row(case, "cuda graph replay", host_us(graph_of(providers["tritonic"])))
        if floor is not None:  # the driver alone: tritonic's last launch repeated from C, best of 7
            floor(-1)
            providers["tritonic"]()
            floor(0)
            torch.cuda.synchronize()
            best = []
            for _ in range(7):
                best.append(floor(500) * 1e6)
                torch.cuda.synchronize()
            row(case, "bare driver launch", min(best))

    # End to end: 24 LayerNorm calls on 16 tokens of hidden size 768, no autograd.
    from tritonic.ops import layer_norm

    h = torch.randn(16, 768, device="cuda", dtype=torch.bfloat16)
    wn, bn = torch.randn(768, device="cuda", dtype=torch.bfloat16), torch.randn(768, device="cuda", dtype=torch.bfloat16)

    def stack():
        for _ in range(24):
            layer_norm(h, wn, bn)

    def eager_torch():
        for _ in range(24):
            torch.nn.functional.layer_norm(h, (768,), wn, bn)

    case = "24 layer_norm calls, 16x768 bf16"
    row(case, "torch eager", host_us(eager_torch, n=50))
    launch_mod.FAST = False
    row(case, "tritonic, plain launches", host_us(stack, n=50))
    launch_mod.FAST = True
    row(case, "tritonic", host_us(stack, n=50))

    # The same stack at the launch level: 24 launches of the norm forward kernel itself.
    from tritonic.kernels.norm import _norm_fwd

    y = torch.empty_like(h)
    norm_args = (h, None, wn, bn, y, None, None, None, 768, 0, 768, 768, 16, 768, 1e-5, 0.0)
    norm_meta = dict(IS_RMS=False, HAS_RESIDUAL=False, HAS_WEIGHT=True, HAS_BIAS=True, UPCAST=True,
                     STORE_STATS=False, SINGLE_PASS=True, BLOCK_M=4, BLOCK_N=1024, LOAD_EVICT="",
                     STORE_CS=False, HAS_OFFSET=False, EVEN=False, INT64=True, num_warps=4)

    def norm_launches():
        for _ in range(24):
            launch(_norm_fwd, (4,), *norm_args, **norm_meta)

    def norm_triton():
        for _ in range(24):
            _norm_fwd[(4,)](*norm_args, **norm_meta)

    def norm_launches_py():
        for _ in range(24):
            launch_py(_norm_fwd, (4,), *norm_args, **norm_meta)

    case = "24 norm kernel launches, 16x768"
    row(case, "triton", host_us(norm_triton, n=50))
    row(case, "tritonic", host_us(norm_launches, n=50))
    row(case, "tritonic, Python path", host_us(norm_launches_py, n=50))
    path = write_json(rows, args.out, "launch")
    print(f"wrote {len(rows)} rows to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
