"""benchmarks/generate.py on tiny models in the interpreter: eager and tritonic (captured
decode steps run without capture on the CPU) give the same greedy tokens."""

import importlib.util
from pathlib import Path

import pytest

pytest.importorskip("transformers")


def test_dry_run(capsys):
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "generate.py"
    spec = importlib.util.spec_from_file_location("generate_bench", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.main(["--dry-run", "--only", "llama"]) == 0
    out = capsys.readouterr().out
    assert "llama b1 8+4 tritonic" in out and "tokens equal eager's: True" in out
    assert "tokens equal eager's: False" not in out
