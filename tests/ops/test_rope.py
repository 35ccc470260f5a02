"""RoPE against float64 references: both layouts, partial rotary dims, per-token angles and
tables with position ids, GQA, strided q/k, in place, gradients, Hugging Face's formula,
the module, fallbacks and bad input."""

import importlib
import math

import pytest
import torch

from tests.helpers import check_op
from tritonic.nn.rope import RotaryEmbedding
from tritonic.ops.rope import rope, rope_reference

rope_ops = importlib.import_module("tritonic.ops.rope")  # the module (tritonic.ops.rope is also the function)

DTYPES = [torch.float32, torch.float16]
# (B, Hq, Hk, S, D, rotary_dim): GQA and MQA, odd sequence lengths, head dims that are not
# powers of two, partial rotary dims (the rest passes through).
SHAPES = [(2, 3, 1, 7, 16, 16), (1, 4, 2, 5, 24, 24), (2, 2, 2, 9, 20, 8), (1, 1, 3, 3, 10, 6)]


def _angles(positions, r, base=10000.0, device="cpu"):
    """Angles (..., r / 2) of the standard RoPE frequencies, in float64."""
    inv_freq = base ** (-torch.arange(0, r, 2, dtype=torch.float64, device=device) / r)
    return positions.to(torch.float64)[..., None] * inv_freq


def _tables(angles, dtype, interleaved, width):
    """cos, sin with one entry per pair ("half") or per element ("full": Llama's two equal
    halves, or GPT-J's equal neighbours)."""
    cos, sin = angles.cos(), angles.sin()
    if width == "full":
        if interleaved:
            cos, sin = cos.repeat_interleave(2, -1), sin.repeat_interleave(2, -1)
        else:
            cos, sin = torch.cat((cos, cos), -1), torch.cat((sin, sin), -1)
    return cos.to(dtype), sin.to(dtype)


def _qk(B, HQ, HK, S, D, dtype, device, seq_major=False):
    """q, k as (B, H, S, D); with ``seq_major`` they are (B, S, H, D) storage transposed, as a
    projection output reshaped and transposed is."""
    if seq_major:
        return (torch.randn(B, S, HQ, D, dtype=dtype, device=device).transpose(1, 2),
                torch.randn(B, S, HK, D, dtype=dtype, device=device).transpose(1, 2))
    return (torch.randn(B, HQ, S, D, dtype=dtype, device=device),
            torch.randn(B, HK, S, D, dtype=dtype, device=device))


def _check(args, grads=("q", "k"), **kw):
    """check_op of rope against rope_reference; ``kw`` go to both (position ids stay integer)."""
    check_op(lambda **a: rope(**a, **kw), lambda **a: rope_reference(**a, **kw), args, grads=list(grads))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("interleaved", [False, True], ids=["half_split", "interleaved"])
@pytest.mark.parametrize("width", ["full", "half"])
def test_per_token_angles(shape, dtype, interleaved, width, device):
    """cos/sin given per token, (B, S, W), as Hugging Face passes them."""
    B, HQ, HK, S, D, r = shape
    q, k = _qk(B, HQ, HK, S, D, dtype, device, seq_major=True)
    pos = torch.randint(0, 100, (B, S), device=device)
    cos, sin = _tables(_angles(pos, r, device=device), dtype, interleaved, width)
    _check(dict(q=q, k=k, cos=cos, sin=sin), interleaved=interleaved, rotary_dim=r)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("pos_shape", ["BS", "S", "1S"])
@pytest.mark.parametrize("interleaved", [False, True], ids=["half_split", "interleaved"])
@pytest.mark.parametrize("width", ["full", "half"])
def test_tables_with_position_ids(dtype, pos_shape, interleaved, width, device):
    B, HQ, HK, S, D, r, P = 2, 4, 2, 6, 24, 16, 37
    q, k = _qk(B, HQ, HK, S, D, dtype, device)
    cos, sin = _tables(_angles(torch.arange(P, device=device), r, device=device), dtype, interleaved, width)
    shape = {"BS": (B, S), "S": (S,), "1S": (1, S)}[pos_shape]
    pos = torch.randint(0, P, shape, device=device, dtype=torch.int32 if pos_shape == "S" else torch.int64)
    _check(dict(q=q, k=k, cos=cos, sin=sin), position_ids=pos, interleaved=interleaved, rotary_dim=r)


