"""Where a whole model's GPU time goes: kernels of tritonic's ``optimize`` against
``torch.compile``'s, for one model at one shape (issue 7's small-shape gap).

    PYTHONPATH=src python scripts/profile_models.py --model llama --shape 1x16 [--out DIR]

The kernels listed are those of the graphed call the benchmark times (tritonic's graph per
bucket, ``reduce-overhead``'s graph): CUPTI reports the kernels of a graph replay one by one.
``--eager`` lists the kernels of the call without graphs instead (``torch.compile`` in its
default mode). Prints, per provider, the GPU time of one forward (sum of kernel times), the
number of kernels, and the kernels grouped by name with their share; ``--out`` writes the
same as JSON. Also times both calls, to show how much of the call is not kernel time.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import torch  # noqa: E402


def _group(name: str) -> str:
    """A kernel name without the per-shape details, so repeats add up."""
    name = re.sub(r"_\d+(d\d+)*(de)*$", "", name)
    name = re.sub(r"<.*", "", name)
    return name[:90]


def kernels(fn, iters: int = 5):
    from torch.profiler import ProfilerActivity, profile

    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(iters):
            fn()
        torch.cuda.synchronize()
    per = defaultdict(lambda: [0.0, 0])
    for e in prof.events():
        if e.device_type.name == "CUDA" and e.device_time_total > 0:
            g = per[_group(e.name)]
            g[0] += e.device_time_total / iters
            g[1] += 1 / iters
    return dict(per)


def wall_ms(fn, iters: int = 50) -> float:
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(iters):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t) / iters * 1e3


def main() -> int:
    import models as M  # benchmarks/models.py

    p = argparse.ArgumentParser()
    p.add_argument("--model", default="llama")
    p.add_argument("--shape", default="1x16")
    p.add_argument("--out")
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--providers", default="tritonic,torch.compile")
    p.add_argument("--eager", action="store_true", help="list the kernels of the call without graphs")
    a = p.parse_args()
    B, S = (int(v) for v in a.shape.split("x"))
    from transformers import AutoModel

    import tritonic

    case = {"B": B, "S": S, "device": "cuda"}
    kw = M._inputs(case, 1000)
    result = {"model": a.model, "shape": a.shape, "providers": {}}
    for prov in a.providers.split(","):
        torch.manual_seed(0)
        model = AutoModel.from_config(M._config(a.model), attn_implementation="sdpa").to("cuda", M.DT).eval()
        if prov == "tritonic":
            tritonic.optimize(model, cuda_graphs=False)
            graphed = AutoModel.from_config(M._config(a.model), attn_implementation="sdpa").to("cuda", M.DT).eval()
            graphed.load_state_dict(model.state_dict(), strict=False)
            tritonic.optimize(graphed)
        else:
            graphed = torch.compile(model, mode="reduce-overhead")
            model = torch.compile(model)

        def call(m=model):
            with torch.inference_mode():
                return m(**kw)

        def gcall(m=graphed):
            with torch.inference_mode():
                return m(**kw)
        per = kernels(call if a.eager else gcall)
        total = sum(v[0] for v in per.values())
        count = sum(v[1] for v in per.values())
        row = {"gpu_us": total, "kernels": count, "eager_wall_ms": wall_ms(call), "graphed_wall_ms": wall_ms(gcall),
               "by_kernel": sorted(([k, v[0], v[1]] for k, v in per.items()), key=lambda r: -r[1])}
        result["providers"][prov] = row
        print(f"== {a.model} {a.shape} {prov}: {total:.1f} us of kernels in {count:.0f} launches; "
              f"call {row['eager_wall_ms']:.3f} ms, graphed call {row['graphed_wall_ms']:.3f} ms")
        for name, us, n in row["by_kernel"][: a.top]:
            print(f"   {us:8.1f} us {us / total * 100:5.1f}%  x{n:<5.0f} {name}")
        del model, graphed
        torch._dynamo.reset()
        torch.cuda.empty_cache()
    if a.out:
        os.makedirs(a.out, exist_ok=True)
        with open(os.path.join(a.out, f"profile_{a.model}_{a.shape}.json"), "w") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
