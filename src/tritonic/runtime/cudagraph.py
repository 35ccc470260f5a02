"""Helpers around ``torch.cuda.CUDAGraph`` shared by the benchmark harness and ``optimize``."""

from __future__ import annotations

import contextlib

import torch

__all__ = ["recover_from_failed_capture"]


def recover_from_failed_capture() -> None:
    """A capture that raised leaves PyTorch's CUDA generator marked as capturing (every later
    ``torch.randn`` on the GPU then fails with "Offset increment outside graph capture"):
    capture one empty graph, whose end clears that mark. Checked on an H100 (torch 2.11)."""
    with contextlib.suppress(Exception):
        torch.cuda.synchronize()
    with contextlib.suppress(Exception):
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g, stream=torch.cuda.current_stream()):
            pass
        del g
