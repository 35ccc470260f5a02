"""Greedy ``generate()`` with a static KV cache: tokens/s of HF eager, ``torch.compile``
(transformers' own auto-compile of the static-cache decode step, mode "reduce-overhead")
and tritonic (``optimize``: captured decode steps), float16, random weights.

    python benchmarks/generate.py [--only gpt2] [--new 256] [--sample] [--out DIR]
    python benchmarks/generate.py --dry-run        # tiny models on the CPU (interpreter), no GPU

Cases: GPT-2 (124M) and the Llama-style model of ``benchmarks/models.py`` (hidden 2048, 16
layers, GQA 32/8), batch 1 and 8, a 128-token prompt and ``--new`` new tokens (issue 7:
256). Each provider's first call warms up (compiles, tunes, captures); the second is timed,
host included, and the tokens are checked against the eager run's. Writes "generate":
``ms`` per call, ``value`` new tokens per second (batch × new / seconds).
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

try:
    import tritonic  # noqa: F401 (is it installed?)
except ImportError:  # run from a checkout without installing: use ./src
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

CASES = [(m, b) for m in ("gpt2", "llama") for b in (1, 8)]
PROMPT = 128


def _model(name: str, device: str):
    from transformers import AutoModelForCausalLM

    import models as M  # benchmarks/models.py: the same configs

    config = M._config(name, tiny=device != "cuda")
    config.pad_token_id = 0
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa")
    return model.to(device, torch.float16 if device == "cuda" else torch.float32).eval()


def _time(model, kw, device):
    model.generate(**kw)  # warm-up: compile, tune, capture
    if device == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    out = model.generate(**kw)
    if device == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t) * 1e3, out


def main(argv=None) -> int:
    import tritonic as T
    from tritonic.bench.harness import _commit, write_json

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", help="gpt2 or llama")
    p.add_argument("--new", type=int, default=256, help="new tokens per sequence")
    p.add_argument("--providers", default="eager,torch.compile,tritonic")
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    p.add_argument("--dry-run", action="store_true")
    p.add_argument("--quick", action="store_true", help="32 new tokens")
    p.add_argument("--graph", help="accepted for scripts/gpu_check.sh and ignored")
    p.add_argument("--sample", action="store_true",
                   help="sampled decoding (temperature 0.7, top-k 50, top-p 0.9) instead of greedy")
    a = p.parse_args(argv)
    device = "cpu" if a.dry_run or not torch.cuda.is_available() else "cuda"
    new = 4 if a.dry_run else (32 if a.quick else a.new)
    providers = [q for q in a.providers.split(",") if device == "cuda" or q != "torch.compile"]
    rows, failed = [], 0
    for name, batch in CASES:
        if a.only and a.only not in name:
            continue
        base = _model(name, device)
        prompt = 8 if a.dry_run else PROMPT
        ids = torch.randint(1, base.config.vocab_size, (batch, prompt), device=device)
        mask = torch.ones_like(ids)
        if batch > 1:
            mask[1:, : prompt // 4] = 0  # left padding on all rows but the first
        kw = dict(input_ids=ids, attention_mask=mask, max_new_tokens=new, min_new_tokens=new, do_sample=False,
                  cache_implementation="static")
        if a.sample:  # (the tokens then differ between providers: their random streams do)
            kw.update(do_sample=True, temperature=0.7, top_k=50, top_p=0.9)
        reference = None
        for provider in providers:
            model = copy.deepcopy(base)
            if provider == "eager":
                model.generation_config.disable_compile = True
            elif provider == "tritonic":
                T.optimize(model)
            case = f"{name} b{batch} {prompt}+{new}"
            print(f"generate: {case} {provider} ...", end=" ", flush=True)
            try:
                ms, out = _time(model, kw, device)
            except Exception as e:
                failed += 1
                print(f"failed: {type(e).__name__}: {str(e)[:200]}")
                continue
            same = None if reference is None or a.sample else bool(torch.equal(out, reference))
            reference = out if reference is None else reference
            tps = batch * new / (ms * 1e-3)
            graphs = getattr(model, "tritonic_graphs", None)
            print(f"{ms:.1f} ms, {tps:.0f} tokens/s" + ("" if same is None else f", tokens equal eager's: {same}")
                  + (f", {dict(graphs.stats)}" if graphs is not None else ""))
            mode = "generate, sampled (t 0.7, top-k 50, top-p 0.9)" if a.sample else "generate"
            rows.append({"bench": "generate", "case": case, "mode": mode, "provider": provider, "ms": ms,
                         "metric": "tokens/s", "value": tps, "same_tokens_as_eager": same,
                         "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
                         "torch": torch.__version__, "commit": _commit(),
                         "date": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())})
            del model
        del base
        if device == "cuda":
            torch.cuda.empty_cache()
    for r in rows:
        base = {q["provider"]: q for q in rows if q["case"] == r["case"]}
        ratios = ", ".join(f"vs {k} {r['value'] / v['value']:.2f}x" for k, v in base.items() if k != r["provider"])
        print(f"{r['case']:<22} {r['provider']:<14} {r['value']:10.0f} tokens/s  {ratios}")
    if rows and not a.dry_run:
        print(f"wrote {len(rows)} rows to {write_json(rows, a.out, 'generate')}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
