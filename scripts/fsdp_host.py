"""Host time of an FSDP2 training step, phase by phase, with the GPU work taken out: a
12-layer GPT (GPT-2 124M's layer and parameter count, width 64) on the CPU over gloo, so
the times are mostly Python and dispatch (FSDP's hooks, DTensor, the optimizer). Compares
plain (no FSDP) with fully_shard per block, and variants.

    torchrun --standalone --nproc_per_node 2 scripts/fsdp_host.py [--steps 20]
    python scripts/fsdp_host.py --plain          # one process, no FSDP
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
import torch.distributed as dist

from tritonic.models import GPT, GPTConfig


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--plain", action="store_true")
    p.add_argument("--no-reshard", action="store_true", help="reshard_after_forward=False for the blocks")
    p.add_argument("--foreach", choices=("default", "on", "off", "fused"), default="default")
    p.add_argument("--no-clip", action="store_true")
    p.add_argument("--fake", type=int, default=0, metavar="WORLD",
                   help="one process with PyTorch's fake process group of this size: collectives cost nothing")
    p.add_argument("--group", type=int, default=1, help="blocks per fully_shard unit")
    a = p.parse_args()
    torch.set_num_threads(1)
    if a.fake:
        from torch.testing._internal.distributed.fake_pg import FakeStore

        dist.init_process_group("fake", store=FakeStore(), rank=0, world_size=a.fake)
    elif not a.plain:
        dist.init_process_group("gloo")
    cfg = GPTConfig(vocab_size=256, n_layer=12, n_head=2, d_model=64, max_seq=64)
    model = GPT(cfg, backend="torch")
    model.reset_parameters(seed=0)
    if not a.plain:
        from torch.distributed.fsdp import fully_shard

        blocks = list(model.blocks)
        for i in range(0, len(blocks), a.group):
            fully_shard(blocks[i:i + a.group] if a.group > 1 else blocks[i], reshard_after_forward=not a.no_reshard)
        fully_shard(model)
    kw = {"default": {}, "on": {"foreach": True}, "off": {"foreach": False}, "fused": {"fused": True}}[a.foreach]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, **kw)
    x = torch.randint(0, 256, (2, 16))
    phases = {"fwd+bwd": [], "clip": [], "opt.step": [], "zero_grad": []}
    for step in range(a.steps):
        t0 = time.perf_counter()
        loss = model(x, x)[1]
        loss.backward()
        t1 = time.perf_counter()
        if not a.no_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        t2 = time.perf_counter()
        opt.step()
        t3 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        t4 = time.perf_counter()
        if step >= 3:
            for k, v in zip(phases, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
                phases[k].append(v)
    if a.plain or dist.get_rank() == 0:
        what = "plain" if a.plain else f"fsdp x{dist.get_world_size()}" + (" fake" if a.fake else "") + \
            (" no-reshard" if a.no_reshard else "") + (f" {a.group} blocks/unit" if a.group > 1 else "")
        print(f"{what} optimizer {a.foreach}: " + ", ".join(
            f"{k} {statistics.median(v) * 1e3:.1f} ms" for k, v in phases.items()) +
            f", total {sum(statistics.median(v) for v in phases.values()) * 1e3:.1f} ms")
    if not a.plain:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    raise SystemExit(main())
