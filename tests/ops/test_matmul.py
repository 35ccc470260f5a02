"""linear / matmul against float64 references: odd sizes, every activation, bias and
residual, strides, forward and backward, bad input. (In Triton's interpreter tl.dot is
wrong for bfloat16, so the CPU runs cover float32 and float16; bfloat16 runs on the GPU.)"""

import importlib

import pytest
import torch

from tests.helpers import check_op
from tritonic.ops import linear, linear_reference, matmul

ACTS = [None, "relu", "gelu", "gelu_tanh", "silu", "tanh"]
# The rule's absolute term, in units in the last place of the largest reference value. GEMM
# tiles sum K in a different order than PyTorch's CPU kernels (which accumulate some
# reductions more accurately, sometimes exactly), so a few ulps more than elementwise ops.
ULPS = 8


def _args(M, N, K, dtype, device, bias=True, residual=False, lead=()):
    return dict(x=torch.randn(*lead, M, K, dtype=dtype, device=device),
                weight=torch.randn(N, K, dtype=dtype, device=device) / K ** 0.5,
                bias=torch.randn(N, dtype=dtype, device=device) if bias else None,
                residual=torch.randn(*lead, M, N, dtype=dtype, device=device) if residual else None)


def _grads(a):
    return [k for k, v in a.items() if isinstance(v, torch.Tensor)]


@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("M,N,K", [(1, 7, 33), (7, 33, 1), (33, 1, 7), (20, 24, 40)])
def test_linear_float32(M, N, K, act, device):
    a = _args(M, N, K, torch.float32, device, residual=act is not None)
    check_op(lambda **k: linear(**k, activation=act), lambda **k: linear_reference(**k, activation=act), a,
             grads=_grads(a), atol_ulps=ULPS)


@pytest.mark.parametrize("act", ["gelu", "silu"])
def test_linear_float16_leading_dims(act, device):
    a = _args(9, 24, 40, torch.float16, device, residual=True, lead=(2,))
    check_op(lambda **k: linear(**k, activation=act), lambda **k: linear_reference(**k, activation=act), a,
             grads=_grads(a), atol_ulps=ULPS)


def test_linear_larger(device):
    a = _args(65, 70, 257, torch.float32, device, bias=False)
    check_op(lambda **k: linear(**k, activation="relu"), lambda **k: linear_reference(**k, activation="relu"), a,
             grads=_grads(a), atol_ulps=ULPS)


def test_linear_non_contiguous(device):
    x = torch.randn(40, 20, device=device).t()  # (20, 40), column-major
    w = torch.randn(64, 48, device=device)[::2, 3:43]  # (32, 40), strided
    check_op(lambda **k: linear(**k), lambda **k: linear_reference(**k),
             dict(x=x, weight=w, bias=None, residual=None), grads=["x", "weight"], atol_ulps=ULPS)


@pytest.mark.parametrize("shape_a,shape_b", [((7, 33), (33, 5)), ((3, 9, 17), (3, 17, 6)), ((2, 5, 8), (8, 11)),
                                             ((1, 1), (1, 1))])
def test_matmul(shape_a, shape_b, device):
    a, b = torch.randn(shape_a, device=device), torch.randn(shape_b, device=device)
    check_op(lambda a, b: matmul(a, b), lambda a, b: torch.matmul(a, b), dict(a=a, b=b), grads=["a", "b"],
             atol_ulps=ULPS)


def test_matmul_float16(device):
    a = torch.randn(2, 20, 24, device=device, dtype=torch.float16)
    b = torch.randn(24, 18, device=device, dtype=torch.float16)
    check_op(lambda a, b: matmul(a, b), lambda a, b: torch.matmul(a, b), dict(a=a, b=b), grads=["a", "b"],
             atol_ulps=ULPS)


def test_matmul_transposed_operand(device):
    a = torch.randn(12, 20, device=device)
    b = torch.randn(9, 20, device=device).t()
    check_op(lambda a, b: matmul(a, b), lambda a, b: torch.matmul(a, b), dict(a=a, b=b), grads=["a", "b"],
             atol_ulps=ULPS)


def test_matmul_custom_op_path(device, monkeypatch):
    """The registered op (what torch.compile uses) with its autograd gives the same."""
    import importlib

    mm = importlib.import_module("tritonic.ops.matmul")  # the module (tritonic.ops.matmul is the function)
    monkeypatch.setattr(mm, "is_traced", lambda *t: True)
    a, b = torch.randn(2, 6, 9, device=device), torch.randn(2, 9, 5, device=device)
    check_op(lambda a, b: matmul(a, b), lambda a, b: torch.matmul(a, b), dict(a=a, b=b), grads=["a", "b"],
             atol_ulps=ULPS)


