"""Stacked projections (q/k/v, gate/up) at inference: the members' parameters are views of
one stacked weight, outputs match the separate products, and every case the stack cannot
serve (autograd, inputs that differ, moved parameters) runs each projection alone."""

import copy

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("transformers")

import tritonic  # noqa: E402
from tritonic.integrations.stacking import StackedLinear, stack_projections  # noqa: E402


def _llama(device):
    from transformers import LlamaConfig, LlamaModel

    cfg = LlamaConfig(vocab_size=97, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, intermediate_size=96, max_position_embeddings=64)
    torch.manual_seed(0)
    return LlamaModel(cfg).to(device).eval()


class _Attn(torch.nn.Module):
    """q/k/v siblings; ``cross`` feeds k and v another input (as cross-attention does)."""

    def __init__(self, width=16):
        super().__init__()
        self.q, self.k, self.v = (torch.nn.Linear(width, width) for _ in range(3))

    def forward(self, x, other=None):
        kv = x if other is None else other
        return self.q(x) + self.k(kv) * 2 + self.v(kv) * 3


def test_llama_stacks_and_matches_the_original(device):
    model = _llama(device)
    ref = copy.deepcopy(model)
    tritonic.optimize(model, cuda_graphs=False)
    report = str(model.tritonic_report)
    assert "2 groups of projections -> one stacked GEMM" in report
    assert "2 gated MLPs: gate_proj and up_proj -> one interleaved GEMM" in report
    attn = model.layers[0].self_attn
    assert isinstance(attn.q_proj, StackedLinear)
    group = attn.q_proj._group[0]
    base = group.weight.data_ptr()
    assert attn.k_proj.weight.data_ptr() == base + 64 * 64 * attn.k_proj.weight.element_size()
    ids = torch.randint(1, 97, (2, 9), device=device)
    with torch.inference_mode():
        ours = model(input_ids=ids).last_hidden_state
        theirs = ref(input_ids=ids).last_hidden_state
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)
    assert group.on and not group.pending and group.out is None  # every member took its columns
    assert sorted(model.state_dict()) == sorted(ref.state_dict())
    for k, v in model.state_dict().items():
        assert v.shape == ref.state_dict()[k].shape


def test_in_place_updates_reach_the_stack_and_moves_turn_it_off(device):
    model = _llama(device)
    tritonic.optimize(model, cuda_graphs=False)
    attn = model.layers[0].self_attn
    group = attn.q_proj._group[0]
    x = torch.randn(1, 5, 64, device=device)
    with torch.no_grad():
        attn.k_proj.weight.mul_(2)  # in place: the stacked weight sees it
        q, k = attn.q_proj(x), attn.k_proj(x)
        torch.testing.assert_close(k, F.linear(x, attn.k_proj.weight), atol=1e-5, rtol=1e-5)
        attn.v_proj(x)
        attn.k_proj.weight = torch.nn.Parameter(attn.k_proj.weight.detach().clone())  # replaced
        q = attn.q_proj(x)
    assert not group.on and "no longer views" in group.why_off
    torch.testing.assert_close(q, F.linear(x, attn.q_proj.weight), atol=1e-5, rtol=1e-5)
    assert "unstacked at run time" in str(model.tritonic_report)


def test_members_with_different_inputs_turn_the_group_off(device):
    m = _Attn().to(device)
    ref = copy.deepcopy(m)
    replaced, kept = stack_projections(m)
    assert replaced and not kept
    x, e = torch.randn(2, 3, 16, device=device), torch.randn(2, 3, 16, device=device)
    with torch.no_grad():
        torch.testing.assert_close(m(x), ref(x), atol=1e-5, rtol=1e-5)  # shared input: stacked
        assert m.q._group[0].on
        torch.testing.assert_close(m(x, e), ref(x, e), atol=1e-5, rtol=1e-5)  # cross: off, still right
        group = m.q._group[0]
        assert not group.on and "do not share their input" in group.why_off
        torch.testing.assert_close(m(x, e), ref(x, e), atol=1e-5, rtol=1e-5)


def test_autograd_runs_each_projection_alone(device):
    m = _Attn().to(device)
    ref = copy.deepcopy(m)
    stack_projections(m)
    x = torch.randn(2, 3, 16, device=device)
    m(x).sum().backward()
    ref(x).sum().backward()
    for a, b in zip(m.parameters(), ref.parameters()):
        torch.testing.assert_close(a.grad, b.grad, atol=1e-5, rtol=1e-5)
    assert m.q._group[0].out is None  # nothing stacked was kept under autograd


def test_groups_that_cannot_share_a_weight_are_left_alone(device):
    m = _Attn().to(device)
    m.v = torch.nn.Linear(16, 16, bias=False).to(device)  # one without a bias
    replaced, kept = stack_projections(m)
    assert not replaced and "not stacked" in kept[0]
    assert type(m.q) is torch.nn.Linear


def test_interleaved_gate_up_saves_and_loads_as_separate_tensors(device, tmp_path):
    from transformers import LlamaModel

    model = _llama(device)
    ref = copy.deepcopy(model)
    tritonic.optimize(model, cuda_graphs=False)
    mlp = model.layers[0].mlp
    assert mlp._stacked is not None and mlp.gate_proj.weight.stride() == (2 * 64, 1)
    sd = model.state_dict()
    for k in ("layers.0.mlp.gate_proj.weight", "layers.0.mlp.up_proj.weight"):
        assert sd[k].is_contiguous() and torch.equal(sd[k], ref.state_dict()[k])
    with torch.no_grad():  # writes through the views into the interleaved weight
        model.load_state_dict({k: v * 0.5 if "up_proj" in k else v for k, v in ref.state_dict().items()})
        ref.layers[0].mlp.up_proj.weight.mul_(0.5)
        ref.layers[1].mlp.up_proj.weight.mul_(0.5)
    assert mlp._interleaved_intact()
    ids = torch.randint(1, 97, (2, 9), device=device)
    with torch.inference_mode():
        torch.testing.assert_close(model(input_ids=ids).last_hidden_state, ref(input_ids=ids).last_hidden_state,
                                   atol=1e-5, rtol=1e-5)
    model.save_pretrained(tmp_path)  # overlapping views would make transformers refuse to write
    again = LlamaModel.from_pretrained(tmp_path).to(device).eval()
    with torch.inference_mode():
        torch.testing.assert_close(again(input_ids=ids).last_hidden_state, ref(input_ids=ids).last_hidden_state,
                                   atol=1e-5, rtol=1e-5)
