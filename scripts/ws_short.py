"""Where should the warp-specialised attention forward start (``AUTO_MIN_KEYS``)? Times the
dense non-causal forward at 1024, 2048 and 4096 keys (B=4, H=16, bf16, d64 and d128) with the
WS kernel forced and with the general kernel, each in a CUDA graph, and prints the ratio.

    python scripts/ws_short.py [--out ws_short.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import torch  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--out")
    p.add_argument("--lengths", default="1024,2048,4096")
    a = p.parse_args()
    import triton.testing

    from tritonic.ops import attention
    from tritonic.ops import attention_ws as ws

    rows = []
    for D in (64, 128):
        for S in (int(x) for x in a.lengths.split(",")):
            q, k, v = (torch.randn(4, 16, S, D, device="cuda", dtype=torch.bfloat16) for _ in range(3))
            got = {}
            for name, forced in (("general", False), ("ws", True)):
                ws.ENABLED, ws.AUTO = forced, False
                attention(q, k, v)  # (tunes and compiles outside the graph)
                torch.cuda.synchronize()
                got[name] = triton.testing.do_bench_cudagraph(lambda: attention(q, k, v), rep=200)
            flops = 4 * 4 * 16 * S * S * D
            row = {"D": D, "S": S, **{f"{n}_ms": t for n, t in got.items()},
                   "ws_speedup": got["general"] / got["ws"], "ws_tflops": flops / got["ws"] * 1e-9}
            rows.append(row)
            print(f"d{D} S={S}: general {got['general']:.4f} ms, ws {got['ws']:.4f} ms, "
                  f"ws {row['ws_speedup']:.2f}x ({row['ws_tflops']:.0f} TFLOP/s)", flush=True)
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