@pytest.mark.parametrize("cos_shape", ["S", "1S", "B1S"])
def test_per_token_angle_shapes(cos_shape, device):
    """(S, W), (1, S, W) shared by the batch, and (B, 1, S, W) after Hugging Face's unsqueeze."""
    B, S, D = 3, 5, 16
    q, k = _qk(B, 2, 1, S, D, torch.float32, device)
    pos = torch.arange(S, device=device) if cos_shape != "B1S" else torch.randint(0, 50, (B, 1, S), device=device)
    if cos_shape == "1S":
        pos = pos[None]
    cos, sin = _tables(_angles(pos, D, device=device), torch.float32, False, "full")
    _check(dict(q=q, k=k, cos=cos, sin=sin))


def test_float32_tables_with_half_q(device):
    """Tables kept in float32 with float16 activations (what RotaryEmbedding does)."""
    q, k = _qk(2, 2, 1, 5, 16, torch.float16, device)
    cos, sin = _tables(_angles(torch.arange(5, device=device), 16, device=device), torch.float32, False, "half")
    _check(dict(q=q, k=k, cos=cos, sin=sin), rotary_dim=16)


@pytest.mark.parametrize("interleaved", [False, True], ids=["half_split", "interleaved"])
def test_any_tables_follow_the_elementwise_formula(interleaved, device):
    """With W = r the kernel computes x * cos + rot(x) * sin per element for any tables (not
    only rotations), and its backward is that formula's exact gradient."""
    q, k = _qk(2, 3, 2, 6, 12, torch.float32, device)
    cos, sin = torch.randn(2, 6, 8, device=device), torch.randn(2, 6, 8, device=device)
    _check(dict(q=q, k=k, cos=cos, sin=sin), interleaved=interleaved)


@pytest.mark.parametrize("layout", ["strided_last_dim", "fused_qkv", "expanded_angles"])
def test_strides(layout, device):
    B, H, S, D = 2, 3, 5, 16
    cos, sin = _tables(_angles(torch.randint(0, 40, (B, S), device=device), D, device=device), torch.float32,
                       False, "full")
    if layout == "strided_last_dim":  # head elements two apart
        q = torch.randn(B, H, S, 2 * D, device=device)[..., ::2]
        k = torch.randn(B, 1, S, 2 * D, device=device)[..., 1::2]
    elif layout == "fused_qkv":  # q and k sliced out of one (B, S, 3H, D) projection
        qkv = torch.randn(B, S, 3 * H, D, device=device)
        q, k = qkv[:, :, :H].transpose(1, 2), qkv[:, :, H:2 * H].transpose(1, 2)
    else:  # one row of angles expanded over the batch (stride 0)
        q, k = _qk(B, H, H, S, D, torch.float32, device)
        cos, sin = cos[:1].expand(B, S, D), sin[:1].expand(B, S, D)
    _check(dict(q=q, k=k, cos=cos, sin=sin))


# ----------------------------------------------------------------------------- Hugging Face


def _hf_rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def _hf_llama(q, k, cos, sin):
    """Llama's apply_rotary_pos_emb, re-written from its formula: cos/sin (B, S, D) unsqueezed over heads."""
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
    return q * cos + _hf_rotate_half(q) * sin, k * cos + _hf_rotate_half(k) * sin


def _gptj_rotate_every_two(x):
    return torch.stack((-x[..., 1::2], x[..., ::2]), dim=-1).flatten(-2)


