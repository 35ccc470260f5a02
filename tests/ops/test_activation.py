"""GELU / SiLU / SwiGLU / GeGLU against float64 references: forward, backward, odd sizes,
saturating inputs, strided layouts, the concatenated [gate, up] layout, fallbacks, bad
input and the modules."""

import pytest
import torch
import torch.nn.functional as F

from tritonic.nn.activation import GEGLU, GELU, SiLU, SwiGLU
from tritonic.ops import activation as act_ops
from tritonic.ops.activation import geglu, geglu_reference, gelu, silu, swiglu, swiglu_reference
from tests.helpers import check_op

# Triton's interpreter evaluates exp in numpy, which warns when sigmoid(-x) overflows to
# exp(inf) for saturating inputs; the result (0 or 1) is the intended one.
pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered in exp:RuntimeWarning")

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
SHAPES = [(1,), (7,), (1000,), (4097,), (3, 5, 7), (2, 3, 33)]

# name -> (tritonic, PyTorch) taking x
UNARY = {
    "gelu": (lambda x: gelu(x), lambda x: F.gelu(x)),
    "gelu_tanh": (lambda x: gelu(x, approximate="tanh"), lambda x: F.gelu(x, approximate="tanh")),
    "silu": (lambda x: silu(x), lambda x: F.silu(x)),
}
# name -> (tritonic, PyTorch) taking gate, up (up=None: gate is [gate, up] concatenated)
GATED = {
    "swiglu": (lambda gate, up=None: swiglu(gate, up), lambda gate, up=None: swiglu_reference(gate, up)),
    "geglu": (lambda gate, up=None: geglu(gate, up), lambda gate, up=None: geglu_reference(gate, up)),
    "geglu_tanh": (lambda gate, up=None: geglu(gate, up, "tanh"),
                   lambda gate, up=None: geglu_reference(gate, up, "tanh")),
}


def _randn(shape, dtype, device, scale=3.0):
    return torch.randn(shape, dtype=torch.float32, device=device).mul_(scale).to(dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("name", list(UNARY))
def test_unary(name, shape, dtype, device):
    ours, theirs = UNARY[name]
    check_op(ours, theirs, dict(x=_randn(shape, dtype, device)), grads=["x"])


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(7,), (1000,), (3, 5, 7), (2, 3, 130)], ids=str)
@pytest.mark.parametrize("name", list(GATED))
def test_gated(name, shape, dtype, device):
    ours, theirs = GATED[name]
    args = dict(gate=_randn(shape, dtype, device), up=_randn(shape, dtype, device, 1.0))
    check_op(ours, theirs, args, grads=["gate", "up"])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("shape", [(2,), (1, 14), (3, 5, 66)], ids=str)
@pytest.mark.parametrize("name", list(GATED))
def test_gated_concatenated(name, shape, dtype, device):
    """One (..., 2H) tensor holding [gate, up]: the output is (..., H), the gradient (..., 2H)."""
    ours, theirs = GATED[name]
    check_op(lambda x: ours(x), lambda x: theirs(x), dict(x=_randn(shape, dtype, device)), grads=["x"])


