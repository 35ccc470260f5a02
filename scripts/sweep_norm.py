"""Sweep the norm kernels' launch parameters on a GPU, to choose the defaults in ops/norm.py.

    PYTHONPATH=src python scripts/sweep_norm.py --out OUTDIR

For each benchmark shape (bfloat16) and each of LayerNorm / RMSNorm it times the forward
over (BLOCK_M, num_warps) and the backward over (BLOCK_M, num_warps, programs per SM),
and prints the best few with their bandwidth. Inputs are rotated so that L2 does not
serve them. This is a development tool; the persistent autotuner will replace it.

    PYTHONPATH=src python scripts/sweep_norm.py --model [--shapes 128x768,1024x768,8192x768]

``--model``: the forward as a model's inference meets it, which the benchmark shapes do not:
float16, a residual added inside the kernel (BERT's post-norm writes only the normalised sum,
GPT-2's pre-norm also the sum), inputs hot in L2 (just written by the previous GEMM), no
autograd; against ``torch.compile`` of ``layer_norm(x + r)``, the fused kernel that
reduce-overhead runs there. Launch shapes with 1-2 warps are tried too (small rows).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os

import torch
import triton

from tritonic.bench.harness import measure
from tritonic.ops import norm as norm_ops

SHAPES = [(4096, 768), (16384, 4096), (8192, 8192), (4096, 16384)]
# Forward cache hints tried: (one-pass loads' eviction policy, streaming store of Y).
HINTS = [("", False), ("", True), ("evict_first", False), ("evict_first", True)]


def _sets(M, N, n):
    return [dict(x=torch.randn(M, N, device="cuda", dtype=torch.bfloat16),
                 dy=torch.randn(M, N, device="cuda", dtype=torch.bfloat16)) for _ in range(n)]


def _graphed(fns):
    """Per-call GPU time of CUDA-graph replays of ``fns`` (one callable per input set), on a
    side stream as the harness wants, so host launch costs stay out of the numbers."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        return measure(fns, use_graph=True, warmup=10, rep=60)[0]


def time_fwd(which, sets, w, b):
    def one(s):
        @torch.no_grad()  # inference, as the benchmark's fwd mode: no statistics saved
        def run():
            if which == "layer":
                norm_ops.layer_norm(s["x"], w, b)
            else:
                norm_ops.rms_norm(s["x"], w)
        return run
    return _graphed([one(s) for s in sets])


def time_compiled(which, sets, w, b):
    """torch.compile's forward at the same shape, timed the same way (the baseline)."""
    N = sets[0]["x"].shape[-1]
    if which == "layer":
        f = torch.compile(lambda x: torch.nn.functional.layer_norm(x, (N,), w, b), dynamic=False)
    else:
        f = torch.compile(lambda x: torch.nn.functional.rms_norm(x, (N,), w, 1e-6), dynamic=False)

    def one(s):
        @torch.no_grad()
        def run():
            f(s["x"])
        return run
    fns = [one(s) for s in sets]
    for fn in fns:
        fn()
    return _graphed(fns)


def time_bwd(which, sets, w, b):
    def one(s):
        x = s["x"].detach().requires_grad_(True)
        y = norm_ops.layer_norm(x, w, b) if which == "layer" else norm_ops.rms_norm(x, w)
        inputs = [x, w] + ([b] if which == "layer" else [])
        return lambda: torch.autograd.grad(y, inputs, s["dy"], retain_graph=True)
    return _graphed([one(s) for s in sets])


