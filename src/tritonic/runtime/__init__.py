"""Runtime: device and interpreter detection, argument checks, allocation.

Everything between an op's Python call and its Triton kernel that is not the op itself.
"""

from tritonic.runtime.alloc import empty, poison_outputs, poisoning
from tritonic.runtime.device import (
    can_run_kernels,
    device_name,
    gpu_slug,
    has_cuda,
    has_tma,
    interpreter_active,
    num_sms,
)
from tritonic.runtime.checks import warn_once

__all__ = [
    "empty",
    "poison_outputs",
    "poisoning",
    "can_run_kernels",
    "device_name",
    "gpu_slug",
    "has_cuda",
    "has_tma",
    "interpreter_active",
    "num_sms",
    "warn_once",
]
