"""Drop-in activation modules.

``GELU`` and ``SiLU`` subclass the torch modules they replace (same constructor, attributes,
``repr`` and empty ``state_dict``) and override only ``forward``. ``SwiGLU`` and ``GEGLU``
have no torch counterpart; they hold no parameters and take ``(gate, up)`` or one tensor
with ``[gate, up]`` concatenated along its last dimension.

On a device the kernels cannot use (a CPU without Triton's interpreter), ``GELU`` and
``SiLU`` run the torch module's ``forward`` unchanged and the gated modules their PyTorch
references.
"""

from __future__ import annotations

import torch

from tritonic.ops.activation import (
    geglu,
    geglu_reference,
    gelu,
    silu,
    swiglu,
    swiglu_reference,
)
from tritonic.runtime import can_run_kernels

__all__ = ["GELU", "SiLU", "SwiGLU", "GEGLU"]


class GELU(torch.nn.GELU):
    """``torch.nn.GELU`` computed by tritonic's kernel; ``approximate`` ("none" or "tanh")
    picks the erf or the tanh form, as in torch."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not can_run_kernels(x.device):
            return super().forward(x)
        return gelu(x, self.approximate)


class SiLU(torch.nn.SiLU):
    """``torch.nn.SiLU`` computed by tritonic's kernel.

    ``inplace=True`` is honoured by torch's own in-place SiLU (``super().forward``): the
    caller asked for the input's storage to be overwritten, and the kernel path always
    returns a new tensor. That path already moves the fewest bytes (one read, one write)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.inplace or not can_run_kernels(x.device):
            return super().forward(x)
        return silu(x)


class SwiGLU(torch.nn.Module):
    """``silu(gate) * up``: ``module(gate, up)``, or ``module(x)`` where ``x`` holds
    ``[gate, up]`` concatenated along its last dimension (the output has half its width)."""

    def forward(self, gate: torch.Tensor, up: torch.Tensor | None = None) -> torch.Tensor:
        if not can_run_kernels(gate.device):
            return swiglu_reference(gate, up)
        return swiglu(gate, up)


class GEGLU(torch.nn.Module):
    """``gelu(gate, approximate) * up``, called like :class:`SwiGLU`."""

    def __init__(self, approximate: str = "none"):
        super().__init__()
        if approximate not in ("none", "tanh"):
            raise ValueError(f"GEGLU: approximate must be 'none' or 'tanh', got {approximate!r}")
        self.approximate = approximate

    def extra_repr(self) -> str:
        return f"approximate={self.approximate!r}"

    def forward(self, gate: torch.Tensor, up: torch.Tensor | None = None) -> torch.Tensor:
        if not can_run_kernels(gate.device):
            return geglu_reference(gate, up, self.approximate)
        return geglu(gate, up, self.approximate)
