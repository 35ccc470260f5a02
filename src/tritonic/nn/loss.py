"""Loss modules: drop-ins for ``torch.nn.CrossEntropyLoss`` and a fused LM-head loss."""

from __future__ import annotations

import torch

from tritonic.ops.loss import cross_entropy, fused_linear_cross_entropy

__all__ = ["CrossEntropyLoss", "FusedLinearCrossEntropyLoss"]


class CrossEntropyLoss(torch.nn.CrossEntropyLoss):
    """``torch.nn.CrossEntropyLoss`` through tritonic's kernels for class-index targets with
    the classes last; class weights, probability targets and ``(N, C, d...)`` inputs go to
    PyTorch's own implementation. ``z_loss`` and ``softcap`` as in
    :func:`tritonic.ops.cross_entropy`."""

    def __init__(self, *args, z_loss: float = 0.0, softcap: float | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.z_loss, self.softcap = z_loss, softcap

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        plain = self.weight is None and target.dtype in (torch.int64, torch.int32) and input.dim() == 2
        if not plain:
            if self.z_loss or self.softcap is not None:
                raise ValueError("CrossEntropyLoss: z_loss and softcap need 2-D logits, class-index targets and "
                                 "no class weights")
            return super().forward(input, target)
        return cross_entropy(input, target, self.ignore_index, self.reduction, self.label_smoothing, self.z_loss,
                             self.softcap)


class FusedLinearCrossEntropyLoss(torch.nn.Module):
    """``loss(hidden, weight, target, bias=None)``: the language-model head and the
    cross-entropy together, without materialising the logits (see
    :func:`tritonic.ops.fused_linear_cross_entropy`)."""

    def __init__(self, ignore_index: int = -100, reduction: str = "mean", label_smoothing: float = 0.0,
                 z_loss: float = 0.0, softcap: float | None = None, chunk_rows: int | None = None):
        super().__init__()
        self.ignore_index, self.reduction, self.label_smoothing = ignore_index, reduction, label_smoothing
        self.z_loss, self.softcap, self.chunk_rows = z_loss, softcap, chunk_rows

    def forward(self, hidden: torch.Tensor, weight: torch.Tensor, target: torch.Tensor,
                bias: torch.Tensor | None = None) -> torch.Tensor:
        return fused_linear_cross_entropy(hidden, weight, target, bias, self.ignore_index, self.reduction,
                                          self.label_smoothing, self.z_loss, self.softcap, chunk_rows=self.chunk_rows)
