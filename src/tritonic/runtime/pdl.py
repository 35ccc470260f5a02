"""Programmatic dependent launch, the launches' side (the kernels' side: kernels/pdl.py).

``TRITONIC_PDL=1`` turns it on for the kernels that take ``USE_PDL`` (the norm forward, the
GEMMs, attention's forward, the embedding gather, RoPE and the activations) on GPUs of
compute capability 9.0 and later: their launches then carry ``launch_pdl=True`` (Triton's
launcher sets the programmatic stream serialisation attribute) and the kernels wait for
their predecessor inside. Off by default until it has been measured on a GPU; never in the
interpreter.
"""

from __future__ import annotations

import functools
import os

import torch

from tritonic.runtime.device import has_cuda, interpreter_active

_ON = {"USE_PDL": True, "launch_pdl": True}
_OFF: dict = {}


def requested() -> bool:
    return os.environ.get("TRITONIC_PDL", "0").strip() == "1"


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