def _extremes(dtype, device):
    """Saturating inputs, zeros and tiny values among ordinary ones."""
    special = torch.tensor([20.0, -20.0, 1e4, -1e4, 0.0, -0.0, 1e-6, -1e-6, 8.0, -8.0, 40.0, -40.0],
                           device=device)
    return torch.cat([special, torch.randn(53, device=device)]).to(dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", list(UNARY))
def test_unary_extremes(name, dtype, device):
    ours, theirs = UNARY[name]
    x = _extremes(dtype, device)
    check_op(ours, theirs, dict(x=x), grads=["x"])
    y = ours(x).float()
    torch.testing.assert_close(y[2:4], torch.tensor([1e4, 0.0], device=device).to(dtype).float())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
@pytest.mark.parametrize("name", list(GATED))
def test_gated_extremes(name, dtype, device):
    ours, theirs = GATED[name]
    gate = _extremes(dtype, device)
    check_op(ours, theirs, dict(gate=gate, up=torch.randn_like(gate)), grads=["gate", "up"])


def _layout(kind, shape, device, dtype=torch.float32):
    """A non-contiguous tensor of ``shape`` (2-D)."""
    m, n = shape
    if kind == "transposed":
        t = torch.randn(n, m, device=device, dtype=dtype).t()
    elif kind == "sliced":  # rows read in place with a row stride
        t = torch.randn(m, n + 9, device=device, dtype=dtype)[:, 3:n + 3]
    elif kind == "stepped":  # stride 2 along the last dimension: copied first
        t = torch.randn(m, 2 * n, device=device, dtype=dtype)[:, ::2]
    else:  # broadcast rows, stride 0
        t = torch.randn(1, n, device=device, dtype=dtype).expand(m, n)
    assert not t.is_contiguous()
    return t


@pytest.mark.parametrize("layout", ["transposed", "sliced", "stepped", "expanded"])
@pytest.mark.parametrize("name", ["gelu", "silu"])
def test_unary_non_contiguous(name, layout, device):
    ours, theirs = UNARY[name]
    check_op(ours, theirs, dict(x=_layout(layout, (6, 50), device)), grads=["x"])


@pytest.mark.parametrize("layouts", [("sliced", "contiguous"), ("transposed", "sliced"), ("expanded", "stepped"),
                                     ("sliced", "sliced")])
def test_gated_non_contiguous(layouts, device):
    gate, up = (torch.randn(6, 50, device=device) if k == "contiguous" else _layout(k, (6, 50), device)
                for k in layouts)
    check_op(*GATED["swiglu"], dict(gate=gate, up=up), grads=["gate", "up"])
    x = _layout(layouts[0], (6, 50), device)  # a strided concatenated tensor too
    check_op(lambda x: geglu(x), lambda x: geglu_reference(x), dict(x=x), grads=["x"])


def test_non_contiguous_leading_dims(device):
    """Leading dimensions that merge into one row stride are read in place; ones that do not are copied."""
    base = torch.randn(4, 3, 40, device=device)
    merged = base[:, :, 5:37]  # rows 40 apart
    unmerged = base.transpose(0, 1)[:, :, :32]
    for x in (merged, unmerged):
        check_op(*UNARY["gelu"], dict(x=x), grads=["x"])
        check_op(*GATED["swiglu"], dict(gate=x, up=torch.randn(x.shape, device=device)), grads=["gate", "up"])


def test_non_contiguous_output_gradient(device):
    """y.sum() sends back a stride-0 gradient; a transposed one is copied."""
    x = torch.randn(5, 33, device=device, requires_grad=True)
    g = torch.autograd.grad(silu(x).sum(), x)[0]
    torch.testing.assert_close(g, torch.autograd.grad(F.silu(x).sum(), x)[0])
    dy = torch.randn(33, 5, device=device).t()
    gate, up = torch.randn(5, 33, device=device, requires_grad=True), torch.randn(5, 33, device=device)
    up.requires_grad_(True)
    ours = torch.autograd.grad(swiglu(gate, up), [gate, up], dy)
    ref = torch.autograd.grad(swiglu_reference(gate, up), [gate, up], dy)
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b)


def test_rows_in_place_matches_view():
    """_rows_in_place (strides only) says yes exactly when a (rows, last dim) view with unit
    column stride exists, over random permutes, slices, steps and broadcasts."""
    g = torch.Generator().manual_seed(1)
    for _ in range(500):
        d = int(torch.randint(1, 5, (1,), generator=g))
        shape = [int(torch.randint(1, 4, (1,), generator=g)) for _ in range(d)]
        t = torch.empty([2 * s for s in shape]).permute(*torch.randperm(d, generator=g).tolist())
        t = t[tuple(slice(0, s, int(torch.randint(1, 3, (1,), generator=g))) for s in shape)]
        if torch.rand(1, generator=g) < 0.2:
            t = t[:1].expand(3, *t.shape[1:])
        try:
            t.view(-1, t.shape[-1])
            viewable = t.stride(-1) == 1 or t.shape[-1] == 1
        except RuntimeError:
            viewable = False
        assert act_ops._rows_in_place(t) == viewable, (tuple(t.shape), t.stride())


