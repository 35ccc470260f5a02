"""Cross-entropy and fused linear cross-entropy against float64 references (tests/helpers.py)."""

import pytest
import torch

from tests.helpers import check_op
from tritonic.nn.loss import CrossEntropyLoss, FusedLinearCrossEntropyLoss
from tritonic.ops.loss import (cross_entropy, cross_entropy_reference, fused_linear_cross_entropy,
                               fused_linear_cross_entropy_reference)


def _targets(N, V, device, ignored=()):
    t = torch.randint(0, V, (N,), device=device)
    for i in ignored:
        t[i] = -100
    return t


def _check(logits, target, **kw):
    check_op(lambda logits, target: cross_entropy(logits, target, **kw),
             lambda logits, target: cross_entropy_reference(logits, target, **kw),
             dict(logits=logits, target=target), grads=["logits"])


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("V", [1, 7, 100, 128, 333])  # (128: whole blocks only, no partial one)
def test_plain(V, reduction, device):
    _check(torch.randn(9, V, device=device) * 3, _targets(9, V, device, ignored=(2,)), reduction=reduction)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision(dtype, device):
    _check(torch.randn(6, 150, device=device).to(dtype) * 4, _targets(6, 150, device, ignored=(0,)))


@pytest.mark.parametrize("opts", [dict(label_smoothing=0.1), dict(z_loss=1e-3), dict(softcap=5.0),
                                  dict(label_smoothing=0.2, z_loss=1e-2, softcap=3.0, reduction="sum"),
                                  dict(label_smoothing=1.0, reduction="none")])
@pytest.mark.parametrize("V", [130, 128])
def test_options(opts, V, device):
    _check(torch.randn(7, V, device=device) * 4, _targets(7, V, device, ignored=(3,)), **opts)


def test_leading_dims_and_strided_rows(device):
    logits = torch.randn(2, 5, 90, device=device)
    _check(logits, torch.randint(0, 90, (2, 5), device=device))
    wide = torch.randn(8, 200, device=device)[:, 10:110]  # rows with a stride, unit stride along V
    _check(wide, _targets(8, 100, device))
    _check(torch.randn(100, 6, device=device).t(), _targets(6, 100, device))  # column-major: copied


def test_extreme_logits(device):
    logits = torch.randn(5, 77, device=device)
    logits[0, 3] = 1e4
    logits[1, :] = -1e4
    logits[2, 10:] = float("-inf")  # masked vocabulary entries
    target = torch.tensor([3, 5, 4, 0, -100], device=device)
    _check(logits, target)
    _check(logits, target, softcap=30.0)


def test_all_ignored_matches_pytorch(device):
    logits = torch.randn(4, 10, device=device, requires_grad=True)
    target = torch.full((4,), -100, device=device)
    mean = cross_entropy(logits, target)
    assert torch.isnan(mean) and torch.isnan(torch.nn.functional.cross_entropy(logits, target))
    total = cross_entropy(logits, target, reduction="sum")
    assert total.item() == 0.0
    total.backward()
    assert (logits.grad == 0).all()


def test_bad_input(device):
    logits = torch.randn(4, 10, device=device)
    with pytest.raises(ValueError, match="outside \\[0, 10\\)"):
        cross_entropy(logits, torch.tensor([1, 2, 10, 3], device=device))
    with pytest.raises(ValueError, match="outside"):
        cross_entropy(logits, torch.tensor([1, -5, 0, 3], device=device))
    with pytest.raises(TypeError, match="int64"):
        cross_entropy(logits, torch.tensor([1.0, 2, 3, 4], device=device))
    with pytest.raises(ValueError, match="shape of logits"):
        cross_entropy(logits, torch.tensor([1, 2, 3], device=device))
    with pytest.raises(ValueError, match="reduction"):
        cross_entropy(logits, torch.tensor([1, 2, 3, 4], device=device), reduction="avg")
    with pytest.raises(ValueError, match="label_smoothing"):
        cross_entropy(logits, torch.tensor([1, 2, 3, 4], device=device), label_smoothing=1.5)
    with pytest.raises(ValueError, match="softcap"):
        cross_entropy(logits, torch.tensor([1, 2, 3, 4], device=device), softcap=0.0)
    # unchecked, an out-of-range target gives a NaN loss and reads nothing outside the row
    out = cross_entropy(logits, torch.tensor([1, 2, 10, 3], device=device), reduction="none", check_targets=False)
    assert torch.isnan(out[2]) and torch.isfinite(out[[0, 1, 3]]).all()


