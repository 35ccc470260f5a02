"""Whole Hugging Face models, inference: HF eager (SDPA), torch.compile, torch.compile
(mode="reduce-overhead") and ``tritonic.optimize`` (CUDA graphs per bucket), float16,
random weights from configs.

    python benchmarks/models.py [--only gpt2] [--providers eager,tritonic] [--out DIR]
    python benchmarks/models.py --first-call [--only bert,gpt2 1x16] [--providers tritonic]
                                                               # seconds to the first output per new shape
    python benchmarks/models.py --dry-run                      # CPU smoke run, no GPU

Cases: BERT-base, GPT-2 (124M) and a Llama-style model (hidden 2048, 16 layers, 32 query /
8 key-value heads, SwiGLU 5632), each at batch × sequence 1×16, 1×128, 1×512, 8×128,
32×256. A call is ``model(input_ids=..., attention_mask=...)`` under
``torch.inference_mode()``; its time is what a user waits for, host included (timed
without wrapping it in a graph of our own: ``no_graph``). TFLOP/s counts 2 FLOPs per
parameter per token (attention scores left out).

``--first-call`` writes "models_first_call": seconds from a fresh model to its first output,
``optimize`` (whose probe checks compile kernels) or ``torch.compile`` included.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

try:
    import tritonic  # noqa: F401
except ImportError:  # run from a checkout without installing: use ./src
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import torch

from tritonic.bench import Benchmark, main

DT = torch.float16
SHAPES = ((1, 16), (1, 128), (1, 512), (8, 128), (32, 256))


def _config(name: str, tiny: bool = False):
    from transformers import BertConfig, GPT2Config, LlamaConfig

    if tiny:  # --dry-run
        return {"bert": BertConfig(vocab_size=97, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                   intermediate_size=64),
                "gpt2": GPT2Config(vocab_size=97, n_embd=32, n_layer=1, n_head=2),
                "llama": LlamaConfig(vocab_size=97, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                                     num_key_value_heads=2, intermediate_size=64)}[name]
    return {"bert": BertConfig(),  # bert-base-uncased's shape
            "gpt2": GPT2Config(),  # the 124M model
            "llama": LlamaConfig(vocab_size=32000, hidden_size=2048, num_hidden_layers=16, num_attention_heads=32,
                                 num_key_value_heads=8, intermediate_size=5632, max_position_embeddings=2048)}[name]


def _case(model, B, S):
    return {"name": f"{model} {B}x{S}", "model": model, "B": B, "S": S}


CASES = [_case(m, B, S) for m in ("bert", "gpt2", "llama") for B, S in SHAPES]
SMOKE_CASES = [_case(m, 2, 8) for m in ("bert", "gpt2", "llama")]

_MODELS: dict = {}  # (model name, provider, device) -> callable model, reused across cases


def _build(name: str, kind: str, device: str):
    key = (name, kind, device)
    if key in _MODELS:
        return _MODELS[key]
    if any(k[0] != name for k in _MODELS):  # one architecture at a time (its 4 providers side by side)
        _MODELS.clear()
        torch._dynamo.reset()
        if device == "cuda":
            torch.cuda.empty_cache()
    model = _wrap(_plain(name, device), kind)
    _MODELS[key] = model
    return model


def _plain(name: str, device: str):
    from transformers import AutoModel

    torch.manual_seed(0)
    model = AutoModel.from_config(_config(name, tiny=device != "cuda"), attn_implementation="sdpa")
    return model.to(device, DT if device == "cuda" else torch.float32).eval()


def _wrap(model, kind: str):
    if kind == "torch.compile":
        model = torch.compile(model)
    elif kind == "reduce-overhead":
        model = torch.compile(model, mode="reduce-overhead")
    elif kind == "tritonic":
        import tritonic as T

        T.optimize(model)
    return model


def _inputs(case, vocab: int):
    B, S, dev = case["B"], case["S"], case["device"]
    ids = torch.randint(1, vocab, (B, S), device=dev)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def provider(kind):
    def factory(case, mode, n_sets):
        if kind in ("torch.compile", "reduce-overhead") and case["device"] != "cuda":
            return None
        model = _build(case["model"], kind, case["device"])
        kw = _inputs(case, 97 if case["device"] != "cuda" else 1000)

        def call():
            with torch.inference_mode():
                return model(**kw)
        call.no_graph = True  # a user's call as it is: host time included
        return [call]
    return factory


def _params(name: str) -> int:
    c = _config(name)
    if name == "llama":
        h, L, f = c.hidden_size, c.num_hidden_layers, c.intermediate_size
        kv = h * c.num_key_value_heads // c.num_attention_heads
        return L * (2 * h * h + 2 * h * kv + 3 * h * f)
    h, L = (c.hidden_size, c.num_hidden_layers) if name == "bert" else (c.n_embd, c.n_layer)
    return L * 12 * h * h


BENCH = Benchmark(
    name="models",
    cases=CASES,
    smoke_cases=SMOKE_CASES,
    providers={"eager": provider("eager"), "torch.compile": provider("torch.compile"),
               "reduce-overhead": provider("reduce-overhead"), "tritonic": provider("tritonic")},
    bytes=lambda case, mode: 2 * _params(case["model"]),
    flops=lambda case, mode: 2 * _params(case["model"]) * case["B"] * case["S"],
    modes=("fwd",),
    baselines=("eager", "torch.compile", "reduce-overhead"),
)


class _Compiles:
    """Triton's compiles while active (its jit_cache_hook / jit_post_compile_hook): how many,
    seconds between the two hooks (synchronous compiles; a precompile pool's overlap), and
    per kernel name with its USE_PDL value, so that a slow first call says where it went."""

    def __init__(self):
        self.n, self.seconds, self.by, self._t = 0, 0.0, {}, []
        self.secs_by = {}  # kernel name -> seconds between the hooks (synchronous compiles)
        self.launchers, self.launcher_s = 0, 0.0  # Triton's per-signature C launchers (gcc when not cached)
        self.launcher_by = {}  # module name (and the kernel whose launcher it is) -> builds
        try:
            from triton import knobs

            self.knobs = knobs.runtime
        except ImportError:  # an older Triton: no counts
            self.knobs = None
        try:
            from triton.backends.nvidia import driver as nvdriver

            self.driver = nvdriver if hasattr(nvdriver, "compile_module_from_src") else None
        except ImportError:
            self.driver = None

    def __enter__(self):
        if self.knobs is not None:
            self._saved = (self.knobs.jit_cache_hook, self.knobs.jit_post_compile_hook)
            self.knobs.jit_cache_hook, self.knobs.jit_post_compile_hook = self._pre, self._post
        if self.driver is not None:
            real = self._real_build = self.driver.compile_module_from_src

            def build(*a, **k):  # a kernel's first load builds (or loads) its launcher module
                t = time.perf_counter()
                try:
                    return real(*a, **k)
                finally:
                    self.launchers += 1
                    self.launcher_s += time.perf_counter() - t
                    label = self._module_label(k.get("name", "?"))
                    self.launcher_by[label] = self.launcher_by.get(label, 0) + 1
            self.driver.compile_module_from_src = build
        return self

    @staticmethod
    def _module_label(name: str) -> str:
        """The module's name, with the kernel whose launcher it is: Triton's CompiledKernel
        builds it (through its launcher class) a few frames up, and knows its kernel's name."""
        import sys as _sys

        frame = _sys._getframe(2)  # build -> the launcher class's __init__ -> CompiledKernel
        for _ in range(5):
            if frame is None:
                break
            owner = frame.f_locals.get("self")
            if type(owner).__name__ == "CompiledKernel" and isinstance(getattr(owner, "name", None), str):
                return f"{name}:{owner.name}"
            frame = frame.f_back
        return name

    def __exit__(self, *exc):
        if self.knobs is not None:
            self.knobs.jit_cache_hook, self.knobs.jit_post_compile_hook = self._saved
        if self.driver is not None:
            self.driver.compile_module_from_src = self._real_build

    def _pre(self, *, fn=None, compile=None, **_):
        self.n += 1
        consts = (compile or {}).get("constants") or {}  # keyed by parameter paths: (index,)
        names = [p.name for p in getattr(getattr(fn, "jit_function", None), "params", ())]
        pdl = consts.get((names.index("USE_PDL"),)) if "USE_PDL" in names else None
        name = f"{getattr(fn, 'name', '?')}{'' if pdl is None else f'[pdl={pdl}]'}"
        self.by[name] = self.by.get(name, 0) + 1
        self._t.append((name, time.perf_counter()))
        return None  # (a true value would skip the compile)

    def _post(self, **_):
        if self._t:
            name, t0 = self._t.pop()
            dt = time.perf_counter() - t0
            self.seconds += dt
            self.secs_by[name] = self.secs_by.get(name, 0.0) + dt
        return None

    def summary(self) -> dict:
        top = sorted(self.by.items(), key=lambda kv: -kv[1])
        return {"compiles": self.n, "compile_s": round(self.seconds, 3), "compiled": dict(top),
                "compile_s_by": {k: round(v, 3) for k, v in sorted(self.secs_by.items(), key=lambda kv: -kv[1])},
                "launcher_builds": self.launchers, "launcher_build_s": round(self.launcher_s, 3),
                "launcher_by": dict(sorted(self.launcher_by.items()))}


def _host_probe_us(n: int = 2000) -> float:
    """Microseconds of host time for one small torch op on the GPU (torch.empty, then add_), the
    best of 5: first-call times on different hosts compare only alongside it."""
    x = torch.empty(16, device="cuda")
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(n):
            torch.empty(16, device="cuda").add_(x)
        best = min(best, (time.perf_counter() - t) / n * 1e6)
    torch.cuda.synchronize()
    return best


def first_call(argv) -> int:
    """Seconds to the first output: a fresh tritonic-optimized model at each shape (a new
    bucket: kernels compiled and tuned, graph captured), and torch.compile per new shape."""
    from tritonic.bench.harness import write_json

    only = argv[argv.index("--only") + 1].split(",") if "--only" in argv else [""]
    out = argv[argv.index("--out") + 1] if "--out" in argv else "benchmarks/results"
    kinds = argv[argv.index("--providers") + 1].split(",") if "--providers" in argv else ["tritonic", "reduce-overhead"]
    import triton

    from tritonic.bench.harness import _commit
    from tritonic.runtime import device_name

    meta = {"device": device_name(), "torch": torch.__version__, "triton": triton.__version__, "commit": _commit(),
            "cold": bool(os.environ.get("TRITON_CACHE_DIR")), "precompile": os.environ.get("TRITONIC_PRECOMPILE", "0")}
    rows = []
    host_us = _host_probe_us()
    for case in CASES:
        if not any(o in case["name"] for o in only):
            continue
        case = {**case, "device": "cuda"}
        for kind in kinds:
            _MODELS.clear()
            torch._dynamo.reset()
            model = _plain(case["model"], "cuda")
            kw = _inputs(case, 1000)
            torch.cuda.synchronize()
            t = time.perf_counter()  # optimize()'s probe checks (their kernels compile) count too
            with _Compiles() as compiles:
                model = _wrap(model, kind)
                wrap_s = time.perf_counter() - t
                with torch.inference_mode():
                    model(**kw)
                torch.cuda.synchronize()
            s = time.perf_counter() - t
            got = compiles.summary()
            got["wrap_s"] = round(wrap_s, 3)  # optimize() itself (its probe checks' kernels compile there)
            from tritonic.runtime import autotune as _autotune

            got["tuning_s"] = round(_autotune.tuning_seconds, 3)  # configs compiled and timed for keys no table has
            got["tuned"] = [f"{name}|{list(key)}: {s} s" for name, key, s in _autotune.tuned]
            _autotune.tuning_seconds = 0.0
            _autotune.tuned.clear()
            from tritonic.runtime import launcher as _launcher

            got["c_launch_build_s"] = round(_launcher.c_build_seconds, 3)  # (the first model of a process builds it)
            _launcher.c_build_seconds = 0.0
            print(f"{case['name']} {kind}: first call {s:.2f} s; {got['compiles']} Triton compiles, "
                  f"{got['compile_s']:.2f} s in them; {got['launcher_builds']} launcher modules, "
                  f"{got['launcher_build_s']:.2f} s; C launch build {got['c_launch_build_s']:.2f} s; optimize() "
                  f"{wrap_s:.2f} s; tuning {got['tuning_s']:.2f} s "
                  f"(host probe {host_us:.1f} us a torch op)", flush=True)
            for name, count in got["compiled"].items():
                print(f"    {count:3d}  {name}  {got['compile_s_by'].get(name, 0.0):.2f} s", flush=True)
            for label, count in got["launcher_by"].items():  # which modules were built (lazy launchers leave few)
                print(f"    {count:3d}  module {label}", flush=True)
            for line in got["tuned"]:  # keys no table had
                print(f"    tuned {line}", flush=True)
            rows.append({"bench": "models_first_call", "case": case["name"], "mode": "fwd", "provider": kind,
                         "metric": "s", "value": s, **meta, **got, "host_probe_us": round(host_us, 2)})
    print(f"wrote {len(rows)} rows to {write_json(rows, out, 'models_first_call')}")
    return 0


if __name__ == "__main__":
    argv = sys.argv[1:]
    if "--first-call" in argv:
        argv.remove("--first-call")
        sys.exit(first_call(argv))
    sys.exit(main(BENCH, argv))