def test_inference_path_skips_the_pre_activation(device):
    a = _args(5, 6, 7, torch.float32, device)
    with torch.no_grad():
        y = linear(a["x"], a["weight"], a["bias"], activation="silu")
    torch.testing.assert_close(y, linear_reference(a["x"], a["weight"], a["bias"], activation="silu"))


def test_bad_input(device):
    x = torch.randn(4, 8, device=device)
    with pytest.raises(ValueError, match=r"inner dimensions differ: x has 8 features .* weight expects 6"):
        linear(x, torch.randn(3, 6, device=device))
    with pytest.raises(ValueError, match="weight must be 2-D"):
        linear(x, torch.randn(8, device=device))
    with pytest.raises(TypeError, match="weight must have x's dtype"):
        linear(x, torch.randn(3, 8, device=device, dtype=torch.float16))
    with pytest.raises(ValueError, match="weight is on meta but x is on"):
        linear(x, torch.randn(3, 8, device="meta"))
    with pytest.raises(ValueError, match="activation must be one of"):
        linear(x, torch.randn(3, 8, device=device), activation="softplus")
    with pytest.raises(ValueError, match=r"bias must have shape \(3,\)"):
        linear(x, torch.randn(3, 8, device=device), torch.randn(4, device=device))
    with pytest.raises(ValueError, match=r"matmul: inner dimensions differ: a \(4, 8\) has k=8, b \(7, 2\) has k=7"):
        matmul(x, torch.randn(7, 2, device=device))
    with pytest.raises(ValueError, match="batch sizes differ"):
        matmul(torch.randn(2, 3, 4, device=device), torch.randn(3, 4, 5, device=device))


