"""Where a training step's GPU time goes, per provider (issue 8): the kernels of one full
step (forward with labels, backward, fused AdamW), grouped by name, with wall time per step.

    PYTHONPATH=src python scripts/profile_training.py --case gpt2-124m --providers eager,tritonic [--out DIR]

Providers: eager, torch.compile, tritonic, tritonic+graph (the step captured by
``tritonic.capture_train_step``; the profiler sees the kernels of its replays). Each runs
in this process one after the other (no Liger here: it patches transformers globally).
Prints the step's wall time, the sum of kernel times, the kernel count and the top groups;
``--ops`` adds the aten operators by device time with their input shapes (which ``cat`` or
copy costs what; not for graph replays); ``--out`` writes the same as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "scripts"))

import torch  # noqa: E402


def host(step, top: int) -> None:
    """The host side of 3 steps: operators and CUDA runtime calls by self CPU time."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(3):
            step()
        torch.cuda.synchronize()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=top, max_name_column_width=60))


def ops(step, top: int) -> None:
    """The operators that launched the step's kernels, by self device time, per input shape."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA], record_shapes=True) as prof:
        step()
        torch.cuda.synchronize()
    print(prof.key_averages(group_by_input_shape=True).table(
        sort_by="self_device_time_total", row_limit=top, max_name_column_width=40, max_shapes_column_width=70))


def timeline(step, path: Path) -> None:
    """One step's kernels in launch order as JSON rows [name, start µs, duration µs]: the gaps
    between them, and whether one starts before the previous ends (programmatic launch)."""
    from torch.profiler import ProfilerActivity, profile

    step()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        step()
        torch.cuda.synchronize()
    rows = sorted((e.name[:80], e.time_range.start, e.time_range.end - e.time_range.start) for e in prof.events()
                  if e.device_type.name == "CUDA" and e.device_time_total > 0)
    rows.sort(key=lambda r: r[1])
    t0 = rows[0][1] if rows else 0
    path.write_text(json.dumps([[n, s - t0, d] for n, s, d in rows]))
    span = (rows[-1][1] + rows[-1][2] - t0) / 1e3 if rows else 0.0
    busy = sum(d for _, _, d in rows) / 1e3
    overlap = sum(max(0.0, rows[i - 1][1] + rows[i - 1][2] - rows[i][1]) for i in range(1, len(rows))) / 1e3
    print(f"timeline: first kernel start to last end {span:.2f} ms, kernel time {busy:.2f} ms, "
          f"overlap with the previous kernel {overlap:.2f} ms -> {path}")


def main() -> int:
    import training as T  # benchmarks/training.py
    from profile_models import kernels, wall_ms
    from transformers import AutoModelForCausalLM

    p = argparse.ArgumentParser()
    p.add_argument("--case", default="gpt2-124m")
    p.add_argument("--providers", default="eager,tritonic")
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--out")
    p.add_argument("--ops", action="store_true", help="also the aten operators by device time, with shapes")
    p.add_argument("--cpu", action="store_true", help="also the host side: top operators by self CPU time")
    p.add_argument("--no-check", action="store_true",
                   help="the loss's target check (one host sync per step) turned off, to see what it costs")
    p.add_argument("--cprofile", action="store_true", help="also the Python side: cProfile of 3 steps")
    a = p.parse_args()
    B, S = T.CASES[a.case]
    result = {}
    for provider in a.providers.split(","):
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(T._config(a.case), attn_implementation="sdpa")
        model = model.to("cuda", torch.bfloat16).train()
        if provider.startswith("tritonic"):
            import tritonic

            tritonic.optimize(model, training=True)
            print(model.tritonic_report)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)
        ids = torch.randint(0, model.config.vocab_size, (B, S), device="cuda")
        step_model = torch.compile(model) if provider == "torch.compile" else model

        def train_step(ids):
            loss = step_model(input_ids=ids, labels=ids).loss
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            return loss

        if provider.endswith("+graph"):
            captured = tritonic.capture_train_step(train_step, opt, ids)
            step = lambda: captured(ids)  # noqa: E731
        else:
            step = lambda: train_step(ids)  # noqa: E731

        if a.no_check:
            import tritonic.ops.loss as loss_mod

            loss_mod._check_targets = lambda *args: None
        ms = wall_ms(step, iters=5)
        enqueue = []
        for _ in range(6):  # host time to enqueue a step (all of it, when nothing in the step syncs)
            t = time.perf_counter()
            step()
            enqueue.append((time.perf_counter() - t) * 1e3)
        torch.cuda.synchronize()
        print(f"host time per step call: {sorted(enqueue)[len(enqueue) // 2]:.1f} ms (median of 6)")
        per = kernels(step, iters=3)
        total = sum(t for t, _ in per.values())
        count = sum(n for _, n in per.values())
        print(f"\n== {a.case} {B}x{S} {provider}: {ms:.1f} ms/step wall, {total / 1e3:.1f} ms kernels, "
              f"{count:.0f} kernels")
        for name, (t, n) in sorted(per.items(), key=lambda kv: -kv[1][0])[:a.top]:
            print(f"  {t / 1e3:8.2f} ms {t / total:6.1%} {n:6.0f}x  {name}")
        if a.out:
            Path(a.out).mkdir(parents=True, exist_ok=True)
            timeline(step, Path(a.out) / f"timeline_{a.case}_{provider}.json")
        if a.ops and not provider.endswith("+graph"):
            ops(step, a.top)
        if a.cpu:
            host(step, a.top)
        if a.cprofile:
            import cProfile
            import pstats

            prof = cProfile.Profile()
            prof.runcall(lambda: [step() for _ in range(3)] and torch.cuda.synchronize())
            pstats.Stats(prof).sort_stats("tottime").print_stats(a.top)
            pstats.Stats(prof).sort_stats("cumulative").print_stats(a.top)
        result[provider] = {"ms": ms, "kernel_ms": total / 1e3, "kernels": count,
                            "groups": {k: {"us": t, "count": n} for k, (t, n) in per.items()}}
        model = opt = step_model = step = train_step = None  # free the model before the next provider
        torch.cuda.empty_cache()
    if a.out:
        Path(a.out).mkdir(parents=True, exist_ok=True)
        (Path(a.out) / f"profile_training_{a.case}.json").write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
