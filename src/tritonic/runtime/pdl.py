"""Programmatic dependent launch, the launches' side (the kernels' side: kernels/pdl.py).

On GPUs of compute capability 9.0 and later, the kernels that take ``USE_PDL`` (the norm
forward, the GEMMs, attention's forward, the embedding gather, RoPE and the activations)
launch with ``launch_pdl=True`` (the programmatic stream serialisation attribute) and wait
for their predecessor inside. On by default since an H100 measured it (BERT at 1x16 0.423 ->
0.376 ms a call); ``TRITONIC_PDL=0`` turns it off. Never in the interpreter, never while
torch traces.
"""

from __future__ import annotations

import functools
import os

import torch

from tritonic.runtime.device import has_cuda, interpreter_active

_ON = {"USE_PDL": True, "launch_pdl": True}
_OFF: dict = {}


def requested() -> bool:
    return os.environ.get("TRITONIC_PDL", "1").strip() != "0"


REQUESTED = requested()  # read at import; ops test this first, so that off costs nothing per call


@functools.lru_cache(maxsize=None)
def _on(device_index: int) -> bool:
    return (requested() and not interpreter_active() and has_cuda()
            and torch.cuda.get_device_capability(device_index)[0] >= 9)


def pdl_meta(device: torch.device) -> dict:
    """The launch keywords for a kernel taking ``USE_PDL`` on ``device`` (empty when off).
    The dict is shared: callers unpack it, never change it."""
    if not REQUESTED or device.type != "cuda":
        return _OFF
    return _ON if _on(device.index or 0) else _OFF


def enabled(device: torch.device) -> bool:
    return pdl_meta(device) is _ON
