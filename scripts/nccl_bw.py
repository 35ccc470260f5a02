"""NCCL bandwidth between this machine's GPUs (one process per GPU, under torchrun): all-gather,
reduce-scatter and all-reduce of 1-256 MiB, bus bandwidth as nccl-tests defines it. Run with
NCCL_DEBUG=INFO to see the transport NCCL picked (P2P/CUMEM, SHM or NET).

    torchrun --standalone --nproc_per_node 2 scripts/nccl_bw.py
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def main() -> int:
    dist.init_process_group("nccl")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", rank)))
    if rank == 0:
        print(f"{world} x {torch.cuda.get_device_name()}, p2p 0<->1: "
              f"{torch.cuda.can_device_access_peer(0, 1) if torch.cuda.device_count() > 1 else 'n/a'}")
    for mib in (1, 16, 64, 256):
        n = mib * 2**20 // 2  # bf16 elements of the full buffer
        full = torch.empty(n, dtype=torch.bfloat16, device="cuda")
        part = torch.empty(n // world, dtype=torch.bfloat16, device="cuda")
        ops = {
            "all_gather": (lambda: dist.all_gather_into_tensor(full, part), (world - 1) / world),
            "reduce_scatter": (lambda: dist.reduce_scatter_tensor(part, full), (world - 1) / world),
            "all_reduce": (lambda: dist.all_reduce(full), 2 * (world - 1) / world),
        }
        for name, (op, factor) in ops.items():
            for _ in range(3):
                op()
            torch.cuda.synchronize()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(10):
                op()
            end.record()
            torch.cuda.synchronize()
            ms = start.elapsed_time(end) / 10
            if rank == 0:
                print(f"{name:15s} {mib:4d} MiB  {ms:8.3f} ms  bus {full.numel() * 2 * factor / ms / 1e6:7.1f} GB/s")
    dist.barrier()
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
