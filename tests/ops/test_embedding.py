"""Embedding lookup: rows exactly equal to PyTorch's, odd sizes, int32 ids, the gradient
(padding_idx row left at zero), out-of-range ids, the module, fallbacks and bad input; and
BERT's embedding block in one kernel (``embeddings_layer_norm``)."""

import importlib

import pytest
import torch
import torch.nn.functional as F

from tritonic import nn as tnn
from tritonic import ops

DTYPES = [torch.float32, torch.float16, torch.bfloat16]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("V,D,shape", [(97, 64, (2, 7)), (33, 257, (5,)), (1000, 768, (1, 16)), (7, 1, (3, 3, 3))])
def test_rows_equal_pytorchs(V, D, shape, dtype, device):
    w = torch.randn(V, D, device=device).to(dtype)
    ids = torch.randint(0, V, shape, device=device)
    y = ops.embedding(ids, w)
    assert y.shape == (*shape, D) and y.dtype == dtype
    assert torch.equal(y, F.embedding(ids, w))


def test_int32_ids_and_a_strided_table(device):
    big = torch.randn(50, 40, device=device)
    w = big[:, :33]  # rows of a wider table: unit stride along each row
    ids = torch.randint(0, 50, (4, 9), device=device, dtype=torch.int32)
    assert torch.equal(ops.embedding(ids, w), F.embedding(ids.long(), w))


@pytest.mark.parametrize("padding_idx", [None, 3, -2])
def test_gradient_matches_pytorchs(padding_idx, device):
    w = torch.randn(20, 24, device=device, requires_grad=True)
    ids = torch.tensor([[3, 5, 3, 18], [0, 3, 19, 5]], device=device)
    dy = torch.randn(2, 4, 24, device=device)
    ops.embedding(ids, w, padding_idx).backward(dy)
    w2 = w.detach().clone().requires_grad_(True)
    F.embedding(ids, w2, padding_idx).backward(dy)
    torch.testing.assert_close(w.grad, w2.grad)


def test_out_of_range_ids_give_nan_rows_not_other_rows(device):
    w = torch.randn(10, 16, device=device)
    ids = torch.tensor([[1, 10, -1, 2]], device=device)
    y = ops.embedding(ids, w)
    assert torch.equal(y[0, 0], w[1]) and torch.equal(y[0, 3], w[2])
    assert torch.isnan(y[0, 1]).all() and torch.isnan(y[0, 2]).all()


def test_module_matches_torch_and_keeps_its_state_dict(device):
    torch.manual_seed(0)
    ref = torch.nn.Embedding(40, 12, padding_idx=0).to(device)
    ours = tnn.Embedding(40, 12, padding_idx=0).to(device)
    ours.load_state_dict(ref.state_dict())
    ids = torch.randint(0, 40, (3, 5), device=device)
    assert torch.equal(ours(ids), ref(ids))
    renorm = tnn.Embedding(40, 12, max_norm=1.0).to(device)  # max_norm: torch's own lookup
    assert renorm(ids).norm(dim=-1).max() <= 1.0 + 1e-5


def test_fallbacks_and_bad_input(device):
    w64 = torch.randn(10, 4, dtype=torch.float64, device=device)
    ids = torch.tensor([1, 2], device=device)
    assert torch.equal(ops.embedding(ids, w64), F.embedding(ids, w64))  # float64: PyTorch's lookup
    assert ops.embedding(ids[:0], w64.float()).shape == (0, 4)
    with pytest.raises(TypeError, match="int64 or int32"):
        ops.embedding(ids.float(), w64.float())
    with pytest.raises(ValueError, match="2-D"):
        ops.embedding(ids, torch.randn(10, device=device))


def _bert_tables(V, NP, NT, D, dtype, device):
    t = lambda *s, scale=1.0: (torch.randn(*s, device=device) * scale).to(dtype)  # noqa: E731
    return dict(word=t(V, D), position=t(NP, D), token_type=t(NT, D), weight=1 + t(D, scale=0.1),
                bias=t(D, scale=0.1))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("B,S,D,by_position,shared_positions", [(3, 7, 48, False, True), (2, 9, 33, True, True),
                                                                  (1, 16, 64, True, False), (4, 5, 96, False, False)])
