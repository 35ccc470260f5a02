"""GPU-only activation tests: real sizes in bfloat16, int64 offsets, torch.compile and CUDA graphs."""

import pytest
import torch
import torch.nn.functional as F

from tritonic.nn.activation import GELU, SiLU, SwiGLU
from tritonic.ops.activation import geglu, geglu_reference, gelu, silu, swiglu, swiglu_reference
from tests.helpers import assert_graph_replays, check_op

pytestmark = pytest.mark.gpu


def _randn(*shape, dtype=torch.bfloat16):
    return torch.randn(*shape, device="cuda", dtype=dtype) * 3


@pytest.mark.parametrize("shape", [(8192, 4096), (4, 2048, 3072), (1, 1_000_003)], ids=str)
@pytest.mark.parametrize("name", ["gelu", "gelu_tanh", "silu"])
def test_unary_bf16_sizes(name, shape):
    ours = {"gelu": gelu, "gelu_tanh": lambda x: gelu(x, "tanh"), "silu": silu}[name]
    theirs = {"gelu": F.gelu, "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"), "silu": F.silu}[name]
    check_op(lambda x: ours(x), lambda x: theirs(x), dict(x=_randn(*shape)), grads=["x"])


@pytest.mark.parametrize("M,H", [(4096, 11008), (2048, 14336), (333, 5120)])
@pytest.mark.parametrize("concatenated", [False, True])
def test_swiglu_bf16_sizes(M, H, concatenated):
    if concatenated:
        check_op(lambda x: swiglu(x), lambda x: swiglu_reference(x), dict(x=_randn(M, 2 * H)), grads=["x"])
    else:
        check_op(lambda gate, up: swiglu(gate, up), lambda gate, up: swiglu_reference(gate, up),
                 dict(gate=_randn(M, H), up=_randn(M, H)), grads=["gate", "up"])


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_geglu_bf16(approximate):
    check_op(lambda gate, up: geglu(gate, up, approximate), lambda gate, up: geglu_reference(gate, up, approximate),
             dict(gate=_randn(1024, 16384), up=_randn(1024, 16384)), grads=["gate", "up"])


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32], ids=str)
def test_float16_and_float32(dtype):
    check_op(lambda x: gelu(x), lambda x: F.gelu(x), dict(x=_randn(1000, 1024, dtype=dtype)), grads=["x"])
    check_op(lambda gate, up: geglu(gate, up, "tanh"), lambda gate, up: geglu_reference(gate, up, "tanh"),
             dict(gate=_randn(1000, 1024, dtype=dtype), up=_randn(1000, 1024, dtype=dtype)), grads=["gate", "up"])


def test_over_2_31_elements():
    """int64 offsets: the last elements of a tensor larger than 2**31 elements are right."""
    n = 2**31 + 4097
    try:
        x = torch.randn(n, device="cuda", dtype=torch.bfloat16)
        y = silu(x)
    except torch.cuda.OutOfMemoryError:
        pytest.skip("not enough GPU memory")
    torch.testing.assert_close(y[-5000:], F.silu(x[-5000:]))
    torch.testing.assert_close(y[:5000], F.silu(x[:5000]))


def _mlp(x, h):
    a = swiglu(x)  # concatenated [gate, up]
    b = geglu(a, h, "tanh")
    return gelu(b) + silu(h)


def test_torch_compile_fullgraph():
    x = _randn(512, 2048).requires_grad_(True)
    h = _randn(512, 1024).requires_grad_(True)
    compiled = torch.compile(_mlp, fullgraph=True)
    out_c, out_e = compiled(x, h), _mlp(x, h)
    torch.testing.assert_close(out_c, out_e)
    g_c = torch.autograd.grad(out_c.float().square().sum(), [x, h])
    g_e = torch.autograd.grad(out_e.float().square().sum(), [x, h])
    for a, b in zip(g_c, g_e):
        torch.testing.assert_close(a, b)


def test_modules_under_compile():
    mods = torch.nn.Sequential(GELU("tanh"), SiLU())
    glu = SwiGLU()
    f = torch.compile(lambda t: glu(mods(t)), fullgraph=True)
    x = torch.randn(8, 256, device="cuda")
    ref = swiglu_reference(F.silu(F.gelu(x, approximate="tanh")))
    torch.testing.assert_close(f(x), ref, atol=1e-5, rtol=1e-5)


def test_cuda_graph_capture_and_replay():
    M, H = 1024, 4096
    x = _randn(M, 2 * H).requires_grad_(True)
    dy = _randn(M, H)

    def step():
        y = swiglu(x)
        z = gelu(y)
        return (z,) + torch.autograd.grad(z, [x], dy)

    def refill():
        x.copy_(torch.randn_like(x))
        dy.copy_(torch.randn_like(dy))

    assert_graph_replays(step, refill)


def test_cpu_tensor_on_a_gpu_machine():
    with pytest.raises(ValueError, match="x is a CPU tensor"):
        gelu(torch.randn(2, 8))
    with pytest.raises(ValueError, match="up is on cpu but gate is on cuda"):
        swiglu(torch.randn(2, 8, device="cuda"), torch.randn(2, 8))
