"""tritonic: readable Triton kernels and a low-overhead runtime for PyTorch transformers.

Importing tritonic does nothing but import: no patching, no compilation, no tuning.

    import tritonic
    y = tritonic.ops.layer_norm(x, weight, bias)
    norm = tritonic.nn.RMSNorm(4096)
"""

__version__ = "0.1.0"

from tritonic import nn, ops  # noqa: E402,F401

__all__ = ["nn", "ops", "__version__"]
