"""integrations/gemm_route.py (TRITONIC_INFER_GEMM=triton): plain nn.Linear and Conv1D modules
moved to tritonic's GEMM in place, each after a probe, with the model's outputs unchanged
under the correctness rule; nothing moves when the switch is off."""

import copy

import pytest
import torch

pytest.importorskip("transformers")

from tritonic import nn as tnn  # noqa: E402
from tritonic.integrations import gemm_route  # noqa: E402


def _gpt2(device):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=97, n_embd=64, n_layer=2, n_head=4, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    return GPT2LMHeadModel(cfg).to(device).eval()


def test_off_by_default(device, monkeypatch):
    monkeypatch.setattr(gemm_route, "REQUESTED", False)
    model = _gpt2(device)
    classes = [type(m) for m in model.modules()]
    assert gemm_route.route_plain_products(model) == ([], [])
    assert [type(m) for m in model.modules()] == classes


def test_linear_and_conv1d_move_and_outputs_match(device, monkeypatch):
    monkeypatch.setattr(gemm_route, "REQUESTED", True)
    model = _gpt2(device)
    ref = copy.deepcopy(model)
    replaced, kept = gemm_route.route_plain_products(model)
    assert not kept, kept
    text = " ".join(replaced)
    assert "Linear -> Linear" in text and "Conv1D -> TritonicConv1D" in text, replaced
    assert type(model.lm_head) is tnn.Linear
    conv = model.transformer.h[0].attn.c_attn
    assert type(conv).__name__ == "TritonicConv1D" and isinstance(conv, type(ref.transformer.h[0].attn.c_attn))
    assert set(model.state_dict()) == set(ref.state_dict())  # same parameters, same keys
    ids = torch.randint(0, 97, (2, 9), device=device)
    calls = []
    real = gemm_route.ops.linear
    monkeypatch.setattr(gemm_route.ops, "linear", lambda *a, **k: calls.append(1) or real(*a, **k))
    with torch.no_grad():
        ours, theirs = model(ids).logits, ref(ids).logits
    assert len(calls) >= 4 * 2  # c_attn, c_proj, mlp.c_proj of each layer, and the head (through Conv1D / Linear)
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)


def test_a_module_that_misses_the_rule_stays(device, monkeypatch):
    monkeypatch.setattr(gemm_route, "REQUESTED", True)
    lin = torch.nn.Linear(32, 16).to(device)
    model = torch.nn.Sequential(lin)
    monkeypatch.setattr(gemm_route.ops, "linear", lambda x, w, b=None, **k: torch.nn.functional.linear(x, w, b) + 1)
    replaced, kept = gemm_route.route_plain_products(model)
    assert replaced == [] and len(kept) == 1 and "probe error" in kept[0], kept
    assert type(model[0]) is torch.nn.Linear


def test_plain_linear_follows_the_switch(device, monkeypatch):
    x, w, b = torch.randn(4, 8, device=device), torch.randn(6, 8, device=device), torch.randn(6, device=device)
    calls = []
    monkeypatch.setattr(gemm_route.ops, "linear", lambda *a, **k: calls.append(1) or torch.nn.functional.linear(*a))
    for on in (False, True):
        monkeypatch.setattr(gemm_route, "REQUESTED", on)
        torch.testing.assert_close(gemm_route.plain_linear(x, w, b), torch.nn.functional.linear(x, w, b))
    assert calls == [1]


def test_through_optimize(device, monkeypatch):
    """optimize() routes after its own swaps and stacks: the stacked or fused products keep
    their blocks, the remaining plain ones move, and the report says so."""
    import tritonic

    monkeypatch.setattr(gemm_route, "REQUESTED", True)
    model = _gpt2(device)
    ref = copy.deepcopy(model)
    tritonic.optimize(model, cuda_graphs=False)
    report = str(model.tritonic_report)
    assert "TRITONIC_INFER_GEMM=triton" in report, report
    ids = torch.randint(0, 97, (2, 9), device=device)
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, ref(ids).logits, atol=1e-4, rtol=1e-4)
