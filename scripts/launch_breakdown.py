"""Where a launch's host time goes, on the GPU host: Triton's C launcher alone (arguments
prepared beforehand), tritonic's generated ``run_fast``, the whole ``launch()``, and Triton's
``kernel[grid]``; then the pieces of the ``layer_norm`` op and a cProfile of it.

    PYTHONPATH=src python scripts/launch_breakdown.py [--json FILE]
"""
from __future__ import annotations

import os

os.environ.setdefault("TRITONIC_C_LAUNCH", "2")  # the default; set 0 or 1 to time the other paths

import argparse
import cProfile
import io
import json
import pstats
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from launch import _axpby12  # noqa: E402  (the 12-argument kernel of benchmarks/launch.py)

from tritonic.bench.harness import host_us  # noqa: E402
from tritonic.kernels.norm import _norm_fwd  # noqa: E402
from tritonic.ops import norm as norm_ops  # noqa: E402
from tritonic.runtime import launcher as L  # noqa: E402


def levels(kernel, grid, args, meta):
    """Host µs of each level of one kernel's launch."""
    for _ in range(3):  # compiles and makes the fast binder, files the fast key, files the C key
        L.launch(kernel, grid, *args, **meta)
    torch.cuda.synchronize()
    fk = L._fast[kernel]
    key, launch_args = fk.bind_fast(args, meta)
    entry = fk.compiled[key]
    c, stream = entry[0], fk.stream(torch.cuda.current_device())
    g = tuple(grid) + (1,) * (3 - len(grid))
    return {
        "C launcher alone": host_us(lambda: c(*g, stream, entry[3], entry[1], entry[2], None, None, entry[4],
                                              None, None, None, *launch_args)),
        "run_fast": host_us(lambda: fk.run_fast(grid, args, meta)),
        "launch() (C where built)": host_us(lambda: L.launch(kernel, grid, *args, **meta)),
        "launch(), Python path": host_us(lambda: L._launch_py(kernel, grid, *args, **meta)),
        "kernel[grid]": host_us(lambda: kernel[grid](*args, **meta)),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json")
    args = p.parse_args(argv)
    out = {}
    x, y, z, w = (torch.randn(256, device="cuda") for _ in range(4))
    out["12-argument kernel"] = levels(_axpby12, (1,), (x, y, z, w, 1.0, 2.0, 3.0, 256, 1, 1, 1), dict(BLOCK=256))
    h = torch.randn(16, 768, device="cuda", dtype=torch.bfloat16)
    wn, bn = (torch.randn(768, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    yn = torch.empty_like(h)
    norm_args = (h, None, wn, bn, yn, None, None, None, 768, 0, 768, 768, 16, 768, 1e-5, 0.0)
    norm_meta = dict(IS_RMS=False, HAS_RESIDUAL=False, HAS_WEIGHT=True, HAS_BIAS=True, UPCAST=True,
                     STORE_STATS=False, SINGLE_PASS=True, BLOCK_M=4, BLOCK_N=1024, LOAD_EVICT="",
                     STORE_CS=False, HAS_OFFSET=False, EVEN=False, INT64=True, num_warps=4)
    out["norm forward kernel (16 arguments, 15 keywords)"] = levels(_norm_fwd, (4,), norm_args, norm_meta)
    out["layer_norm op, 16x768 bf16"] = {
        "tritonic.ops.layer_norm": host_us(lambda: norm_ops.layer_norm(h, wn, bn)),
        "F.layer_norm": host_us(lambda: F.layer_norm(h, (768,), wn, bn)),
        "torch.empty_like": host_us(lambda: torch.empty_like(h)),
        "_check": host_us(lambda: norm_ops._check("layer_norm", h, wn, bn, None, 1e-5)),
        "_path": host_us(lambda: norm_ops._path(h, wn, bn, None)),
        "_launch_fwd": host_us(lambda: norm_ops._launch_fwd(h, None, wn, bn, 1e-5, 0.0, False, True,
                                                             store_stats=False)),
    }
    for case, row in out.items():
        for name, us in row.items():
            print(f"{case:<48} {name:<26} {us:7.2f} us")
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(3000):
        norm_ops.layer_norm(h, wn, bn)
    prof.disable()
    torch.cuda.synchronize()
    s = io.StringIO()
    pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(18)
    print(s.getvalue())
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
