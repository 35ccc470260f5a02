"""benchmarks/training.py: one training-step measurement of a tiny model in this process
(the interpreter on the CPU), and the liger provider skipping models it does not support."""

import importlib.util
import math
from pathlib import Path

import pytest

pytest.importorskip("transformers")

spec = importlib.util.spec_from_file_location(
    "training_bench", Path(__file__).resolve().parents[1] / "benchmarks" / "training.py")
training = importlib.util.module_from_spec(spec)
spec.loader.exec_module(training)


@pytest.mark.parametrize("provider", ["eager", "tritonic"])
def test_one_step_row(provider, device):
    row = training.one("llama-tiny", provider, 1, device)
    assert row["bench"] == "training" and row["case"] == "llama-tiny 2x16" and row["provider"] == provider
    assert row["ms"] > 0 and row["value"] == pytest.approx(32 / (row["ms"] * 1e-3))
    assert math.isfinite(row["loss"]) and 3.0 < row["loss"] < 6.5  # about ln(97) at initialisation


def test_liger_skips_gpt2(device):
    assert training.one("gpt2-tiny", "liger", 1, device) is None
