"""Offline sm_90 compile of the general attention backward kernels (no GPU needed): registers,
spills and shared memory per config, to see which tiles fit before timing them.

    python scripts/bwd_compile_check.py dkdv 128 64,64,4,2 [atomic] [tmadq] [tmabwd] [hm] [causal] [kpm]
    python scripts/bwd_compile_check.py dq 128 64,64,4,2 [tmabwd] [causal] [kpm]

bfloat16, dense or with a key-padding mask (kpm), unit last strides, 16-divisible sizes and strides.
"""

import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from tritonic.kernels.attention_bwd import _attn_bwd_dkdv, _attn_bwd_dq  # noqa: E402
from ws_compile_check import ptxas_report  # noqa: E402  (scripts/: its ptxas run)


def main(argv):
    which, D = argv[0], int(argv[1])
    BM, BN, W, ST = (int(x) for x in argv[2].split(","))
    flags = set(argv[3:])
    fn = {"dkdv": _attn_bwd_dkdv, "dq": _attn_bwd_dq}[which]
    names = fn.arg_names
    sig = {n: "i32" for n in names}
    for n in ("Q", "K", "V", "DO", "DK", "DV", "DQ", "BIAS"):
        sig[n] = "*bf16"
    for n in ("LSE", "DELTA", "DBIAS", "DQ_ACC", "SLOPES"):
        sig[n] = "*fp32"
    sig.update(MASK="*i1", CU_Q="*i32", CU_K="*i32", scale="fp32",
               DQ_DESC=f"tensordesc<fp32[{BM},{D}]>", Q_DESC=f"tensordesc<bf16[1,1,{BM},{D}]>",
               DO_DESC=f"tensordesc<bf16[1,1,{BM},{D}]>", K_DESC=f"tensordesc<bf16[1,1,{BN},{D}]>",
               V_DESC=f"tensordesc<bf16[1,1,{BN},{D}]>")
    const = dict(VARLEN=False, CAUSAL="causal" in flags, HAS_MASK="kpm" in flags, KEY_PADDING="kpm" in flags, HAS_BIAS=False,
                 HAS_ALIBI=False, HAS_WINDOW=False, PRECISION="tf32", BLOCK_M=BM, BLOCK_N=BN, BLOCK_D=D,
                 stride_qd=1, stride_kd=1, stride_vd=1, stride_od=1, HEAD_MAJOR="hm" in flags)
    if which == "dkdv":
        const.update(HAS_DBIAS=False, ATOMIC_DQ="atomic" in flags or "tmadq" in flags)
        const["TMA_DQ"] = "tmadq" in flags
        const["TMA_QDO"] = "tmabwd" in flags
    else:
        const["TMA_KV"] = "tmabwd" in flags
    if "kpm" in flags:  # an expanded (B, 1, 1, Sk) bool mask: unit key stride, as Triton specialises it
        const.update(stride_mn=1)
    const.update(GROUP=1)  # (no GQA: Triton specialises an int argument equal to 1)
    const = {k: v for k, v in const.items() if k in names}
    sig.update({k: "constexpr" for k in const})
    sig = {n: sig[n] for n in names}
    aligned = [n for n in names if n not in const and (sig[n].startswith("*") or n.startswith("stride_")
                                                       or n in ("Sq", "Sk", "D")) and n not in ("stride_mh", "stride_mm")]
    attrs = {(names.index(n),): [["tt.divisibility", 16]] for n in aligned}
    src = ASTSource(fn, sig, constexprs={(names.index(k),): v for k, v in const.items()}, attrs=attrs)
    try:
        k = triton.compile(src, target=GPUTarget("cuda", 90, 128), options={"num_warps": W, "num_stages": ST})
    except Exception as e:
        print(f"{which} d{D} {argv[2]} {sorted(flags)}: compile failed ({type(e).__name__}: {e})"[:400])
        return 1
    ptx = k.asm["ptx"]
    report = ptxas_report(ptx)
    n_red = ptx.count("cp.reduce.async.bulk")
    n_atomic = len(re.findall(r"\b(?:red|atom)\.global", ptx))
    n_wgmma = ptx.count("wgmma.mma_async")
    ttgir = k.asm["ttgir"]
    n_cvt = ttgir.count("ttg.convert_layout")
    n_alloc = ttgir.count("ttg.local_alloc")
    print(f"{which} d{D} {argv[2]} {sorted(flags)}: {k.metadata.shared} B shared, wgmma {n_wgmma}, "
          f"bulk reduce {n_red}, global atomics {n_atomic}, layout converts {n_cvt}, local allocs {n_alloc}; {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
