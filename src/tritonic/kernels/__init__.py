"""Triton kernels only (``@triton.jit``), one module per op family. No torch here."""
