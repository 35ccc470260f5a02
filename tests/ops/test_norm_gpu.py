"""GPU-only norm tests: real sizes in bfloat16, the widest rows, torch.compile and CUDA graphs."""

import pytest
import torch

import tritonic
from tritonic.ops import layer_norm, layer_norm_reference, rms_norm, rms_norm_reference
from tests.helpers import assert_graph_replays, check_op

pytestmark = pytest.mark.gpu


def _args(M, N, dtype=torch.bfloat16, residual=False, bias=True):
    a = dict(x=torch.randn(M, N, device="cuda", dtype=dtype),
             weight=torch.randn(N, device="cuda", dtype=dtype),
             residual=torch.randn(M, N, device="cuda", dtype=dtype) if residual else None)
    if bias:
        a["bias"] = torch.randn(N, device="cuda", dtype=dtype)
    return a


@pytest.mark.parametrize("M,N", [(4096, 768), (2048, 4096), (257, 8192), (512, 16384), (33, 20000), (16, 65536)])
@pytest.mark.parametrize("residual", [False, True])
def test_layer_norm_bf16_sizes(M, N, residual):
    args = _args(M, N, residual=residual)
    check_op(lambda **a: layer_norm(**a),
             lambda x, weight, bias, residual: layer_norm_reference(x, weight, bias, 1e-5, residual),
             args, grads=[k for k, v in args.items() if v is not None])


@pytest.mark.parametrize("M,N", [(4096, 768), (2048, 4096), (512, 16384), (33, 20000), (16, 65536)])
@pytest.mark.parametrize("upcast", [True, False])
def test_rms_norm_bf16_sizes(M, N, upcast):
    args = _args(M, N, residual=True, bias=False)
    check_op(lambda **a: rms_norm(**a, upcast=upcast),
             lambda x, weight, residual: rms_norm_reference(x, weight, 1e-6, residual, 0.0, upcast),
             args, grads=["x", "weight", "residual"])


def test_float16_and_float32():
    for dtype in (torch.float16, torch.float32):
        args = _args(1000, 1024, dtype=dtype)
        check_op(lambda **a: layer_norm(**a),
                 lambda x, weight, bias, residual: layer_norm_reference(x, weight, bias, 1e-5, residual),
                 args, grads=["x", "weight", "bias"])


def _block(x, h, w1, b1, w2):
    y, h = layer_norm(x, w1, b1, residual=h)
    z, h = rms_norm(y, w2, residual=h)
    return z * 2, h


def test_torch_compile_fullgraph():
    M, N = 512, 1024
    x, h = (torch.randn(M, N, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(2))
    w1, b1, w2 = (torch.randn(N, device="cuda", requires_grad=True) for _ in range(3))
    compiled = torch.compile(_block, fullgraph=True)
    out_c = compiled(x, h, w1, b1, w2)
    out_e = _block(x, h, w1, b1, w2)
    for a, b in zip(out_c, out_e):
        torch.testing.assert_close(a, b)
    g_c = torch.autograd.grad(sum(o.float().sum() for o in out_c), [x, h, w1, b1, w2])
    g_e = torch.autograd.grad(sum(o.float().sum() for o in out_e), [x, h, w1, b1, w2])
    for a, b in zip(g_c, g_e):
        torch.testing.assert_close(a, b, atol=1e-2, rtol=1e-2)


def test_modules_under_compile():
    ln = tritonic.nn.LayerNorm(256, device="cuda")
    rms = tritonic.nn.RMSNorm(256, eps=1e-6, device="cuda")
    f = torch.compile(lambda t: rms(ln(t)), fullgraph=True)
    x = torch.randn(8, 256, device="cuda")
    ref = torch.nn.functional.rms_norm(torch.nn.functional.layer_norm(x, (256,), ln.weight, ln.bias),
                                       (256,), rms.weight, 1e-6)
    torch.testing.assert_close(f(x), ref, atol=1e-5, rtol=1e-5)


def test_cuda_graph_capture_and_replay():
    M, N = 1024, 4096
    x = torch.randn(M, N, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    w = torch.randn(N, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    dy = torch.randn(M, N, device="cuda", dtype=torch.bfloat16)

    def step():
        y = rms_norm(x, w)
        return (y,) + torch.autograd.grad(y, [x, w], dy)

    def refill():
        x.copy_(torch.randn_like(x))
        dy.copy_(torch.randn_like(dy))

    assert_graph_replays(step, refill)


def test_cpu_tensor_on_a_gpu_machine():
    with pytest.raises(ValueError, match="x is a CPU tensor"):
        layer_norm(torch.randn(2, 8), torch.randn(8))
    with pytest.raises(ValueError, match="weight is on cpu but x is on cuda"):
        rms_norm(torch.randn(2, 8, device="cuda"), torch.randn(8))


@pytest.mark.parametrize("op", ["layer", "rms"])
def test_past_2_31_elements(op):
    """Row offsets switch to int64 when M x row stride passes 2**31 (the common case indexes
    in int32): the last rows of a 2**31 + 8 * 4096 element tensor are right."""
    M, N = 2**31 // 4096 + 8, 4096
    try:
        x = torch.randn(M, N, device="cuda", dtype=torch.bfloat16)
    except torch.OutOfMemoryError:
        pytest.skip("needs ~9 GiB of GPU memory")
    w = torch.randn(N, device="cuda", dtype=torch.bfloat16)
    with torch.no_grad():
        y = layer_norm(x, w) if op == "layer" else rms_norm(x, w)
    tail = x[-16:]
    ref = (layer_norm_reference(tail.double(), w.double(), None, 1e-5) if op == "layer"
           else rms_norm_reference(tail.double(), w.double(), 1e-6))
    torch.testing.assert_close(y[-16:].double(), ref, atol=0.05, rtol=0.02)
    del x, y
    torch.cuda.empty_cache()
