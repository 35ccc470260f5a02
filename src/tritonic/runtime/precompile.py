"""Compile a model's kernels in parallel before its first real run.

A model's first call compiles its kernels one after the other as it reaches them (Triton
compiles in the calling thread). Under ``precompile()``, launches of kernels not compiled yet
submit the compile to a thread pool through Triton's AsyncCompileMode and run nothing; the
autotuner runs every config that way and remembers no choice. Leaving the block waits for
the compiles, so a forward run inside it, on any inputs, leaves the real run with its kernels
compiled in parallel (Triton's compiles release the GIL: 4 compiles took half the time of
one after another in 2 threads on the dev CPU). The outputs of a run inside are garbage.
optimize()'s CUDA graphs use it before their warm-up when TRITONIC_PRECOMPILE=1.

Triton also builds a small C launcher per kernel signature when a compiled kernel is first
loaded (gcc, where its cache has none yet), one after another during the real run; leaving
the block builds those too, in the same pool, so the real run finds them in the cache (with
the lazy launcher, only for the kernels the direct launch cannot take: launcher._lazy_entry).
"""

from __future__ import annotations

import os
import threading

from tritonic.runtime import launcher
from tritonic.runtime.device import interpreter_active


def precompiling() -> bool:
    return launcher._precompiling == threading.get_ident()  # (0 when none: no thread has id 0)


def precompile_wanted() -> bool:
    return os.environ.get("TRITONIC_PRECOMPILE", "0").strip() == "1" and not interpreter_active()


class precompile:
    """``with precompile(): model(...)``: see the module docstring. A no-op in the interpreter,
    with a Triton without AsyncCompileMode, and while another ``precompile`` is active (in any
    thread: one pool at a time). Only this thread's launches are held back."""

    def __init__(self, workers: int | None = None):
        self.workers = workers or min(16, os.cpu_count() or 1)
        self.mode = self.pool = None

    @property
    def active(self) -> bool:
        """Did entering start a pool (launches compile and run nothing until the block ends)?"""
        return self.mode is not None

    def __enter__(self):
        if launcher._precompiling or interpreter_active():
            return self
        try:
            from concurrent.futures import ThreadPoolExecutor

            from triton.runtime._async_compile import AsyncCompileMode
        except ImportError:
            return self
        self.pool = ThreadPoolExecutor(self.workers)
        self.mode = AsyncCompileMode(self.pool, ignore_errors=True)
        try:
            self.mode.__enter__()
        except RuntimeError:  # another AsyncCompileMode is active: leave it alone
            self.pool.shutdown(wait=False)
            self.mode = self.pool = None
            return self
        launcher._precompiling = threading.get_ident()
        return self

    def __exit__(self, *exc):
        if self.mode is None:
            return False
        launcher._precompiling = 0
        try:
            self.mode.__exit__(None, None, None)  # waits for the compiles (their errors are ignored)
            _warm_launchers(self.pool, [f.kernel for f in getattr(self.mode, "future_kernels", {}).values()])
        finally:
            self.pool.shutdown(wait=True)
        return False


def _warm_launchers(pool, kernels) -> int:
    """Build the Triton launchers of compiled kernels not loaded yet, in ``pool``, so that their
    first load finds them in Triton's cache; errors are left for the real load to report.
    With the lazy launcher on, only those of kernels the direct launch cannot take. Returns
    how many were submitted."""
    try:
        from triton.runtime.driver import driver

        build = driver.active.launcher_cls  # (no CUDA call: it generates and compiles C only)
    except Exception:  # another Triton, or no driver: nothing to warm
        return 0
    jobs, seen = [], set()
    lazy = launcher.LAZY and launcher._C_DIRECT  # (kernels the direct launch takes never need one)
    for k in kernels:
        if k is None or getattr(k, "_run", None) is not None or not hasattr(k, "src") or not hasattr(k, "metadata"):
            continue
        if lazy and launcher._direct_eligible(k):
            continue
        try:  # the launcher's source follows the signature: the tuner's configs of a kernel share one
            sig = (tuple(k.src.signature.items()), repr(getattr(k.metadata, "tensordesc_meta", None)))
        except (AttributeError, TypeError):
            sig = id(k)
        if sig not in seen:
            seen.add(sig)
            jobs.append(pool.submit(build, k.src, k.metadata))
    for job in jobs:
        try:
            job.result()
        except Exception:
            pass
    return len(jobs)