def test_the_kernel_runs(device, monkeypatch):
    import importlib

    mod = importlib.import_module("tritonic.ops.loss")
    calls = []
    for name in ("_launch_fwd", "_launch_bwd"):
        real = getattr(mod, name)
        monkeypatch.setattr(mod, name, lambda *a, real=real, name=name, **k: calls.append(name) or real(*a, **k))
    logits = torch.randn(3, 20, device=device, requires_grad=True)
    cross_entropy(logits, _targets(3, 20, device)).backward()
    assert calls == ["_launch_fwd", "_launch_bwd"]


# ----------------------------------------------------------------------------- fused linear


def _check_fused(N, H, V, dtype, device, bias=False, grads=("hidden", "weight"), **kw):
    args = dict(hidden=torch.randn(N, H, device=device).to(dtype), weight=(torch.randn(V, H, device=device) / H ** 0.5)
                .to(dtype), target=_targets(N, V, device, ignored=(1,)))
    if bias:
        args["bias"] = torch.randn(V, device=device).to(dtype)
        grads = (*grads, "bias")
    ref_kw = {k: v for k, v in kw.items() if k not in ("chunk_rows", "low_memory", "vocab_chunk")}
    check_op(lambda **a: fused_linear_cross_entropy(**a, **kw), lambda **a: fused_linear_cross_entropy_reference(
        **a, **ref_kw), args, grads=list(grads))


@pytest.mark.parametrize("chunk_rows", [None, 3, 5])
def test_fused_linear(chunk_rows, device):
    _check_fused(11, 16, 37, torch.float32, device, chunk_rows=chunk_rows)


def test_fused_linear_options_and_bias(device):
    _check_fused(9, 16, 50, torch.float32, device, bias=True, chunk_rows=4, label_smoothing=0.1, z_loss=1e-3,
                 softcap=4.0, reduction="sum")
    _check_fused(8, 32, 40, torch.float16, device, chunk_rows=3)


def test_fused_linear_leading_dims_and_errors(device):
    hidden = torch.randn(2, 3, 8, device=device, requires_grad=True)
    weight = torch.randn(12, 8, device=device, requires_grad=True)
    target = torch.randint(0, 12, (2, 3), device=device)
    loss = fused_linear_cross_entropy(hidden, weight, target, chunk_rows=4)
    ref = cross_entropy_reference(hidden.double() @ weight.double().t(), target)
    torch.testing.assert_close(loss.double(), ref)
    loss.backward()
    assert hidden.grad.shape == hidden.shape and weight.grad.shape == weight.shape
    with pytest.raises(ValueError, match="reduction must be 'mean' or 'sum'"):
        fused_linear_cross_entropy(hidden, weight, target, reduction="none")
    with pytest.raises(ValueError, match="weight must be \\(V, H\\)"):
        fused_linear_cross_entropy(hidden, weight.t(), target)
    with pytest.raises(ValueError, match="outside"):
        fused_linear_cross_entropy(hidden, weight, target + 12)


def test_modules(device):
    logits = torch.randn(5, 30, device=device)
    target = _targets(5, 30, device, ignored=(4,))
    ours = CrossEntropyLoss(label_smoothing=0.1)
    theirs = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
    torch.testing.assert_close(ours(logits, target), theirs(logits, target))
    head = torch.nn.Linear(16, 30, bias=False, device=device)
    hidden = torch.randn(5, 16, device=device)
    fused = FusedLinearCrossEntropyLoss()
    torch.testing.assert_close(fused(hidden, head.weight, target), theirs.__class__()(head(hidden), target))


