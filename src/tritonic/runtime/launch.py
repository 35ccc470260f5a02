"""Launching Triton kernels from ops.

Ops call :func:`launch` rather than ``kernel[grid](...)``. With real tensors it launches
directly on the current CUDA stream (so it works inside CUDA-graph capture). While torch
traces an op (``torch.compile``, ``make_fx``, export: the tensors are fake or functional
tensor subclasses) it goes through ``torch.library.wrap_triton``, so the kernel appears in
the traced graph and Inductor can launch it itself.
"""

from __future__ import annotations

import torch
from torch.library import wrap_triton

_PLAIN = (torch.Tensor, torch.nn.Parameter)


def is_traced(*args) -> bool:
    """Is any tensor among ``args`` a tracing subclass (fake, functional, proxy, ...)?"""
    return any(isinstance(a, torch.Tensor) and type(a) not in _PLAIN for a in args)


def launch(kernel, grid, *args, **meta) -> None:
    if is_traced(*args):
        wrap_triton(kernel)[grid](*args, **meta)
    else:
        kernel[grid](*args, **meta)
