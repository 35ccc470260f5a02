"""GPU-only softmax tests: real sizes in bfloat16 (one-pass and multi-pass rows), attention-
shaped masks, torch.compile and CUDA graphs."""

import pytest
import torch

from tritonic.nn.softmax import Softmax
from tritonic.ops.softmax import log_softmax, log_softmax_reference, softmax, softmax_reference
from tests.helpers import assert_graph_replays, check_op

pytestmark = pytest.mark.gpu

OPS = {"softmax": (softmax, softmax_reference), "log_softmax": (log_softmax, log_softmax_reference)}


def _check(op, x, scale=None, mask=None):
    ours, ref = OPS[op]
    check_op(lambda x: ours(x, scale=scale, mask=mask), lambda x: ref(x, scale=scale, mask=mask),
             dict(x=x), grads=["x"])


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("M,N", [(4096, 1024), (2048, 4096), (1000, 5000), (512, 16384), (64, 32768),
                                 (16, 131072), (4, 262144), (3, 300001)])
def test_bf16_sizes(op, M, N):
    _check(op, torch.randn(M, N, device="cuda", dtype=torch.bfloat16) * 3)


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("N", [4096, 65536])
def test_bf16_scale_and_mask(op, N):
    x = torch.randn(64, N, device="cuda", dtype=torch.bfloat16) * 3
    mask = torch.rand(64, N, device="cuda") > 0.3
    mask[5] = False
    _check(op, x, scale=0.3, mask=mask)


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32], ids=str)
def test_float16_and_float32(op, dtype):
    _check(op, torch.randn(1000, 1024, device="cuda", dtype=dtype) * 3)


@pytest.mark.parametrize("op", OPS)
def test_attention_scores(op):
    """(B, H, S, S) scores with a key-padding mask read in place and a causal mask."""
    B, H, S = 2, 8, 384
    x = torch.randn(B, H, S, S, device="cuda", dtype=torch.bfloat16) * 4
    keys = torch.ones(B, S, dtype=torch.bool, device="cuda")
    keys[1, 200:] = False
    _check(op, x, scale=S ** -0.5, mask=keys[:, None, None, :])
    causal = torch.ones(S, S, dtype=torch.bool, device="cuda").tril()
    _check(op, x, scale=S ** -0.5, mask=causal)


def test_fully_masked_rows_give_no_nan():
    for N in (1024, 50000):
        x = torch.randn(8, N, device="cuda", dtype=torch.bfloat16, requires_grad=True)
        mask = torch.rand(8, N, device="cuda") > 0.5
        mask[2] = False
        for fn in (softmax, log_softmax):
            y = fn(x, mask=mask)
            (g,) = torch.autograd.grad(y, x, torch.randn_like(y))
            assert not y.isnan().any() and not g.isnan().any()
            assert (g[2] == 0).all() and (g[~mask] == 0).all()
        assert (softmax(x, mask=mask)[2] == 0).all()


def _block(x, mask):
    p = softmax(x, scale=0.125, mask=mask)
    return p * 2 + log_softmax(x, mask=mask).exp()


def test_torch_compile_fullgraph():
    x = torch.randn(4, 8, 256, 512, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    mask = torch.rand(4, 1, 1, 512, device="cuda") > 0.2
    compiled = torch.compile(_block, fullgraph=True)
    out_c, out_e = compiled(x, mask), _block(x, mask)
    torch.testing.assert_close(out_c, out_e)
    dy = torch.randn_like(out_e)
    g_c = torch.autograd.grad(out_c, x, dy)[0]
    g_e = torch.autograd.grad(out_e, x, dy)[0]
    torch.testing.assert_close(g_c, g_e, atol=1e-2, rtol=1e-2)


def test_module_under_compile():
    mod = Softmax(dim=-1)
    f = torch.compile(lambda t: mod(t), fullgraph=True)
    x = torch.randn(8, 1000, device="cuda")
    torch.testing.assert_close(f(x), torch.softmax(x, -1))


def test_cuda_graph_capture_and_replay():
    x = torch.randn(2048, 4096, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    mask = torch.rand(1, 4096, device="cuda") > 0.1
    dy = torch.randn(2048, 4096, device="cuda", dtype=torch.bfloat16)

    def step():
        y = softmax(x, scale=0.5, mask=mask)
        z = log_softmax(x)
        return (y, z) + torch.autograd.grad([y, z], x, [dy, dy])

    def refill():
        x.copy_(torch.randn_like(x))
        dy.copy_(torch.randn_like(dy))

    assert_graph_replays(step, refill)


def test_cpu_tensor_on_a_gpu_machine():
    with pytest.raises(ValueError, match="x is a CPU tensor"):
        softmax(torch.randn(2, 8))
    with pytest.raises(ValueError, match="mask is on cpu but x is on cuda"):
        softmax(torch.randn(2, 8, device="cuda"), mask=torch.ones(8, dtype=torch.bool))