def model_regime(shapes, top):
    """--model: LayerNorm forward with a residual, float16, hot in L2, graph-timed."""
    results = []
    orig = norm_ops._fwd_config
    for M, N in shapes:
        x, r = (torch.randn(M, N, device="cuda", dtype=torch.float16) for _ in range(2))
        w, b = (torch.randn(N, device="cuda", dtype=torch.float16) for _ in range(2))
        block_n = triton.next_power_of_2(N)
        nbytes = {False: 3 * M * N * 2, True: 4 * M * N * 2}  # x and r read, y (and the sum) written
        compiled = torch.compile(lambda x, r: torch.nn.functional.layer_norm(x + r, (N,), w, b), dynamic=False)
        reps = 20  # calls per timed graph: a lone 2-us kernel would time the replay's own overhead

        def compiled_calls():
            with torch.no_grad():
                for _ in range(reps):
                    compiled(x, r)
        compiled_calls()
        c_us = _graphed([compiled_calls]) * 1e3 / reps
        for keep_sum in (False, True):
            def run():
                with torch.no_grad():
                    for _ in range(reps):
                        norm_ops.layer_norm(x, w, b, residual=r, return_sum=keep_sum)
            default_us = _graphed([run]) * 1e3 / reps
            rows = []
            for bm in (1, 2, 4, 8, 16):
                for warps in (1, 2, 4, 8):
                    if bm * block_n > 32768 or not 2 <= bm * block_n // (32 * warps) <= 64:
                        continue
                    cfg = (True, bm, block_n, warps, "", False)
                    norm_ops._fwd_config = lambda n, o=None, c=cfg: c
                    norm_ops._fwd_launch.cache_clear()  # (the launch cache holds the config it was built with)
                    try:
                        us = _graphed([run]) * 1e3 / reps
                    except Exception as e:  # noqa: BLE001 (out of resources)
                        print(f"skip {M}x{N} {cfg}: {type(e).__name__}")
                        continue
                    finally:
                        norm_ops._fwd_config = orig
                        norm_ops._fwd_launch.cache_clear()
                    rows.append(dict(M=M, N=N, keep_sum=keep_sum, block_m=bm, num_warps=warps, us=us))
            rows.sort(key=lambda t: t["us"])
            results += rows
            print(f"== layer_norm(x + r) {M}x{N} fp16, sum {'written' if keep_sum else 'not written'}: "
                  f"default {orig(N)[1:4]} {default_us:.2f} us ({nbytes[keep_sum] / default_us / 1e3:.0f} GB/s), "
                  f"torch.compile (sum not written) {c_us:.2f} us", flush=True)
            for t in rows[:top]:
                print(f"   block_m={t['block_m']:<2} warps={t['num_warps']:<2} {t['us']:7.2f} us")
            results.append(dict(M=M, N=N, keep_sum=keep_sum, provider="default", us=default_us))
        results.append(dict(M=M, N=N, provider="torch.compile", us=c_us))
    return results


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--out", default=".")
    p.add_argument("--top", type=int, default=4)
    p.add_argument("--directions", default="fwd,bwd", help="comma-separated: fwd, bwd")
    p.add_argument("--compile", action="store_true", help="also time torch.compile's forward")
    p.add_argument("--shapes", default=None, help="e.g. 4096x768,8192x8192 (default: the benchmark's four)")
    p.add_argument("--model", action="store_true", help="the model regime (module docstring)")
    args = p.parse_args()
    os.makedirs(args.out, exist_ok=True)
    if args.model:
        shapes = [tuple(int(v) for v in t.split("x")) for t in (args.shapes or "128x768,1024x768,8192x768").split(",")]
        with open(os.path.join(args.out, "sweep_norm_model.json"), "w") as f:
            json.dump(model_regime(shapes, args.top), f, indent=0)
        return
    results = []
    orig_fwd, orig_bwd = norm_ops._fwd_config, norm_ops._bwd_config
    shapes = [tuple(int(v) for v in t.split("x")) for t in args.shapes.split(",")] if args.shapes else SHAPES
    for (M, N), which in itertools.product(shapes, ("layer", "rms")):
        n_sets = max(1, min(8, (200 << 20) // (M * N * 2 * 2)))
        sets = _sets(M, N, n_sets)
        w = torch.randn(N, device="cuda", dtype=torch.bfloat16, requires_grad=True)
        b = torch.randn(N, device="cuda", dtype=torch.bfloat16, requires_grad=True)
        block_n = triton.next_power_of_2(N)
        fwd_bytes, bwd_bytes = 2 * M * N * 2, 3 * M * N * 2
        default_f, default_b = orig_fwd(N), orig_bwd(N)
        for direction in args.directions.split(","):
            rows = []
            if direction == "fwd":  # (BLOCK_M, warps, 0, columns per step: the row, or a chunk, hints)
                # Launch shapes first with the default hints; the best few are retried below
                # with the other hints.
                options = [(bm, w, 0, block_n, HINTS[0]) for bm in (1, 2, 4, 8, 16) for w in (4, 8, 16, 32)]
                if block_n >= 4096:  # the two-pass chunked path
                    options += [(bm, w, 0, ch, HINTS[0]) for bm in (1, 2) for w in (4, 8, 16) for ch in (1024, 2048, 4096)]
            else:  # (BLOCK_M, warps, programs per SM)
                options = [(bm, w, k, block_n, None) for bm in (1, 2, 4, 8) for w in (4, 8, 16, 32) for k in (1, 2, 3)]
            # Forward, in two rounds: launch shapes, then the best 4 with the other cache hints.
            n_base, i = len(options), 0
            while True:
                if direction == "fwd" and rows and i == n_base and len(options) == n_base:
                    best = sorted(rows, key=lambda r: r["ms"])[:4]
                    options += [(r["block_m"], r["num_warps"], 0, r["cols"], h) for r in best for h in HINTS[1:]]
                if i >= len(options):
                    break
                block_m, warps, per_sm, cols, hints = options[i]
                i += 1
                per_thread = block_m * cols // (32 * warps)  # elements each thread holds
                if block_m * cols > 32768 or not 4 <= per_thread <= 64:
                    continue
                if direction == "fwd":
                    cfg = (cols == block_n, block_m, cols, warps) + tuple(hints)
                    norm_ops._fwd_config = lambda n, o=None, c=cfg: c
                    norm_ops._fwd_launch.cache_clear()  # (the launch cache holds the config it was built with)
                else:
                    cfg = (True, block_m, block_n, warps, per_sm)
                    norm_ops._bwd_config = lambda n, c=cfg: c
                try:
                    ms = (time_fwd if direction == "fwd" else time_bwd)(which, sets, w, b)
                except Exception as e:  # e.g. out of resources
                    print(f"skip {which} {M}x{N} {direction} {cfg} {per_sm}: {type(e).__name__}")
                    continue
                finally:
                    norm_ops._fwd_config, norm_ops._bwd_config = orig_fwd, orig_bwd
                    norm_ops._fwd_launch.cache_clear()
                gbs = (fwd_bytes if direction == "fwd" else bwd_bytes) / ms / 1e6
                rows.append(dict(norm=which, M=M, N=N, direction=direction, block_m=block_m, num_warps=warps,
                                 per_sm=per_sm, cols=cols, single=cols == block_n, hints=hints, ms=ms, gbs=gbs))
            d_ms = (time_fwd if direction == "fwd" else time_bwd)(which, sets, w, b)
            if direction == "fwd" and args.compile:
                c_ms = time_compiled(which, sets, w, b)
                print(f"== {which}_norm {M}x{N} fwd: torch.compile {c_ms * 1e3:.1f} us "
                      f"({fwd_bytes / c_ms / 1e6:.0f} GB/s)")
                results.append(dict(norm=which, M=M, N=N, direction="fwd", provider="torch.compile", ms=c_ms))
            rows.sort(key=lambda r: r["ms"])
            results += rows
            dflt = default_f if direction == "fwd" else default_b
            print(f"== {which}_norm {M}x{N} {direction}: default {dflt[1:]} {d_ms * 1e3:.1f} us "
                  f"({(fwd_bytes if direction == 'fwd' else bwd_bytes) / d_ms / 1e6:.0f} GB/s)")
            for r in rows[: args.top]:
                print(f"   block_m={r['block_m']:<2} warps={r['num_warps']:<2} per_sm={r['per_sm']:<2} "

                      f"{'row' if r['single'] else 'chunk ' + str(r['cols']):<10} {r['hints']} "
                      f"{r['ms'] * 1e3:8.1f} us {r['gbs']:6.0f} GB/s")
        del sets
        torch.cuda.empty_cache()
    with open(os.path.join(args.out, "sweep_norm.json"), "w") as f:
        json.dump(results, f, indent=0)
    # The best forward launch per BLOCK_N (LayerNorm and RMSNorm times added), in the format
    # of ops/norm.py's TRITONIC_NORM_FWD_TABLE override.
    best = {}
    for N in sorted({r["N"] for r in results if r["direction"] == "fwd" and "provider" not in r}):
        totals = {}
        for r in results:
            if r["direction"] == "fwd" and r["N"] == N and "provider" not in r:
                key = (r["single"], r["block_m"], r["cols"], r["num_warps"]) + tuple(r["hints"])
                totals.setdefault(key, []).append(r["ms"])
        complete = {k: sum(v) for k, v in totals.items() if len(v) == 2}
        if complete:
            k = min(complete, key=complete.get)
            best[str(triton.next_power_of_2(N))] = list(k)
    with open(os.path.join(args.out, "best_fwd.json"), "w") as f:
        json.dump(best, f)
    print("best forward launches:", json.dumps(best))


if __name__ == "__main__":
    main()
