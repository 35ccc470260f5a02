"""Argument checks shared by every op.

Each check raises an error that names the op, the argument, what was expected and what
came, so that a bad call fails in Python with a sentence rather than deep inside Triton.
"""

from __future__ import annotations

import warnings

import torch

from tritonic.runtime.device import UnsupportedEnvironment, can_run_kernels, gpu_problem, has_cuda, interpreter_active

KERNEL_DTYPES = (torch.float16, torch.bfloat16, torch.float32)

_warned: set = set()


def warn_once(key, message: str, category=UserWarning) -> None:
    """Warn the first time ``key`` is seen in this process, then stay quiet."""
    if key in _warned:
        return
    _warned.add(key)
    warnings.warn(message, category, stacklevel=3)


def _fmt_shape(t: torch.Tensor) -> str:
    return "(" + ", ".join(str(s) for s in t.shape) + ("," if t.dim() == 1 else "") + ")"


def check_tensor(op: str, name: str, t, *, floating: bool = True, min_dim: int = 0) -> None:
    """``t`` is a tensor with a floating dtype and at least ``min_dim`` dimensions."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{op}: {name} must be a torch.Tensor, got {type(t).__name__}")
    if floating and not t.dtype.is_floating_point:
        raise TypeError(
            f"{op}: {name} must have a floating dtype (float16, bfloat16 or float32), "
            f"got {t.dtype}"
        )
    if t.dim() < min_dim:
        raise ValueError(
            f"{op}: {name} must have at least {min_dim} dimension(s), got shape {_fmt_shape(t)}"
        )


def check_shape(op: str, name: str, t: torch.Tensor, expected: tuple, why="") -> None:
    """``t.shape == expected``; ``why`` (a string, or a callable making one only on failure)
    explains the expectation in the message."""
    if tuple(t.shape) != tuple(expected):
        why = why() if callable(why) else why
        exp = "(" + ", ".join(str(s) for s in expected) + ("," if len(expected) == 1 else "") + ")"
        raise ValueError(
            f"{op}: {name} must have shape {exp}{' ' + why if why else ''}, got {_fmt_shape(t)}"
        )


def check_same_dtype(op: str, ref_name: str, ref: torch.Tensor, name: str, t: torch.Tensor) -> None:
    if t.dtype != ref.dtype:
        raise TypeError(f"{op}: {name} must have the dtype of {ref_name} ({ref.dtype}), got {t.dtype}")


def check_same_device(op: str, ref_name: str, ref: torch.Tensor, **others) -> None:
    for name, t in others.items():
        if t is not None and t.device != ref.device:
            raise ValueError(
                f"{op}: {name} is on {t.device} but {ref_name} is on {ref.device}; "
                f"move them to one device"
            )


def check_kernel_device(op: str, name: str, t: torch.Tensor) -> None:
    """The tensor lives where tritonic's kernels can run."""
    if can_run_kernels(t.device):
        return
    problem = gpu_problem(t.device.index or 0) if t.device.type == "cuda" and has_cuda() else None
    if problem:
        raise UnsupportedEnvironment(f"{op}: {problem}")
    if t.device.type == "cpu" and has_cuda():
        raise ValueError(
            f"{op}: {name} is a CPU tensor, but tritonic's kernels run on the GPU; "
            f"move it with .cuda() (or set TRITON_INTERPRET=1 before importing tritonic "
            f"to run them in Triton's interpreter)"
        )
    if t.device.type == "cpu":
        raise RuntimeError(
            f"{op}: {name} is a CPU tensor and this machine has no CUDA GPU; set "
            f"TRITON_INTERPRET=1 before importing tritonic to run the kernels in "
            f"Triton's interpreter (slow), or use a GPU"
        )
    raise ValueError(
        f"{op}: {name} is on {t.device}; tritonic's kernels run on CUDA devices"
        + ("" if interpreter_active() else " (or on the CPU in Triton's interpreter)")
    )
