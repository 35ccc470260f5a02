"""Drop-in embedding module: same parameter and ``state_dict`` as ``torch.nn.Embedding``."""

from __future__ import annotations

import torch

from tritonic import ops
from tritonic.runtime import can_run_kernels


class Embedding(torch.nn.Embedding):
    """``torch.nn.Embedding`` whose lookup is tritonic's gather kernel (:func:`tritonic.ops.embedding`).

    ``max_norm`` (which rescales rows of the table in place), sparse gradients,
    ``scale_grad_by_freq``, and devices the kernels cannot use, run ``torch.nn.Embedding.forward`` unchanged."""

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if self.max_norm is not None or self.sparse or self.scale_grad_by_freq or not can_run_kernels(self.weight.device):
            return super().forward(ids)
        return ops.embedding(ids, self.weight, self.padding_idx)