def _gptj(q, k, cos, sin, r):
    """GPT-J: tables of one entry per pair, repeated per element; the first r columns rotated."""
    cos, sin = cos.repeat_interleave(2, -1).unsqueeze(1), sin.repeat_interleave(2, -1).unsqueeze(1)
    out = []
    for x in (q, k):
        xr = x[..., :r]
        out.append(torch.cat((xr * cos + _gptj_rotate_every_two(xr) * sin, x[..., r:]), dim=-1))
    return tuple(out)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_matches_hugging_face_llama(dtype, device):
    """Llama's rotary tables (cat(freqs, freqs), cos/sin in q's dtype) and formula."""
    B, HQ, HK, S, D = 2, 4, 2, 7, 32
    q, k = _qk(B, HQ, HK, S, D, dtype, device, seq_major=True)
    angles = _angles(torch.arange(3, 3 + S, device=device).expand(B, S), D)
    emb = torch.cat((angles, angles), dim=-1).float()
    cos, sin = emb.cos().to(dtype), emb.sin().to(dtype)
    check_op(lambda **a: rope(**a), _hf_llama, dict(q=q, k=k, cos=cos, sin=sin), grads=["q", "k"])


@pytest.mark.parametrize("width", ["full", "half"])
def test_matches_gptj(width, device):
    """GPT-J: interleaved pairs, partial rotary dim, tables of one entry per pair."""
    B, H, S, D, r = 2, 3, 5, 24, 8
    q, k = _qk(B, H, H, S, D, torch.float16, device)
    angles = _angles(torch.randint(0, 60, (B, S), device=device), r)
    args = dict(q=q, k=k, cos=angles.cos().half(), sin=angles.sin().half())

    def ours(q, k, cos, sin):
        if width == "full":
            cos, sin = cos.repeat_interleave(2, -1), sin.repeat_interleave(2, -1)
        return rope(q, k, cos, sin, interleaved=True, rotary_dim=r)

    check_op(ours, lambda **a: _gptj(**a, r=r), args, grads=["q", "k"])


def test_matches_transformers_if_installed(device):
    llama = pytest.importorskip("transformers.models.llama.modeling_llama")
    q, k = _qk(2, 4, 2, 6, 16, torch.float32, device)
    angles = _angles(torch.arange(6, device=device).expand(2, 6), 16)
    emb = torch.cat((angles, angles), -1).float()
    expected = llama.apply_rotary_pos_emb(q, k, emb.cos(), emb.sin())
    for ours, theirs in zip(rope(q, k, emb.cos(), emb.sin()), expected):
        torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


# ----------------------------------------------------------------------------- in place, autograd paths


@pytest.mark.parametrize("interleaved", [False, True], ids=["half_split", "interleaved"])
def test_inplace(interleaved, device):
    B, HQ, HK, S, D, r = 2, 3, 1, 5, 20, 12
    q, k = _qk(B, HQ, HK, S, D, torch.float16, device, seq_major=True)
    cos, sin = _tables(_angles(torch.arange(S, device=device), r, device=device), torch.float16, interleaved,
                       "full")
    expected = rope(q, k, cos, sin, interleaved=interleaved)
    q0 = q.clone()
    qo, ko = rope(q, k, cos, sin, interleaved=interleaved, inplace=True)
    assert qo is q and ko is k
    torch.testing.assert_close(q, expected[0], atol=0, rtol=0)
    torch.testing.assert_close(k, expected[1], atol=0, rtol=0)
    torch.testing.assert_close(q[..., r:], q0[..., r:], atol=0, rtol=0)  # pass-through untouched
    assert not torch.equal(q[..., :r], q0[..., :r])


