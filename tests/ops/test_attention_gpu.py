"""GPU-only attention checks: bfloat16 (the interpreter's tl.dot is wrong for it), real
sizes and head dims, CUDA graphs."""

import pytest
import torch

from tests.helpers import check_op, spy_launches
from tritonic.ops import attention, attention_reference

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("D", [64, 80, 128, 256])
@pytest.mark.parametrize("causal", [False, True])
def test_bf16_sizes(D, causal):
    a = dict(q=torch.randn(2, 8, 1000, D, device="cuda", dtype=torch.bfloat16),
             k=torch.randn(2, 2, 1000, D, device="cuda", dtype=torch.bfloat16),
             v=torch.randn(2, 2, 1000, D, device="cuda", dtype=torch.bfloat16))
    check_op(lambda **k: attention(**k, causal=causal), lambda **k: attention_reference(**k, causal=causal), a,
             grads=["q", "k", "v"], atol_ulps=8)


def _check_gqa_causal_777(D):
    """bfloat16 GQA (8 query heads, 4 key/value heads), causal, 777 rows: a last block past the
    sequence, forward and gradients against float64."""
    a = dict(q=torch.randn(2, 8, 777, D, device="cuda", dtype=torch.bfloat16),
             k=torch.randn(2, 4, 777, D, device="cuda", dtype=torch.bfloat16),
             v=torch.randn(2, 4, 777, D, device="cuda", dtype=torch.bfloat16))
    check_op(lambda **k: attention(**k, causal=True), lambda **k: attention_reference(**k, causal=True), a,
             grads=["q", "k", "v"], atol_ulps=8)


@pytest.mark.parametrize("mode", ["atomic", "atomic-elementwise", "kernel"])
@pytest.mark.parametrize("D", [64, 128, 80])
def test_both_dq_paths_bf16(D, mode, monkeypatch):
    """The backward's dQ by atomic adds from the dK/dV pass (on Hopper as bulk reduce-adds
    through a descriptor, TMA_DQ, unless TRITONIC_ATTENTION_TMA_DQ=0: one atomic per element),
    and by its own kernel, at real sizes with GQA, causal, a last query block past Sq (its
    zero rows added into the next head's), and an output gradient in the (B, S, H, D) layout."""
    import importlib

    from tritonic.runtime import has_tma

    mod = importlib.import_module("tritonic.ops.attention")
    monkeypatch.setattr(mod, "_DQ_MODE", mode.split("-")[0])
    if mode == "atomic-elementwise":
        monkeypatch.setenv("TRITONIC_ATTENTION_TMA_DQ", "0")
    metas = spy_launches(monkeypatch, mod)
    _check_gqa_causal_777(D)
    tma = [m["TMA_DQ"] for _, m in metas if "TMA_DQ" in m]
    assert tma and all(t == (mode == "atomic" and has_tma(0)) for t in tma)


@pytest.mark.parametrize("mode", ["atomic", "kernel"])
@pytest.mark.parametrize("D", [64, 128])
def test_tma_bwd_bf16(D, mode, monkeypatch):
    """The backward's tiles through descriptors (TRITONIC_ATTENTION_TMA_BWD, on by default: Q and dO in the
    dK/dV kernel, K and V in the dQ kernel) on GPUs with them: GQA, causal, 777 rows (a last
    block past Sq, zero-padded by the copy)."""
    import importlib

    from tritonic.runtime import has_tma

    if not has_tma(0):
        pytest.skip("tensor descriptors need Hopper or later")
    mod = importlib.import_module("tritonic.ops.attention")
    monkeypatch.setenv("TRITONIC_ATTENTION_TMA_BWD", "1")
    monkeypatch.setattr(mod, "_DQ_MODE", mode)
    metas = spy_launches(monkeypatch, mod)
    _check_gqa_causal_777(D)
    assert any(k["TMA_QDO"] for kernel, k in metas if kernel is mod._attn_bwd_dkdv)
    if mode == "kernel":
        assert any(k["TMA_KV"] for kernel, k in metas if kernel is mod._attn_bwd_dq)


