"""Training steps of whole Hugging Face causal LMs: tokens/s and peak memory of a full step
(forward with labels, backward, fused AdamW, zero_grad), per provider.

    python benchmarks/training.py [--only gpt2-124m] [--providers eager,tritonic] [--steps 10] [--out DIR]
    python benchmarks/training.py --dry-run       # tiny models on the CPU (interpreter), no GPU

Providers: ``eager`` (HF model, SDPA attention), ``torch.compile`` (the model compiled),
``liger`` (Liger-Kernel's ``apply_liger_kernel_to_llama`` where it supports the model: not
GPT-2), ``tritonic`` (``tritonic.optimize(model, training=True)``: swapped norms and MLPs,
flash attention, the loss without logits) and ``tritonic+graph`` (that model, its whole step
captured by ``tritonic.capture_train_step``: one graph replay per step, no Python per kernel).
``tritonic+compile`` (``optimize``, then ``torch.compile``) can be asked for by name. Parameters, gradients and optimizer state are
bfloat16 for every provider (no autocast), random weights from configs, a random token
stream. Each (case, provider) runs in its own process: Liger patches ``transformers``'
modules globally, and peak memory must not carry over.

``--fsdp`` measures issue 8's FSDP2 scaling instead: ``examples/train.py --dist fsdp`` (the
package's own GPT-2 124M, bf16 autocast, a synthetic stream) under ``torchrun`` on 1 and on
``--gpus`` GPUs with the same global batch (``--fsdp-batch``, sequences of 1024 tokens), one
row per GPU count with the median step time past the first tenth, the last loss and, for more
than one GPU, the scaling and the largest loss difference from one GPU.

    python benchmarks/training.py --fsdp [--gpus 2] [--fsdp-batch 128,64] [--steps 30]
    python benchmarks/training.py --fsdp --dry-run   # gpt2-tiny on 2 CPU processes (gloo)

Cases are issue 8's: GPT-2 124M and 350M at 8 × 1024 tokens, a Llama-style 1B (hidden 2048,
16 layers, 32 / 8 heads, SwiGLU 8192, vocabulary 128256) at 1 × 4096. Writes "training":
``ms`` per step, ``value`` tokens/s, ``peak_gib`` the peak memory allocated during the timed
steps (parameters, gradients and optimizer state included; for ``+graph``, from its warm-up
and capture on, since a replay allocates nothing).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROVIDERS = ("eager", "torch.compile", "liger", "tritonic", "tritonic+graph")
CASES = {"gpt2-124m": (8, 1024), "gpt2-350m": (8, 1024), "llama-1b": (1, 4096)}
SMOKE = {"gpt2-tiny": (2, 16), "llama-tiny": (2, 16)}


def _config(name: str):
    from transformers import GPT2Config, LlamaConfig

    return {
        "gpt2-124m": lambda: GPT2Config(n_positions=1024),
        "gpt2-350m": lambda: GPT2Config(n_embd=1024, n_layer=24, n_head=16, n_positions=1024),
        "llama-1b": lambda: LlamaConfig(vocab_size=128256, hidden_size=2048, num_hidden_layers=16,
                                        num_attention_heads=32, num_key_value_heads=8, intermediate_size=8192,
                                        max_position_embeddings=4096, tie_word_embeddings=True),
        "gpt2-tiny": lambda: GPT2Config(vocab_size=97, n_embd=32, n_layer=1, n_head=2, n_positions=32),
        "llama-tiny": lambda: LlamaConfig(vocab_size=97, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                                          num_key_value_heads=2, intermediate_size=64, max_position_embeddings=32),
    }[name]()


def one(case: str, provider: str, steps: int, device: str) -> dict | None:
    """Time ``steps`` training steps of ``case`` with ``provider`` in this process."""
    import torch
    from transformers import AutoModelForCausalLM

    B, S = {**CASES, **SMOKE}[case]
    torch.manual_seed(0)
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    model = AutoModelForCausalLM.from_config(_config(case), attn_implementation="sdpa").to(device, dtype).train()
    if provider == "liger":
        if not case.startswith("llama"):
            return None  # Liger-Kernel has no GPT-2 support
        try:
            from liger_kernel.transformers import apply_liger_kernel_to_llama
        except Exception:
            return None
        apply_liger_kernel_to_llama(model=model)
    elif provider.startswith("tritonic"):
        import tritonic

        tritonic.optimize(model, training=True)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=device == "cuda")
    step_model = torch.compile(model) if provider.endswith("compile") else model
    vocab = model.config.vocab_size
    batches = [torch.randint(0, vocab, (B, S), device=device) for _ in range(2)]

    def train_step(ids):
        loss = step_model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    graphed = provider.endswith("+graph")
    if graphed:
        import tritonic

        if device == "cuda":  # replays allocate nothing: the peak is the warm-up's and the capture's
            torch.cuda.reset_peak_memory_stats()
        captured = tritonic.capture_train_step(train_step, opt, batches[0])
        step = lambda i: captured(batches[i % 2])  # noqa: E731
    else:
        step = lambda i: train_step(batches[i % 2])  # noqa: E731

    for i in range(3):  # compile, tune, create the optimizer state
        step(i)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    sync()
    if device == "cuda" and not graphed:
        torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    for i in range(steps):
        loss = step(i)
    sync()
    ms = (time.perf_counter() - t) / steps * 1e3
    peak = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else 0.0
    return {"bench": "training", "case": f"{case} {B}x{S}", "mode": "train step", "provider": provider,
            "ms": ms, "metric": "tokens/s", "value": B * S / (ms * 1e-3), "peak_gib": peak,
            "loss": float(loss.detach()), "steps": steps}


def _meta() -> dict:
    import torch
    import triton

    from tritonic.bench.harness import _commit

    return {"device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
            "torch": torch.__version__, "triton": triton.__version__, "commit": _commit(),
            "date": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())}


def fsdp_rows(batches, gpus: int, steps: int, timeout: int, dry_run: bool, env: dict, logs: Path | None,
              train_args: str = "") -> list:
    """Issue 8's FSDP2 scaling: examples/train.py under torchrun on 1 and ``gpus`` processes
    for each global batch; rows as ``one`` makes them (``None`` entries for failed runs)."""
    import statistics

    rows = []
    for batch in batches:
        seq = 16 if dry_run else 1024
        model = "gpt2-tiny" if dry_run else "gpt2-124m"
        case = f"fsdp2 {model} {batch}x{seq} (global)"
        per = {}
        for n in (1, gpus):
            print(f"training: {case} on {n} {'process(es)' if dry_run else 'GPU(s)'} ...", end=" ", flush=True)
            with tempfile.TemporaryDirectory() as tmp:
                out = Path(tmp) / "losses.json"
                cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(n),
                       str(ROOT / "examples" / "train.py"), "--model", model, "--dist", "fsdp", "--steps", str(steps),
                       "--batch", str(batch), "--seq", str(seq), "--losses", str(out), "--quiet"]
                cmd += ["--cpu", "--vocab", "97"] if dry_run else ["--dtype", "bf16"]
                cmd += train_args.split()
                try:
                    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
                except subprocess.TimeoutExpired:
                    print(f"timed out after {timeout} s")
                    rows.append(None)
                    continue
                if logs is not None:
                    logs.mkdir(parents=True, exist_ok=True)
                    tag = "".join(c if c.isalnum() else "_" for c in train_args.strip())
                    (logs / f"training_fsdp_b{batch}_gpus{n}{'_' + tag if tag else ''}.log").write_text(r.stdout + r.stderr)
                if r.returncode != 0 or not out.exists():
                    print("failed: " + ((r.stderr or r.stdout).strip().splitlines() or ["?"])[-1][:300])
                    if logs is None:  # no log file to read it in
                        print(r.stderr[-3000:])
                    rows.append(None)
                    continue
                run = json.loads(out.read_text())
            times = run["step_seconds"][len(run["step_seconds"]) // 10:]
            ms = statistics.median(times) * 1e3
            per[n] = run["losses"]
            row = {"bench": "training", "case": case, "mode": " ".join(["fsdp2 train step", *train_args.split()]),
                   "provider": f"{n} GPU" +
                   ("s" if n > 1 else ""), "ms": ms, "metric": "tokens/s", "value": batch * seq / (ms * 1e-3),
                   "loss": run["losses"][-1], "steps": steps}
            if n > 1 and 1 in per:
                one = next(x for x in rows if x is not None and x["case"] == case and x["provider"] == "1 GPU")
                row["scaling"] = row["value"] / one["value"]
                row["max_loss_diff"] = max(abs(a - b) for a, b in zip(per[1], per[n]))
                row["final_loss_diff"] = abs(per[1][-1] - per[n][-1])
            rows.append(row)
            extra = (f", {row['scaling']:.2f}x one, losses within {row['max_loss_diff']:.1e}, "
                     f"final losses {row['final_loss_diff']:.1e} apart") if "scaling" in row else ""
            print(f"{ms:.1f} ms/step, {row['value']:.0f} tokens/s{extra}")
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", help="comma-separated case names")
    p.add_argument("--providers", default=",".join(PROVIDERS))
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    p.add_argument("--timeout", type=int, default=300, help="seconds for one (case, provider) process")
    p.add_argument("--dry-run", action="store_true")
    p.add_argument("--quick", action="store_true", help="3 timed steps")
    p.add_argument("--graph", help="accepted for scripts/gpu_check.sh and ignored: steps are timed as a user runs them")
    p.add_argument("--fsdp", action="store_true", help="FSDP2 scaling (examples/train.py under torchrun) instead")
    p.add_argument("--gpus", type=int, default=2, help="with --fsdp: the GPU count compared with one")
    p.add_argument("--fsdp-batch", default="128,64", help="with --fsdp: global batches, in sequences")
    p.add_argument("--train-args", default="", help="with --fsdp: more arguments for examples/train.py "
                   "(e.g. '--fsdp-keep-gathered --fsdp-unit 2'); they become part of the rows' mode")
    p.add_argument("--one", nargs=3, metavar=("CASE", "PROVIDER", "JSON"), help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.quick:
        a.steps = 3
    if a.one:  # child process: one (case, provider)
        case, provider, path = a.one
        row = one(case, provider, a.steps, "cpu" if a.dry_run else "cuda")
        Path(path).write_text(json.dumps(row))
        return 0
    if a.fsdp:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]))
        if a.dry_run:
            env.update(TRITON_INTERPRET="1", OMP_NUM_THREADS="1")
        for var in ("NCCL_NVLS_ENABLE", "TORCH_SYMM_MEM_DISABLE_MULTICAST", "NVSHMEM_DISABLE_NVLS"):
            env.setdefault(var, "0" if var == "NCCL_NVLS_ENABLE" else "1")  # no NVLink multicast (shared hosts)
        batches = [int(b) for b in a.fsdp_batch.split(",")]
        logs = None if a.dry_run else Path(a.out) / "logs"
        got = fsdp_rows(batches, a.gpus, a.steps, a.timeout, a.dry_run, env, logs, a.train_args)
        rows = [{**r, **_meta()} for r in got if r is not None]
        if rows and not a.dry_run:
            from tritonic.bench.harness import write_json

            print(f"wrote {len(rows)} rows to {write_json(rows, a.out, 'fsdp')}")
        return 1 if None in got or not rows else 0
    cases = SMOKE if a.dry_run else CASES
    names = [c.strip() for c in a.only.split(",")] if a.only else list(cases)
    providers = [q.strip() for q in a.providers.split(",")]
    if a.dry_run:
        providers = [q for q in providers if q in ("eager", "tritonic")]  # compile and Liger want a GPU
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]))
    if a.dry_run:
        env["TRITON_INTERPRET"] = "1"
    rows, failed = [], 0
    total = len(names) * len(providers)
    for i, (case, provider) in enumerate([(c, q) for c in names for q in providers], 1):
        print(f"[{i}/{total}] training: {case} {provider} ...", end=" ", flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "row.json"
            cmd = [sys.executable, __file__, "--one", case, provider, str(out), "--steps", str(a.steps)]
            cmd += ["--dry-run"] if a.dry_run else []
            try:
                r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=a.timeout)
            except subprocess.TimeoutExpired:
                print(f"timed out after {a.timeout} s")
                failed += 1
                continue
            row = json.loads(out.read_text()) if r.returncode == 0 and out.exists() else None
        if not a.dry_run:  # each child's own output (warnings, recompiles, tuning) kept beside the JSON
            logs = Path(a.out) / "logs"
            logs.mkdir(parents=True, exist_ok=True)
            (logs / f"training_{case}_{provider}.log").write_text(r.stdout + r.stderr)
        if r.returncode != 0:
            failed += 1
            print("failed: " + (r.stderr.strip().splitlines() or ["?"])[-1][:300])
            continue
        if row is None:
            print("not supported")
            continue
        rows.append({**row, **_meta()})
        print(f"{row['ms']:.1f} ms/step, {row['value']:.0f} tokens/s, peak {row['peak_gib']:.2f} GiB")
    print()
    print(f"{'case':<18} {'provider':<14} {'ms/step':>9} {'tokens/s':>10} {'peak GiB':>9}  vs eager  vs compile  vs liger")
    for row in rows:
        base = {r["provider"]: r for r in rows if r["case"] == row["case"]}
        ratio = lambda k: f"{row['value'] / base[k]['value']:.2f}x" if k in base else "-"  # noqa: E731
        print(f"{row['case']:<18} {row['provider']:<14} {row['ms']:9.1f} {row['value']:10.0f} {row['peak_gib']:9.2f}"
              f"  {ratio('eager'):>8}  {ratio('torch.compile'):>10}  {ratio('liger'):>8}")
    if rows and not a.dry_run:
        from tritonic.bench.harness import write_json

        print(f"wrote {len(rows)} rows to {write_json(rows, a.out, 'training')}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
