"""Drop-in softmax module: same constructor and behaviour as the torch module it subclasses."""

from __future__ import annotations

import torch

from tritonic.ops.softmax import softmax
from tritonic.runtime import can_run_kernels


class Softmax(torch.nn.Softmax):
    """``torch.nn.Softmax`` computed by tritonic's kernel when ``dim`` is the last dimension.

    Any other ``dim`` (including ``dim=None``, torch's legacy implicit choice), and devices
    the kernels cannot use (a CPU without Triton's interpreter), run
    ``torch.nn.Softmax.forward`` unchanged.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (self.dim is None or x.dim() == 0 or self.dim not in (-1, x.dim() - 1)
                or not can_run_kernels(x.device)):
            return super().forward(x)
        return softmax(x, -1)
