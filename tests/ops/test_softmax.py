"""Softmax / log-softmax against float64 references: forward, backward, odd widths, scale,
masks (broadcast, full, fully masked rows), the multi-pass path for wide rows, extreme
values, strides, other dimensions, fallbacks and bad input."""

import importlib

import pytest
import torch

from tritonic.nn.softmax import Softmax
from tritonic.ops.softmax import log_softmax, log_softmax_reference, softmax, softmax_reference
from tests.helpers import check_op

# The module itself (tritonic.ops.softmax may name the function once ops/__init__ exports it).
sm_ops = importlib.import_module("tritonic.ops.softmax")

OPS = {"softmax": (softmax, softmax_reference), "log_softmax": (log_softmax, log_softmax_reference)}
DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def _check(op, x, dim=-1, scale=None, mask=None, grads=True):
    """check_op for one op; the mask rides in the closures (check_op casts tensor arguments
    to float64 for the reference, which a boolean mask must not be)."""
    ours, ref = OPS[op]
    check_op(lambda x: ours(x, dim, scale=scale, mask=mask), lambda x: ref(x, dim, scale=scale, mask=mask),
             dict(x=x), grads=["x"] if grads else ())


@pytest.fixture(params=[False, True], ids=["loop", "prefetch"])
def chunked(monkeypatch, request):
    """Send rows wider than 16 columns down the multi-pass path, in chunks of 16, with the
    forward's plain loop and the backward's, and with loads one chunk ahead (the forward's
    PREFETCH, the backward's BWD_PIPE)."""
    monkeypatch.setattr(sm_ops, "FUSED_WIDTH", 16)
    monkeypatch.setattr(sm_ops, "CHUNK", 16)
    monkeypatch.setattr(sm_ops, "FWD_CHUNK", 16)
    monkeypatch.setattr(sm_ops, "PREFETCH", request.param)
    monkeypatch.setattr(sm_ops, "BWD_PIPE", request.param)


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(1, 1), (3, 7), (2, 3, 33), (4, 1000), (2, 4097)], ids=str)
def test_widths_and_dtypes(op, dtype, shape, device):
    _check(op, torch.randn(shape, dtype=dtype, device=device) * 3)


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("N", [33, 100])
def test_multi_pass(op, dtype, N, device, chunked):
    mask = torch.rand(5, N, device=device) > 0.3
    mask[1] = False  # one row with nothing kept
    mask[2, :20] = False  # the first chunk wholly masked: the running maximum starts at -inf,
    x = torch.randn(5, N, device=device) * 4 + 2
    x[2] -= 300  # and the logits after it are far below 0
    x[3] = torch.linspace(-50, 50, N)  # the maximum grows with every chunk
    _check(op, x.to(dtype), scale=0.7, mask=mask)


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("store_cs", [False, True], ids=["plain_stores", "cs_stores"])
def test_multi_pass_streaming_stores(op, store_cs, device, chunked, monkeypatch):
    """STORE_CS (the outputs' .cs hint, the default; TRITONIC_SOFTMAX_STORE_CS=0 turns it off)
    writes the same values either way."""
    monkeypatch.setattr(sm_ops, "STORE_CS", store_cs)
    _check(op, torch.randn(3, 100, device=device) * 4, scale=0.5)