def test_linear_modules_keep_state_dict(device):
    import tritonic

    ref = torch.nn.Linear(12, 10, device=device)
    mod = tritonic.nn.Linear(12, 10, device=device)
    act = tritonic.nn.LinearAct(12, 10, activation="silu", device=device)
    assert mod.state_dict().keys() == ref.state_dict().keys() == act.state_dict().keys()
    mod.load_state_dict(ref.state_dict())
    act.load_state_dict(ref.state_dict())
    x = torch.randn(3, 4, 12, device=device)
    torch.testing.assert_close(mod(x), ref(x), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(act(x), torch.nn.functional.silu(ref(x)), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="activation must be one of"):
        tritonic.nn.LinearAct(4, 4, activation="softplus")


# ----------------------------------------------------------------------------- Hopper path
# The tensor-descriptor kernel (_matmul_tma) runs in the interpreter when TRITONIC_GEMM=tma
# forces it; on a GPU it is the default for float16/bfloat16 on Hopper and newer.


@pytest.fixture
def tma(monkeypatch):
    monkeypatch.setattr(importlib.import_module("tritonic.ops.matmul"), "GEMM_CHOICE", "tma")
    calls = []
    mm = importlib.import_module("tritonic.ops.matmul")  # (tritonic.ops.matmul is also the function)

    real = mm._tma_runner
    # each call records whether it keeps the pre-activation z (argument 5: training's forward)
    monkeypatch.setattr(mm, "_tma_runner", lambda *a, **k: calls.append(a[5] is not None) or real(*a, **k))
    return calls


@pytest.mark.parametrize("choice", ["tma", "portable"])
def test_remembered_launches_follow_each_call(choice, device, monkeypatch):
    """A call like an earlier one reuses its launch (ops/matmul.py's _PLANS) with its own
    tensors; a change of alignment, stride or flags gets a launch of its own, never a stale one."""
    mm = importlib.import_module("tritonic.ops.matmul")
    monkeypatch.setattr(mm, "GEMM_CHOICE", choice)
    buf = torch.randn(24 * 40 + 8, dtype=torch.float16, device=device)
    w = torch.randn(32, 40, dtype=torch.float16, device=device) / 40 ** 0.5
    b = torch.randn(32, dtype=torch.float16, device=device)
    calls = [(buf[:960].view(24, 40), w, b, None),  # first: a new plan
             (torch.randn(24, 40, dtype=torch.float16, device=device), w.clone(), b.clone(), None),  # reused
             (buf[1:961].view(24, 40), w, b, None),  # misaligned x: a plan of its own (portable kernel)
             (buf[:960].view(40, 24).t(), w, b, None),  # x column-major
             (buf[:960].view(24, 40), w, None, "gelu")]  # no bias, an activation
    sizes = []
    for x, weight, bias, act in calls:
        torch.testing.assert_close(linear(x, weight, bias, activation=act).float(),
                                   linear_reference(x.float(), weight.float(), None if bias is None else bias.float(),
                                                    activation=act), atol=2e-2, rtol=2e-2)
        sizes.append(len(mm._PLANS))
    assert sizes == [1, 1, 2, 3, 4]


@pytest.mark.parametrize("act", ACTS)
def test_linear_tma_path(act, device, tma):
    # 40 x 24 x 48: every tile boundary cut by the interpreter's 16-wide blocks; K, N
    # multiples of 8 so the rows are 16-byte aligned (what descriptors need)
    a = _args(40, 24, 48, torch.float16, device, residual=act is not None)
    check_op(lambda **k: linear(**k, activation=act), lambda **k: linear_reference(**k, activation=act), a,
             grads=_grads(a), atol_ulps=ULPS)
    assert tma, "the Hopper kernel did not run"
    if act is not None:  # the training forward (it stores the pre-activation) is on the Hopper kernel too
        assert any(tma), "the forward that keeps z did not run the Hopper kernel"


def test_matmul_tma_transposed(device, tma):
    a = torch.randn(48, 40, dtype=torch.float16, device=device).t()  # (40, 48), M-major
    b = torch.randn(24, 48, dtype=torch.float16, device=device).t()  # (48, 24), K-major
    check_op(lambda a, b: matmul(a, b), lambda a, b: torch.matmul(a, b), dict(a=a, b=b), grads=["a", "b"],
             atol_ulps=ULPS)
    assert tma


def test_tma_path_skips_unaligned(device, tma):
    """Rows of 7 float16 are not 16-byte aligned: the portable kernel runs instead."""
    a = _args(9, 7, 7, torch.float16, device)
    check_op(lambda **k: linear(**k), lambda **k: linear_reference(**k), a, grads=_grads(a), atol_ulps=ULPS)
    assert not tma


# ----------------------------------------------------------------------------- gated_linear

from tritonic.ops import gated_linear, gated_linear_reference, interleave_gate_up  # noqa: E402


@pytest.mark.parametrize("act", ["silu", "gelu", "gelu_tanh", "relu"])
@pytest.mark.parametrize("M,F,K", [(1, 7, 33), (33, 20, 7), (20, 24, 40)])
def test_gated_linear_float32(M, F, K, act, device):
    a = dict(x=torch.randn(M, K, device=device), weight_gate_up=torch.randn(2 * F, K, device=device) / K ** 0.5)
    check_op(lambda **k: gated_linear(**k, activation=act), lambda **k: gated_linear_reference(**k, activation=act),
             a, grads=["x", "weight_gate_up"], atol_ulps=ULPS)


@pytest.mark.parametrize("path", ["portable", "tma"])
def test_gated_linear_float16(path, device, monkeypatch):
    monkeypatch.setattr(importlib.import_module("tritonic.ops.matmul"), "GEMM_CHOICE", path)
    a = dict(x=torch.randn(2, 20, 48, dtype=torch.float16, device=device),
             weight_gate_up=torch.randn(2 * 40, 48, dtype=torch.float16, device=device) / 48 ** 0.5)
    check_op(lambda **k: gated_linear(**k), lambda **k: gated_linear_reference(**k), a,
             grads=["x", "weight_gate_up"], atol_ulps=ULPS)


@pytest.mark.parametrize("path,dtype", [("portable", torch.float32), ("portable", torch.float16),
                                        ("tma", torch.float16)])
@pytest.mark.parametrize("act", ["silu", "gelu"])
def test_gated_linear_interleaved(path, dtype, act, device, monkeypatch):
    monkeypatch.setattr(importlib.import_module("tritonic.ops.matmul"), "GEMM_CHOICE", path)
    w = interleave_gate_up(torch.randn(2 * 40, 48, dtype=dtype, device=device) / 48 ** 0.5)
    a = dict(x=torch.randn(2, 20, 48, dtype=dtype, device=device), weight_gate_up=w)
    check_op(lambda **k: gated_linear(**k, activation=act, layout="interleaved"),
             lambda **k: gated_linear_reference(**k, activation=act, layout="interleaved"), a,
             grads=["x", "weight_gate_up"], atol_ulps=ULPS)


def test_interleaved_and_concat_layouts_agree(device):
    wc = torch.randn(2 * 24, 40, device=device) / 7
    x = torch.randn(9, 40, device=device)
    torch.testing.assert_close(gated_linear(x, interleave_gate_up(wc), layout="interleaved"), gated_linear(x, wc),
                               atol=1e-5, rtol=1e-5)


def test_gated_linear_bad_input(device):
    x = torch.randn(4, 8, device=device)
    with pytest.raises(ValueError, match="gate rows over the up rows"):
        gated_linear(x, torch.randn(7, 8, device=device))
    with pytest.raises(ValueError, match="inner dimensions differ"):
        gated_linear(x, torch.randn(6, 9, device=device))
    with pytest.raises(ValueError, match="activation must be one of"):
        gated_linear(x, torch.randn(6, 8, device=device), activation="tanh")
    with pytest.raises(TypeError, match="dtype"):
        gated_linear(x, torch.randn(6, 8, device=device, dtype=torch.float16))
    with pytest.raises(ValueError, match="layout must be"):
        gated_linear(x, torch.randn(6, 8, device=device), layout="blocked")
