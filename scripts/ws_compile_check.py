"""Offline sm_90 compile of the warp-specialised attention kernels (no GPU needed): does
Triton's Hopper pass split them (a `ttg.warp_specialize` op, `setmaxnreg` in the PTX), and
do they spill? How the twelfth session found the shape the pass accepts (docs/attention.md).

    python scripts/ws_compile_check.py fwd 128 128,128,4,2 [causal] [mask] [bias] [kpm] [hm]
    python scripts/ws_compile_check.py dkdv 128 64,64,4,2 [causal]
    python scripts/ws_compile_check.py dq 128 128,64,4,2 [causal] [mask]

Arguments: kernel, head dim, BLOCK_M,BLOCK_N,num_warps,num_stages, flags. ``mask`` sets
MASK_KEYS. Prints the compile's TMA copies (descriptor, coordinates, box and destination:
a query-row tile the pass splits between its two consumer groups shows as two copies, whose
row coordinates must differ by half the block and nothing else), then its shared memory, the
warps it launches with and ptxas's register and spill report (bfloat16, unit last strides,
16-divisible sizes).
"""

import glob
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from tritonic.kernels.attention_ws import _attn_fwd_ws  # noqa: E402
from tritonic.kernels.attention_ws_bwd import _attn_bwd_dkdv_ws, _attn_bwd_dq_ws  # noqa: E402


def ptxas_report(ptx: str) -> str:
    """Triton's ptxas on ``ptx`` for sm_90a: its register and spill lines, joined."""
    ptxas = glob.glob(os.path.join(os.path.dirname(triton.__file__), "backends/nvidia/bin/ptxas"))[0]
    with tempfile.NamedTemporaryFile("w", suffix=".ptx", delete=False) as f:
        f.write(ptx)
    r = subprocess.run([ptxas, "-arch=sm_90a", "-v", f.name, "-o", os.devnull], capture_output=True, text=True)
    os.unlink(f.name)
    return " | ".join(line.split("info    :")[-1].strip() for line in r.stderr.splitlines()
                      if "Used" in line or "spill" in line)


def main(argv):
    which, D = argv[0], int(argv[1])
    BM, BN, W, ST = (int(x) for x in argv[2].split(","))
    flags = set(argv[3:])
    fn = {"fwd": _attn_fwd_ws, "dkdv": _attn_bwd_dkdv_ws, "dq": _attn_bwd_dq_ws}[which]
    names = fn.arg_names
    desc = lambda rows, dt="bf16": f"tensordesc<{dt}[1,1,{rows},{D}]>"  # noqa: E731
    sig = {n: "i32" for n in names}
    sig.update(Q_DESC=desc(BM), K_DESC=desc(BN), V_DESC=desc(BN), DO_DESC=desc(BM), O="*bf16", LSE="*fp32",
               BIAS_DESC=f"tensordesc<bf16[1,1,{BM},{BN}]>", MASK_DESC=f"tensordesc<u8[1,{BN}]>", MASK="*u8",
               LSE_DESC=f"tensordesc<fp32[1,{BM}]>", DELTA_DESC=f"tensordesc<fp32[1,{BM}]>",
               DK="*bf16", DV="*bf16", DQ="*bf16", scale="fp32", Q="*bf16", BIAS="*bf16", DO="*bf16", DELTA="*fp32")
    const = dict(CAUSAL="causal" in flags, BLOCK_M=BM, BLOCK_N=BN, BLOCK_D=D)
    if which == "fwd":
        const.update(MASK_KEYS="mask" in flags, HAS_BIAS="bias" in flags, BIAS_B=False,
                     BIAS_H=True, KEY_PADDING="kpm" in flags, USE_PDL=False, stride_od=1, stride_lm=1,
                     HEAD_MAJOR="hm" in flags)
    if which == "dq":
        const["MASK_KEYS"] = "mask" in flags
    sig.update({k: "constexpr" for k in const})
    sig = {n: sig[n] for n in names}
    aligned = [n for n in names if n in ("O", "LSE", "MASK", "DK", "DV", "DQ", "Sq", "Sk", "Q", "BIAS", "DO", "DELTA") or n.startswith("stride_")]
    attrs = {(names.index(n),): [["tt.divisibility", 16]] for n in aligned if n not in const}
    src = ASTSource(fn, sig, constexprs={(names.index(k),): v for k, v in const.items()}, attrs=attrs)
    try:
        k = triton.compile(src, target=GPUTarget("cuda", 90, 128), options={"num_warps": W, "num_stages": ST})
    except Exception as e:  # the pass's failures surface here (an MLIR assertion is printed above)
        print(f"{which} d{D} {argv[2]} {sorted(flags)}: compile failed ({type(e).__name__})")
        return 1
    ptx = k.asm["ptx"]
    report = ptxas_report(ptx)
    split = len(re.findall("ttg.warp_specialize", k.asm["ttgir"])) > 0
    for line in k.asm["ttgir"].splitlines():  # the TMA copies: box against destination, coordinates
        if "async_tma_copy_global_to_local" in line:  # (a tile split between the consumer groups
            name, coords = re.search(r"%(\w+)\[([^\]]*)\]", line).groups()  # shows as two copies)
            box = re.search(r"tensordesc<tensor<([0-9x]+)x", line).group(1)
            dest = re.search(r"-> !ttg.memdesc<([0-9x]+)x", line).group(1)
            size = lambda shape: eval("*".join(shape.split("x")))  # noqa: E731
            flag = "" if size(box) == size(dest) else "   <- box and destination differ"
            print(f"  TMA {name}[{coords}] box {box} -> {dest}{flag}")
    print(f"{which} d{D} {argv[2]} {sorted(flags)}: warp-specialised {split}, "
          f"setmaxnreg {len(re.findall('setmaxnreg', ptx))}, {k.metadata.num_warps} warps, "
          f"{k.metadata.shared} B shared; {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
