"""The ``tritonic`` command.

    tritonic env     what this machine has: GPU, versions, interpreter, cache
    tritonic demo    run the norm kernels on a real tensor and show their error against PyTorch
    tritonic tune    warm the autotune cache for a list of shapes (--shapes FILE)

Nothing heavy is imported until a subcommand runs: ``demo`` must decide whether to switch
Triton's interpreter on before triton is first imported.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from importlib import metadata


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def cmd_env(args) -> int:
    import torch

    rows = [("tritonic", _version("tritonic") or "not installed (running from source)"),
            ("python", platform.python_version())]
    for dist in ("torch", "triton", "numpy", "transformers"):
        rows.append((dist, _version(dist) or "not installed"))
    hints = []
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        rows += [("gpu", f"{props.name} ({props.multi_processor_count} SMs, "
                         f"{props.total_memory / 2**30:.0f} GiB, compute capability {props.major}.{props.minor})"),
                 ("cuda (torch build)", torch.version.cuda or "?")]
        if props.major < 8:
            hints.append("this GPU is older than Ampere (compute capability 8.0); tritonic is tested on Hopper "
                         "and may be slow or fail here")
    else:
        rows.append(("gpu", "none found"))
        hints.append("no CUDA GPU: the kernels can still run, slowly, in Triton's interpreter on the CPU; "
                     "set TRITON_INTERPRET=1 before importing tritonic (`tritonic demo` does this for you)")
    from tritonic.runtime.device import interpreter_active

    rows.append(("triton interpreter", "on (TRITON_INTERPRET=1)" if interpreter_active() else "off"))
    from tritonic.runtime import autotune, launcher as launch

    rows.append(("autotune cache", str(autotune.cache_dir())))
    rows.append(("autotune mode", f"{autotune.mode()}  (TRITONIC_AUTOTUNE=off|cached|full)"))
    rows.append(("shipped tuning tables", ", ".join(autotune.shipped_gpus()) or "none yet"))
    rows.append(("fast launcher", "on" if launch.FAST else "off (TRITONIC_FAST_LAUNCH=0)"))
    if _version("triton") is None:
        hints.append("triton is missing: pip install 'triton>=3.4'")
    if _version("transformers") is None:
        hints.append("transformers is missing (needed only for Hugging Face models): pip install 'tritonic[hf]'")
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    for h in hints:
        print(f"note: {h}")
    return 0


def _max_err(a, b) -> float:
    return (a.double() - b.double()).abs().max().item()


def cmd_demo(args) -> int:
    import torch

    gpu = torch.cuda.is_available() and not args.cpu
    if not gpu:
        # Triton reads this when a kernel is defined: tritonic.kernels is not imported yet.
        os.environ["TRITON_INTERPRET"] = "1"
        print("No CUDA GPU in use: running tritonic's kernels in Triton's interpreter on the CPU, "
              "at a small size (slow, but the same kernel code).")
    import tritonic
    from tritonic.ops import layer_norm, layer_norm_reference, rms_norm, rms_norm_reference

    device = "cuda" if gpu else "cpu"
    dtype = torch.bfloat16 if gpu else torch.float32
    B, S, H = (8, 1024, 4096) if gpu else (2, 16, 256)
    torch.manual_seed(0)
    x = torch.randn(B, S, H, device=device, dtype=dtype)
    h = torch.randn(B, S, H, device=device, dtype=dtype)
    w = 1 + 0.1 * torch.randn(H, device=device, dtype=dtype)
    b = 0.1 * torch.randn(H, device=device, dtype=dtype)
    print(f"tritonic {tritonic.__version__} on {torch.cuda.get_device_name() if gpu else 'cpu'}: "
          f"hidden states {B}x{S}x{H} in {str(dtype).replace('torch.', '')}")

    cases = [
        ("layer_norm(x, w, b)", lambda: layer_norm(x, w, b), lambda t: layer_norm_reference(t[0], t[1], t[2])),
        ("layer_norm(x, w, b, residual=h)", lambda: layer_norm(x, w, b, residual=h)[0],
         lambda t: layer_norm_reference(t[0], t[1], t[2], 1e-5, t[3])[0]),
        ("rms_norm(x, w)", lambda: rms_norm(x, w), lambda t: rms_norm_reference(t[0], t[1])),
        ("rms_norm(x, w, residual=h)", lambda: rms_norm(x, w, residual=h)[0],
         lambda t: rms_norm_reference(t[0], t[1], 1e-6, t[3])[0]),
    ]
    inputs = (x, w, b, h)
    inputs64 = tuple(t.double() for t in inputs)
    print(f"{'op':<34} {'max |err| vs float64':>22} {'PyTorch same dtype':>20}"
          + (f" {'PyTorch ms':>11} {'tritonic ms':>12}" if gpu else ""))
    worst = 0.0
    for name, ours, theirs in cases:
        t0 = time.perf_counter()
        y = ours()
        ref = theirs(inputs64)
        y_torch = theirs(inputs)
        err, err_torch = _max_err(y, ref), _max_err(y_torch, ref)
        worst = max(worst, err / max(err_torch, 1e-30))
        line = f"{name:<34} {err:>22.3e} {err_torch:>20.3e}"
        if gpu:
            from triton.testing import do_bench

            line += f" {do_bench(lambda: theirs(inputs), return_mode='median'):>11.4f}"
            line += f" {do_bench(ours, return_mode='median'):>12.4f}"
        else:
            line += f"   ({time.perf_counter() - t0:.1f} s)"
        print(line)
    print("tritonic's error is within 2x PyTorch's own in every case." if worst <= 2.0 else
          f"warning: tritonic's error reached {worst:.1f}x PyTorch's own.")
    return 0


def cmd_tune(args) -> int:
    """Warm the autotune cache for the shapes in a JSON file, so later processes start tuned."""
    import json

    import torch

    try:
        with open(args.shapes) as f:
            shapes = json.load(f)
        if not isinstance(shapes, list):
            raise ValueError("expected a JSON list of shapes")
    except (OSError, ValueError) as e:
        print(f"tritonic tune: cannot read {args.shapes}: {e}", file=sys.stderr)
        return 1
    if not torch.cuda.is_available():
        print("tritonic tune: needs a CUDA GPU (tuning times the kernels on the GPU they will run on)",
              file=sys.stderr)
        return 1
    from tritonic.ops import linear
    from tritonic.runtime import autotune

    for i, s in enumerate(shapes, 1):
        if s.get("op", "linear") != "linear":
            print(f"tritonic tune: shape {i}: op {s.get('op')!r} is not tunable yet (only 'linear')", file=sys.stderr)
            return 1
        try:
            dtype = getattr(torch, s.get("dtype", "bfloat16"))
            M, N, K = int(s["M"]), int(s["N"]), int(s["K"])
        except (KeyError, AttributeError, TypeError, ValueError) as e:
            print(f"tritonic tune: shape {i} needs M, N, K and a torch dtype name: {s} ({e!r})", file=sys.stderr)
            return 1
        x = torch.randn(M, K, device="cuda", dtype=dtype)
        w = torch.randn(N, K, device="cuda", dtype=dtype)
        b = torch.randn(N, device="cuda", dtype=dtype) if s.get("bias", True) else None
        before = autotune.tuning_seconds
        with torch.no_grad():
            linear(x, w, b, activation=s.get("activation"))
        torch.cuda.synchronize()
        print(f"[{i}/{len(shapes)}] linear M={M} N={N} K={K} {dtype}: "
              f"{autotune.tuning_seconds - before:.1f} s tuning")
    print(f"tuning time in this process: {autotune.tuning_seconds:.1f} s; cache: {autotune.cache_dir()}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="tritonic", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("env", help="show the GPU, versions, interpreter and cache").set_defaults(func=cmd_env)
    demo = sub.add_parser("demo", help="run the norm kernels on a real tensor against PyTorch")
    demo.add_argument("--cpu", action="store_true", help="use Triton's interpreter even when a GPU is present")
    demo.set_defaults(func=cmd_demo)
    tune = sub.add_parser("tune", help="warm the autotune cache for a list of shapes")
    tune.add_argument("--shapes", required=True,
                      help='JSON list like [{"op": "linear", "M": 4096, "N": 4096, "K": 4096, "dtype": "bfloat16", '
                           '"activation": "gelu"}]')
    tune.set_defaults(func=cmd_tune)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return args.func(args)
    except ImportError as e:
        print(f"tritonic {args.command}: a package is missing ({e}); install it with pip and try again",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
