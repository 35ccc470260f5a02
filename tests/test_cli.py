"""The tritonic command: env and demo run on a CPU-only machine and say what they do."""

import subprocess
import sys


def _run(*args):
    return subprocess.run([sys.executable, "-m", "tritonic", *args], capture_output=True, text=True, timeout=300)


def test_env_reports_versions_and_interpreter():
    r = _run("env")
    assert r.returncode == 0, r.stderr
    for word in ("torch", "triton", "triton interpreter", "autotune cache", "fast launcher"):
        assert word in r.stdout


def test_demo_runs_and_checks_the_error():
    r = _run("demo", "--cpu")
    assert r.returncode == 0, r.stderr
    assert "interpreter" in r.stdout
    assert "within 2x PyTorch's own" in r.stdout
    if "all-MiniLM-L6-v2 part skipped" not in r.stdout:  # with the hf extra: the real model too
        assert "lowest cosine(before, after): 1.0000" in r.stdout or "lowest cosine(before, after): 0.9999" in \
            r.stdout, r.stdout[-2000:]


def test_no_subcommand_prints_help():
    r = _run()
    assert r.returncode == 0 and "env" in r.stdout and "demo" in r.stdout


def test_tune_explains_bad_files_and_a_missing_gpu(tmp_path):
    r = _run("tune", "--shapes", str(tmp_path / "missing.json"))
    assert r.returncode == 1 and "missing.json" in r.stderr
    r = _run("tune")
    assert r.returncode == 1 and "nothing to tune" in r.stderr
    r = _run("tune", "--model", "no-such-model")
    assert r.returncode == 1 and "neither a preset" in r.stderr
    f = tmp_path / "shapes.json"
    f.write_text('[{"op": "linear", "M": 16, "N": 16, "K": 16}]')
    r = _run("tune", "--shapes", str(f))
    import torch

    if not torch.cuda.is_available():
        assert r.returncode == 1 and "needs a CUDA GPU" in r.stderr
    else:
        assert r.returncode == 0 and "tuning time in this process" in r.stdout


def test_model_shapes_from_presets_and_configs(tmp_path):
    import json

    from tritonic.cli import _model_shapes

    llama = _model_shapes("llama-3-8b", [16, 4096], "bfloat16")
    ops = {(s["op"], s["N"], s["K"]) for s in llama}
    assert ("gated_linear", 2 * 14336, 4096) in ops and ("linear", 4096, 14336) in ops
    assert ("linear", 1024, 4096) in ops  # grouped-query k/v projections
    assert {s["M"] for s in llama} == {16, 4096}
    gpt2 = _model_shapes("gpt2", [8], "float16")
    assert ("linear", 3072, 768) in {(s["op"], s["N"], s["K"]) for s in gpt2}
    assert any(s["activation"] == "gelu_tanh" for s in gpt2)
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({"model_type": "bert", "hidden_size": 64, "num_attention_heads": 2,
                               "intermediate_size": 256}))
    assert {(s["N"], s["K"]) for s in _model_shapes(str(tmp_path), [4], "float16")} == {(64, 64), (256, 64), (64, 256)}
    cfg.write_text(json.dumps({"model_type": "t5x", "d_model": 8}))
    import pytest

    with pytest.raises(ValueError, match="not one tritonic tune knows"):
        _model_shapes(str(cfg), [4], "float16")


def test_bench_runs_a_benchmark_and_charts_it(tmp_path):
    import os

    env = {**os.environ, "TRITON_INTERPRET": "1"}
    r = subprocess.run([sys.executable, "-m", "tritonic", "bench", "ops", "--only", "decode", "--dry-run", "--out",
                        str(tmp_path)], capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert list(tmp_path.glob("*/decode.json"))
    assert "chart:" in r.stdout or "no chart" in r.stdout
    r = subprocess.run([sys.executable, "-m", "tritonic", "bench", "training", "--only", "llama-tiny", "--dry-run",
                        "--out", str(tmp_path)], capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0 and "llama-tiny 2x16" in r.stdout and "tritonic" in r.stdout, r.stdout[-2000:] + r.stderr
    bad = _run("bench", "ops", "--only", "nothing")
    assert bad.returncode == 2 and "no benchmark matches" in bad.stderr
