"""LayerNorm / RMSNorm against float64 references: forward, backward, odd shapes, strides,
fused residual, the chunked path for wide rows, fallbacks and bad input."""

import functools

import pytest
import torch
import torch.nn.functional as F

import tritonic
from tritonic.ops import norm as norm_ops
from tritonic.ops import layer_norm, layer_norm_reference, rms_norm, rms_norm_reference
from tests.helpers import check_op

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
SHAPES = [(1, 1), (3, 7), (2, 5, 33), (17, 257), (4, 768)]


def _inputs(shape, dtype, device, weight=True, bias=True, residual=False, wdtype=None):
    N = shape[-1]
    wdtype = wdtype or dtype
    return dict(
        x=torch.randn(shape, dtype=dtype, device=device) * 2 + 0.5,
        weight=torch.randn(N, dtype=wdtype, device=device) if weight else None,
        bias=torch.randn(N, dtype=wdtype, device=device) if bias else None,
        residual=torch.randn(shape, dtype=dtype, device=device) if residual else None,
    )


def _grads(args):
    return [k for k, v in args.items() if isinstance(v, torch.Tensor)]


def _torch_ln(x, weight, bias, residual, eps=1e-5):
    return layer_norm_reference(x, weight, bias, eps, residual)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("affine", ["wb", "w", "none"])
def test_layer_norm(shape, dtype, affine, device):
    args = _inputs(shape, dtype, device, weight=affine != "none", bias=affine == "wb")
    check_op(lambda **a: layer_norm(**a), _torch_ln, args, grads=_grads(args))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(3, 7), (2, 3, 129)], ids=str)
def test_layer_norm_residual(shape, dtype, device):
    args = _inputs(shape, dtype, device, residual=True)
    check_op(lambda **a: layer_norm(**a), _torch_ln, args, grads=_grads(args))


@pytest.mark.parametrize("dtype", [torch.float16, torch.float64], ids=str)
def test_layer_norm_residual_without_the_sum(dtype, device):
    """return_sum=False gives y alone: the same values as with the sum (which, without
    autograd, the kernel does not write; float64 goes to the reference)."""
    args = _inputs((3, 5, 96), dtype, device, residual=True)
    y = layer_norm(args["x"], args["weight"], args["bias"], residual=args["residual"], return_sum=False)
    both = layer_norm(args["x"], args["weight"], args["bias"], residual=args["residual"])
    assert isinstance(y, torch.Tensor) and y.shape == args["x"].shape
    assert torch.equal(y, both[0])
    x = args["x"].detach().clone().requires_grad_(True)
    y = layer_norm(x, args["weight"], args["bias"], residual=args["residual"], return_sum=False)
    y.float().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def _torch_rms(x, weight, residual, eps=1e-6, offset=0.0, upcast=True):
    return rms_norm_reference(x, weight, eps, residual, offset, upcast)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("variant", ["upcast", "llama", "gemma", "no_weight"])
def test_rms_norm(shape, dtype, variant, device):
    args = _inputs(shape, dtype, device, weight=variant != "no_weight", bias=False)
    del args["bias"]
    opts = {"upcast": dict(), "llama": dict(upcast=False), "gemma": dict(offset=1.0),
            "no_weight": dict()}[variant]
    check_op(lambda **a: rms_norm(**a, **opts), lambda **a: _torch_rms(**a, **opts), args, grads=_grads(args))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("upcast", [True, False])
def test_rms_norm_residual(dtype, upcast, device):
    args = _inputs((2, 3, 65), dtype, device, bias=False, residual=True)
    del args["bias"]
    check_op(lambda **a: rms_norm(**a, upcast=upcast), lambda **a: _torch_rms(**a, upcast=upcast), args,
             grads=_grads(args))


def test_torch_rms_norm_matches_upcast_convention(device):
    """upcast=True is what torch's own rms_norm computes."""
    args = _inputs((4, 96), torch.bfloat16, device, bias=False)
    del args["bias"]
    check_op(lambda x, weight, residual: rms_norm(x, weight, 1e-6),
             lambda x, weight, residual: F.rms_norm(x, (96,), weight, 1e-6), args, grads=["x", "weight"])


