#!/usr/bin/env bash
# GPU check: the GPU tests and every benchmark in one go, for a machine with a CUDA GPU
# (torch, triton, transformers and pytest preinstalled; no network needed).
#
#   scripts/gpu_check.sh OUTDIR        # run from the repository root
#   BENCH_ARGS="--graph always" scripts/gpu_check.sh OUTDIR   # flags for every benchmark
#   PACK=1 scripts/gpu_check.sh OUTDIR      # everything packed into OUTDIR/gpu_check.tgz
#   BENCHES="launch matmul" scripts/gpu_check.sh OUTDIR   # only these benchmarks/*.py
#     (models.py compiles torch.compile baselines per shape: many minutes; leave it out of short runs)
#   SKIP="tests tune" scripts/gpu_check.sh OUTDIR          # leave out steps: tests, tune
#
# Writes into OUTDIR:
#   env.txt              nvidia-smi and versions
#   pytest_gpu.log       pytest -m gpu
#   tune.log             tritonic tune twice: time spent tuning with a cold, then a warm cache
#   bench_<name>.log     the output of benchmarks/<name>.py
#   results/<gpu>/<bench>.json   benchmark rows (copy them to benchmarks/results/ to commit)
# Every step runs even when an earlier one fails; the exit status is non-zero if any failed.
set -uo pipefail

if [ $# -ne 1 ]; then
    echo "usage: $0 OUTDIR   (run from the repository root)" >&2
    exit 2
fi
if [ ! -d src/tritonic ] || [ ! -d benchmarks ]; then
    echo "$0: run this from the repository root (no src/tritonic or benchmarks/ here)" >&2
    exit 2
fi
OUT=$1
mkdir -p "$OUT" || exit 2

export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1

declare -a SUMMARY=()
FAILED=0

# step NAME STATUS: record one step's outcome.
step() {
    if [ "$2" -eq 0 ]; then
        SUMMARY+=("ok     $1")
    else
        SUMMARY+=("FAILED $1 (exit $2)")
        FAILED=1
    fi
}

# Optional wheels shipped in the repository (e.g. liger_kernel, a benchmark baseline).
shopt -s nullglob
wheels=(.whl/*.whl)
if [ ${#wheels[@]} -gt 0 ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
        --target /tmp/site "${wheels[@]}" 2>&1 | tee "$OUT/pip_wheels.log"
    step "install ${#wheels[@]} wheel(s) from .whl/ into /tmp/site" $?
    export PYTHONPATH="/tmp/site:$PYTHONPATH"
fi

# Environment.
{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
    echo "PYTHONPATH: $PYTHONPATH"
    echo
    nvidia-smi
    echo
    python3 - <<'EOF'
import importlib, platform, sys
print("python", platform.python_version(), sys.executable)
for name in ("torch", "triton", "transformers", "pytest", "numpy", "liger_kernel", "tritonic"):
    try:
        mod = importlib.import_module(name)
        print(f"{name} {getattr(mod, '__version__', '?')} ({getattr(mod, '__file__', '?')})")
    except Exception as e:
        print(f"{name}: not importable ({type(e).__name__}: {e})")
import torch
print("cuda available:", torch.cuda.is_available(), "| cuda", torch.version.cuda)
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print("device:", torch.cuda.get_device_name(), "| sm", f"{p.major}.{p.minor}",
          "| SMs", p.multi_processor_count, "| L2", getattr(p, "L2_cache_size", "?"),
          "| memory", p.total_memory)
EOF
} > "$OUT/env.txt" 2>&1
step "environment -> $OUT/env.txt" $?
cat "$OUT/env.txt"

# GPU tests.
timeout_flag=()
if python3 -c "import pytest_timeout" 2>/dev/null; then
    timeout_flag=(--timeout=600)
fi
skipped() { case " ${SKIP:-} " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
rc=0
if skipped tests; then
    SUMMARY+=("note   GPU tests skipped (SKIP)")
else
    python3 -m pytest -m gpu -q ${timeout_flag[@]+"${timeout_flag[@]}"} tests 2>&1 | tee "$OUT/pytest_gpu.log"
    rc=${PIPESTATUS[0]}
fi
if skipped tests; then
    :
elif [ $rc -eq 5 ]; then  # pytest: no tests collected
    SUMMARY+=("note   pytest -m gpu collected no tests -> $OUT/pytest_gpu.log")
else
    step "pytest -m gpu -> $OUT/pytest_gpu.log" $rc
fi

# Autotuning: a cold process tunes, a second one with the warm cache must spend 0 s.
if ! skipped tune; then
    tune_cache=$(mktemp -d)
    for run in cold warm; do
        echo "=== tritonic tune ($run cache)"
        TRITONIC_CACHE_DIR=$tune_cache python3 -m tritonic tune --shapes benchmarks/shapes/gpt2_124m.json
    done 2>&1 | tee "$OUT/tune.log"
    step "tritonic tune, cold then warm cache -> $OUT/tune.log" "${PIPESTATUS[0]}"
fi

# Benchmarks, one script at a time.
for script in benchmarks/*.py; do
    name=$(basename "$script" .py)
    if [ -n "${BENCHES:-}" ] && [[ " $BENCHES " != *" $name "* ]]; then continue; fi
    echo "=== $script"
    start=$SECONDS
    # shellcheck disable=SC2086  # BENCH_ARGS is a list of flags, e.g. "--graph always"
    python3 "$script" --out "$OUT/results" ${BENCH_ARGS:-} 2>&1 | tee "$OUT/bench_$name.log"
    step "$script ($((SECONDS - start)) s) -> $OUT/bench_$name.log" "${PIPESTATUS[0]}"
    if [ "$name" = memory_bound ]; then  # the fused linear cross-entropy: time and peak memory
        start=$SECONDS
        # shellcheck disable=SC2086
        python3 "$script" --flce --out "$OUT/results" ${BENCH_ARGS:-} 2>&1 | tee "$OUT/bench_${name}_flce.log"
        step "$script --flce ($((SECONDS - start)) s) -> $OUT/bench_${name}_flce.log" "${PIPESTATUS[0]}"
    fi
done

echo
echo "=== summary ($OUT)"
printf '%s\n' "${SUMMARY[@]}" | tee "$OUT/summary.txt"
for f in "$OUT"/results/*/*.json; do echo "results: $f"; done
# PACK=1: leave one archive instead of many files (the device tool returns at most 8).
if [ "${PACK:-0}" = 1 ]; then
    tar czf /tmp/gpu_check.tgz -C "$OUT" . && rm -rf "${OUT:?}"/* && mv /tmp/gpu_check.tgz "$OUT/"
    echo "packed into $OUT/gpu_check.tgz"
fi
exit $FAILED