def test_inplace_op_and_grad_rules(device):
    q, k = _qk(1, 2, 2, 4, 8, torch.float32, device)
    cos, sin = _tables(_angles(torch.arange(4, device=device), 8, device=device), torch.float32, False, "full")
    expected = rope_reference(q, k, cos, sin)
    q1, k1 = q.clone(), k.clone()
    torch.ops.tritonic.rope_inplace(q1, k1, cos, sin, None, False, 8)  # what torch.compile calls
    torch.testing.assert_close((q1, k1), expected)
    qg = q.clone().requires_grad_(True)
    with pytest.raises(ValueError, match=r"rope: inplace=True records no autograd, but q requires grad"):
        rope(qg, k, cos, sin, inplace=True)
    with torch.no_grad():  # without grad mode it is allowed
        rope(qg, k.clone(), cos, sin, inplace=True)
    torch.testing.assert_close(qg.detach(), expected[0])


def test_custom_op_path(device):
    """The registered op (what torch.compile and tracing use) and its autograd."""
    q, k = _qk(2, 3, 1, 5, 16, torch.float32, device)
    cos, sin = _tables(_angles(torch.arange(9, device=device), 16, device=device), torch.float32, True, "half")
    pos = torch.tensor([8, 0, 3, 3, 1], device=device)
    check_op(lambda q, k: torch.ops.tritonic.rope(q, k, cos, sin, pos, True, 16),
             lambda q, k: rope_reference(q, k, cos, sin, position_ids=pos, interleaved=True, rotary_dim=16),
             dict(q=q, k=k), grads=["q", "k"])


@pytest.mark.parametrize("dynamic", [False, True])
def test_traceable_by_torch_compile(dynamic, device, monkeypatch):
    """rope's Python (checks, paths, launch arguments) traces with fullgraph=True, also with
    symbolic sizes and in place. Without a GPU, Triton's interpreter cannot run kernels on fake
    tensors, so here the traced launches are skipped and only shapes are checked; the GPU
    tests compare values under torch.compile."""
    from tritonic.runtime.launcher import is_traced
    real, grids = rope_ops.launch, []

    def launch(kernel, grid, *args, **meta):
        if not is_traced(*args):
            return real(kernel, grid, *args, **meta)
        grids.append(grid)

    if torch.device(device).type == "cpu":
        monkeypatch.setattr(rope_ops, "launch", launch)
    rotary = RotaryEmbedding(8, max_positions=16, device=device)

    def f(q, k, cos, sin, pos):
        qo, ko = rope(q, k, cos, sin)
        rotary(qo, ko, position_ids=pos, inplace=True)
        return qo.sum(-1), ko * 2

    compiled = torch.compile(f, backend="aot_eager", fullgraph=True, dynamic=dynamic)
    for S in (5, 7):
        q, k = _qk(2, 3, 1, S, 16, torch.float32, device, seq_major=True)
        cos, sin = torch.randn(2, S, 16, device=device), torch.randn(2, S, 16, device=device)
        pos = torch.randint(0, 16, (2, S), device=device)
        with torch.no_grad():
            out = compiled(q, k, cos, sin, pos)
        assert out[0].shape == (2, 3, S) and out[1].shape == (2, 1, S, 16)
        if torch.device(device).type != "cpu":
            for a, b in zip(out, f(q, k, cos, sin, pos)):
                torch.testing.assert_close(a, b)
    assert torch.device(device).type != "cpu" or len(grids) >= 2


def test_grad_of_some_inputs_and_outputs(device):
    q, k = _qk(1, 2, 1, 4, 8, torch.float32, device)
    cos, sin = _tables(_angles(torch.arange(4, device=device), 8, device=device), torch.float32, False, "full")
    qg, kg = q.clone().requires_grad_(True), k.clone().requires_grad_(True)
    qo, _ = rope(qg, k, cos, sin)  # only q wants a gradient
    qr, _ = rope_reference(qg, k, cos, sin)
    torch.testing.assert_close(torch.autograd.grad(qo.square().sum(), qg)[0],
                               torch.autograd.grad(qr.square().sum(), qg)[0])
    qo, ko = rope(qg, kg, cos, sin)  # k's output unused: its gradient is zero
    gq, gk = torch.autograd.grad(qo.sum(), [qg, kg])
    assert gk is None or not gk.any()


