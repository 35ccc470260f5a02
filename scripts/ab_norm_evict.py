"""A/B of the forward's L2 eviction hint (ops/norm.py FWD_EVICT) on the benchmark shapes.

    PYTHONPATH=src python scripts/ab_norm_evict.py     # prints a table, then the winner last

The winner is "evict_first" when it is faster by at least 0.5% in geometric mean, else "".
"""

import math
import sys

import torch

sys.path.insert(0, "scripts")
from sweep_norm import SHAPES, _sets, time_fwd  # noqa: E402

from tritonic.ops import norm as norm_ops  # noqa: E402


def main():
    ratios = []
    for (M, N) in SHAPES:
        sets = _sets(M, N, max(1, min(8, (200 << 20) // (M * N * 4))))
        w = torch.randn(N, device="cuda", dtype=torch.bfloat16)
        b = torch.randn(N, device="cuda", dtype=torch.bfloat16)
        for which in ("layer", "rms"):
            t = {}
            for policy in ("", "evict_first", "", "evict_first"):  # twice each, interleaved
                norm_ops.FWD_EVICT = policy
                t.setdefault(policy, []).append(time_fwd(which, sets, w, b))
            plain, first = min(t[""]), min(t["evict_first"])
            ratios.append(first / plain)
            print(f"{which}_norm {M}x{N} fwd: plain {plain * 1e3:.1f} us, evict_first {first * 1e3:.1f} us",
                  file=sys.stderr)
    gmean = math.exp(sum(math.log(r) for r in ratios) / len(ratios))
    print(f"evict_first / plain, geometric mean: {gmean:.4f}", file=sys.stderr)
    print("evict_first" if gmean < 0.995 else "")


if __name__ == "__main__":
    main()