def test_embeddings_layer_norm_matches_the_module_s_math(B, S, D, by_position, shared_positions, dtype, device):
    """BERT's embedding block in one kernel: word + token type (given, or a buffer read at the
    positions) + position rows, then LayerNorm, under the correctness rule."""
    from tests.helpers import assert_close_to_reference

    V, NP, NT = 50, 40, 3
    tabs = _bert_tables(V, NP, NT, D, dtype, device)
    ids = torch.randint(0, V, (B, S), device=device)
    pos = (torch.arange(3, 3 + S, device=device)[None] if shared_positions
           else torch.randint(0, NP, (B, S), device=device))
    types = torch.randint(0, NT, (NP,) if by_position else (B, S), device=device)
    args = (ids, tabs["word"], pos, tabs["position"], types, tabs["token_type"], tabs["weight"], tabs["bias"], 1e-12,
            by_position)
    ours = ops.embeddings_layer_norm(*args)
    theirs = ops.embeddings_layer_norm_reference(*args)
    ref = ops.embeddings_layer_norm_reference(*(a.double() if isinstance(a, torch.Tensor) and a.is_floating_point()
                                                else a for a in args))
    assert ours.shape == (B, S, D)
    assert_close_to_reference("embeddings_layer_norm", ours, theirs, ref)


def test_embeddings_layer_norm_runs_one_kernel_and_marks_bad_indices(device, monkeypatch):
    """One launch; a token whose id, position or token type is out of range gets a NaN row, the
    others their values; int32 indices work too."""
    emb = importlib.import_module("tritonic.ops.embedding")
    launches = []
    real = emb.launch
    monkeypatch.setattr(emb, "launch", lambda k, *a, **m: launches.append(k.fn.__name__) or real(k, *a, **m))
    tabs = _bert_tables(20, 10, 2, 32, torch.float32, device)
    ids = torch.tensor([[1, 20, 3, 4, 5]], device=device, dtype=torch.int32)
    pos = torch.tensor([[0, 1, 10, 3, 4]], device=device)
    types = torch.tensor([[0, 0, 0, 2, 1]], device=device)
    y = ops.embeddings_layer_norm(ids, tabs["word"], pos, tabs["position"], types, tabs["token_type"],
                                  tabs["weight"], tabs["bias"])
    assert launches == ["_embeddings_norm_fwd"]
    assert torch.isnan(y[0, 1:4]).all(dim=-1).all()
    good = [0, 4]
    ref = ops.embeddings_layer_norm_reference(ids[:, good].long(), tabs["word"], pos[:, good], tabs["position"],
                                              types[:, good], tabs["token_type"], tabs["weight"], tabs["bias"])
    torch.testing.assert_close(y[:, good], ref, atol=1e-5, rtol=1e-5)


def test_embeddings_layer_norm_with_autograd_and_bad_input(device):
    tabs = _bert_tables(20, 10, 2, 16, torch.float32, device)
    tabs["word"].requires_grad_(True)
    ids, pos = torch.randint(0, 20, (2, 4), device=device), torch.arange(4, device=device)[None]
    types = torch.zeros(2, 4, dtype=torch.long, device=device)
    y = ops.embeddings_layer_norm(ids, tabs["word"], pos, tabs["position"], types, tabs["token_type"],
                                  tabs["weight"], tabs["bias"])
    assert y.grad_fn is not None  # autograd: the reference, differentiable
    y.sum().backward()
    assert tabs["word"].grad is not None
    good = (ids, tabs["word"], pos, tabs["position"], types, tabs["token_type"], tabs["weight"], tabs["bias"])
    with pytest.raises(TypeError, match="input_ids"):
        ops.embeddings_layer_norm(ids.float(), *good[1:])
    with pytest.raises(ValueError, match="bias"):
        ops.embeddings_layer_norm(*good[:7], tabs["bias"][:3])
    with pytest.raises(ValueError, match="position_ids"):
        ops.embeddings_layer_norm(ids, tabs["word"], pos[:, :3], *good[3:])
    with pytest.raises(ValueError, match="token_type_ids is a 1-D buffer"):
        ops.embeddings_layer_norm(*good, 1e-12, True)