def test_angles_that_require_grad_use_the_reference(device):
    from tritonic.runtime import checks
    checks._warned.clear()
    q, k = _qk(1, 2, 1, 4, 8, torch.float32, device)
    cos, sin = _tables(_angles(torch.arange(4, device=device), 8, device=device), torch.float32, False, "full")
    cos.requires_grad_(True)
    with pytest.warns(UserWarning, match="no gradient to cos/sin"):
        qo, ko = rope(q, k, cos, sin)
    g = torch.autograd.grad((qo.sum() + ko.sum()), cos)[0]
    qr, kr = rope_reference(q, k, cos, sin)
    torch.testing.assert_close(g, torch.autograd.grad((qr.sum() + kr.sum()), cos)[0])


# ----------------------------------------------------------------------------- fallbacks, positions, bad input


def test_float64_falls_back_with_warning(device):
    from tritonic.runtime import checks
    checks._warned.clear()
    q, k = _qk(1, 2, 1, 3, 8, torch.float64, device)
    cos, sin = torch.randn(3, 8, dtype=torch.float64, device=device), torch.randn(3, 8, dtype=torch.float64,
                                                                                   device=device)
    with pytest.warns(UserWarning, match="PyTorch's implementation runs instead"):
        out = rope(q, k, cos, sin)
    torch.testing.assert_close(out, rope_reference(q, k, cos, sin))


def test_empty(device):
    q, k = _qk(2, 2, 1, 0, 8, torch.float32, device)
    qo, ko = rope(q, k, torch.randn(0, 8, device=device), torch.randn(0, 8, device=device))
    assert qo.shape == q.shape and ko.shape == k.shape


def test_out_of_range_positions_never_read_outside_the_table(device):
    """The kernel itself (the host check skipped, as on a GPU): tokens whose position is out
    of range get NaN in their rotated columns, not values from past the table's end."""
    P, r = 6, 8
    big_cos, big_sin = torch.randn(P + 4, r, device=device), torch.randn(P + 4, r, device=device)
    cos, sin = big_cos[:P], big_sin[:P]  # finite rows follow the table in memory
    q, k = _qk(1, 2, 1, 4, 12, torch.float32, device)
    pos = torch.tensor([[0, P, -1, P - 1]], device=device)
    qo, ko = torch.empty_like(q), torch.empty_like(k)
    rope_ops._launch(q, k, qo, ko, cos, sin, pos, False, r, False, False)
    good = torch.tensor([0, 3])
    ref = rope_reference(q[:, :, good], k[:, :, good], cos, sin, position_ids=pos[:, good], rotary_dim=r)
    torch.testing.assert_close(qo[:, :, good], ref[0])
    assert qo[:, :, 1:3, :r].isnan().all() and ko[:, :, 1:3, :r].isnan().all()
    torch.testing.assert_close(qo[:, :, 1:3, r:], q[:, :, 1:3, r:])


