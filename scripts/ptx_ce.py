"""Offline sm_90 compile of the cross-entropy backward (no GPU): counts 16-byte vector loads
and stores in the PTX, with the row strides marked 16-divisible ("aligned") or not ("odd").

    python scripts/ptx_ce.py src/tritonic/kernels/loss.py aligned
"""
import re, sys
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1] / "src"))
import importlib.util
spec = importlib.util.spec_from_file_location("kl", sys.argv[1])
kl = importlib.util.module_from_spec(spec); spec.loader.exec_module(kl)
fn = kl._ce_bwd
names = fn.arg_names
sig = {}
for n in names:
    sig[n] = {"LOGITS": "*bf16", "TARGET": "*i64", "LSE": "*fp32", "DLOSS": "*fp32", "DLOGITS": "*bf16"}.get(n, "i32")
for n in ("smoothing", "z_coef", "softcap"):
    sig[n] = "fp32"
const = {"HAS_SMOOTHING": False, "HAS_Z": False, "HAS_SOFTCAP": False, "BLOCK_V": 8192}
for k in const: sig[k] = "constexpr"
aligned = sys.argv[2] == "aligned"
attrs = {}
for i, n in enumerate(names):
    if n in ("LOGITS", "TARGET", "LSE", "DLOSS", "DLOGITS") or (aligned and n in ("stride_l", "stride_d")):
        attrs[(i,)] = [["tt.divisibility", 16]]
src = ASTSource(fn, sig, constexprs={(names.index(k),): v for k, v in const.items()}, attrs=attrs)
k = triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": 8})
ptx = k.asm["ptx"]
print(sys.argv[1].split("/")[-1], sys.argv[2], "ld.global.v4:", len(re.findall(r"ld\.global[^\n]*\.v4", ptx)),
      "ld.global(all):", len(re.findall(r"ld\.global", ptx)), "st.global.v4:", len(re.findall(r"st\.global[^\n]*\.v4", ptx)),
      "st.global(all):", len(re.findall(r"st\.global", ptx)), "regs:", k.n_regs if hasattr(k, "n_regs") else "?")
