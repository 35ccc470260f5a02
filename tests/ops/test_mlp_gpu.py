"""GPU-only gated_mlp tests: a Llama-sized MLP in bfloat16 (output and gradients against
float64), less memory kept for the backward than the chained layers, and torch.compile."""

import pytest
import torch

from tritonic.ops import gated_mlp, gated_mlp_reference
from tests.helpers import check_op

pytestmark = pytest.mark.gpu


def _args(T, H, F, dtype=torch.bfloat16):
    return dict(x=torch.randn(T, H, device="cuda", dtype=dtype),
                w_gate=torch.randn(F, H, device="cuda", dtype=dtype) / H ** 0.5,
                w_up=torch.randn(F, H, device="cuda", dtype=dtype) / H ** 0.5,
                w_down=torch.randn(H, F, device="cuda", dtype=dtype) / F ** 0.5)


@pytest.mark.parametrize("activation", ["silu", "gelu_tanh"])
def test_llama_sized(activation):
    check_op(lambda **a: gated_mlp(**a, activation=activation),
             lambda **a: gated_mlp_reference(**a, activation=activation), _args(512, 1024, 2816),
             grads=["x", "w_gate", "w_up", "w_down"], atol_ulps=4)


def test_less_memory_between_forward_and_backward():
    T, H, F = 4096, 2048, 8192
    a = {k: v.requires_grad_(True) for k, v in _args(T, H, F).items()}

    def held(fn):
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        y = fn(**a)
        kept = torch.cuda.memory_allocated() - before - y.numel() * y.element_size()
        y.sum().backward()
        for t in a.values():
            t.grad = None
        return kept

    ours, chained = held(gated_mlp), held(gated_mlp_reference)
    assert chained - ours >= T * F * 2 * 0.99, (ours, chained)  # the product, T x F bf16, is not kept


def test_torch_compile_fullgraph():
    a = _args(64, 256, 512)
    for t in a.values():
        t.requires_grad_(True)
    f = torch.compile(lambda **k: gated_mlp(**k), fullgraph=True)
    y = f(**a)
    y.float().sum().backward()
    torch.testing.assert_close(y, gated_mlp_reference(**{k: v.detach() for k, v in a.items()}), atol=2e-2, rtol=2e-2)