def test_fused_linear_under_torch_compile(device):
    """An opaque custom op: torch.compile keeps its chunked loop (and its memory) as it is."""
    hidden = torch.randn(10, 16, device=device, requires_grad=True)
    weight = torch.randn(40, 16, device=device, requires_grad=True)
    target = _targets(10, 40, device, ignored=(3,))
    fn = lambda h, w, t: fused_linear_cross_entropy(h, w, t, chunk_rows=4, label_smoothing=0.1)  # noqa: E731
    compiled = torch.compile(fn, fullgraph=True, backend="aot_eager" if device == "cpu" else "inductor")
    loss = compiled(hidden, weight, target)
    ref = fn(hidden, weight, target)
    torch.testing.assert_close(loss, ref)
    g = torch.autograd.grad(loss * 3, (hidden, weight))
    r = torch.autograd.grad(ref * 3, (hidden, weight))
    for a, b in zip(g, r):
        torch.testing.assert_close(a, b)


def test_fused_linear_backward_scales_in_place_once(device):
    """The backward scales the gradients computed in the forward in place (no copy of dW):
    an upstream factor is applied once, gradients accumulate into existing ``.grad``, and a
    second backward through the same graph is refused with a clear error."""
    hidden = torch.randn(7, 16, device=device, requires_grad=True)
    weight = torch.randn(30, 16, device=device, requires_grad=True)
    target = _targets(7, 30, device, ignored=(2,))
    ref_h, ref_w = torch.autograd.grad(cross_entropy_reference(hidden.double() @ weight.double().t(), target) * 2.5,
                                       (hidden, weight))
    weight.grad = torch.ones_like(weight)
    loss = fused_linear_cross_entropy(hidden, weight, target, chunk_rows=3)
    (loss * 2.5).backward(retain_graph=True)
    torch.testing.assert_close(hidden.grad, ref_h)
    torch.testing.assert_close(weight.grad, ref_w + 1)
    with pytest.raises(RuntimeError, match="backward through the same loss twice"):
        loss.backward()


def test_fused_linear_default_chunk():
    from tritonic.ops.loss import _chunk_rows

    assert _chunk_rows(8192, 128256, 4096) == 1024  # Llama-3 head: a quarter of W in logits
    assert _chunk_rows(8192, 50257, 768) == 1024  # GPT-2: the 1024-row floor
    assert _chunk_rows(100, 50257, 768) == 100  # never more than the tokens
    assert _chunk_rows(65536, 32000, 4096) == 8192  # many tokens: up to hidden's size in logits


def test_fused_linear_loss_dtype(device):
    hidden = torch.randn(6, 16, device=device).half()
    weight = (torch.randn(20, 16, device=device) / 4).half()
    target = _targets(6, 20, device)
    assert fused_linear_cross_entropy(hidden, weight, target).dtype == torch.float16
    loss = fused_linear_cross_entropy(hidden, weight, target, loss_dtype=torch.float32)
    assert loss.dtype == torch.float32
    ref = cross_entropy_reference(hidden.double() @ weight.double().t(), target)
    assert abs(loss.double() - ref) < 2e-3  # the float32 sum keeps more digits than a float16 loss


@pytest.mark.parametrize("vocab_chunk", [None, 8, 37])
def test_fused_linear_low_memory(vocab_chunk, device):
    """The two-pass variant, all over vocabulary slices: the rows' softmax statistics first
    (_ce_slice_stats), then the gradients (windows of the gradient kernel), dh summed."""
    _check_fused(11, 16, 37, torch.float32, device, chunk_rows=4, low_memory=True, vocab_chunk=vocab_chunk)
    _check_fused(9, 16, 50, torch.float32, device, bias=True, chunk_rows=4, low_memory=True, vocab_chunk=16,
                 label_smoothing=0.1, z_loss=1e-3, softcap=4.0, reduction="sum")
    _check_fused(7, 16, 30, torch.float32, device, grads=("weight",), low_memory=True, vocab_chunk=7)
    # a padded head (130 float32 rows are not 16-byte multiples) over three 64-row slices
    _check_fused(6, 16, 130, torch.float32, device, bias=True, chunk_rows=4, low_memory=True, vocab_chunk=64)
    # half precision: dh summed over six slices in float16 (each slice's product in float32)
    _check_fused(10, 16, 90, torch.float16, device, low_memory=True, vocab_chunk=16)


