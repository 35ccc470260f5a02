"""Drop-in linear layers: same parameters and ``state_dict`` as ``torch.nn.Linear``."""

from __future__ import annotations

import torch

from tritonic import ops
from tritonic.ops.matmul import ACTIVATIONS
from tritonic.runtime import can_run_kernels


def _kernels_apply(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """tritonic's GEMM runs when the device allows it and the dtypes agree (under autocast
    they may not: torch's own path casts)."""
    return can_run_kernels(x.device) and x.dtype == weight.dtype


class Linear(torch.nn.Linear):
    """``torch.nn.Linear`` computed by tritonic's GEMM (torch's own path on devices the
    kernels cannot use, or when input and weight dtypes differ)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not _kernels_apply(x, self.weight):
            return super().forward(x)
        return ops.linear(x, self.weight, self.bias)


class LinearAct(torch.nn.Linear):
    """``activation(x @ W.T + b)`` in one GEMM whose epilogue applies the activation.

    ``activation`` is one of "relu", "gelu", "gelu_tanh", "silu", "tanh" (or None). Parameters and
    ``state_dict`` are those of ``torch.nn.Linear``."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, activation: str | None = "gelu",
                 device=None, dtype=None):
        if activation not in ACTIVATIONS:
            raise ValueError(f"LinearAct: activation must be one of {list(ACTIVATIONS)}, "
                             f"got {activation!r}")
        super().__init__(in_features, out_features, bias, device=device, dtype=dtype)
        self.activation = activation

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, activation={self.activation}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not _kernels_apply(x, self.weight):
            return ops.linear_reference(x, self.weight, self.bias, self.activation)
        return ops.linear(x, self.weight, self.bias, activation=self.activation)
