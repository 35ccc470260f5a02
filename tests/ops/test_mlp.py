"""gated_mlp against float64 references (output and every gradient), what it keeps for the
backward (the gated product is recomputed, not saved), the no-grad path and bad input."""

import pytest
import torch

from tritonic.ops import gated_mlp, gated_mlp_reference
from tests.helpers import check_op

pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered in exp:RuntimeWarning")


def _args(shape, F, dtype, device):
    H = shape[-1]
    return dict(x=torch.randn(shape, dtype=dtype, device=device),
                w_gate=torch.randn(F, H, dtype=dtype, device=device) / H ** 0.5,
                w_up=torch.randn(F, H, dtype=dtype, device=device) / H ** 0.5,
                w_down=torch.randn(H, F, dtype=dtype, device=device) / F ** 0.5)


@pytest.mark.parametrize("activation", ["silu", "gelu", "gelu_tanh"])
@pytest.mark.parametrize("shape,F", [((7, 16), 24), ((2, 5, 32), 40)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_matches_the_chained_layers(activation, shape, F, dtype, device):
    args = _args(shape, F, dtype, device)
    check_op(lambda **a: gated_mlp(**a, activation=activation),
             lambda **a: gated_mlp_reference(**a, activation=activation), args,
             grads=["x", "w_gate", "w_up", "w_down"], atol_ulps=4)


def _saved_elements(fn, args):
    """Elements of the tensors autograd keeps for the backward, weights left out."""
    weights = {args[k].data_ptr() for k in ("w_gate", "w_up", "w_down")}
    seen = {}

    def pack(t):
        if t.data_ptr() not in weights:
            seen[(t.data_ptr(), tuple(t.shape))] = t.numel()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn(**args).sum().backward()
    return sum(seen.values())


def test_keeps_the_projections_not_the_product(device):
    """Per token, the chained layers keep the gate and up projections and the product (3F,
    plus x); gated_mlp keeps the projections only (2F plus x)."""
    T, H, F = 6, 16, 24
    args = {k: v.requires_grad_(True) for k, v in _args((T, H), F, torch.float32, device).items()}
    ours = _saved_elements(gated_mlp, args)
    chained = _saved_elements(gated_mlp_reference, args)
    assert ours == T * (H + 2 * F), ours
    assert chained >= T * (H + 3 * F), chained


def test_only_some_gradients(device):
    args = _args((5, 16), 24, torch.float32, device)
    args["w_down"].requires_grad_(True)
    y = gated_mlp(**args)
    (dw,) = torch.autograd.grad(y.sum(), [args["w_down"]])
    ref = torch.autograd.grad(gated_mlp_reference(**args).sum(), [args["w_down"]])[0]
    torch.testing.assert_close(dw, ref, rtol=1e-4, atol=1e-5)


def test_no_grad_path(device):
    args = _args((3, 4, 16), 24, torch.float32, device)
    with torch.no_grad():
        torch.testing.assert_close(gated_mlp(**args), gated_mlp_reference(**args), rtol=1e-4, atol=1e-5)


def test_bad_input(device):
    args = _args((5, 16), 24, torch.float32, device)
    with pytest.raises(ValueError, match="w_down"):
        gated_mlp(args["x"], args["w_gate"], args["w_up"], args["w_gate"])
    with pytest.raises(TypeError, match="w_up"):
        gated_mlp(args["x"], args["w_gate"], args["w_up"].double(), args["w_down"])
    with pytest.raises(ValueError, match="activation"):
        gated_mlp(**args, activation="relu")
