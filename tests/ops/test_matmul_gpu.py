"""GPU-only GEMM tests: bfloat16 (the interpreter's tl.dot is wrong for it), real sizes,
TF32 switching, torch.compile and CUDA graphs."""

import importlib

import pytest
import torch

from tests.helpers import check_op
from tritonic.ops import linear, linear_reference, matmul

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("act", [None, "gelu", "silu", "tanh"])
@pytest.mark.parametrize("M,N,K", [(1, 4096, 4096), (257, 1000, 768), (2048, 3072, 768)])
def test_linear_bf16(M, N, K, act):
    a = dict(x=torch.randn(M, K, device="cuda", dtype=torch.bfloat16),
             weight=torch.randn(N, K, device="cuda", dtype=torch.bfloat16) / K ** 0.5,
             bias=torch.randn(N, device="cuda", dtype=torch.bfloat16),
             residual=torch.randn(M, N, device="cuda", dtype=torch.bfloat16))
    check_op(lambda **k: linear(**k, activation=act), lambda **k: linear_reference(**k, activation=act), a,
             grads=list(a), atol_ulps=8)


@pytest.mark.parametrize("tf32", [False, True])
def test_float32_precision_follows_torch(tf32, monkeypatch):
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", tf32)
    a, b = torch.randn(512, 512, device="cuda"), torch.randn(512, 512, device="cuda")
    check_op(lambda a, b: matmul(a, b), lambda a, b: torch.matmul(a, b), dict(a=a, b=b), atol_ulps=8)


def test_batched_bf16():
    a = torch.randn(4, 300, 64, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(4, 64, 200, device="cuda", dtype=torch.bfloat16)
    check_op(lambda a, b: matmul(a, b), lambda a, b: torch.matmul(a, b), dict(a=a, b=b), grads=["a", "b"],
             atol_ulps=8)
    check_op(lambda a, b: matmul(a, b), lambda a, b: torch.matmul(a, b), dict(a=a, b=b[0]), grads=["a", "b"],
             atol_ulps=8)


def test_compile_and_graphs():
    x = torch.randn(256, 512, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    w = torch.randn(1024, 512, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    f = torch.compile(lambda x, w: linear(x, w, activation="gelu"), fullgraph=True)
    y = f(x, w)
    torch.testing.assert_close(y, linear(x, w, activation="gelu"))
    gx, gw = torch.autograd.grad(y.float().sum(), [x, w])
    rx, rw = torch.autograd.grad(linear(x, w, activation="gelu").float().sum(), [x, w])
    torch.testing.assert_close(gx, rx)
    torch.testing.assert_close(gw, rw)
    with torch.no_grad():
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            linear(x, w)
        torch.cuda.current_stream().wait_stream(side)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            out = linear(x, w, activation="silu")
        x.copy_(torch.randn_like(x))
        g.replay()
        torch.testing.assert_close(out, linear(x, w, activation="silu"))


@pytest.mark.parametrize("layout", ["concat", "interleaved"])
@pytest.mark.parametrize("path", ["auto", "portable"])
@pytest.mark.parametrize("M", [5, 300])
def test_gated_linear_bf16(M, path, layout, monkeypatch):
    from tritonic.ops import gated_linear, gated_linear_reference

    monkeypatch.setattr(importlib.import_module("tritonic.ops.matmul"), "GEMM_CHOICE", path)
    a = dict(x=torch.randn(M, 512, device="cuda", dtype=torch.bfloat16),
             weight_gate_up=torch.randn(2 * 1000, 512, device="cuda", dtype=torch.bfloat16) / 512 ** 0.5)
    check_op(lambda **k: gated_linear(**k, layout=layout), lambda **k: gated_linear_reference(**k, layout=layout),
             a, grads=["x", "weight_gate_up"], atol_ulps=8)


@pytest.mark.parametrize("path", ["auto", "portable"])
def test_linear_paths_agree_with_bias_grad(path, monkeypatch):
    """The bias gradient comes out of the dW product (row sums of dY * act'(Z)) on both paths."""
    monkeypatch.setattr(importlib.import_module("tritonic.ops.matmul"), "GEMM_CHOICE", path)
    a = dict(x=torch.randn(300, 256, device="cuda", dtype=torch.float16),
             weight=torch.randn(1000, 256, device="cuda", dtype=torch.float16) / 16,
             bias=torch.randn(1000, device="cuda", dtype=torch.float16), residual=None)
    check_op(lambda **k: linear(**k, activation="gelu_tanh"), lambda **k: linear_reference(**k, activation="gelu_tanh"),
             a, grads=["x", "weight", "bias"], atol_ulps=8)
