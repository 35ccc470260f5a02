"""Programmatic dependent launch (Hopper and later), the kernels' side.

A kernel launched with ``launch_pdl=True`` may start before the kernel ahead of it on the
stream has finished. ``pdl_enter`` is the first thing such a kernel does: it waits until that
kernel has completed and its writes are visible (``griddepcontrol.wait``), then lets the
kernel after it launch early in turn (``griddepcontrol.launch_dependents``; that kernel waits
for this one the same way). Between kernels of a CUDA graph this hides the launch latency,
about a microsecond a kernel, which is most of a small call's time. Nothing is read or
written before the wait, so neither read-after-write nor write-after-read orders change.
With ``USE_PDL`` false (the default, and always in the interpreter) it is nothing.
"""

import triton
import triton.language as tl
from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait


@triton.jit
def pdl_enter(USE_PDL: tl.constexpr):
    if USE_PDL:
        gdc_wait()
        gdc_launch_dependents()