@pytest.mark.parametrize("layout", ["flat", "rows"])
def test_many_blocks(layout, device, monkeypatch):
    """Small blocks, so each row spans several programs (rows) and the flat array many, with masked tails."""
    monkeypatch.setattr(act_ops, "BLOCK", 64)
    monkeypatch.setattr(act_ops, "MIN_BLOCK", 64)
    x = torch.randn(3, 1000, device=device)
    if layout == "rows":
        x = torch.randn(3, 1100, device=device)[:, 50:1050]
    check_op(*UNARY["gelu_tanh"], dict(x=x), grads=["x"])
    check_op(lambda x: swiglu(x), lambda x: swiglu_reference(x), dict(x=x), grads=["x"])


def test_config_blocks():
    """Rows of common MLP widths split into blocks with little idle; the flat layout fills the GPU."""
    for n in (11008, 14336, 8192, 3072, 5120):
        block, warps = act_ops._config(n, True, 132)
        assert (-n) % block * 8 <= n and block >= 1024 and warps >= 4
    assert act_ops._config(7, True, 132) == (8, 1)  # narrow rows: one block a row
    assert act_ops._config(1 << 28, False, 132) == (act_ops.BLOCK, 8)
    assert act_ops._config(100, False, 132)[0] == act_ops.MIN_BLOCK


@pytest.mark.parametrize("which", ["unary", "gated", "concatenated"])
def test_custom_op_path(which, device, monkeypatch):
    """The registered torch ops (what torch.compile and tracing use) give the same results
    as the eager autograd.Function path."""
    monkeypatch.setattr(act_ops, "_path", lambda *t: "op")
    x = torch.randn(4, 48, device=device)
    if which == "unary":
        check_op(*UNARY["gelu"], dict(x=x), grads=["x"])
    elif which == "gated":
        check_op(*GATED["geglu_tanh"], dict(gate=x, up=torch.randn_like(x)), grads=["gate", "up"])
    else:
        check_op(lambda x: swiglu(x), lambda x: swiglu_reference(x), dict(x=x), grads=["x"])


def test_grad_of_one_input_only(device):
    gate = torch.randn(4, 32, device=device)
    up = torch.randn(4, 32, device=device, requires_grad=True)
    (g,) = torch.autograd.grad(swiglu(gate, up).sum(), [up])
    torch.testing.assert_close(g, F.silu(gate))
    gate.requires_grad_(True)
    up.requires_grad_(False)
    (g,) = torch.autograd.grad(geglu(gate, up).sum(), [gate])
    (r,) = torch.autograd.grad(geglu_reference(gate, up).sum(), [gate])
    torch.testing.assert_close(g, r)


def test_inference_path_matches(device):
    """Without autograd the forward is a plain launch; the result is bit for bit the same."""
    x = torch.randn(5, 96, device=device)
    with torch.no_grad():
        y0, h0 = gelu(x), swiglu(x)
    xg = x.clone().requires_grad_(True)
    torch.testing.assert_close(y0, gelu(xg).detach(), atol=0, rtol=0)
    torch.testing.assert_close(h0, swiglu(xg).detach(), atol=0, rtol=0)


def test_scalar_and_empty(device):
    x = torch.tensor(0.7, device=device)
    torch.testing.assert_close(silu(x), F.silu(x))
    assert gelu(torch.randn(0, 8, device=device)).shape == (0, 8)
    assert swiglu(torch.randn(3, 0, device=device)).shape == (3, 0)
    assert geglu(torch.randn(0, 4, device=device), torch.randn(0, 4, device=device)).shape == (0, 4)


def test_float64_falls_back_with_warning(device):
    from tritonic.runtime import checks
    checks._warned.clear()
    x = torch.randn(3, 16, dtype=torch.float64, device=device)
    with pytest.warns(UserWarning, match="gelu: the kernels take.*PyTorch's implementation runs instead"):
        y = gelu(x, "tanh")
    torch.testing.assert_close(y, F.gelu(x, approximate="tanh"))
    with pytest.warns(UserWarning, match="swiglu: the kernels take"):
        torch.testing.assert_close(swiglu(x), swiglu_reference(x))


# ----------------------------------------------------------------------------- bad input


def test_integer_input_is_rejected(device):
    with pytest.raises(TypeError, match=r"silu: x must have a floating dtype.*torch.int64"):
        silu(torch.ones(2, 8, dtype=torch.int64, device=device))
    with pytest.raises(TypeError, match=r"swiglu: up must have a floating dtype.*torch.int32"):
        swiglu(torch.ones(2, 8, device=device), torch.ones(2, 8, dtype=torch.int32, device=device))
    with pytest.raises(TypeError, match=r"gelu: x must be a torch.Tensor, got list"):
        gelu([1.0, 2.0])


