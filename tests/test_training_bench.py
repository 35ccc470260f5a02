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


def test_fsdp_rows_compare_two_gpus_with_one(monkeypatch):
    """--fsdp: one torchrun of examples/train.py per GPU count (same global batch); the rows carry
    the median step time past the first tenth, the scaling and the losses' largest difference.
    (The runs are faked here; tests/test_train_example.py runs FSDP2 itself over gloo.)"""
    import json
    import subprocess
    from types import SimpleNamespace

    calls = []

    def fake_run(cmd, **kwargs):
        n = int(cmd[cmd.index("--nproc_per_node") + 1])
        calls.append(cmd)
        times = [9.0] + [0.2 / n] * 9  # a slow first step, excluded with the first tenth
        losses = [5.0 - 0.1 * i + (1e-4 if n > 1 else 0.0) for i in range(10)]
        out = cmd[cmd.index("--losses") + 1]
        with open(out, "w") as f:
            json.dump({"losses": losses, "step_seconds": times}, f)
        return SimpleNamespace(returncode=0, stdout="", stderr="")

    monkeypatch.setattr(subprocess, "run", fake_run)
    rows = training.fsdp_rows([128], 2, 10, 60, False, {}, None)
    assert [r["provider"] for r in rows] == ["1 GPU", "2 GPUs"]
    assert rows[0]["ms"] == pytest.approx(200.0) and rows[1]["ms"] == pytest.approx(100.0)
    assert rows[1]["value"] == pytest.approx(128 * 1024 / 0.1)
    assert rows[1]["scaling"] == pytest.approx(2.0) and rows[1]["max_loss_diff"] == pytest.approx(1e-4)
    assert rows[1]["final_loss_diff"] == pytest.approx(1e-4)
    assert all("--dist" in c and "fsdp" in c and "--dtype" in c for c in calls)
