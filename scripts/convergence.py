"""Issue 8's convergence check: GPT-2 124M, 300 steps, bf16, tritonic against its PyTorch twin
from the same initialisation, on real text.

The corpus is the Python standard library's own ``.py`` files (sorted paths, concatenated, cut
at ``--mb`` megabytes): text that every machine with Python has, byte tokens (vocabulary 256).
Real text gives a smooth loss curve; the synthetic stream of ``examples/train.py`` escapes a
plateau at a step that bf16 noise moves by 100+ steps, so its final losses say little.

    python scripts/convergence.py --out DIR [--seeds 0,1] [--steps 300] [--extra "--cuda-graph"]

Writes ``DIR/convergence.json`` (each run's losses and step times, and per seed the final loss
and the mean of the last 20 steps of each backend with their relative difference) and
``DIR/convergence.png``. ``--dry-run`` runs a tiny model on the CPU (interpreter) for tests.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TAIL = 20  # steps averaged for "where the run ended"


def make_corpus(path: Path, megabytes: float) -> int:
    """The standard library's .py files in sorted order, cut at ``megabytes``; returns its size."""
    limit = int(megabytes * 2**20)
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    out = bytearray()
    for f in sorted(stdlib.rglob("*.py")):
        if "site-packages" in f.parts:
            continue
        try:
            out += f.read_bytes()
        except OSError:
            continue
        if len(out) >= limit:
            break
    path.write_bytes(bytes(out[:limit]))
    return min(len(out), limit)


def summarise(runs: dict, seeds: list[int]) -> dict:
    """Per seed: final losses, means of the last TAIL steps, and their relative differences."""
    out = {}
    for s in seeds:
        a, b = runs.get(f"tritonic_s{s}"), runs.get(f"torch_s{s}")
        if not a or not b:
            continue
        la, lb = a["losses"], b["losses"]
        ta, tb = sum(la[-TAIL:]) / len(la[-TAIL:]), sum(lb[-TAIL:]) / len(lb[-TAIL:])
        out[f"seed {s}"] = {"tritonic_final": la[-1], "torch_final": lb[-1],
                            "final_rel_diff": abs(la[-1] - lb[-1]) / abs(lb[-1]),
                            f"tritonic_last{TAIL}": ta, f"torch_last{TAIL}": tb,
                            f"last{TAIL}_rel_diff": abs(ta - tb) / abs(tb)}
    return out


def plot(runs: dict, path: Path, title: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib missing: no plot")
        return
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, run in sorted(runs.items()):
        ax.plot(run["losses"], label=name, lw=1, ls="-" if name.startswith("tritonic") else "--")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title, fontsize=9)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--mb", type=float, default=16.0, help="corpus size in MiB")
    p.add_argument("--extra", default="--cuda-graph", help="more examples/train.py arguments")
    p.add_argument("--timeout", type=int, default=240, help="seconds per run")
    p.add_argument("--dry-run", action="store_true", help="tiny model on the CPU")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    corpus = out / "corpus.txt"
    size = make_corpus(corpus, 0.05 if args.dry_run else args.mb)
    seeds = [int(s) for s in args.seeds.split(",")]
    runs = {}
    for s in seeds:
        for backend in ("tritonic", "torch"):
            losses = out / f"{backend}_s{s}.json"
            cmd = [sys.executable, str(ROOT / "examples" / "train.py"), "--backend", backend, "--data", str(corpus),
                   "--steps", str(args.steps), "--seed", str(s), "--losses", str(losses), "--quiet"]
            if args.dry_run:
                cmd += ["--model", "gpt2-tiny", "--cpu", "--batch", "2", "--seq", "16"]
            else:
                cmd += ["--model", "gpt2-124m", "--dtype", "bf16", "--batch", "16", "--seq", "512", "--lr", "1e-3",
                        *args.extra.split()]
            print(f"convergence: {backend} seed {s} ...", end=" ", flush=True)
            try:
                r = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
            except subprocess.TimeoutExpired:
                print(f"timed out after {args.timeout} s")
                continue
            (out / f"{backend}_s{s}.log").write_text(r.stdout + r.stderr)
            if r.returncode != 0 or not losses.exists():
                print("failed: " + ((r.stderr or r.stdout).strip().splitlines() or ["?"])[-1][:300])
                continue
            run = json.loads(losses.read_text())
            runs[f"{backend}_s{s}"] = {"losses": run["losses"], "step_seconds": run.get("step_seconds")}
            print(f"final loss {run['losses'][-1]:.4f}")
    summary = summarise(runs, seeds)
    for seed, row in summary.items():
        print(f"{seed}: tritonic {row['tritonic_final']:.4f} torch {row['torch_final']:.4f} "
              f"({100 * row['final_rel_diff']:.2f} % apart); mean of the last {TAIL} steps "
              f"{row[f'tritonic_last{TAIL}']:.4f} / {row[f'torch_last{TAIL}']:.4f} "
              f"({100 * row[f'last{TAIL}_rel_diff']:.2f} % apart)")
    meta = {"corpus": f"Python {sys.version.split()[0]} standard library .py files, sorted, first {size} bytes",
            "steps": args.steps, "extra": args.extra}
    try:
        import torch

        meta.update(torch=torch.__version__,
                    device=torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu")
    except ImportError:
        pass
    (out / "convergence.json").write_text(json.dumps({"meta": meta, "summary": summary, "runs": runs}, indent=1))
    corpus.unlink()
    plot(runs, out / "convergence.png", f"GPT-2 124M, bf16, batch 16 x 512, {meta['corpus'][:60]}")
    return 0 if len(summary) == len(seeds) else 1


if __name__ == "__main__":
    sys.exit(main())
