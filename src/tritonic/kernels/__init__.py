"""Triton kernels only (``@triton.jit``), one module per op family. No torch here.

Importing the package first checks that Triton (and torch) are new enough, so that an old
install fails with one sentence saying what to upgrade rather than deep inside a kernel."""

from tritonic.runtime.device import check_versions as _check_versions

_check_versions()
