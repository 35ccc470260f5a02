"""Where host time goes in a launch and in a small norm call (GPU machine).

    PYTHONPATH=src python scripts/host_profile.py > host_profile.log

Times the pieces of tritonic's fast launch one by one (binder, device and stream lookups,
the compiled kernel's C launcher), then cProfiles a stack of small layer_norm calls.
"""

import cProfile
import io
import pstats
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import torch  # noqa: E402

from launch import _axpby12  # noqa: E402
from tritonic.bench.harness import host_us  # noqa: E402
from tritonic.ops import layer_norm  # noqa: E402
from tritonic.runtime import launcher as L  # noqa: E402


def us(fn):
    return host_us(fn, n=2000, trials=5)


def main():
    x, y, z, w = (torch.randn(256, device="cuda") for _ in range(4))
    args = (x, y, z, w, 1.0, 2.0, 3.0, 256, 1, 1, 1)
    L.launch(_axpby12, (1,), *args, BLOCK=256)
    L.launch(_axpby12, (1,), *args, BLOCK=256)
    L.launch(_axpby12, (1,), *args, BLOCK=256)
    fast = L._fast_kernel(_axpby12)
    key, all_args = fast.bind_fast(*args, BLOCK=256)
    launch_c, coop, pdl, fn, meta, compiled = fast.compiled[key]
    stream = fast.stream(0)
    rows = [
        ("empty loop", lambda: None),
        ("generic bind (key + args)", lambda: fast.bind(*args, BLOCK=256)),
        ("fast bind (key + args)", lambda: fast.bind_fast(*args, BLOCK=256)),
        ("torch.cuda.current_device()", torch.cuda.current_device),
        ("raw stream lookup", lambda: fast.stream(0)),
        ("torch.cuda.is_available()", torch.cuda.is_available),
        ("C launcher only (prebound)", lambda: launch_c(1, 1, 1, stream, fn, coop, pdl, None, None, meta, None, None,
                                                         None, *all_args)),
        ("L.launch (whole fast path)", lambda: L.launch(_axpby12, (1,), *args, BLOCK=256)),
        ("kernel[grid] (triton)", lambda: _axpby12[(1,)](*args, BLOCK=256)),
        ("torch.empty(16x768 bf16, cuda)", lambda: torch.empty((16, 768), dtype=torch.bfloat16, device="cuda")),
        ("torch.add out=", lambda: torch.add(x, y, out=z)),
    ]
    h = torch.randn(16, 768, device="cuda", dtype=torch.bfloat16)
    wn, bn = torch.randn(768, device="cuda", dtype=torch.bfloat16), torch.randn(768, device="cuda", dtype=torch.bfloat16)
    rows.append(("tritonic layer_norm 16x768", lambda: layer_norm(h, wn, bn)))
    rows.append(("F.layer_norm 16x768", lambda: torch.nn.functional.layer_norm(h, (768,), wn, bn)))
    for name, f in rows:
        print(f"{name:<34} {us(f):8.2f} us/call", flush=True)

    prof = cProfile.Profile()
    prof.enable()
    for _ in range(2000):
        layer_norm(h, wn, bn)
    torch.cuda.synchronize()
    prof.disable()
    s = io.StringIO()
    pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(30)
    print(s.getvalue())


if __name__ == "__main__":
    main()