def test_bad_approximate(device):
    x = torch.randn(2, 8, device=device)
    with pytest.raises(ValueError, match=r"gelu: approximate must be 'none' or 'tanh', got 'erf'"):
        gelu(x, approximate="erf")
    with pytest.raises(ValueError, match=r"geglu: approximate must be 'none' or 'tanh', got True"):
        geglu(x, x, approximate=True)
    with pytest.raises(ValueError, match=r"GEGLU: approximate"):
        GEGLU("fast")


def test_gate_up_mismatch(device):
    gate = torch.randn(2, 8, device=device)
    with pytest.raises(ValueError, match=r"swiglu: up must have shape \(2, 8\) \(the shape of gate\), got \(8,\)"):
        swiglu(gate, torch.randn(8, device=device))
    with pytest.raises(TypeError, match=r"geglu: up must have the dtype of gate \(torch.float32\), got torch.float16"):
        geglu(gate, torch.randn(2, 8, device=device, dtype=torch.float16))
    with pytest.raises(ValueError, match=r"swiglu: up is on meta but gate is on"):
        swiglu(gate, torch.randn(2, 8, device="meta"))
    with pytest.raises(ValueError, match=r"swiglu: with up=None, gate must hold \[gate, up\].*got shape \(2, 7\)"):
        swiglu(torch.randn(2, 7, device=device))
    with pytest.raises(ValueError, match=r"geglu: with up=None.*got shape \(\)"):
        geglu(torch.tensor(1.0, device=device))


def test_cpu_tensor_on_a_gpu_machine(monkeypatch):
    from tritonic.runtime import checks
    monkeypatch.setattr(checks, "can_run_kernels", lambda device: device.type == "cuda")
    monkeypatch.setattr(checks, "has_cuda", lambda: True)
    with pytest.raises(ValueError, match=r"gelu: x is a CPU tensor.*\.cuda\(\)"):
        gelu(torch.randn(2, 8))
    with pytest.raises(ValueError, match=r"swiglu: gate is a CPU tensor"):
        swiglu(torch.randn(2, 8), torch.randn(2, 8))


# ----------------------------------------------------------------------------- modules


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_module(approximate, device):
    ref = torch.nn.GELU(approximate)
    mod = GELU(approximate)
    assert isinstance(mod, torch.nn.GELU) and repr(mod) == repr(ref)
    assert mod.state_dict().keys() == ref.state_dict().keys()
    x = torch.randn(3, 5, 40, device=device, requires_grad=True)
    y, r = mod(x), ref(x)
    torch.testing.assert_close(y, r)
    torch.testing.assert_close(torch.autograd.grad(y.square().sum(), x)[0],
                               torch.autograd.grad(r.square().sum(), x)[0])


@pytest.mark.parametrize("inplace", [False, True])
def test_silu_module(inplace, device):
    ref, mod = torch.nn.SiLU(inplace), SiLU(inplace)
    assert isinstance(mod, torch.nn.SiLU) and repr(mod) == repr(ref)
    assert mod.state_dict().keys() == ref.state_dict().keys()
    x = torch.randn(4, 33, device=device)
    xr, xm = x.clone(), x.clone()
    y, r = mod(xm), ref(xr)
    torch.testing.assert_close(y, r)
    torch.testing.assert_close(xm, xr)  # overwritten with inplace=True, untouched otherwise
    assert (y.data_ptr() == xm.data_ptr()) == inplace


def test_gated_modules(device):
    gate, up = torch.randn(2, 3, 24, device=device), torch.randn(2, 3, 24, device=device)
    x = torch.cat([gate, up], -1)
    assert SwiGLU().state_dict() == {} and "tanh" in repr(GEGLU("tanh"))
    torch.testing.assert_close(SwiGLU()(gate, up), F.silu(gate) * up)
    torch.testing.assert_close(SwiGLU()(x), F.silu(gate) * up)
    torch.testing.assert_close(GEGLU("tanh")(x), F.gelu(gate, approximate="tanh") * up)
    torch.testing.assert_close(GEGLU()(gate, up), F.gelu(gate) * up)
