"""RoPE through tritonic.ops.rope in Hugging Face attention modules: the relinked forwards give
the original outputs (full and partial rotary, GQA, q/k norms), other formulas are left alone,
and nothing outside the optimized instances changes."""

import copy
import functools
import importlib
import types

import pytest
import torch

transformers = pytest.importorskip("transformers")

import tritonic  # noqa: E402

rotary = importlib.import_module("tritonic.integrations.rotary")


def _family(name):
    import transformers as tf

    common = dict(vocab_size=97, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=96,
                  max_position_embeddings=64)
    return {
        "llama": lambda: tf.LlamaForCausalLM(tf.LlamaConfig(num_key_value_heads=2, **common)),
        "qwen3": lambda: tf.Qwen3ForCausalLM(tf.Qwen3Config(num_key_value_heads=2, head_dim=16, **common)),
        "neox": lambda: tf.GPTNeoXForCausalLM(tf.GPTNeoXConfig(rotary_pct=0.25, **common)),  # partial rotary
        "phi3": lambda: tf.Phi3ForCausalLM(tf.Phi3Config(num_key_value_heads=2, partial_rotary_factor=0.5,
                                                          pad_token_id=0, **common)),
        "gptj": lambda: tf.GPTJForCausalLM(tf.GPTJConfig(vocab_size=97, n_embd=64, n_layer=2, n_head=4, rotary_dim=8,
                                                          n_positions=64)),
    }[name]()


def _count_rope(monkeypatch):
    calls = []
    real = tritonic.ops.rope
    monkeypatch.setattr(tritonic.ops, "rope", lambda *a, **k: calls.append(a[2].shape[-1]) or real(*a, **k))
    return calls


@pytest.mark.parametrize("name", ["llama", "qwen3", "neox", "phi3"])
def test_relinked_forwards_match_the_original(name, device, monkeypatch):
    torch.manual_seed(0)
    model = _family(name).to(device).eval()
    original = copy.deepcopy(model)
    tritonic.optimize(model, cuda_graphs=False)
    assert any(line.startswith("RoPE: apply_rotary_pos_emb -> tritonic.ops.rope") and line.endswith("(2)")
               for line in model.tritonic_report.replaced), model.tritonic_report
    calls = _count_rope(monkeypatch)
    ids = torch.randint(1, 97, (2, 9), device=device)
    mask = torch.ones_like(ids)
    mask[1, :2] = 0
    with torch.no_grad():
        ours = model(input_ids=ids, attention_mask=mask).logits
        theirs = original(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(ours, theirs, atol=2e-5, rtol=2e-5)
    assert len(calls) == 2  # one launch per layer for q and k together
    if name in ("neox", "phi3"):
        assert calls[0] < 16  # the narrower angles went to the kernel too (partial rotary)
    kw = dict(input_ids=ids, attention_mask=mask, max_new_tokens=4, do_sample=False, pad_token_id=0)
    assert torch.equal(model.generate(**kw), original.generate(**kw))  # with a KV cache: positions per step


def test_training_gradients_match(device):
    torch.manual_seed(0)
    model = _family("llama").to(device).train()
    original = copy.deepcopy(model)
    tritonic.optimize(model, training=True)
    ids = torch.randint(1, 97, (2, 9), device=device)
    for m in (model, original):
        m(input_ids=ids, labels=ids).loss.backward()
    for (n, p), q in zip(model.named_parameters(), original.parameters()):
        torch.testing.assert_close(p.grad, q.grad, atol=1e-5, rtol=1e-4, msg=n)


def test_another_formula_is_left_alone(device, monkeypatch):
    """GPT-J's function takes (tensor, sin, cos) and rotates pairs: the probe says no."""
    torch.manual_seed(0)
    model = _family("gptj").to(device).eval()
    tritonic.optimize(model, cuda_graphs=False)
    assert not any("RoPE" in line for line in model.tritonic_report.replaced)
    assert any(line.startswith("RoPE (GPTJAttention)") for line in model.tritonic_report.kept)
    assert "forward" not in model.transformer.h[0].attn.__dict__


def test_only_the_optimized_instances_change(device, monkeypatch):
    from transformers.models.llama import modeling_llama

    before = (modeling_llama.LlamaAttention.forward, modeling_llama.apply_rotary_pos_emb)
    torch.manual_seed(0)
    model = _family("llama").to(device).eval()
    other = copy.deepcopy(model)
    other.model.layers[1].self_attn.forward = other.model.layers[1].self_attn.forward  # an instance-level forward
    tritonic.optimize(model, cuda_graphs=False)
    tritonic.optimize(other, cuda_graphs=False)
    assert (modeling_llama.LlamaAttention.forward, modeling_llama.apply_rotary_pos_emb) == before
    assert "forward" not in other.model.layers[0].self_attn.__dict__ or \
        other.model.layers[0].self_attn.forward.__func__._tritonic_rope
    # a forward already set on the instance (an accelerate hook, say) is not replaced
    assert not getattr(other.model.layers[1].self_attn.forward.__func__, "_tritonic_rope", False)
    again = tritonic.optimize(model, cuda_graphs=False)  # a second optimize finds them in place
    assert any(line.endswith("in LlamaAttention.forward (2)") for line in again.tritonic_report.replaced)
    calls = _count_rope(monkeypatch)
    fresh = _family("llama").to(device).eval()
    with torch.no_grad():
        fresh(input_ids=torch.randint(1, 97, (1, 5), device=device))
    assert calls == []  # a model that was not optimized runs its own RoPE


def test_relinking_a_decorated_function():
    """A decorator's wrapper (functools.wraps) is copied with its closure pointing at the
    relinked function; the original function and its globals are untouched."""
    namespace = {"apply_rotary_pos_emb": lambda q, k, cos, sin: ("theirs", q)}

    def deco(fn):
        @functools.wraps(fn)
        def wrapper(self, *args, **kwargs):
            return fn(self, *args, **kwargs)
        return wrapper

    code = "def forward(self, q):\n    return apply_rotary_pos_emb(q, q, 0, 0)\n"
    exec(code, namespace)
    wrapped = deco(namespace["forward"])
    new = rotary._relinked(wrapped, lambda q, k, cos, sin: ("ours", q))
    assert new(None, 3) == ("ours", 3) and wrapped(None, 3) == ("theirs", 3)
    assert new.__wrapped__(None, 4) == ("ours", 4)
    assert rotary._relinked(lambda x: x, None) is None
    assert rotary._original_function(wrapped) is namespace["apply_rotary_pos_emb"]
    assert isinstance(new, types.FunctionType)
