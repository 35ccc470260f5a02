"""Test set-up: Triton's interpreter on machines without a GPU, and the ``gpu`` marker.

TRITON_INTERPRET must be set before triton is imported (Triton reads it when a kernel is
decorated), which is why this happens at the top of conftest, before any test module.
"""

import os

import torch

HAS_CUDA = torch.cuda.is_available()
if not HAS_CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")
# Tests check results, not speed: no autotuning (each new GEMM shape would time 8 configs),
# so every op takes its first config or shipped table. tests/test_autotune.py sets its own.
os.environ.setdefault("TRITONIC_AUTOTUNE", "off")

import pytest  # noqa: E402


def pytest_collection_modifyitems(config, items):
    if HAS_CUDA:
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def device():
    """Where the small-shape tests run: the GPU when there is one, else the CPU (interpreter)."""
    return "cuda" if HAS_CUDA else "cpu"


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _fresh_gemm_plans():
    """Each test starts without the GEMM's remembered launches (ops/matmul.py's _PLANS): a
    test that swaps a runner, a tuner or the launch sees its own calls go through them."""
    import importlib

    importlib.import_module("tritonic.ops.matmul")._PLANS.clear()


@pytest.fixture
def c_launch(monkeypatch):
    """The launcher's C module, configured with a device 0 and a stream 7; put back as it was
    afterwards (skipped where no C compiler is at hand)."""
    from tritonic.runtime import launcher as L

    module = L._build_c()
    if module is None:
        pytest.skip("no C compiler here")
    monkeypatch.setattr(L, "_knobs", None)
    monkeypatch.setattr(L, "FAST", True)
    L._configure_c(module, device=lambda: 0, stream=lambda d: 7)
    yield module
    if L._C is not None:
        L._configure_c(L._C)
