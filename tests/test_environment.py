"""Errors a user can meet before any kernel runs (too old a torch, Triton or GPU) end in one
sentence that says what to do, not in a traceback from inside Triton."""

import pytest
import torch

from tritonic import cli
from tritonic.runtime import checks, device
from tritonic.runtime.device import UnsupportedEnvironment, check_versions, gpu_problem


@pytest.mark.parametrize("torch_v,triton_v,bad", [
    ("2.7.1", "3.6.0", "torch 2.8 or newer, this is 2.7.1: pip install -U 'torch>=2.8'"),
    ("2.13.0+cpu", "3.3.1", "triton 3.4 or newer, this is 3.3.1: pip install -U 'triton>=3.4'"),
    ("2.10.0a0+git1234", "3.4.0", None),
    ("2.13.0+cu130", "3.6.0", None),
])
def test_versions(torch_v, triton_v, bad):
    if bad is None:
        check_versions(torch_v, triton_v)
        return
    with pytest.raises(UnsupportedEnvironment) as e:
        check_versions(torch_v, triton_v)
    assert bad in str(e.value) and "\n" not in str(e.value)
    assert isinstance(e.value, ImportError)  # `except ImportError` still catches it


def test_installed_versions_are_supported():
    check_versions()  # this machine's torch and triton (CI pins torch 2.13, triton 3.6)


@pytest.mark.parametrize("cap,name,ok", [((7, 5), "Tesla T4", False), ((8, 0), "NVIDIA A100", True),
                                         ((9, 0), "NVIDIA H100", True)])
def test_old_gpus_are_named_with_what_to_do(cap, name, ok, monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda i=None: cap)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i=None: name)
    gpu_problem.cache_clear()
    try:
        problem = gpu_problem(0)
    finally:
        gpu_problem.cache_clear()
    if ok:
        assert problem is None
    else:
        assert "Tesla T4" in problem and "7.5" in problem and "8.0 or newer" in problem
        assert "without tritonic" in problem


def test_an_op_on_an_old_gpu_raises_one_sentence(monkeypatch):
    class FakeCudaTensor:
        device = torch.device("cuda", 0)

    monkeypatch.setattr(checks, "can_run_kernels", lambda d: False)
    monkeypatch.setattr(checks, "has_cuda", lambda: True)
    monkeypatch.setattr(checks, "gpu_problem", lambda i: "the GPU X (compute capability 7.0) is older than Ampere")
    with pytest.raises(UnsupportedEnvironment, match=r"^layer_norm: the GPU X \(compute capability 7.0\)"):
        checks.check_kernel_device("layer_norm", "x", FakeCudaTensor())


def test_cli_prints_the_sentence_not_a_traceback(monkeypatch, capsys):
    def broken(args):
        raise UnsupportedEnvironment("tritonic needs triton 3.4 or newer, this is 3.2.0: pip install -U 'triton>=3.4'")

    monkeypatch.setattr(cli, "cmd_env", broken)
    assert cli.main(["env"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == "tritonic env: tritonic needs triton 3.4 or newer, this is 3.2.0: pip install -U 'triton>=3.4'"
    assert "Traceback" not in err


def test_cli_names_a_missing_optional_package(monkeypatch, capsys):
    def needs_matplotlib(args):
        raise ModuleNotFoundError("No module named 'matplotlib'", name="matplotlib")

    monkeypatch.setattr(cli, "cmd_env", needs_matplotlib)
    assert cli.main(["env"]) == 1
    err = capsys.readouterr().err.strip()
    assert "matplotlib" in err and "pip" in err and len(err.splitlines()) == 1


def test_can_run_kernels_is_false_on_an_old_gpu(monkeypatch):
    monkeypatch.setattr(device, "_runnable", {})  # (a fresh memo, restored after)
    monkeypatch.setattr(device, "interpreter_active", lambda: False)
    monkeypatch.setattr(device, "has_cuda", lambda: True)
    monkeypatch.setattr(device, "gpu_problem", lambda i=0: "too old")
    assert not device.can_run_kernels(torch.device("cuda", 0))
    monkeypatch.setattr(device, "gpu_problem", lambda i=0: None)
    assert device.can_run_kernels(torch.device("cuda", 0))
    assert torch.device("cuda", 0) in device._runnable  # remembered: the facts are fixed per process
