"""GPU-only loss tests: real vocabularies in bfloat16, torch.compile and CUDA graphs."""

import pytest
import torch

from tests.helpers import check_op
from tritonic.ops.loss import (cross_entropy, cross_entropy_reference, fused_linear_cross_entropy,
                               fused_linear_cross_entropy_reference)

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("N,V", [(512, 32000), (256, 128256), (64, 256000)])
@pytest.mark.parametrize("opts", [dict(), dict(label_smoothing=0.1, z_loss=1e-4), dict(softcap=30.0)])
def test_cross_entropy_bf16_vocabularies(N, V, opts):
    logits = torch.randn(N, V, device="cuda", dtype=torch.bfloat16) * 3
    target = torch.randint(0, V, (N,), device="cuda")
    target[::7] = -100
    check_op(lambda logits, target: cross_entropy(logits, target, **opts),
             lambda logits, target: cross_entropy_reference(logits, target, **opts),
             dict(logits=logits, target=target), grads=["logits"])


def test_int64_offsets():
    """8192 x 262144 logits hold more than 2^31 elements: the last row must be right."""
    N, V = 8200, 262144
    logits = torch.zeros(N, V, device="cuda", dtype=torch.bfloat16)
    logits[-1, 5] = 10.0
    target = torch.full((N,), 5, device="cuda")
    loss = cross_entropy(logits, target, reduction="none")
    ref = cross_entropy_reference(logits[-2:], target[-2:], reduction="none")
    torch.testing.assert_close(loss[-2:].float(), ref.float(), atol=2e-2, rtol=1e-2)


def test_fused_linear_bf16():
    N, H, V = 1000, 512, 5000
    args = dict(hidden=torch.randn(N, H, device="cuda", dtype=torch.bfloat16),
                weight=(torch.randn(V, H, device="cuda") / H ** 0.5).to(torch.bfloat16),
                target=torch.randint(0, V, (N,), device="cuda"))
    check_op(lambda **a: fused_linear_cross_entropy(**a, chunk_rows=256),
             lambda **a: fused_linear_cross_entropy_reference(**a), args, grads=["hidden", "weight"], atol_ulps=8)


def test_torch_compile_and_cuda_graph():
    logits = torch.randn(256, 5000, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    target = torch.randint(0, 5000, (256,), device="cuda")
    f = torch.compile(lambda x, t: cross_entropy(x, t, label_smoothing=0.1), fullgraph=True)
    loss = f(logits, target)
    ref = cross_entropy(logits, target, label_smoothing=0.1)
    torch.testing.assert_close(loss, ref)
    (g,) = torch.autograd.grad(loss, logits)
    (r,) = torch.autograd.grad(ref, logits)
    torch.testing.assert_close(g, r)

    static = torch.randn(256, 5000, device="cuda", dtype=torch.bfloat16)
    cross_entropy(static, target)  # warm up outside the graph
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = cross_entropy(static, target)  # no target check (no sync) inside a capture
    static.copy_(torch.randn_like(static))
    graph.replay()
    torch.testing.assert_close(out, cross_entropy(static, target))


def test_fused_linear_low_memory_bf16_and_its_memory():
    """low_memory=True in bfloat16 at a real head (its logits in dW's free rows): the float64
    reference's loss and gradients, and no more memory than dW, dh and the 1/8-slice buffer."""
    N, H, V = 4096, 1024, 32000
    args = dict(hidden=torch.randn(N, H, device="cuda", dtype=torch.bfloat16),
                weight=(torch.randn(V, H, device="cuda") / H ** 0.5).to(torch.bfloat16),
                target=torch.randint(0, V, (N,), device="cuda"))
    check_op(lambda **a: fused_linear_cross_entropy(**a, low_memory=True),
             lambda **a: fused_linear_cross_entropy_reference(**a), args, grads=["hidden", "weight"])
    h = args["hidden"].clone().requires_grad_()
    w = args["weight"].clone().requires_grad_()
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    dh, dw = torch.autograd.grad(fused_linear_cross_entropy(h, w, args["target"], low_memory=True), (h, w))
    torch.cuda.synchronize()
    extra = torch.cuda.max_memory_allocated() - base
    width = min(V, max(512, 1024 * V // N // 128 * 128))  # the default slice
    allowed = (V * H + N * H) * 2 + N * (width // 8) * 2 + 8 * 2**20  # dW, dh, the small buffer, 8 MiB of small tensors
    assert extra <= allowed, (extra / 2**20, allowed / 2**20)
