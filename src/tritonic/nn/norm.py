"""Drop-in norm modules: same parameters and ``state_dict`` as the torch modules they subclass."""

from __future__ import annotations

import math

import torch

from tritonic import ops
from tritonic.runtime import can_run_kernels


def _flat(x: torch.Tensor, shape, param):
    """View the normalised trailing dims of x (and the parameter) as one dimension."""
    if len(shape) == 1:
        return x, param
    n = math.prod(shape)
    return x.reshape(*x.shape[: x.dim() - len(shape)], n), None if param is None else param.reshape(n)


def tensor_version(t: torch.Tensor):
    """``t``'s version counter (bumped by in-place writes); inference tensors keep none (None)."""
    return None if t.is_inference() else t._version


def take_ahead(module: torch.nn.Module, x: torch.Tensor):
    """The output an ``add_norm_ahead`` call kept for ``x`` (that very tensor, not written in
    place since), or None; a kept output for another tensor is dropped."""
    ahead = module.__dict__.pop("_tritonic_ahead", None)
    if ahead is not None and ahead[0] is x and ahead[2] == tensor_version(x):
        return ahead[1]
    return None


def add_norm_ahead(module: torch.nn.Module, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a + b``, computing ``module``'s norm of it in the same kernel and keeping that for the
    module's next call with the returned tensor (a layer's closing residual add and the next
    layer's first norm; see :mod:`tritonic.integrations.residual`). While torch compiles, the
    plain add: a traced graph cannot keep tensors across module calls this way."""
    if torch.compiler.is_compiling():
        return a + b
    y, s = module.add_norm(a, b)
    module.__dict__["_tritonic_ahead"] = (s, y, tensor_version(s))
    return s


class LayerNorm(torch.nn.LayerNorm):
    """``torch.nn.LayerNorm`` computed by tritonic's kernel.

    On a device the kernels cannot use (a CPU without Triton's interpreter), it runs
    ``torch.nn.LayerNorm.forward`` unchanged.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if "_tritonic_ahead" in self.__dict__:
            y = take_ahead(self, x)
            if y is not None:
                return y
        if not can_run_kernels(x.device) or tuple(x.shape[x.dim() - len(self.normalized_shape):]) != tuple(
            self.normalized_shape
        ):
            return super().forward(x)
        shape = self.normalized_shape
        xf, w = _flat(x, shape, self.weight)
        _, b = _flat(x, shape, self.bias)
        return ops.layer_norm(xf, w, b, self.eps).view(x.shape)


    def add_norm(self, a: torch.Tensor, b: torch.Tensor):
        """``(self(a + b), a + b)``, the add inside the norm's kernel where it applies (a
        pre-norm block's residual add; see :mod:`tritonic.integrations.residual`)."""
        w = self.weight
        if len(self.normalized_shape) != 1 or a.shape != b.shape or a.dtype != b.dtype or \
                (w is not None and w.dtype != a.dtype) or a.shape[-1:] != tuple(self.normalized_shape) or \
                not can_run_kernels(a.device):
            s = a + b
            return self(s), s
        return ops.layer_norm(a, w, self.bias, self.eps, residual=b)

    add_norm_ahead = add_norm_ahead


class RMSNorm(torch.nn.RMSNorm):
    """``torch.nn.RMSNorm`` computed by tritonic's kernel (``eps=None`` means the input
    dtype's machine epsilon, as in torch). Scales in float32 like torch does.

    On a device the kernels cannot use (a CPU without Triton's interpreter), it runs
    ``torch.nn.RMSNorm.forward`` unchanged.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not can_run_kernels(x.device) or tuple(x.shape[x.dim() - len(self.normalized_shape):]) != tuple(
            self.normalized_shape
        ):
            return super().forward(x)
        eps = torch.finfo(x.dtype).eps if self.eps is None else self.eps
        xf, w = _flat(x, self.normalized_shape, self.weight)
        return ops.rms_norm(xf, w, eps, upcast=True).view(x.shape)
