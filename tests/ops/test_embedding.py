"""Embedding lookup: rows exactly equal to PyTorch's, odd sizes, int32 ids, the gradient
(padding_idx row left at zero), out-of-range ids, the module, fallbacks and bad input."""

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
