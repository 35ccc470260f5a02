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
