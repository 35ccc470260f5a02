"""benchmarks/models.py's first-call counters: which launcher modules Triton built, named with
the kernel whose launcher each one is (what is left to build with lazy launchers)."""

import importlib.util
from pathlib import Path
from types import SimpleNamespace

import pytest


def _models_bench():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "models.py"
    spec = importlib.util.spec_from_file_location("models_bench", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def test_launcher_builds_are_named_by_kernel(monkeypatch):
    bench = _models_bench()
    counter = bench._Compiles()
    if counter.driver is None:
        pytest.skip("this Triton has no compile_module_from_src")
    monkeypatch.setattr(counter.driver, "compile_module_from_src", lambda **k: SimpleNamespace(name=k["name"]))

    class Launcher:  # stands for Triton's launcher class: the C module is built in its __init__
        def __init__(self, src, metadata):
            src = "/* the launcher's C source */"
            self.mod = counter.driver.compile_module_from_src(src=src, name="__triton_launcher")

    class CompiledKernel:  # stands for Triton's: it makes its launcher when first loaded
        def __init__(self, name):
            self.name = name

        def _init_handles(self):
            self.run = Launcher(None, None)

    with counter:
        CompiledKernel("_norm_fwd")._init_handles()
        CompiledKernel("_norm_fwd")._init_handles()
        counter.driver.compile_module_from_src(src="...", name="cuda_utils")  # no kernel in sight
    got = counter.summary()
    assert got["launcher_builds"] == 3
    assert got["launcher_by"] == {"__triton_launcher:_norm_fwd": 2, "cuda_utils": 1}
