"""GPU-only RoPE tests: real sizes in bfloat16, decoding, torch.compile, CUDA graphs, opcheck."""

import pytest
import torch

from tritonic.nn.rope import RotaryEmbedding
from tritonic.ops.rope import rope, rope_reference
from tests.helpers import assert_graph_replays, check_op

pytestmark = pytest.mark.gpu


def _hf_angles(B, S, r, offset=0, dtype=torch.bfloat16):
    """Hugging Face Llama's per-token cos/sin (B, S, r): two equal halves."""
    inv_freq = 10000.0 ** (-torch.arange(0, r, 2, device="cuda", dtype=torch.float32) / r)
    pos = torch.arange(offset, offset + S, device="cuda", dtype=torch.float32).expand(B, S)
    freqs = pos[..., None] * inv_freq
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def _qk(B, HQ, HK, S, D, dtype=torch.bfloat16):
    """q, k as a projection leaves them: (B, S, H, D) storage viewed as (B, H, S, D)."""
    return (torch.randn(B, S, HQ, D, device="cuda", dtype=dtype).transpose(1, 2),
            torch.randn(B, S, HK, D, device="cuda", dtype=dtype).transpose(1, 2))


@pytest.mark.parametrize("B,HQ,HK,S,D,r", [(2, 32, 8, 2048, 128, 128), (1, 32, 32, 4096, 128, 128),
                                           (4, 16, 16, 512, 64, 64), (2, 32, 32, 1024, 128, 32),
                                           (3, 12, 4, 257, 80, 80), (1, 64, 1, 1000, 256, 256)])
def test_bf16_sizes(B, HQ, HK, S, D, r):
    q, k = _qk(B, HQ, HK, S, D)
    cos, sin = _hf_angles(B, S, r)
    check_op(lambda **a: rope(**a, rotary_dim=r), lambda **a: rope_reference(**a, rotary_dim=r),
             dict(q=q, k=k, cos=cos, sin=sin), grads=["q", "k"])


@pytest.mark.parametrize("interleaved", [False, True])
@pytest.mark.parametrize("width", ["full", "half"])
def test_tables_with_position_ids(interleaved, width):
    B, HQ, HK, S, D, P = 2, 32, 8, 1024, 128, 8192
    q, k = _qk(B, HQ, HK, S, D)
    cos, sin = _hf_angles(1, P, D, dtype=torch.float32)
    cos, sin = cos[0], sin[0]
    if width == "half":
        cos, sin = cos[:, : D // 2], sin[:, : D // 2]
    pos = torch.randint(0, P, (B, S), device="cuda")
    kw = dict(position_ids=pos, interleaved=interleaved, rotary_dim=D)
    check_op(lambda **a: rope(**a, **kw), lambda **a: rope_reference(**a, **kw), dict(q=q, k=k, cos=cos, sin=sin),
             grads=["q", "k"])


def test_decode():
    """One new token per sequence, each at its own position (a KV cache)."""
    B, HQ, HK, D, P = 64, 32, 8, 128, 4096
    q, k = _qk(B, HQ, HK, 1, D)
    cos, sin = _hf_angles(1, P, D)
    pos = torch.randint(0, P, (B, 1), device="cuda")
    kw = dict(position_ids=pos)
    check_op(lambda **a: rope(**a, **kw), lambda **a: rope_reference(**a, **kw),
             dict(q=q, k=k, cos=cos[0], sin=sin[0]))


def test_inplace_matches():
    q, k = _qk(2, 32, 8, 512, 128)
    cos, sin = _hf_angles(2, 512, 128)
    expected = rope(q, k, cos, sin)
    rope(q, k, cos, sin, inplace=True)
    torch.testing.assert_close((q, k), expected, atol=0, rtol=0)


def _attention_inputs(q, k, cos, sin):
    qr, kr = rope(q, k, cos, sin)
    return (qr.float() * 2).sum(-1), (kr.float() - 1).square().sum()


def test_torch_compile_fullgraph():
    q, k = _qk(2, 16, 4, 256, 128)
    q.requires_grad_(True)
    k.requires_grad_(True)
    cos, sin = _hf_angles(2, 256, 128)
    compiled = torch.compile(_attention_inputs, fullgraph=True)
    out_c, out_e = compiled(q, k, cos, sin), _attention_inputs(q, k, cos, sin)
    for a, b in zip(out_c, out_e):
        torch.testing.assert_close(a, b, atol=1e-2, rtol=1e-2)
    g_c = torch.autograd.grad(out_c[0].sum() + out_c[1], [q, k])
    g_e = torch.autograd.grad(out_e[0].sum() + out_e[1], [q, k])
    for a, b in zip(g_c, g_e):
        torch.testing.assert_close(a, b, atol=1e-2, rtol=1e-2)


def test_inplace_and_module_under_compile():
    rotary = RotaryEmbedding(64, max_positions=1024, device="cuda")
    q, k = _qk(2, 8, 2, 128, 64)
    pos = torch.randint(0, 1024, (2, 128), device="cuda")
    expected = rope_reference(q, k, rotary.cos, rotary.sin, position_ids=pos, rotary_dim=64)

    def f(q, k, pos):
        rotary(q, k, position_ids=pos, inplace=True)
        return q * 1, k * 1

    with torch.no_grad():
        out = torch.compile(f, fullgraph=True)(q, k, pos)
    for a, b in zip(out, expected):
        torch.testing.assert_close(a, b, atol=1e-2, rtol=1e-2)


def test_cuda_graph_capture_and_replay():
    q, k = _qk(2, 32, 8, 1024, 128)
    q.requires_grad_(True)
    k.requires_grad_(True)
    cos, sin = _hf_angles(2, 1024, 128)
    dq, dk = torch.randn_like(q), torch.randn_like(k)

    def step():
        qo, ko = rope(q, k, cos, sin)
        return (qo, ko) + torch.autograd.grad([qo, ko], [q, k], [dq, dk])

    def refill():
        q.copy_(torch.randn_like(q))
        cos.copy_(_hf_angles(2, 1024, 128, offset=77)[0])
        dk.copy_(torch.randn_like(dk))

    assert_graph_replays(step, refill, atol=0, rtol=0)


def test_opcheck():
    q, k = _qk(1, 4, 2, 16, 64, torch.float32)
    q.requires_grad_(True)
    cos, sin = _hf_angles(1, 32, 64, dtype=torch.float32)
    pos = torch.randint(0, 32, (16,), device="cuda")
    torch.library.opcheck(torch.ops.tritonic.rope.default, (q, k, cos[0], sin[0], pos, False, 64))
    torch.library.opcheck(torch.ops.tritonic.rope_backward.default,
                          (q.detach(), k, cos[0, :, :32], sin[0, :, :32], pos, True, 64))
    torch.library.opcheck(torch.ops.tritonic.rope_inplace.default,
                          (q.detach().clone(), k.clone(), cos[0], sin[0], pos, False, 64))


def test_cpu_tensor_on_a_gpu_machine():
    cos, sin = torch.randn(4, 8), torch.randn(4, 8)
    with pytest.raises(ValueError, match="q is a CPU tensor"):
        rope(torch.randn(1, 2, 4, 8), torch.randn(1, 2, 4, 8), cos, sin)
    with pytest.raises(ValueError, match="cos is on cpu but q is on cuda"):
        rope(torch.randn(1, 2, 4, 8, device="cuda"), torch.randn(1, 2, 4, 8, device="cuda"), cos, sin)