@pytest.mark.parametrize("single", [True, False])
@pytest.mark.parametrize("hints", [("evict_first", False), ("", True), ("evict_first", True)])
def test_forward_cache_hints(single, hints, device, monkeypatch):
    """The forward's cache hints (evict-first loads, streaming stores) change no value, on
    either path; the chunked one is forced by a 16-column chunk."""
    cfg = (True, 2, 64, 4) if single else (False, 1, 16, 4)
    monkeypatch.setattr(norm_ops, "_fwd_config", lambda n, o=None: cfg + hints)
    args = _inputs((9, 40), torch.float32, device, residual=True, bias=True)
    check_op(lambda **a: layer_norm(**a), _torch_ln, args, grads=_grads(args))


@pytest.mark.parametrize("which", ["layer", "rms"])
@pytest.mark.parametrize("M,N,int64", [(32, 64, False), (32, 64, True), (31, 64, False), (32, 60, False)])
def test_forward_specialisations(which, M, N, int64, device, monkeypatch):
    """The forward's lean paths: no masks when the row fills the block and BLOCK_M (16 here)
    divides M (32x64), int32 or int64 row offsets, no offset add when offset is 0; and
    the masked ones beside them (31 rows, 60 columns)."""
    if int64:
        monkeypatch.setattr(norm_ops, "INT32_ROWS", 0)
    args = _inputs((M, N), torch.float32, device, residual=True, bias=which == "layer")
    if which == "layer":
        check_op(lambda **a: layer_norm(**a), _torch_ln, args, grads=_grads(args))
    else:
        del args["bias"]
        check_op(lambda **a: rms_norm(**a), lambda **a: _torch_rms(**a), args, grads=_grads(args))
        check_op(lambda **a: rms_norm(**a, offset=1.0), lambda **a: _torch_rms(**a, offset=1.0), args,
                 grads=_grads(args))


def test_h200_forward_table(device, monkeypatch):
    """On an H200 the forward takes its own launch table (evict-first loads at 1024 columns)."""
    monkeypatch.setattr(norm_ops, "_gpu_is_h200", lambda: True)
    norm_ops._fwd_config.cache_clear()
    try:
        assert norm_ops._fwd_config(1000) == (True, 2, 1024, 4, "evict_first", False)
        assert norm_ops._fwd_config(8192)[1:] == (1, 8192, 8, "", True)
        args = _inputs((3, 1000), torch.float32, device, residual=False, bias=True)
        check_op(lambda **a: layer_norm(**a), _torch_ln, args, grads=_grads(args))
    finally:
        norm_ops._fwd_config.cache_clear()


@pytest.mark.parametrize("which", ["layer", "rms"])
@pytest.mark.parametrize("N", [33, 100, 64])  # 64: chunks divide the row (no masks)
def test_chunked_rows(which, N, device, monkeypatch):
    """Rows wider than FUSED_HIDDEN take the two-pass chunked path; force it at a small width."""
    monkeypatch.setattr(norm_ops, "FUSED_HIDDEN", 16)
    monkeypatch.setattr(norm_ops, "CHUNK", 16)
    # a fresh cache of launch choices for this test (put back afterwards, so later tests at
    # these widths do not inherit the chunked path)
    monkeypatch.setattr(norm_ops, "_fwd_config", functools.lru_cache(norm_ops._fwd_config.__wrapped__))
    args = _inputs((9, N), torch.float32, device, residual=True, bias=which == "layer")
    args["x"] = args["x"] + 100.0  # a large mean tests the chunk-merged variance
    if which == "layer":
        check_op(lambda **a: layer_norm(**a), _torch_ln, args, grads=_grads(args))
    else:
        del args["bias"]
        check_op(lambda **a: rms_norm(**a, upcast=False), lambda **a: _torch_rms(**a, upcast=False), args,
                 grads=_grads(args))


def test_mixed_precision_params(device):
    """float32 parameters with half-precision activations (mixed precision training)."""
    args = _inputs((5, 40), torch.bfloat16, device, wdtype=torch.float32)
    check_op(lambda **a: layer_norm(**a), _torch_ln, args, grads=_grads(args))


@pytest.mark.parametrize("layout", ["transposed", "sliced", "expanded_rows"])
def test_non_contiguous(layout, device):
    N = 48
    if layout == "transposed":
        x = torch.randn(N, 6, device=device).t()
    elif layout == "sliced":
        x = torch.randn(6, 2 * N, device=device)[:, ::2]
    else:
        x = torch.randn(1, N, device=device).expand(5, N)
    assert not x.is_contiguous()
    args = dict(x=x, weight=torch.randn(N, device=device), bias=torch.randn(N, device=device), residual=None)
    check_op(lambda **a: layer_norm(**a), _torch_ln, args, grads=["x", "weight", "bias"])