def test_fused_linear_low_memory_with_more_tokens_than_hidden(device):
    """N > H: the second pass's slices narrow as dW's free rows run out, then finish through
    the small buffer (the plan is checked on its own below)."""
    _check_fused(40, 16, 300, torch.float32, device, low_memory=True, vocab_chunk=64)
    _check_fused(40, 16, 130, torch.float32, device, bias=True, low_memory=True, vocab_chunk=128,
                 label_smoothing=0.1, reduction="sum")  # padded to 192 rows: 64-row steps
    _check_fused(33, 16, 200, torch.float16, device, grads=("hidden", "weight"), low_memory=True, vocab_chunk=48)
    # dW too small to hold any slice's logits (N·8 > V·H): buffers of their own in both passes
    _check_fused(200, 4, 40, torch.float32, device, low_memory=True, vocab_chunk=16)


@pytest.mark.parametrize("V,Vp,N,H,width,step", [(128256, 128256, 8192, 4096, 3968, 8), (50257, 50304, 8192, 768, 512, 64),
                                                 (300, 300, 40, 16, 64, 8), (130, 192, 40, 16, 128, 64),
                                                 (1000, 1000, 7, 64, 96, 8), (1000, 1000, 37, 13, 96, 8),
                                                 (500, 512, 50, 9, 64, 64)])
def test_low_memory_plan_keeps_logits_in_unwritten_dw_rows(V, Vp, N, H, width, step):
    """Every dW row is written by exactly one slice, and each slice's N·x logits lie in rows no
    slice has written yet and past its own (from an 8-element boundary), or in the small buffer."""
    from tritonic.ops.loss import _plan_in_dw

    small_width = max(step, width // 8 // step * step)
    dw_flat = torch.arange(Vp * H, dtype=torch.float64)  # values = offsets
    smalls = []
    written = torch.zeros(Vp, dtype=torch.bool)

    def new_buffer(n):
        smalls.append(n)
        return torch.full((n,), -1.0, dtype=torch.float64)

    for v0, x, buf in _plan_in_dw(V, Vp, N, H, width, step, dw_flat, small_width, new_buffer):
        v1p = min(Vp, v0 + x)
        assert v0 % step == 0 and 0 < x <= width and not written[v0:v1p].any()
        need = N * (v1p - v0)
        assert buf.numel() >= need
        if buf[0] >= 0:  # in dW: from the end of this slice's rows on, all of it unwritten
            start = int(buf[0])
            assert start % 8 == 0 and start >= v1p * H and start + need <= Vp * H
            assert not written[start // H:(start + need - 1) // H + 1].any()
        else:
            assert x == small_width
        written[v0:v1p] = True
    assert written.all() and len(smalls) <= 1 and all(n == N * small_width for n in smalls)


def test_fused_linear_pads_an_unaligned_vocabulary(device):
    """GPT-2's 50257 classes: cuBLAS runs the head's GEMMs ~6x slower on an odd row stride,
    so the head is padded to a multiple of 64 rows; results as without (checked above on
    V = 37, 50, 20 in float16) and dW is the first V rows of the padded gradient."""
    from tritonic.ops.loss import _padded_vocab

    w16, w32 = torch.empty(0, dtype=torch.bfloat16), torch.empty(0)
    assert _padded_vocab(50257, w16) == 50304 and _padded_vocab(128256, w16) == 128256
    assert _padded_vocab(50, w32) == 64 and _padded_vocab(40, w16) == 40 and _padded_vocab(4, w32) == 4
    _check_fused(10, 16, 21, torch.float16, device, bias=True, chunk_rows=4, grads=("hidden", "weight"))
    with pytest.raises(ValueError, match="vocab_chunk is for low_memory"):
        fused_linear_cross_entropy(torch.randn(2, 4, device=device), torch.randn(5, 4, device=device),
                                   torch.tensor([1, 2], device=device), vocab_chunk=2)
