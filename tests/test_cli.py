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


def test_no_subcommand_prints_help():
    r = _run()
    assert r.returncode == 0 and "env" in r.stdout and "demo" in r.stdout


def test_tune_explains_bad_files_and_a_missing_gpu(tmp_path):
    r = _run("tune", "--shapes", str(tmp_path / "missing.json"))
    assert r.returncode == 1 and "cannot read" in r.stderr
    f = tmp_path / "shapes.json"
    f.write_text('[{"op": "linear", "M": 16, "N": 16, "K": 16}]')
    r = _run("tune", "--shapes", str(f))
    import torch

    if not torch.cuda.is_available():
        assert r.returncode == 1 and "needs a CUDA GPU" in r.stderr
    else:
        assert r.returncode == 0 and "tuning time in this process" in r.stdout