def test_leading_dims_and_row_stride(device):
    base = torch.randn(3, 4, 80, device=device)
    x = base[:, :, :64]  # rows 80 apart, 64 used
    args = dict(x=x, weight=torch.randn(64, device=device), residual=None)
    check_op(lambda **a: rms_norm(**a), lambda **a: _torch_rms(**a), args, grads=["x", "weight"])


def test_grad_of_some_inputs_only(device):
    x = torch.randn(4, 32, device=device, requires_grad=True)
    w = torch.randn(32, device=device)  # no grad wanted
    b = torch.randn(32, device=device, requires_grad=True)
    (gx, gb) = torch.autograd.grad(layer_norm(x, w, b).sum(), [x, b])
    (rx, rb) = torch.autograd.grad(F.layer_norm(x, (32,), w, b).sum(), [x, b])
    torch.testing.assert_close(gx, rx, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(gb, rb)


def test_empty_rows(device):
    x = torch.randn(0, 16, device=device)
    assert layer_norm(x, torch.ones(16, device=device)).shape == (0, 16)
    assert rms_norm(x).shape == (0, 16)


def test_float64_falls_back_with_warning(device):
    x = torch.randn(3, 16, dtype=torch.float64, device=device)
    from tritonic.runtime import checks
    checks._warned.clear()
    with pytest.warns(UserWarning, match="PyTorch's implementation runs instead"):
        y = layer_norm(x)
    torch.testing.assert_close(y, F.layer_norm(x, (16,)))


def test_too_wide_falls_back(device, monkeypatch):
    from tritonic.runtime import checks
    checks._warned.clear()
    monkeypatch.setattr(norm_ops, "MAX_HIDDEN", 8)
    x = torch.randn(2, 16, device=device)
    with pytest.warns(UserWarning, match="above 8"):
        y = rms_norm(x)
    torch.testing.assert_close(y, rms_norm_reference(x))


# ----------------------------------------------------------------------------- bad input


def test_integer_input_is_rejected(device):
    with pytest.raises(TypeError, match=r"layer_norm: x must have a floating dtype.*torch.int64"):
        layer_norm(torch.ones(2, 8, dtype=torch.int64, device=device))


def test_weight_of_wrong_size(device):
    with pytest.raises(ValueError, match=r"rms_norm: weight must have shape \(768,\).*got \(512,\)"):
        rms_norm(torch.randn(2, 768, device=device), torch.randn(512, device=device))


def test_bias_of_wrong_rank(device):
    with pytest.raises(ValueError, match=r"bias must have shape \(8,\)"):
        layer_norm(torch.randn(2, 8, device=device), None, torch.randn(2, 8, device=device))


def test_residual_shape_and_dtype(device):
    x = torch.randn(2, 8, device=device)
    with pytest.raises(ValueError, match=r"residual must have shape \(2, 8\)"):
        layer_norm(x, residual=torch.randn(8, device=device))
    with pytest.raises(TypeError, match=r"residual must have the dtype of x"):
        layer_norm(x, residual=torch.randn(2, 8, device=device, dtype=torch.float16))


def test_mixed_devices(device):
    x = torch.randn(2, 8, device=device)
    w = torch.randn(8, device="meta")
    with pytest.raises(ValueError, match=r"weight is on meta but x is on"):
        layer_norm(x, w)


def test_cpu_tensor_on_a_gpu_machine(monkeypatch):
    from tritonic.runtime import checks
    monkeypatch.setattr(checks, "can_run_kernels", lambda device: device.type == "cuda")
    monkeypatch.setattr(checks, "has_cuda", lambda: True)
    with pytest.raises(ValueError, match=r"layer_norm: x is a CPU tensor.*\.cuda\(\)"):
        layer_norm(torch.randn(2, 8))


def test_bad_eps_and_offset(device):
    x = torch.randn(2, 8, device=device)
    with pytest.raises(ValueError, match="eps must be a non-negative number"):
        layer_norm(x, eps=-1.0)
    with pytest.raises(ValueError, match="offset .* needs a weight"):
        rms_norm(x, offset=1.0)


# ----------------------------------------------------------------------------- modules


def test_layer_norm_module(device):
    ref = torch.nn.LayerNorm(40, device=device)
    torch.nn.init.normal_(ref.weight)
    torch.nn.init.normal_(ref.bias)
    mod = tritonic.nn.LayerNorm(40, device=device)
    assert isinstance(mod, torch.nn.LayerNorm)
    assert mod.state_dict().keys() == ref.state_dict().keys()
    mod.load_state_dict(ref.state_dict())
    x = torch.randn(3, 5, 40, device=device)
    torch.testing.assert_close(mod(x), ref(x), atol=1e-5, rtol=1e-5)


def test_layer_norm_module_2d_shape(device):
    ref = torch.nn.LayerNorm((4, 10), device=device)
    torch.nn.init.normal_(ref.weight)
    mod = tritonic.nn.LayerNorm((4, 10), device=device)
    mod.load_state_dict(ref.state_dict())
    x = torch.randn(3, 4, 10, device=device)
    torch.testing.assert_close(mod(x), ref(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("eps", [None, 1e-6])
@pytest.mark.parametrize("affine", [True, False])
def test_rms_norm_module(eps, affine, device):
    ref = torch.nn.RMSNorm(40, eps=eps, elementwise_affine=affine, device=device)
    if affine:
        torch.nn.init.normal_(ref.weight)
    mod = tritonic.nn.RMSNorm(40, eps=eps, elementwise_affine=affine, device=device)
    assert mod.state_dict().keys() == ref.state_dict().keys()
    mod.load_state_dict(ref.state_dict())
    x = torch.randn(3, 5, 40, device=device)
    torch.testing.assert_close(mod(x), ref(x), atol=1e-5, rtol=1e-5)
    x.requires_grad_(True)
    g = torch.autograd.grad(mod(x).square().sum(), x)[0]
    gr = torch.autograd.grad(ref(x).square().sum(), x)[0]
    torch.testing.assert_close(g, gr, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("which", ["layer", "rms"])
def test_custom_op_path(which, device, monkeypatch):
    """The registered torch ops (what torch.compile and tracing use) give the same results
    as the eager autograd.Function path."""
    monkeypatch.setattr(norm_ops, "_path", lambda *t: "op")
    args = _inputs((6, 40), torch.float32, device, residual=True, bias=which == "layer")
    if which == "layer":
        check_op(lambda **a: layer_norm(**a), _torch_ln, args, grads=_grads(args))
    else:
        del args["bias"]
        check_op(lambda **a: rms_norm(**a), lambda **a: _torch_rms(**a), args, grads=_grads(args))


def test_only_the_residual_sum_is_used(device):
    x = torch.randn(3, 16, device=device, requires_grad=True)
    r = torch.randn(3, 16, device=device, requires_grad=True)
    _, s = layer_norm(x, residual=r)
    gx, gr = torch.autograd.grad(s.sum(), [x, r])
    torch.testing.assert_close(gx, torch.ones_like(x))
    torch.testing.assert_close(gr, torch.ones_like(r))


def test_inference_path_matches(device):
    """Without autograd the forward skips the statistics; the output is the same."""
    x, w, b = torch.randn(5, 96, device=device), torch.randn(96, device=device), torch.randn(96, device=device)
    with torch.no_grad():
        y0 = layer_norm(x, w, b)
        r0 = rms_norm(x, w)
    wg = w.clone().requires_grad_(True)
    torch.testing.assert_close(y0, layer_norm(x, wg, b).detach(), atol=0, rtol=0)
    torch.testing.assert_close(r0, rms_norm(x, wg).detach(), atol=0, rtol=0)


def test_a_tracing_subclass_is_never_taken_for_a_plain_tensor():
    """The check's fast path (exact Tensor / Parameter types) lets the op skip its tracing
    test; a fake tensor takes the full checks and then the registered op."""
    import importlib

    from torch._subclasses.fake_tensor import FakeTensorMode

    norm = importlib.import_module("tritonic.ops.norm")
    x, w = torch.randn(4, 32), torch.randn(32)
    ok = norm._check("layer_norm", x, w, None, None, 1e-5)
    assert ok == 2 and norm._path(x, w, None, None, ok == 2) == "plain"
    with FakeTensorMode():
        fx, fw = torch.empty(4, 32), torch.empty(32)
        ok = norm._check("layer_norm", fx, fw, None, None, 1e-5)
        assert ok == 1 and norm._path(fx, fw, None, None, ok == 2) == "op"
