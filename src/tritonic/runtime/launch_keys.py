"""The fast launcher's keys: what Triton specialises a kernel on, per argument (``_spec``,
``_kind``, ``_int_key``), the test for tracing tensors (``is_traced``) and host tensor
descriptors built without Triton's per-call checks (``descriptor``). ``runtime/launcher.py``
uses them (and re-exports them: ops import ``is_traced`` and ``descriptor`` from there).
"""

from __future__ import annotations

import dataclasses

import torch

try:
    from triton.tools.tensor_descriptor import TensorDescriptor as _TensorDescriptor
except ImportError:  # a Triton without host-side tensor descriptors
    class _TensorDescriptor:  # noqa: D401 - placeholder nothing is an instance of
        pass

_PLAIN = (torch.Tensor, torch.nn.Parameter)
_PLAIN_OR_NONE = frozenset((torch.Tensor, torch.nn.Parameter, type(None)))


# Triton's TensorDescriptor validates its arguments in __post_init__ (alignment asserts, the
# block shape), about 3 µs of host time per descriptor, several per GEMM launch. Ops build
# descriptors only after checking the same layout facts themselves (ops/matmul.py's
# _tma_layout, attention's _tma_kv), so they skip it when the class has the fields this
# relies on; any other Triton gets the validating constructor.
_DESCRIPTOR_FIELDS = ("base", "shape", "strides", "block_shape", "padding")
try:
    _FAST_DESCRIPTOR = tuple(f.name for f in dataclasses.fields(_TensorDescriptor)) == _DESCRIPTOR_FIELDS
except TypeError:  # the placeholder class: no descriptors in this Triton
    _FAST_DESCRIPTOR = False


def descriptor(base, shape, strides, block_shape):
    """A host tensor descriptor (zero padding) over ``base``, without Triton's per-call checks:
    the caller has checked a 16-byte aligned base, 16-byte aligned strides with a unit last
    one, positive shapes and power-of-two blocks."""
    if not _FAST_DESCRIPTOR:
        return _TensorDescriptor(base, shape, strides, block_shape)
    d = object.__new__(_TensorDescriptor)
    d.base, d.shape, d.strides, d.block_shape, d.padding = base, shape, strides, block_shape, "zero"
    return d


def is_traced(*args) -> bool:
    """Is any tensor among ``args`` a tracing subclass (fake, functional, proxy, ...)?"""
    for a in args:  # (the type test first: isinstance on a tensor costs ~3x more)
        if type(a) not in _PLAIN_OR_NONE and isinstance(a, torch.Tensor):
            return True
    return False


def _spec(v):
    """The part of an argument that Triton specialises a kernel on."""
    if isinstance(v, torch.Tensor):
        return (v.dtype, v.data_ptr() % 16 == 0)
    if v is None:
        return None
    if isinstance(v, bool):
        return ("b", v)
    if isinstance(v, int):
        return (v == 1, v % 16 == 0, -(2**31) <= v < 2**31, v >= 2**63)
    if isinstance(v, float):
        return "f"
    if isinstance(v, _TensorDescriptor):  # Triton specialises on the dtype and block shape
        return ("d", v.base.dtype, tuple(v.block_shape), v.padding, len(v.shape))
    raise TypeError(f"no fast-launch key for an argument of type {type(v).__name__}")


class _Miss(Exception):
    """The fast binder does not apply to this call's argument kinds."""


_INT_MIN32, _INT_MAX32, _UINT64 = -(2**31), 2**31 - 1, 2**63


def _int_key(v: int) -> tuple:
    """The fast key of an integer outside [0, 2**31): a tuple, never equal to the one-element
    keys of the common range."""
    return (v == 1, v % 16 == 0, _INT_MIN32 <= v < 2**31, v >= _UINT64)


def _kind(v) -> str | None:
    """The kind of argument a fast binder is specialised for (None: no fast binder)."""
    if type(v) in _PLAIN:
        return "T"
    if v is None:
        return "N"
    if type(v) is int:
        return "i"
    if type(v) is float:
        return "f"
    if type(v) is bool:
        return "b"
    if isinstance(v, _TensorDescriptor):
        return "D"
    return None
