"""Programmatic dependent launch, the launches' side (the kernels' side: kernels/pdl.py).

On GPUs of compute capability 9.0 and later, the kernels that take ``USE_PDL`` (the norm
forward, the GEMMs, attention's forward, flash-decoding's two kernels, the embedding gather,
RoPE and the activations) launch with ``launch_pdl=True`` (the programmatic stream serialisation attribute) and wait
for their predecessor inside. Where it is used is where an H100 measured a gain (863fcd8 and
13ce56e, same session, PDL on against off):

- inside tritonic's own CUDA-graph captures (``capturing()``: optimize's graphs, the decode
  graphs of generate, the captured training step), where launch gaps are what is left:
  BERT, GPT-2 and Llama at 1x16 0.424 / 0.409 / 0.981 -> 0.376 / 0.370 / 0.898 ms a call;
- for launches of at most ``TRITONIC_PDL_MAX_ROWS`` rows (128): from 512 tokens up it cost
  1-4 % (GPT-2 1x512 0.613 -> 0.621 ms, Llama 1x512 1.847 -> 1.926, 32x256 21.47 -> 22.21).

``TRITONIC_PDL=0`` turns it off. Never in the interpreter, never while torch traces. Outside
a capture, launches keep the path the GPU tests cover.
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading

import torch

from tritonic.runtime.device import has_cuda, interpreter_active

ON = {"USE_PDL": True, "launch_pdl": True}
# Off still names USE_PDL: Inductor (torch 2.11) builds a user kernel's launcher from the
# constexprs it was given, and one left at its default breaks it ("missing '_grid_2'").
OFF = {"USE_PDL": False}


def requested() -> bool:
    return os.environ.get("TRITONIC_PDL", "1").strip() != "0"


REQUESTED = requested()  # read at import
MAX_ROWS = int(os.environ.get("TRITONIC_PDL_MAX_ROWS", "128") or 128)
ACTIVE = False  # REQUESTED and a capture is open: ops test this first, so that off costs nothing
_depth = 0
_lock = threading.Lock()


@contextlib.contextmanager
def capturing():
    """Around one of tritonic's CUDA-graph captures: its small launches use PDL."""
    global ACTIVE, _depth
    with _lock:
        _depth += 1
        ACTIVE = REQUESTED
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            ACTIVE = REQUESTED and _depth > 0


def while_capturing(fn):
    """``fn`` (a warm-up and capture) run inside ``capturing()``: the warm-up compiles the
    PDL variants the capture records, so that nothing compiles during the capture."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with capturing():
            return fn(*args, **kwargs)
    return wrapper


@functools.lru_cache(maxsize=None)
def _on(device_index: int) -> bool:
    return not interpreter_active() and has_cuda() and torch.cuda.get_device_capability(device_index)[0] >= 9


def pdl_meta(device: torch.device, rows: int) -> dict:
    """The launch keywords for a kernel taking ``USE_PDL`` on ``device`` that covers ``rows``
    rows (tokens): ``OFF`` outside a capture, above ``MAX_ROWS`` and on GPUs without PDL.
    The dicts are shared: callers unpack them, never change them."""
    if not ACTIVE or rows > MAX_ROWS or device.type != "cuda":
        return OFF
    return ON if _on(device.index or 0) else OFF
