"""A small benchmark harness: providers timed side by side on the same cases.

A :class:`Benchmark` names its cases, its modes, how many bytes (and optionally FLOPs)
one call moves, and its providers. A provider is a *factory*::

    factory(case: dict, mode: str, n_sets: int) -> list[Callable[[], object]] | None

``case`` is one of the benchmark's case dicts (an optional ``"modes"`` key limits the
modes it is timed in) with ``"device"`` added by the harness
(``"cuda"``, or ``"cpu"`` for ``--dry-run``). The factory allocates ``n_sets``
independent random input sets and returns one zero-argument callable per set (a single
callable is accepted as one set). A callable does the work of one call:

- ``"fwd"``: the forward;
- ``"bwd"``: only the backward of a forward the factory already ran, as
  ``torch.autograd.grad(y, inputs, dy, retain_graph=True)`` (nothing accumulates into ``.grad``);
- ``"fwd+bwd"``: the forward, then ``torch.autograd.grad``.

A factory returns None when its provider does not apply (not installed, case unsupported).

How one (case, mode, provider) is timed, all on one side stream (the factory runs there
too, so a "bwd" callable's backward kernels land on the stream that gets captured):

1. the callables run ``WARMUP_CALLS`` times (torch.compile and Triton compile here);
2. if one call moves fewer than ``GRAPH_BYTES`` (or always, with ``--graph always``), all
   callables are captured one after the other in one CUDA graph and its replay is timed;
   if capture raises, or a callable is marked ``no_graph = True`` (it syncs with the host),
   the plain sequence is timed and the row records ``"graph": false``.
   Without a graph, a provider whose host overhead exceeds its GPU time is timed by the
   host: ``--graph always`` shows GPU time alone;
3. ``triton.testing.do_bench(..., return_mode="median")`` times it (do_bench flushes L2
   between repetitions) and the time is divided by the number of input sets.

Input sets rotate so that calls inside one replay do not find their inputs in L2:
``n_sets = clamp(ceil(4 * L2 / bytes_per_call), 1, MAX_SETS)``.

A provider that raises gets a one-line warning and no row; the run goes on.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import functools
import gc
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import triton
import triton.testing

from tritonic.runtime import device_name, gpu_slug
from tritonic.runtime.cudagraph import recover_from_failed_capture

__all__ = ["MODES", "Benchmark", "run", "measure", "host_us", "format_table", "write_json", "main"]

MODES = ("fwd", "bwd", "fwd+bwd")
GRAPH_BYTES = 64 * 2**20  # calls moving fewer bytes than this are timed as CUDA-graph replays
DEFAULT_L2_BYTES = 50 * 2**20  # an H100's L2, used when torch cannot tell
MAX_SETS = 16  # most input sets rotated through
WARMUP_CALLS = 3  # untimed runs of every callable before capture/timing
DEFAULT_OUT = "benchmarks/results"


@dataclass
class Benchmark:
    """What to time.

    ``bytes(case, mode)`` is the memory one call moves: it gives GB/s, and decides CUDA
    graphs and input rotation. With ``flops(case, mode)`` the metric is TFLOP/s instead.
    Speedups in the table are ``baseline ms / subject ms`` for each of ``baselines``.
    """

    name: str
    cases: list[dict]
    providers: dict[str, Callable]
    bytes: Callable[[dict, str], float]
    flops: Callable[[dict, str], float] | None = None
    modes: tuple[str, ...] = ("fwd",)
    baselines: tuple[str, ...] = ("eager", "torch.compile")
    subject: str = "tritonic"
    smoke_cases: list[dict] = field(default_factory=list)  # tiny cases for --dry-run on CPU

    @property
    def metric(self) -> str:
        return "GB/s" if self.flops is None else "TFLOP/s"

    def value(self, case: dict, mode: str, ms: float) -> float:
        """The metric of one call of ``case`` in ``mode`` taking ``ms`` milliseconds."""
        if self.flops is None:
            return self.bytes(case, mode) / (ms * 1e-3) / 1e9
        return self.flops(case, mode) / (ms * 1e-3) / 1e12


# ----------------------------------------------------------------------------- timing


@functools.lru_cache(maxsize=None)
def l2_bytes() -> int:
    if torch.cuda.is_available():
        return getattr(torch.cuda.get_device_properties(0), "L2_cache_size", 0) or DEFAULT_L2_BYTES
    return DEFAULT_L2_BYTES


def n_sets_for(bytes_per_call: float) -> int:
    """How many input sets to rotate so that they do not all fit in L2."""
    return max(1, min(MAX_SETS, math.ceil(4 * l2_bytes() / max(bytes_per_call, 1))))


def _sequence(fns):
    def run_all():
        for f in fns:
            f()
    return run_all


def measure(fns, *, use_graph: bool, warmup: int = 25, rep: int = 100) -> tuple[float, bool]:
    """Median milliseconds per callable of ``fns`` on the GPU, and whether a graph was timed.

    Run it on a side stream (``with torch.cuda.stream(s)``): capture happens on the
    current stream, and the legacy default stream cannot be captured.
    """
    run_all = _sequence(fns)
    for _ in range(WARMUP_CALLS):
        run_all()
    torch.cuda.synchronize()
    fn, graph = run_all, False
    if use_graph and any(getattr(f, "no_graph", False) for f in fns):
        use_graph = False  # known not to be capturable (it syncs): a failed capture can poison the process
    if use_graph:
        try:
            g = torch.cuda.CUDAGraph()
            with torch.cuda.graph(g, stream=torch.cuda.current_stream()):
                run_all()
            fn, graph = g.replay, True
        except Exception as e:  # some code cannot be captured: time it without a graph
            _warn(f"CUDA graph capture failed ({_oneline(e)}); timing without a graph")
            recover_from_failed_capture()
    ms = triton.testing.do_bench(fn, warmup=warmup, rep=rep, return_mode="median")
    return ms / len(fns), graph


def host_us(fn, n: int = 500, trials: int = 7) -> float:
    """Host (wall-clock) microseconds per call of ``fn`` over a loop of ``n`` calls, the best
    of ``trials`` (the host is shared: single trials swing by 2-3x). Keep ``fn``'s GPU work
    tiny so that the host, not the GPU, is what this measures."""
    for _ in range(50):
        fn()
    torch.cuda.synchronize()
    best = float("inf")
    for _ in range(trials):
        t = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, time.perf_counter() - t)
        torch.cuda.synchronize()
    return best / n * 1e6


def _measure_cpu(fns, reps: int = 5) -> tuple[float, bool]:
    """--dry-run timing: median of ``reps`` wall-clock runs (exercises the code paths only)."""
    run_all = _sequence(fns)
    run_all()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        run_all()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3 / len(fns), False


# ----------------------------------------------------------------------------- running


def _warn(msg: str) -> None:
    print(f"\nwarning: {msg}", file=sys.stderr, flush=True)


def _oneline(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"[:300]


def _commit() -> str:
    """The checkout's commit, with "+dirty" when tracked files differ from it (a copied tree
    can carry an older .git than its files: set TRITONIC_COMMIT then), or TRITONIC_COMMIT."""
    if os.environ.get("TRITONIC_COMMIT"):
        return os.environ["TRITONIC_COMMIT"]
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=10)
        if out.returncode != 0 or not out.stdout.strip():
            return "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, timeout=10)
        return out.stdout.strip() + ("+dirty" if dirty.returncode == 0 and dirty.stdout.strip() else "")
    except Exception:
        return "unknown"


def run(bench: Benchmark, *, modes=None, providers=None, only=None, quick=False,
        dry_run=False, graph="auto") -> tuple[list[dict], list[tuple]]:
    """Time every (case, mode, provider); return (rows, failures).

    ``graph``: "auto" times CUDA-graph replays for calls moving fewer than GRAPH_BYTES,
    "always" / "never" for every call. ``failures`` lists ``(case name, mode, provider)``
    of providers that raised."""
    modes = list(modes or bench.modes)
    if set(modes) - set(MODES) or graph not in ("auto", "always", "never"):
        raise ValueError(f"modes must come from {MODES} and graph from auto/always/never; "
                         f"got {modes}, {graph!r}")
    names = [p for p in bench.providers if providers is None or p in providers]
    cases = [c for c in (bench.smoke_cases if dry_run else bench.cases)
             if only is None or any(o in c["name"] for o in only.split("|"))]
    if not dry_run and not torch.cuda.is_available():
        raise SystemExit(f"{bench.name}: no CUDA GPU here; --dry-run runs a CPU smoke test")
    warmup, rep = (10, 40) if quick else (25, 100)
    device = "cpu" if dry_run else "cuda"
    stream = None if dry_run else torch.cuda.Stream()
    common = {"device": device_name(), "torch": torch.__version__,
              "triton": triton.__version__, "commit": _commit()}
    # a case may list the modes it has ("modes"): e.g. a forward-only inference shape
    jobs = [(c, m, p) for c in cases for m in modes if m in c.get("modes", MODES) for p in names]
    rows, failures = [], []
    for i, (case, mode, prov) in enumerate(jobs, 1):
        print(f"[{i}/{len(jobs)}] {bench.name}: {case['name']} {mode} {prov} ...",
              end="", file=sys.stderr, flush=True)
        nbytes = bench.bytes(case, mode)
        fns = None
        try:
            with torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext():
                n_sets = min(2, n_sets_for(nbytes)) if dry_run else n_sets_for(nbytes)
                fns = bench.providers[prov]({**case, "device": device}, mode, n_sets)
                if fns is None:
                    print(" n/a", file=sys.stderr, flush=True)
                    continue
                fns = [fns] if callable(fns) else list(fns)
                if dry_run:
                    ms, graphed = _measure_cpu(fns)
                else:
                    use_graph = graph == "always" or (graph == "auto" and nbytes < GRAPH_BYTES)
                    ms, graphed = measure(fns, use_graph=use_graph, warmup=warmup, rep=rep)
        except Exception as e:
            _warn(f"{prov} failed on {case['name']!r} {mode}: {_oneline(e)}")
            failures.append((case["name"], mode, prov))
            continue
        finally:
            del fns
            gc.collect()
            if stream is not None:
                with contextlib.suppress(Exception):
                    torch.cuda.synchronize()
                    torch.cuda.empty_cache()
        print(f" {ms:.4f} ms{' (graph)' if graphed else ''}", file=sys.stderr, flush=True)
        rows.append({
            "bench": bench.name, "case": case["name"], "mode": mode, "provider": prov,
            "ms": ms, "metric": bench.metric, "value": bench.value(case, mode, ms), **common,
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "graph": graphed,
        })
    return rows, failures


# ----------------------------------------------------------------------------- output


def format_table(bench: Benchmark, rows: list[dict], markdown: bool = False) -> str:
    """One line per (case, mode): each provider's ms, the subject's speedup against each
    baseline (``baseline ms / subject ms``) and the subject's metric; aligned text, or a
    Markdown table for the README with ``markdown=True``."""
    provs = [p for p in bench.providers if any(r["provider"] == p for r in rows)]
    provs += sorted({r["provider"] for r in rows} - set(provs))
    baselines = [b for b in bench.baselines if b in provs]
    by = {(r["case"], r["mode"], r["provider"]): r for r in rows}
    keys = list(dict.fromkeys((r["case"], r["mode"]) for r in rows))
    table = [["case", "mode", *(f"{p} ms" for p in provs), *(f"vs {b}" for b in baselines),
              f"{bench.subject} {bench.metric}"]]
    for case, mode in keys:
        sub = by.get((case, mode, bench.subject))
        line = [case, mode]
        line += [f"{by[case, mode, p]['ms']:.4f}" if (case, mode, p) in by else "-" for p in provs]
        for b in baselines:
            base = by.get((case, mode, b))
            line.append(f"{base['ms'] / sub['ms']:.2f}x" if base and sub else "-")
        line.append(f"{sub['value']:.1f}" if sub else "-")
        table.append(line)
    if markdown:
        head = "| " + " | ".join(table[0]) + " |\n|" + "|".join("---" if j < 2 else "---:" for j in
                                                              range(len(table[0]))) + "|"
        return "\n".join([head] + ["| " + " | ".join(r) + " |" for r in table[1:]])
    widths = [max(len(r[j]) for r in table) for j in range(len(table[0]))]
    return "\n".join(
        "  ".join(c.ljust(w) if j < 2 else c.rjust(w) for j, (c, w) in enumerate(zip(r, widths)))
        for r in table)


def write_json(rows: list[dict], out_dir, name: str, slug: str | None = None) -> Path:
    """Write ``<out_dir>/<gpu slug>/<name>.json``. Rows already there for other
    (bench, case, mode, provider) keys are kept, so a ``--only`` run updates in place."""
    path = Path(out_dir) / (slug or gpu_slug()) / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    key = lambda r: (r.get("bench"), r.get("case"), r.get("mode"), r.get("provider"))  # noqa: E731
    old = []
    if path.exists():
        try:
            old = [r for r in json.loads(path.read_text()) if isinstance(r, dict)]
        except ValueError:
            _warn(f"{path} is not valid JSON; overwriting it")
    new = {key(r): r for r in rows}
    merged = [new.pop(key(r), r) for r in old] + list(new.values())  # keep the file's order
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(merged, indent=1) + "\n")
    tmp.replace(path)
    return path


def _split(text):
    return [t.strip() for t in text.split(",") if t.strip()] if text else None


def main(bench: Benchmark, argv=None) -> int:
    """Command line for one benchmark script; returns the exit status (non-zero when the
    subject provider failed anywhere or nothing was measured)."""
    p = argparse.ArgumentParser(description=f"Benchmark {bench.name}: {', '.join(bench.providers)}")
    p.add_argument("--out", help=f"results folder (default {DEFAULT_OUT}; a temp folder with --dry-run)")
    p.add_argument("--only", help="run only the cases whose name contains this (or one of a|b|...)")
    p.add_argument("--modes", help=f"comma-separated, from {','.join(bench.modes)}")
    p.add_argument("--providers", help=f"comma-separated, from {','.join(bench.providers)}")
    p.add_argument("--quick", action="store_true", help="shorter timing (fewer repetitions)")
    p.add_argument("--graph", choices=("auto", "always", "never"), default="auto",
                   help="time CUDA-graph replays: for small calls only (auto, the default), "
                        "for all (always: GPU time without host overhead), or never")
    p.add_argument("--dry-run", action="store_true",
                   help="CPU smoke run: tiny cases, wall-clock timing, no GPU needed")
    args = p.parse_args(argv)
    modes, providers = _split(args.modes), _split(args.providers)
    if modes and set(modes) - set(MODES):
        p.error(f"--modes: unknown {sorted(set(modes) - set(MODES))}; choose from {MODES}")
    if providers and set(providers) - set(bench.providers):
        p.error(f"--providers: unknown {sorted(set(providers) - set(bench.providers))}")
    out = args.out or (str(Path(tempfile.gettempdir()) / "tritonic-dry-run") if args.dry_run
                       else DEFAULT_OUT)
    rows, failures = run(bench, modes=modes, providers=providers, only=args.only,
                         quick=args.quick, dry_run=args.dry_run, graph=args.graph)
    print(f"\n{bench.name} on {device_name()}: speedup = baseline ms / {bench.subject} ms")
    print(format_table(bench, rows))
    if rows:
        print(f"wrote {len(rows)} rows to {write_json(rows, out, bench.name)}")
    if failures:
        print(f"{len(failures)} provider run(s) failed: "
              + "; ".join(f"{p} {c} {m}" for c, m, p in failures))
    return 1 if not rows or any(p == bench.subject for _, _, p in failures) else 0