def test_bad_input(device):
    q, k = _qk(2, 4, 2, 5, 16, torch.float32, device)
    cos, sin = torch.randn(5, 16, device=device), torch.randn(5, 16, device=device)
    table = torch.randn(10, 16, device=device)

    def raises(exc, pattern, *args, **kw):
        with pytest.raises(exc, match=pattern):
            rope(*args, **kw)

    raises(ValueError, r"rope: q must have 4 dimensions .* got shape \(4, 5, 16\)", q[0], k, cos, sin)
    raises(ValueError, r"k must have shape \(2, heads, 5, 16\) .* got \(2, 2, 4, 16\)", q, k[:, :, :4], cos, sin)
    raises(TypeError, r"k must have the dtype of q \(torch.float32\), got torch.float16", q, k.half(), cos, sin)
    raises(TypeError, r"q must have a floating dtype.*torch.int64", q.long(), k, cos, sin)
    raises(ValueError, r"sin must have shape \(5, 16\) \(the shape of cos\), got \(5, 8\)", q, k, cos, sin[:, :8])
    raises(ValueError, r"without position_ids, cos must have shape \(5, W\).*got \(4, 16\)", q, k, cos[:4],
           sin[:4])
    raises(ValueError, r"rotary_dim must be an even number from 2 to q's head dim 16, got 7", q, k, cos, sin,
           rotary_dim=7)
    raises(ValueError, r"rotary_dim must be .* got 32 \(the width of cos; pass rotary_dim\)", q, k,
           torch.randn(5, 32, device=device), torch.randn(5, 32, device=device))
    raises(ValueError, r"cos must have 12 columns .* or 6 \(one per pair\) for rotary_dim=12, got 16", q, k, cos,
           sin, rotary_dim=12)
    raises(TypeError, r"position_ids must have dtype torch.int32 or torch.int64, got torch.float32", q, k, table,
           table, position_ids=torch.zeros(5, device=device))
    raises(ValueError, r"position_ids must have shape \(5,\), \(1, 5\) or \(2, 5\).*got \(3, 5\)", q, k, table,
           table, position_ids=torch.zeros(3, 5, dtype=torch.long, device=device))
    raises(ValueError, r"with position_ids, cos must be a table of shape \(max_positions, W\)", q, k,
           table[None].expand(2, 10, 16), table[None].expand(2, 10, 16),
           position_ids=torch.zeros(5, dtype=torch.long, device=device))
    if torch.device(device).type == "cpu":  # checked on the host only where that costs no device sync
        raises(ValueError, r"position_ids must lie in \[0, 10\) .* got values from 0 to 10", q, k, table, table,
               position_ids=torch.tensor([0, 1, 2, 3, 10], device=device))
    raises(TypeError, r"interleaved must be a bool, got int", q, k, cos, sin, interleaved=1)
    raises(TypeError, r"rotary_dim must be an int or None, got float", q, k, cos, sin, rotary_dim=16.0)
    raises(ValueError, r"sin is on meta but q is on", q, k, cos, torch.randn(5, 16, device="meta"))
    raises(ValueError, r"inplace=True needs k to own its elements", q, k[:, :1].expand(2, 2, 5, 16), cos, sin,
           inplace=True)
    raises(ValueError, r"q and k in the same memory", q, q, cos, sin, inplace=True)


# ----------------------------------------------------------------------------- module


@pytest.mark.parametrize("interleaved", [False, True], ids=["half_split", "interleaved"])
def test_rotary_embedding_module(interleaved, device):
    D, r = 16, 12
    mod = RotaryEmbedding(r, max_positions=32, base=500.0, interleaved=interleaved, device=device)
    assert mod.state_dict() == {} and mod.cos.shape == (32, r // 2)
    q, k = _qk(2, 3, 1, 6, D, torch.float16, device)
    cos, sin = _tables(_angles(torch.arange(6, device=device), r, base=500.0, device=device), torch.float32,
                       interleaved, "half")
    for ours, ref in zip(mod(q, k), rope_reference(q, k, cos, sin, interleaved=interleaved, rotary_dim=r)):
        torch.testing.assert_close(ours, ref, atol=1e-3, rtol=1e-3)
    pos = torch.tensor([[31, 0, 5, 5, 2, 9]] * 2, device=device)
    cos, sin = _tables(_angles(pos, r, base=500.0, device=device), torch.float32, interleaved, "half")
    for ours, ref in zip(mod(q, k, position_ids=pos), rope_reference(q, k, cos, sin, interleaved=interleaved,
                                                                     rotary_dim=r)):
        torch.testing.assert_close(ours, ref, atol=1e-3, rtol=1e-3)
    with pytest.raises(ValueError, match="above max_positions=32"):
        mod(*_qk(1, 1, 1, 33, D, torch.float16, device))
    assert math.isclose(mod.cos[1, 1].item(), math.cos(500.0 ** (-2 / r)), rel_tol=1e-6)