def test_tma_dq_with_a_mask_and_a_bias_gradient(monkeypatch):
    """The bulk reduce-add dQ with a BERT-style key-padding mask (rows of fully masked keys in
    one batch entry) and with a T5-style bias whose gradient is asked for."""
    import importlib

    monkeypatch.setattr(importlib.import_module("tritonic.ops.attention"), "_DQ_MODE", "atomic")
    q, k, v = (torch.randn(2, 4, 300, 64, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    mask = torch.ones(2, 1, 1, 300, dtype=torch.bool, device="cuda")
    mask[1, ..., 170:] = False
    check_op(lambda **t: attention(**t, mask=mask), lambda **t: attention_reference(**t, mask=mask),
             dict(q=q, k=k, v=v), grads=["q", "k", "v"], atol_ulps=8)
    bias = torch.randn(1, 4, 300, 300, device="cuda", dtype=torch.bfloat16)
    check_op(lambda **t: attention(**t, scale=1.0), lambda **t: attention_reference(**t, scale=1.0),
             dict(q=q, k=k, v=v, bias=bias), grads=["q", "k", "v", "bias"], atol_ulps=8)


@pytest.mark.parametrize("D", [64, 128])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("Sq", [1000, 300])
def test_warp_specialised_forward_bf16(D, causal, Sq, monkeypatch):
    """The warp-specialised forward and backward (TRITONIC_ATTENTION_WS) at real sizes, GQA,
    Sq <= Sk, on GPUs with tensor descriptors; causal calls take the general backward."""
    ran = _force_ws(monkeypatch)
    a = dict(q=torch.randn(2, 8, Sq, D, device="cuda", dtype=torch.bfloat16),
             k=torch.randn(2, 2, 1000, D, device="cuda", dtype=torch.bfloat16),
             v=torch.randn(2, 2, 1000, D, device="cuda", dtype=torch.bfloat16))
    check_op(lambda **k: attention(**k, causal=causal), lambda **k: attention_reference(**k, causal=causal), a,
             grads=["q", "k", "v"], atol_ulps=8)
    import importlib

    ws = importlib.import_module("tritonic.ops.attention_ws")
    assert ws._attn_fwd_ws in ran
    bwd = {ws._attn_bwd_dkdv_ws, ws._attn_bwd_dq_ws}  # (causal: the general backward; see usable_bwd)
    assert not bwd & set(ran) if causal else bwd <= set(ran)


@pytest.mark.parametrize("D", [64, 128])
def test_warp_specialised_forward_by_default(D, monkeypatch):
    """The default choice ("auto") takes the warp-specialised forward on Hopper for a dense,
    non-causal call with 4096+ keys; right, with the general backward after it."""
    import importlib

    from tritonic.runtime import has_tma

    ws = importlib.import_module("tritonic.ops.attention_ws")
    if not has_tma(0) or torch.cuda.get_device_capability(0)[0] != 9 or not ws.AUTO:
        pytest.skip("the default choice applies on Hopper with TRITONIC_ATTENTION_WS unset")
    ran = []
    real = ws.launch
    monkeypatch.setattr(ws, "launch", lambda kernel, *a, **k: (ran.append(kernel), real(kernel, *a, **k)))
    # (1024 queries of 32 heads: 256 programs of 128 rows, a wave on an H100; GQA over 8 heads)
    a = dict(q=torch.randn(1, 32, 1024, D, device="cuda", dtype=torch.bfloat16),
             k=torch.randn(1, 8, 4096, D, device="cuda", dtype=torch.bfloat16),
             v=torch.randn(1, 8, 4096, D, device="cuda", dtype=torch.bfloat16))
    check_op(attention, attention_reference, a, grads=["q", "k", "v"], atol_ulps=8)
    assert ran == [ws._attn_fwd_ws] * len(ran) and ran


def _force_ws(monkeypatch):
    """TRITONIC_ATTENTION_WS on for the test; the list fills with the WS kernels' launches."""
    import importlib

    from tritonic.runtime import has_tma

    if not has_tma(0):
        pytest.skip("no tensor descriptors on this GPU")
    ws = importlib.import_module("tritonic.ops.attention_ws")
    monkeypatch.setattr(ws, "ENABLED", True)
    monkeypatch.setattr(ws, "ENABLED_BWD", True)
    monkeypatch.setattr(ws, "MIN_WAVES", 0.0)
    ran = []
    real = ws.launch
    monkeypatch.setattr(ws, "launch", lambda kernel, *a, **k: (ran.append(kernel), real(kernel, *a, **k)))
    return ran


@pytest.mark.parametrize("S", [512, 777])
def test_warp_specialised_mask_and_bias_bf16(S, monkeypatch):
    """BERT's key-padding mask and T5's bias (shared by the batch) in the warp-specialised
    forward, the general backward (bias gradient); at 777 keys neither has 16-byte aligned
    rows for a descriptor, so the general kernel runs both."""
    ran = _force_ws(monkeypatch)
    q, k, v = (torch.randn(4, 12, S, 64, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    mask = torch.ones(4, 1, 1, S, dtype=torch.bool, device="cuda")
    mask[0, ..., S // 2:] = False
    mask[1, ..., 3:40] = False
    mask[2] = False
    check_op(lambda **a: attention(**a, mask=mask), lambda **a: attention_reference(**a, mask=mask),
             dict(q=q, k=k, v=v), grads=["q", "k", "v"], atol_ulps=8)
    bias = torch.randn(1, 12, S, S, device="cuda", dtype=torch.bfloat16)
    check_op(lambda **a: attention(**a, scale=1.0), lambda **a: attention_reference(**a, scale=1.0),
             dict(q=q, k=k, v=v, bias=bias.requires_grad_()), grads=["q", "k", "v", "bias"], atol_ulps=8)
    assert len(ran) >= 2 if S % 16 == 0 else not ran


def test_bert_mask_and_t5_bias_bf16():
    q, k, v = (torch.randn(2, 4, 129, 64, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    mask = torch.rand(2, 1, 1, 129, device="cuda") > 0.3
    check_op(lambda **a: attention(**a, mask=mask), lambda **a: attention_reference(**a, mask=mask),
             dict(q=q, k=k, v=v), atol_ulps=8)
    bias = torch.randn(1, 4, 129, 129, device="cuda", dtype=torch.bfloat16)
    check_op(lambda **a: attention(**a, scale=1.0), lambda **a: attention_reference(**a, scale=1.0),
             dict(q=q, k=k, v=v, bias=bias), grads=["q", "k", "v", "bias"], atol_ulps=8)


def test_cuda_graph():
    q, k, v = (torch.randn(1, 4, 256, 64, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        attention(q, k, v, causal=True)
    torch.cuda.current_stream().wait_stream(side)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        out = attention(q, k, v, causal=True)
    q.copy_(torch.randn_like(q))
    g.replay()
    torch.testing.assert_close(out, attention(q, k, v, causal=True))


@pytest.mark.parametrize("B,L", [(1, 4096), (8, 1000)])
def test_decode_bf16_gqa(B, L):
    from tritonic.ops import attention_decode, attention_decode_reference

    q = torch.randn(B, 32, 1, 128, device="cuda", dtype=torch.bfloat16)
    k = torch.randn(B, 8, L + 17, 128, device="cuda", dtype=torch.bfloat16)
    v = torch.randn(B, 8, L + 17, 128, device="cuda", dtype=torch.bfloat16)
    lens = torch.randint(1, L + 17, (B,), device="cuda", dtype=torch.int32)
    check_op(lambda q, k, v: attention_decode(q, k, v, lens), lambda q, k, v: attention_decode_reference(q, k, v, lens),
             dict(q=q, k=k, v=v), atol_ulps=8)


def test_torch_compile_fwd_bwd():
    q, k, v = (torch.randn(2, 4, 200, 64, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
    bias = torch.randn(1, 4, 200, 200, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    f = torch.compile(lambda q, k, v, b: attention(q, k, v, causal=True, bias=b), fullgraph=True)
    y = f(q, k, v, bias)
    ref = attention(q, k, v, causal=True, bias=bias)
    torch.testing.assert_close(y, ref)
    g = torch.autograd.grad(y.float().sum(), (q, k, v, bias))
    r = torch.autograd.grad(ref.float().sum(), (q, k, v, bias))
    for a, b in zip(g, r):
        torch.testing.assert_close(a, b)
