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


MIN_CAPABILITY = (8, 0)  # Ampere: bfloat16 tensor cores, the oldest GPUs the kernels are written for
MIN_VERSIONS = {"torch": (2, 8), "triton": (3, 4)}


class UnsupportedEnvironment(ImportError):
    """The machine cannot run tritonic's kernels (too old a GPU, torch or Triton); the
    message is one sentence that says what to do."""


def _version(text: str) -> tuple:
    return tuple(int(p) for p in re.findall(r"\d+", text.split("+")[0])[:2])


def check_versions(torch_version: str | None = None, triton_version: str | None = None) -> None:
    """Raise :class:`UnsupportedEnvironment` when torch or Triton is older than tritonic needs."""
    if triton_version is None:
        try:
            import triton
        except ImportError as e:
            raise UnsupportedEnvironment(
                "tritonic needs Triton 3.4 or newer and it is not installed: pip install 'triton>=3.4'") from e
        triton_version = triton.__version__
    found = {"torch": torch_version or torch.__version__, "triton": triton_version}
    for name, need in MIN_VERSIONS.items():
        if _version(found[name]) < need:
            raise UnsupportedEnvironment(
                f"tritonic needs {name} {need[0]}.{need[1]} or newer, this is {found[name]}: "
                f"pip install -U '{name}>={need[0]}.{need[1]}'")


@functools.lru_cache(maxsize=None)
def gpu_problem(device_index: int = 0) -> str | None:
    """Why tritonic's kernels cannot run on this CUDA GPU (one sentence), or None."""
    cap = torch.cuda.get_device_capability(device_index)
    if tuple(cap) < MIN_CAPABILITY:
        name = torch.cuda.get_device_name(device_index)
        return (f"the GPU {name} (compute capability {cap[0]}.{cap[1]}) is older than Ampere, and tritonic's "
                f"kernels need compute capability {MIN_CAPABILITY[0]}.{MIN_CAPABILITY[1]} or newer; run this "
                f"model without tritonic (PyTorch's own ops), or on an A100, H100 or newer")
    return None


def can_run_kernels(device: torch.device) -> bool:
    """Can tritonic's Triton kernels run on tensors living on ``device``? (Asked on every op
    call: a GPU that can is remembered, as the facts behind the answer are fixed per process;
    ``device.type`` alone costs ~0.25 µs.)"""
    if device in _runnable:
        return True
    if interpreter_active():
        return True
    ok = device.type == "cuda" and has_cuda() and gpu_problem(device.index or 0) is None
    if ok:
        _runnable[device] = True
    return ok


_runnable: dict = {}  # CUDA devices can_run_kernels said yes to


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
