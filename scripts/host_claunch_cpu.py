"""Host time of the C launch (fastlaunch.c) on a CPU-only machine: a kernel shaped like the
norm forward (16 arguments: 8 tensors or None, ints, floats) launched with its 17 keywords
against the same kernel with 1 keyword and with launch_meta (the 17 as one cached dict), into a stub launcher. What the keywords cost per
launch, before any GPU work. No numbers from here are GPU results.

    TRITON_INTERPRET=1 TRITONIC_INTERPRET=1 python scripts/host_claunch_cpu.py
"""
import time
from types import SimpleNamespace

import torch

from tritonic.runtime import launcher as L

module = L._build_c()
if module is None:
    raise SystemExit("no C compiler here")
L._knobs, L.FAST = None, True
L._configure_c(module, device=lambda: 0, stream=lambda d: 7)

POS = ["X", "R", "W", "B", "Y", "S", "MEAN", "RSTD", "sx", "sr", "sy", "ss", "M", "N", "eps", "offset"]


def case(n_meta):
    names = [f"C{i}" for i in range(n_meta)]
    kernel = SimpleNamespace(params=[SimpleNamespace(name=n, is_constexpr=False) for n in POS]
                             + [SimpleNamespace(name=n, is_constexpr=True) for n in names])
    fk = L._FastKernel(kernel)
    fk.device, fk.stream = (lambda: 0), (lambda d: 7)
    x = torch.empty(16, 768)
    args = (x, None, x[0], x[0], x, None, None, None, 768, 0, 768, 768, 16, 768, 1e-5, 0.0)
    meta = {n: (i % 3 == 0) if i % 2 else 1024 for i, n in enumerate(names)}
    fk.make_fast_binder(args)
    key, _ = fk.bind_fast(args, meta)
    fk.compiled[key] = (lambda *a: None, False, False, "FUNCTION", "METADATA", None)
    L._by_id[id(kernel)] = (kernel, fk)
    module.launch(kernel, (4,), *args, **meta)  # files the C key
    assert len(fk.ccompiled) == 1, "the C path did not take it"
    return kernel, args, meta


def best(fn, n=20000):
    r = []
    for _ in range(7):
        t = time.perf_counter()
        for _ in range(n):
            fn()
        r.append((time.perf_counter() - t) / n * 1e6)
    return min(r)


for n_meta in (1, 17):
    kernel, args, meta = case(n_meta)
    us = best(lambda: module.launch(kernel, (4,), *args, **meta))
    print(f"C launch, 16 arguments, {n_meta:2d} keywords: {us:.2f} us")

# launch_meta: the 17 keywords as the one cached dict, keyed by its identity
kernel, args, meta = case(17)
module.launch_meta(kernel, (4,), meta, *args)  # files its key
us = best(lambda: module.launch_meta(kernel, (4,), meta, *args))
print(f"C launch_meta, 16 arguments, 17 keywords in one dict: {us:.2f} us")
