"""Compile an op's launches for an H100 (sm_90) on a machine without a GPU.

The interpreter runs a kernel's Python, so it never sees what only Triton's compiler sees
(for instance code after an early ``return`` inside ``if CONSTEXPR:``, which the compiler
still compiles, with the arguments a launch left ``None``). ``record`` spies on modules'
``launch`` / ``launch_meta`` while ops run in the interpreter; ``compile_all`` compiles what
they launched for sm_90 (through ptxas, which the triton wheel carries) in a subprocess
without the interpreter, so the kernels are real ``JITFunction``s, and returns a message per
launch that failed. Arguments are typed as Triton's launcher would type them (its own
specialisation: 16-divisible pointers and ints, ints equal to 1 and ``None`` as constants,
tensor descriptors by dtype and block).

    python tests/sm90.py < launches.json    # what compile_all runs
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def _describe(value):
    """A launch argument as JSON: Triton's type for it, 16-divisibility, and its value if constant."""
    from triton._C.libtriton import native_specialize_impl
    from triton.backends.compiler import BaseBackend

    kind, key = native_specialize_impl(BaseBackend, value, False, True, True)
    d = {"sig": kind, "div": key == "D"}
    if kind == "constexpr":
        d["value"] = value
    return d


def record(monkeypatch, *modules) -> list:
    """Every launch the ``modules`` make from now on, described for ``compile_all``; each still runs."""
    seen = []

    def note(kernel, args, meta):
        seen.append({"module": kernel.fn.__module__, "name": kernel.fn.__name__,
                     "args": [_describe(a) for a in args], "meta": dict(meta)})

    for module in modules:
        if hasattr(module, "launch"):
            real = module.launch
            monkeypatch.setattr(module, "launch", lambda kernel, grid, *a, _real=real, **m: (
                note(kernel, a, m), _real(kernel, grid, *a, **m))[1])
        if hasattr(module, "launch_meta"):
            real_meta = module.launch_meta
            monkeypatch.setattr(module, "launch_meta", lambda kernel, grid, meta, *a, _real=real_meta: (
                note(kernel, a, meta), _real(kernel, grid, meta, *a))[1])
    return seen


def unique(launches: list) -> list:
    """One of each distinct (kernel, argument types, constants) among ``launches``."""
    out = {}
    for launch in launches:
        out.setdefault(json.dumps(launch, sort_keys=True, default=str), launch)
    return list(out.values())


def with_pdl(launches: list) -> list:
    """``launches`` and, for the first launch of each kernel, the same launch with programmatic
    dependent launch on (``USE_PDL=True``, what launches inside tritonic's captures get on
    Hopper); the kernels without that parameter are skipped by the compile."""
    first = {}
    for x in launches:
        first.setdefault((x["module"], x["name"]), x)
    return launches + [dict(x, meta=dict(x["meta"], USE_PDL=True), pdl=True) for x in first.values()]


def compile_all(launches: list, timeout: float = 900) -> list[str]:
    """Compile ``launches`` (from ``record``) for sm_90 in a subprocess; the failures' messages."""
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "TRITONIC_INTERPRET")}
    src = str(Path(__file__).resolve().parents[1] / "src")
    env["PYTHONPATH"] = os.pathsep.join([src] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    r = subprocess.run([sys.executable, __file__], input=json.dumps(unique(launches), default=str),
                       capture_output=True, text=True, env=env, timeout=timeout)
    if r.returncode != 0:
        return [f"the compile subprocess failed (rc {r.returncode}): {r.stderr[-2000:]}"]
    return json.loads(r.stdout.splitlines()[-1])


def _signature(fn, launch):
    """Triton's signature, constants and attributes for one described launch."""
    names = fn.arg_names
    meta = {k: v for k, v in launch["meta"].items() if k not in ("num_warps", "num_stages", "num_ctas")}
    given = dict(zip(names, launch["args"]))
    sig, const, attrs = {}, {}, {}
    for i, name in enumerate(names):
        if name in meta or name not in given:  # a constexpr given by keyword, or left at its default
            sig[name] = "constexpr"
            const[(i,)] = meta[name] if name in meta else fn.params[i].default
            continue
        d = given[name]
        if d["sig"] == "constexpr" or fn.params[i].is_constexpr:
            sig[name] = "constexpr"
            const[(i,)] = d.get("value")
            continue
        sig[name] = d["sig"]
        if d["div"]:
            attrs[(i,)] = [["tt.divisibility", 16]]
    return sig, const, attrs


def _compile_one(launch):
    import importlib

    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    fn = getattr(importlib.import_module(launch["module"]), launch["name"])
    if launch.get("pdl") and "USE_PDL" not in fn.arg_names:
        return None
    try:
        sig, const, attrs = _signature(fn, launch)
        opts = {k: launch["meta"][k] for k in ("num_warps", "num_stages") if k in launch["meta"]}
        triton.compile(ASTSource(fn, sig, constexprs=const, attrs=attrs), target=GPUTarget("cuda", 90, 128),
                       options=opts)
        return None
    except Exception as e:  # noqa: BLE001 - every failure is reported, with the kernel it came from
        return f"{launch['name']} {json.dumps(launch['meta'], default=str)}: {type(e).__name__}: {e}"[-1500:]


def _main() -> None:
    from concurrent.futures import ProcessPoolExecutor

    launches = json.loads(sys.stdin.read())
    workers = max(1, min(len(launches), os.cpu_count() or 1, 8))
    with ProcessPoolExecutor(workers) as pool:
        failures = [f for f in pool.map(_compile_one, launches) if f]
    print(json.dumps(failures))


if __name__ == "__main__":
    _main()
