"""tritonic: readable Triton kernels and a low-overhead runtime for PyTorch transformers.

Importing tritonic does nothing but import: no patching, no compilation, no tuning. Even
the kernels are imported on first use (``tritonic.ops``, ``tritonic.nn``), so that a program
can still choose Triton's interpreter (``TRITON_INTERPRET=1``) after ``import tritonic``.

    import tritonic
    y = tritonic.ops.layer_norm(x, weight, bias)
    norm = tritonic.nn.RMSNorm(4096)
"""

import importlib

__version__ = "0.1.0"
__all__ = ["capture_train_step", "nn", "ops", "optimize", "runtime", "__version__"]


def optimize(model, **kwargs):
    """Make a Hugging Face ``transformers`` model use tritonic's kernels (see
    :func:`tritonic.integrations.hf.optimize`)."""
    from tritonic.integrations.hf import optimize as _optimize

    return _optimize(model, **kwargs)


def capture_train_step(train_step, optimizer, batch, **kwargs):
    """A whole training step in one CUDA graph (see
    :func:`tritonic.runtime.cudagraph.capture_train_step`)."""
    from tritonic.runtime.cudagraph import capture_train_step as _capture

    return _capture(train_step, optimizer, batch, **kwargs)


def __getattr__(name):
    if name in ("nn", "ops", "runtime", "bench", "kernels", "integrations", "models"):
        return importlib.import_module(f"tritonic.{name}")
    raise AttributeError(f"module 'tritonic' has no attribute {name!r}")
