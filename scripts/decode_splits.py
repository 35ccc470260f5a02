"""How many splits should flash-decoding use? Times ``attention_decode`` with num_splits forced
over a range, for the cases where tritonic trails SDPA or the 2.4 TB/s target (b16 / b64 with
1k keys, b1 with 8k), plus the heuristic's own choice, each call in a CUDA graph. d128, 32
query heads over 8 key/value heads, bfloat16, one new token; GB/s of the cache read.

    python scripts/decode_splits.py [--out decode_splits.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import torch  # noqa: E402

H, HK, D = 32, 8, 128


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--out")
    p.add_argument("--cases", default="16x1024,64x1024,1x8192,16x8192", help="BxL,...")
    p.add_argument("--splits", default="1,2,3,4,6,8,12,16")
    a = p.parse_args()
    import triton.testing

    from tritonic.ops import attention_decode

    rows = []
    for case in a.cases.split(","):
        B, L = (int(x) for x in case.split("x"))
        q = torch.randn(B, H, 1, D, device="cuda", dtype=torch.bfloat16)
        k, v = (torch.randn(B, HK, L, D, device="cuda", dtype=torch.bfloat16) for _ in range(2))
        lens = torch.full((B,), L, dtype=torch.int32, device="cuda")
        gb = 2 * B * HK * L * D * 2 / 1e9
        for n in [None] + [int(x) for x in a.splits.split(",")]:
            fn = lambda n=n: attention_decode(q, k, v, lens, num_splits=n)  # noqa: E731
            fn()
            torch.cuda.synchronize()
            ms = triton.testing.do_bench_cudagraph(fn, rep=200)
            row = {"B": B, "L": L, "num_splits": n if n is not None else "heuristic", "ms": ms,
                   "GBps": gb / ms * 1e3}
            rows.append(row)
            print(f"b{B} {L // 1024}k splits {row['num_splits']}: {ms * 1e3:.1f} us, {row['GBps']:.0f} GB/s",
                  flush=True)
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
