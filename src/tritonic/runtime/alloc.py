"""Output allocation, with NaN poisoning for tests.

Every op allocates its outputs through :func:`empty`. Inside :func:`poisoning` (used by
the test helpers), outputs are filled with NaN (floats) or a sentinel (integers) first,
so an element a kernel forgot to write fails the test instead of passing as zero.
"""

from __future__ import annotations

import contextlib
import threading

import torch

_state = threading.local()
_active = 0  # poisoning() contexts open in any thread: the allocators' cheap first test
_lock = threading.Lock()


def poison_outputs() -> bool:
    return getattr(_state, "poison", False)


@contextlib.contextmanager
def poisoning(enabled: bool = True):
    global _active
    prev = poison_outputs()
    _state.poison = enabled
    with _lock:
        _active += 1
    try:
        yield
    finally:
        _state.poison = prev
        with _lock:
            _active -= 1


def empty(shape, *, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    out = torch.empty(shape, dtype=dtype, device=device)
    if _active and poison_outputs():
        if out.dtype.is_floating_point:
            out.fill_(float("nan"))
        else:
            out.fill_(-(2**30) if out.dtype != torch.bool else True)
    return out


def empty_like(t: torch.Tensor) -> torch.Tensor:
    """A contiguous tensor of ``t``'s shape, dtype and device (poisoned like :func:`empty`)."""
    out = torch.empty_like(t)  # (preserving the layout is ~25 % cheaper than asking for contiguous;
    if not out.is_contiguous():  # a dense permuted or non-dense ``t`` takes the second call)
        out = torch.empty_like(t, memory_format=torch.contiguous_format)
    if _active and poison_outputs():
        out.fill_(float("nan") if out.dtype.is_floating_point else -(2**30))
    return out


def _scratch(size: int, alignment: int, stream) -> torch.Tensor:
    """Triton's global scratch for one launch (descriptors made on the device: 128 bytes each
    per program), from the caching allocator on the current device (graph-safe)."""
    return torch.empty(size, dtype=torch.int8, device=torch.device("cuda", torch.cuda.current_device()))


def ensure_scratch_allocator() -> None:
    """Give Triton an allocator for kernels that need global scratch, unless the user set one.
    Triton keeps it in a context variable, so a thread that never set one (autograd's backward
    threads) has none: call this before each such launch (a context-variable read)."""
    from triton.runtime import _allocation

    if isinstance(_allocation._allocator.get(), _allocation.NullAllocator):
        _allocation.set_allocator(_scratch)
