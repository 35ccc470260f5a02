"""Flash-decoding's first-pass tile (cache positions per step, warps, stages): every combination
timed on the cases where tritonic trails SDPA or the 2.4 TB/s target, the split count left to
the heuristic for each tile. The op's tile is fixed (``ops.attention_decode.TILE``, 64 / 4 / 3)
and was never swept. d128, 32 query heads over 8 key/value heads, bfloat16, one new token.

Each call runs in a CUDA graph that goes round enough caches (>= 200 MB in all) that L2 does not
serve them, as ``benchmarks/decode.py`` does; GB/s of the cache read (keys and values).

    PYTHONPATH=src python scripts/decode_tiles.py [--cases 16x1024,64x1024,1x8192,16x8192,1x32768] [--out FILE]
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import torch  # noqa: E402

H, HK, D = 32, 8, 128


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--out")
    p.add_argument("--cases", default="16x1024,64x1024,1x8192,16x8192,1x32768", help="BxL,...")
    p.add_argument("--block-n", default="32,64,128")
    p.add_argument("--warps", default="2,4,8")
    p.add_argument("--stages", default="2,3,4")
    a = p.parse_args()
    import importlib

    import triton.testing

    dec = importlib.import_module("tritonic.ops.attention_decode")
    shipped = dict(dec.TILE)
    rows = []
    for case in a.cases.split(","):
        B, L = (int(x) for x in case.split("x"))
        nbytes = 2 * B * HK * L * D * 2
        n_sets = max(1, -(-(200 << 20) // nbytes))
        sets = [(torch.randn(B, H, 1, D, device="cuda", dtype=torch.bfloat16),
                 torch.randn(B, HK, L, D, device="cuda", dtype=torch.bfloat16),
                 torch.randn(B, HK, L, D, device="cuda", dtype=torch.bfloat16)) for _ in range(n_sets)]
        lens = torch.full((B,), L, dtype=torch.int32, device="cuda")
        ref = torch.nn.functional.scaled_dot_product_attention(*sets[0], enable_gqa=True).float()
        found = []
        for bn, w, st in itertools.product(*(map(int, x.split(",")) for x in (a.block_n, a.warps, a.stages))):
            dec.TILE.update(block_n=bn, num_warps=w, num_stages=st)
            try:
                out = dec.attention_decode(*sets[0], lens)
                err = (out.float() - ref).abs().max().item()
                if not err < 2e-2:
                    print(f"b{B} {L // 1024}k tile {bn}/{w}/{st}: WRONG (max err {err:.3g})", flush=True)
                    continue

                def round_of_sets():
                    for q, k, v in sets:
                        dec.attention_decode(q, k, v, lens)
                round_of_sets()
                torch.cuda.synchronize()
                us = triton.testing.do_bench_cudagraph(round_of_sets, rep=200) * 1e3 / n_sets
            except Exception as e:  # noqa: BLE001 (a tile that does not fit)
                print(f"b{B} {L // 1024}k tile {bn}/{w}/{st}: {type(e).__name__}: {str(e)[:80]}", flush=True)
                continue
            finally:
                dec.TILE.update(shipped)
            row = {"B": B, "L": L, "block_n": bn, "num_warps": w, "num_stages": st, "us": us,
                   "GBps": nbytes / us / 1e3, "shipped": (bn, w, st) == tuple(shipped.values())}
            found.append(row)
            rows.append(row)
        found.sort(key=lambda r: r["us"])
        ship = next((r for r in found if r["shipped"]), None)
        shipped_text = "-" if ship is None else f"{ship['us']:.1f} us {ship['GBps']:.0f} GB/s"
        print(f"== b{B} {L // 1024}k ({n_sets} caches): shipped {shipped_text}", flush=True)
        for r in found[:5]:
            print(f"   {r['block_n']:>3} / {r['num_warps']} warps / {r['num_stages']} stages: {r['us']:7.1f} us "
                  f"{r['GBps']:6.0f} GB/s", flush=True)
        sets.clear()
        torch.cuda.empty_cache()
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
