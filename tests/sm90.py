"""Compile an op's launches for an H100 (sm_90) on a machine without a GPU.

The interpreter runs a kernel's Python, so it never sees what only Triton's compiler sees
(for instance code after an early ``return`` inside ``if CONSTEXPR:``, which the compiler
still compiles, with the arguments a launch left ``None``). ``record`` spies on a module's
``launch`` while the op runs in the interpreter; ``compile_all`` compiles what it saw for
sm_90 in a subprocess without the interpreter (so the kernels are real ``JITFunction``s),
through ptxas, and returns a message per launch that failed.

    python tests/sm90.py < launches.json    # what compile_all runs
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

_DTYPES = {"torch.float32": "fp32", "torch.float16": "fp16", "torch.bfloat16": "bf16", "torch.int32": "i32",
           "torch.int64": "i64", "torch.bool": "u8", "torch.uint8": "u8", "torch.int8": "i8"}


def _describe(value):
    """A launch argument as JSON: tensors by dtype and alignment, scalars by value."""
    import torch
    if isinstance(value, torch.Tensor):
        return {"ptr": _DTYPES[str(value.dtype)], "aligned": value.data_ptr() % 16 == 0}
    if value is None or isinstance(value, (bool, int, float, str)):
        return {"value": value}
    raise TypeError(f"sm90: cannot describe a launch argument of type {type(value).__name__}")


def record(monkeypatch, module) -> list:
    """Every launch ``module`` makes from now on, described for ``compile_all``; each still runs."""
    seen = []
    real = module.launch

    def spy(kernel, grid, *args, **meta):
        seen.append({"module": kernel.fn.__module__, "name": kernel.fn.__name__,
                     "args": [_describe(a) for a in args], "meta": {k: _describe(v) for k, v in meta.items()}})
        return real(kernel, grid, *args, **meta)

    monkeypatch.setattr(module, "launch", spy)
    return seen


def compile_all(launches: list, timeout: float = 600) -> list[str]:
    """Compile ``launches`` (from ``record``) for sm_90 in a subprocess; the failures' messages."""
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "TRITONIC_INTERPRET")}
    src = str(Path(__file__).resolve().parents[1] / "src")
    env["PYTHONPATH"] = os.pathsep.join([src] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    r = subprocess.run([sys.executable, __file__], input=json.dumps(launches), capture_output=True, text=True,
                       env=env, timeout=timeout)
    if r.returncode != 0:
        return [f"the compile subprocess failed (rc {r.returncode}): {r.stderr[-2000:]}"]
    return json.loads(r.stdout.splitlines()[-1])


def _signature(fn, launch):
    """Triton's signature, constexprs and attributes for one described launch (its default
    specialisation: ints equal to 1 become constants, 16-divisible ints and aligned pointers
    carry ``tt.divisibility``)."""
    names = fn.arg_names
    given = dict(zip(names, launch["args"]))
    meta = {k: v for k, v in launch["meta"].items() if k not in ("num_warps", "num_stages", "num_ctas")}
    given.update(meta)
    sig, const, attrs = {}, {}, {}
    for i, name in enumerate(names):
        if name not in given:  # left at its default: a constexpr's default
            sig[name] = "constexpr"
            const[(i,)] = fn.params[i].default
            continue
        d = given[name]
        if "ptr" in d:
            sig[name] = "*" + d["ptr"]
            if d["aligned"]:
                attrs[(i,)] = [["tt.divisibility", 16]]
            continue
        v = d["value"]
        if name in meta or fn.params[i].is_constexpr or v is None or isinstance(v, str) or v == 1:
            sig[name] = "constexpr"
            const[(i,)] = v
        elif isinstance(v, bool):
            sig[name] = "i1"
        elif isinstance(v, int):
            sig[name] = "i32" if -2**31 <= v < 2**31 else "i64"
            if v % 16 == 0:
                attrs[(i,)] = [["tt.divisibility", 16]]
        else:
            sig[name] = "fp32"
    return sig, const, attrs


def _main() -> None:
    import importlib

    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    failures = []
    for launch in json.loads(sys.stdin.read()):
        fn = getattr(importlib.import_module(launch["module"]), launch["name"])
        sig, const, attrs = _signature(fn, launch)
        opts = {k: launch["meta"][k]["value"] for k in ("num_warps", "num_stages") if k in launch["meta"]}
        try:
            triton.compile(ASTSource(fn, sig, constexprs=const, attrs=attrs), target=GPUTarget("cuda", 90, 128),
                           options=opts)
        except Exception as e:  # noqa: BLE001 - every failure is reported, with the kernel it came from
            failures.append(f"{launch['name']} {json.dumps(launch['meta'])}: {type(e).__name__}: {e}"[-1500:])
    print(json.dumps(failures))


if __name__ == "__main__":
    _main()