def test_multi_pass_is_taken(device, chunked):
    assert not sm_ops._config(100, sm_ops.FUSED_WIDTH, sm_ops.CHUNK)[0]
    assert sm_ops._config(100, 16384, 4096)[0]
    assert not sm_ops._config(16385, 16384, 4096)[0]


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("scale", [0.125, -2.0, 3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_scale(op, scale, dtype, device):
    _check(op, torch.randn(3, 5, 50, dtype=dtype, device=device), scale=scale)


MASK_SHAPES = [
    (2, 3, 5, 40),  # full
    (2, 1, 1, 40),  # key padding, read in place: one mask row per batch entry
    (5, 40),  # one mask for every batch entry and head
    (1, 3, 5, 1),  # whole rows on or off
    (40,),
    (),  # a single value
]


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("mshape", MASK_SHAPES, ids=str)
def test_masks(op, mshape, device):
    x = torch.randn(2, 3, 5, 40, device=device)
    mask = torch.rand(mshape, device=device) > 0.4
    if len(mshape) >= 2:
        mask[..., 0, :] = False  # some rows with nothing kept
    else:
        mask = mask | True
    _check(op, x, scale=0.5, mask=mask)


@pytest.mark.parametrize("op", OPS)
def test_mask_over_more_than_three_dims(op, device):
    """A mask striding through four leading dims cannot be collapsed to three: it is copied."""
    x = torch.randn(2, 3, 2, 3, 24, device=device)
    mask = torch.rand(2, 1, 2, 1, 24, device=device) > 0.5
    _, strides, _ = sm_ops._mask_geometry(mask, tuple(x.shape))
    assert strides[-1] == 1
    _check(op, x, mask=mask)


def test_mask_geometry_collapses_dims():
    m = torch.ones(4, 1, 1, 64, dtype=torch.bool)
    t, strides, sizes = sm_ops._mask_geometry(m, (4, 8, 16, 64))
    assert t.data_ptr() == m.data_ptr()  # read in place
    assert sizes == (4, 128) and strides == (0, 64, 0, 1)
    t, strides, sizes = sm_ops._mask_geometry(torch.ones(16, 1, dtype=torch.bool), (4, 8, 16, 64))
    assert sizes == (32, 16) and strides == (0, 0, 1, 0)


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("wide", [False, True])
def test_fully_masked_rows_give_zeros_and_no_nan(op, wide, device, monkeypatch):
    if wide:
        monkeypatch.setattr(sm_ops, "FUSED_WIDTH", 8)
        monkeypatch.setattr(sm_ops, "CHUNK", 8)
        monkeypatch.setattr(sm_ops, "FWD_CHUNK", 8)
        monkeypatch.setattr(sm_ops, "BWD_PIPE", True)
    fn = OPS[op][0]
    x = torch.randn(4, 30, device=device, requires_grad=True)
    mask = torch.rand(4, 30, device=device) > 0.5
    mask[0] = False
    mask[3] = False
    y = fn(x, mask=mask)
    (g,) = torch.autograd.grad(y, x, torch.randn_like(y))
    assert not y.isnan().any() and not g.isnan().any()
    if op == "softmax":
        assert (y[0] == 0).all() and (y[3] == 0).all() and (y[~mask] == 0).all()
        torch.testing.assert_close(y[1:3].sum(-1), torch.ones(2, device=device))
    else:
        assert (y[~mask] == float("-inf")).all() and torch.isfinite(y[mask]).all()
    assert (g[0] == 0).all() and (g[3] == 0).all() and (g[~mask] == 0).all()
    # Masked positions never read their values: non-finite ones there change nothing.
    x2 = x.detach().masked_fill(~mask, float("nan"))
    torch.testing.assert_close(fn(x2, mask=mask), y.detach(), atol=0, rtol=0)


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_extreme_values(op, dtype, device, monkeypatch):
    x = torch.randn(4, 64, device=device) * 1e4
    x[0] = 1e4
    x[1, ::2] = -1e4
    _check(op, x.to(dtype))
    monkeypatch.setattr(sm_ops, "FUSED_WIDTH", 16)
    monkeypatch.setattr(sm_ops, "CHUNK", 16)
    monkeypatch.setattr(sm_ops, "FWD_CHUNK", 16)
    _check(op, x.to(dtype))


@pytest.mark.parametrize("op", OPS)
def test_infinite_inputs(op, device):
    """Unmasked -inf logits behave as in PyTorch (probability 0; log-softmax -inf)."""
    x = torch.randn(3, 20, device=device)
    x[:, ::3] = float("-inf")
    _check(op, x)


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("layout", ["transposed", "sliced", "expanded_rows", "row_stride"])
def test_non_contiguous(op, layout, device):
    N = 48
    if layout == "transposed":
        x = torch.randn(N, 6, device=device).t()
    elif layout == "sliced":
        x = torch.randn(6, 2 * N, device=device)[:, ::2]
    elif layout == "expanded_rows":
        x = torch.randn(1, N, device=device).expand(5, N)
    else:
        x = torch.randn(3, 4, N + 16, device=device)[:, :, :N]  # rows N + 16 apart
    assert not x.is_contiguous()
    _check(op, x)


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("shape", [(37,), (2, 9), (2, 3, 9), (2, 1, 3, 9), (1, 2, 1, 2, 9)], ids=str)
def test_leading_dims(op, shape, device):
    _check(op, torch.randn(shape, device=device))


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("dim", [0, 1, -2])
def test_other_dims(op, dim, device):
    x = torch.randn(6, 5, 7, device=device)
    mask = torch.rand(6, 1, 7, device=device) > 0.3
    _check(op, x, dim=dim, mask=mask)


def test_grad_does_not_flow_to_mask_and_scale_is_chained(device):
    x = torch.randn(3, 16, device=device, requires_grad=True)
    mask = torch.rand(3, 16, device=device) > 0.2
    (g,) = torch.autograd.grad(log_softmax(x, scale=2.5, mask=mask)[:, 3].sum(), x)
    xr = x.detach().clone().requires_grad_(True)
    (gr,) = torch.autograd.grad(log_softmax_reference(xr, scale=2.5, mask=mask)[:, 3].sum(), xr)
    torch.testing.assert_close(g, gr)


def test_custom_op_path(device, monkeypatch):
    """The registered torch ops (what torch.compile and tracing use) give the same results
    as the eager autograd.Function path."""
    monkeypatch.setattr(sm_ops, "_path", lambda *t: "op")
    mask = torch.rand(2, 1, 30, device=device) > 0.3
    for op in OPS:
        _check(op, torch.randn(2, 4, 30, device=device), scale=0.3, mask=mask)


def test_inference_path_matches(device):
    x = torch.randn(5, 96, device=device)
    with torch.no_grad():
        y0 = softmax(x, scale=0.5)
    y1 = softmax(x.clone().requires_grad_(True), scale=0.5).detach()
    torch.testing.assert_close(y0, y1, atol=0, rtol=0)


def test_empty(device):
    assert softmax(torch.randn(0, 16, device=device)).shape == (0, 16)
    assert log_softmax(torch.randn(4, 0, device=device)).shape == (4, 0)


def test_float64_falls_back_with_warning(device):
    from tritonic.runtime import checks
    checks._warned.clear()
    x = torch.randn(3, 16, dtype=torch.float64, device=device)
    with pytest.warns(UserWarning, match="PyTorch's implementation runs instead"):
        y = softmax(x)
    torch.testing.assert_close(y, torch.softmax(x, -1))


# ----------------------------------------------------------------------------- bad input


def test_integer_input_is_rejected(device):
    with pytest.raises(TypeError, match=r"softmax: x must have a floating dtype.*torch.int64"):
        softmax(torch.ones(2, 8, dtype=torch.int64, device=device))


def test_mask_dtype(device):
    x = torch.randn(2, 8, device=device)
    with pytest.raises(TypeError, match=r"log_softmax: mask must have dtype torch.bool.*got torch.float32"):
        log_softmax(x, mask=torch.ones(2, 8, device=device))
    with pytest.raises(TypeError, match=r"softmax: mask must be a boolean torch.Tensor.*got list"):
        softmax(x, mask=[True] * 8)


def test_mask_that_does_not_broadcast(device):
    x = torch.randn(2, 3, 8, device=device)
    for shape in [(3, 7), (2, 1, 3, 8), (4, 1, 8)]:
        with pytest.raises(ValueError, match=r"softmax: mask must broadcast to x's shape \(2, 3, 8\)"):
            softmax(x, mask=torch.ones(shape, dtype=torch.bool, device=device))


def test_bad_dim_and_scale(device):
    x = torch.randn(2, 8, device=device)
    with pytest.raises(ValueError, match=r"softmax: dim must be in \[-2, 1\].*got 2"):
        softmax(x, 2)
    with pytest.raises(TypeError, match="dim must be an int, got float"):
        softmax(x, 1.0)
    with pytest.raises(ValueError, match="scale must be finite, got nan"):
        softmax(x, scale=float("nan"))
    with pytest.raises(TypeError, match="scale must be a number or None, got str"):
        log_softmax(x, scale="2")
    with pytest.raises(ValueError, match="x must have at least 1 dimension"):
        softmax(torch.tensor(1.0, device=device))


def test_mixed_devices(device):
    x = torch.randn(2, 8, device=device)
    with pytest.raises(ValueError, match=r"mask is on meta but x is on"):
        softmax(x, mask=torch.ones(8, dtype=torch.bool, device="meta"))


def test_cpu_tensor_on_a_gpu_machine(monkeypatch):
    from tritonic.runtime import checks
    monkeypatch.setattr(checks, "can_run_kernels", lambda device: device.type == "cuda")
    monkeypatch.setattr(checks, "has_cuda", lambda: True)
    with pytest.raises(ValueError, match=r"softmax: x is a CPU tensor.*\.cuda\(\)"):
        softmax(torch.randn(2, 8))


# ----------------------------------------------------------------------------- module


@pytest.mark.filterwarnings("ignore:Implicit dimension choice for softmax")
@pytest.mark.parametrize("dim", [-1, 2, 1, None])
def test_softmax_module(dim, device):
    mod, ref = Softmax(dim), torch.nn.Softmax(dim)
    assert isinstance(mod, torch.nn.Softmax) and repr(mod) == repr(ref)
    x = torch.randn(2, 3, 20, device=device, requires_grad=True)
    y = mod(x)
    torch.testing.assert_close(y, ref(x))
    g = torch.randn_like(y)
    torch.testing.assert_close(torch.autograd.grad(y, x, g)[0], torch.autograd.grad(ref(x), x, g)[0])
