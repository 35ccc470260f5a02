"""The residual add fused into pre-norm layers' second norm (inference): rewritten forwards
of the models' own code give the original outputs; branches, decorators, non-matching code
and training are handled as integrations/residual.py says."""

import copy
import inspect

import pytest
import torch

pytest.importorskip("transformers")

import tritonic  # noqa: E402
from tritonic.integrations.residual import fuse_residual_norms  # noqa: E402
from tritonic.integrations.swaps import RMSNormLike  # noqa: E402


def _model(name, device, **extra):
    import transformers as T

    common = dict(vocab_size=97, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                  intermediate_size=96, max_position_embeddings=64)
    cfg = {"llama": lambda: T.LlamaConfig(**common), "mistral": lambda: T.MistralConfig(**common),
           "qwen2": lambda: T.Qwen2Config(**common),
           "gpt2": lambda: T.GPT2Config(vocab_size=97, n_embd=64, n_layer=2, n_head=4, n_positions=64, **extra)}[name]()
    cls = {"llama": T.LlamaModel, "mistral": T.MistralModel, "qwen2": T.Qwen2Model, "gpt2": T.GPT2Model}[name]
    torch.manual_seed(0)
    return cls(cfg).to(device).eval()


def _count_add_norm(monkeypatch, cls):
    calls = []
    real = cls.add_norm
    monkeypatch.setattr(cls, "add_norm", lambda self, a, b: calls.append(1) or real(self, a, b))
    return calls


@pytest.mark.parametrize("name", ["llama", "mistral", "qwen2", "gpt2"])
def test_fused_layers_match_the_original(name, device, monkeypatch):
    model = _model(name, device)
    ref = copy.deepcopy(model)
    tritonic.optimize(model, cuda_graphs=False)
    assert "residual add + " in str(model.tritonic_report)
    layer = (model.h if name == "gpt2" else model.layers)[0]
    assert "forward" in layer.__dict__
    assert list(inspect.signature(layer.forward).parameters) == list(inspect.signature(ref.h[0].forward if name ==
                                                                                          "gpt2" else ref.layers[0].forward).parameters)
    norm_cls = type(layer.ln_2 if name == "gpt2" else layer.post_attention_layernorm)
    calls = _count_add_norm(monkeypatch, norm_cls)
    ids = torch.randint(1, 97, (2, 9), device=device)
    with torch.inference_mode():
        ours, theirs = model(input_ids=ids).last_hidden_state, ref(input_ids=ids).last_hidden_state
    torch.testing.assert_close(ours, theirs, atol=2e-5, rtol=2e-5)
    # once per layer in the middle, and layer 0's closing add with layer 1's first norm
    assert len(calls) == 3
    assert "the next layer's first norm -> one norm kernel (1)" in str(model.tritonic_report)
    first = layer.ln_1 if name == "gpt2" else layer.input_layernorm
    assert "_tritonic_ahead" not in first.__dict__ and "_tritonic_ahead" not in \
        ((model.h if name == "gpt2" else model.layers)[1].ln_1 if name == "gpt2" else model.layers[1].input_layernorm).__dict__


def test_a_branch_between_keeps_the_original_statements_when_taken(device, monkeypatch):
    """GPT-2 with cross-attention: the `if encoder_hidden_states is not None` branch between the
    add and the norm runs the original statements; without encoder states the norm is fused."""
    model = _model("gpt2", device, add_cross_attention=True)
    ref = copy.deepcopy(model)
    tritonic.optimize(model, cuda_graphs=False)
    calls = _count_add_norm(monkeypatch, type(model.h[0].ln_2))
    ids = torch.randint(1, 97, (2, 6), device=device)
    enc = torch.randn(2, 4, 64, device=device)
    with torch.inference_mode():
        torch.testing.assert_close(model(input_ids=ids, encoder_hidden_states=enc).last_hidden_state,
                                   ref(input_ids=ids, encoder_hidden_states=enc).last_hidden_state, atol=2e-5, rtol=2e-5)
        assert len(calls) == 1  # the branch taken: only layer 0's closing add with layer 1's first norm
        torch.testing.assert_close(model(input_ids=ids).last_hidden_state, ref(input_ids=ids).last_hidden_state,
                                   atol=2e-5, rtol=2e-5)
    assert len(calls) == 1 + 3


class _Norm(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(8))

    def forward(self, x):
        return x * self.w

    def add_norm(self, a, b):
        s = a + b
        return self(s) * 0 + 7, s  # a marker: the test sees whether the fused call ran


class _Reads(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.norm = _Norm()

    def forward(self, x, y):
        x = x + y
        if x.sum() > 1e9:  # the condition reads the sum: not fusable
            y = y * 2
        r = x
        x = self.norm(x)
        return x + r


class _Plain(_Reads):
    def forward(self, x, y):
        x = y + x
        r = x
        x = self.norm(x)
        return x + r


def test_only_the_exact_sequence_is_fused():
    a, b = torch.ones(2, 8), torch.ones(2, 8)
    reads = _Reads()
    replaced, _ = fuse_residual_norms(reads)
    assert not replaced and "forward" not in reads.__dict__
    plain = _Plain()
    replaced, _ = fuse_residual_norms(plain)
    assert replaced and torch.equal(plain(a, b), torch.full((2, 8), 9.0))  # 7 from add_norm + the sum 2


def test_training_keeps_the_models_forward(device):
    model = _model("llama", device)
    tritonic.optimize(model, training=True, cuda_graphs=False)
    assert "forward" not in model.layers[0].__dict__


def test_add_norm_falls_back_for_other_dtypes(device):
    w = torch.nn.Parameter(torch.randn(16, device=device))
    norm = RMSNormLike(torch.nn.Identity(), w, 1e-6)
    norm._original = (lambda s: s * 3,)  # the original module: what mixed dtypes get
    a, b = torch.randn(2, 16, device=device, dtype=torch.float64), torch.randn(2, 16, device=device, dtype=torch.float64)
    y, s = norm.add_norm(a, b)
    torch.testing.assert_close(s, a + b)
    torch.testing.assert_close(y, (a + b) * 3)


def test_a_kept_norm_serves_only_the_tensor_it_was_computed_for(device):
    model = _model("llama", device)
    tritonic.optimize(model, cuda_graphs=False)
    norm = model.layers[1].input_layernorm
    a, b = torch.randn(2, 3, 64, device=device), torch.randn(2, 3, 64, device=device)
    with torch.no_grad():
        s = norm.add_norm_ahead(a, b)
        torch.testing.assert_close(s, a + b)
        other = s.clone()  # another tensor: computed afresh, and the kept one is dropped
        torch.testing.assert_close(norm(other), norm._original[0](other), atol=1e-5, rtol=1e-5)
        assert "_tritonic_ahead" not in norm.__dict__
        s = norm.add_norm_ahead(a, b)
        s.mul_(2)  # written in place since: not the kept value's input any more
        torch.testing.assert_close(norm(s), norm._original[0](s), atol=1e-5, rtol=1e-5)
        s = norm.add_norm_ahead(a, b)
        assert torch.equal(norm(s), norm.__class__.forward(norm, s.clone()))  # the kept output, same values
