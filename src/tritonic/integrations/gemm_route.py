"""Opt-in (``TRITONIC_INFER_GEMM=triton``): an optimized model's plain products at inference
go through tritonic's GEMM instead of cuBLAS.

By default ``optimize`` leaves a product with nothing to fuse (attention's output projection,
the MLP's down projection, GPT-2's ``Conv1D`` layers, the stacked q/k/v) to cuBLAS, which is
as fast or faster there. This switch exists for one experiment: with programmatic dependent
launch (``TRITONIC_PDL=1``), a kernel boundary hides its launch gap only between two of
tritonic's kernels, because PyTorch launches cuBLAS without the attribute. With both on,
every kernel of a graphed call is tritonic's, so that the sum can be timed against cuBLAS's
faster products (``benchmarks/NOTES.md``).

The switch changes classes in place: an ``nn.Linear`` becomes :class:`tritonic.nn.Linear`,
a ``Conv1D`` (``x @ W + b`` with ``W`` stored ``(in, out)``) a subclass of its own class
whose ``forward`` calls ``ops.linear``. Parameters, hooks and ``state_dict`` do not change.
Each module is first run on a probe and kept in its class when the result misses the
correctness rule. The probe's float64 reference covers the first 256 output columns only:
an LM head's full weight in float64 would cost gigabytes. Inference only.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F

from tritonic import nn as tnn
from tritonic import ops
from tritonic.integrations.swaps import PROBE_ROWS, within_rule
from tritonic.runtime import can_run_kernels

__all__ = ["REQUESTED", "plain_linear", "route_plain_products"]

REQUESTED = os.environ.get("TRITONIC_INFER_GEMM", "").strip().lower() == "triton"
_REF_COLUMNS = 256


def plain_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``F.linear``, or tritonic's GEMM when the switch is on and the kernels apply."""
    if REQUESTED and x.dtype == weight.dtype and can_run_kernels(x.device):
        return ops.linear(x, weight, bias)
    return F.linear(x, weight, bias)


_CONV1D_CLASSES: dict = {}


def _conv1d_class(cls):
    """A subclass of this ``Conv1D`` class whose ``forward`` is tritonic's GEMM (made once)."""
    sub = _CONV1D_CLASSES.get(cls)
    if sub is None:
        def forward(self, x):
            if x.dtype == self.weight.dtype and can_run_kernels(x.device):
                return ops.linear(x, self.weight.t(), self.bias)
            return cls.forward(self, x)

        sub = _CONV1D_CLASSES[cls] = type(f"Tritonic{cls.__name__}", (cls,), {"forward": forward})
    return sub


def _is_conv1d(m: torch.nn.Module) -> bool:
    w, b = getattr(m, "weight", None), getattr(m, "bias", None)
    return (type(m).__name__ == "Conv1D" and isinstance(getattr(m, "nf", None), int) and isinstance(w, torch.Tensor)
            and w.dim() == 2 and w.shape[1] == m.nf and (b is None or tuple(b.shape) == (m.nf,)))


def _probe(m: torch.nn.Module, new_cls, conv1d: bool) -> str | None:
    """None when ``m`` run as ``new_cls`` passes the correctness rule on a probe, else why not."""
    w, b = m.weight, m.bias
    wt = w.t() if conv1d else w  # (out, in)
    torch.manual_seed(1234)
    x = torch.randn(*PROBE_ROWS, wt.shape[1], device=w.device).to(w.dtype)
    n = min(_REF_COLUMNS, wt.shape[0])
    old = m.__class__
    with torch.no_grad():
        theirs = m(x)[..., :n]
        ref = F.linear(x.double(), wt[:n].double(), None if b is None else b[:n].double())
        m.__class__ = new_cls
        try:
            ours = m(x)[..., :n]
        except Exception as e:  # a shape or dtype the kernel does not take
            return f"{type(e).__name__}: {e}"
        finally:
            m.__class__ = old
    ok, err, err_theirs = within_rule(ours, theirs, ref)
    return None if ok else f"probe error {err:.2e} against float64, the original's {err_theirs:.2e}"


def route_plain_products(model: torch.nn.Module) -> tuple[list[str], list[str]]:
    """With the switch on, move the plain ``nn.Linear`` and ``Conv1D`` modules of ``model`` to
    tritonic's GEMM; returns (replaced, kept) lines for the report."""
    if not REQUESTED:
        return [], []
    counts: dict[str, int] = {}
    kept: list[str] = []
    for name, m in model.named_modules():
        if type(m) is torch.nn.Linear:
            new_cls, conv1d = tnn.Linear, False
        elif _is_conv1d(m):
            new_cls, conv1d = _conv1d_class(type(m)), True
        else:
            continue
        if not can_run_kernels(m.weight.device):
            continue
        why = _probe(m, new_cls, conv1d)
        if why is not None:
            kept.append(f"{name} ({type(m).__name__}): TRITONIC_INFER_GEMM: {why}")
            continue
        label = f"{type(m).__name__} -> {new_cls.__name__} (TRITONIC_INFER_GEMM=triton)"
        m.__class__ = new_cls
        counts[label] = counts.get(label, 0) + 1
    return [f"{k} ({n})" for k, n in counts.items()], kept
