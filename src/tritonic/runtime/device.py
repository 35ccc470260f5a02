"""Where kernels can run: a CUDA GPU, or Triton's interpreter on the CPU."""

from __future__ import annotations

import functools
import os
import re
import sys

import torch


def interpreter_active() -> bool:
    """True when Triton's interpreter is on (``TRITON_INTERPRET=1``).

    Triton reads this variable when a kernel is decorated, so it must be set before
    ``tritonic.kernels`` (or anything importing it) is first imported; once they are,
    the answer is fixed for the process and cached (it is asked on every op call).
    """
    if "tritonic.kernels" in sys.modules:
        return _interpreter_at_kernel_import()
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


@functools.lru_cache(maxsize=1)
def _interpreter_at_kernel_import() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


@functools.lru_cache(maxsize=1)
def has_cuda() -> bool:
    """torch.cuda.is_available(), asked once (it costs a microsecond per op call otherwise)."""
    return torch.cuda.is_available()


def can_run_kernels(device: torch.device) -> bool:
    """Can tritonic's Triton kernels run on tensors living on ``device``?"""
    if interpreter_active():
        return True
    return device.type == "cuda" and has_cuda()


@functools.lru_cache(maxsize=None)
def has_tma(device_index: int) -> bool:
    """Does this GPU have the tensor-memory accelerator (Hopper, sm_90, and later)?"""
    return torch.cuda.get_device_capability(device_index)[0] >= 9


@functools.lru_cache(maxsize=None)
def num_sms(device_index: int | None = None) -> int:
    """Multiprocessor count of a GPU (4 in the interpreter, where it only shapes grids)."""
    if interpreter_active() or not has_cuda():
        return 4
    idx = torch.cuda.current_device() if device_index is None else device_index
    return torch.cuda.get_device_properties(idx).multi_processor_count


def device_name() -> str:
    if has_cuda():
        return torch.cuda.get_device_name()
    return "cpu (Triton interpreter)" if interpreter_active() else "cpu"


def gpu_slug(name: str | None = None) -> str:
    """A short folder name for a GPU: 'NVIDIA H100 80GB HBM3' -> 'h100-80gb-hbm3'."""
    name = device_name() if name is None else name
    name = re.sub(r"^nvidia\s+", "", name.strip().lower())
    name = re.sub(r"[^a-z0-9]+", "-", name).strip("-")
    return name or "unknown"
