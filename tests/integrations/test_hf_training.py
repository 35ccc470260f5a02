"""optimize(model, training=True): causal LMs compute their loss without logits, with the
original's loss and gradients (against the float64 model, tests/helpers.py's rule)."""

import copy

import pytest
import torch

from tests.helpers import assert_close_to_reference

pytest.importorskip("transformers")

import tritonic  # noqa: E402


def _lm(name, device, initializer_range=0.02):
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    if name == "llama":
        return LlamaForCausalLM(LlamaConfig(vocab_size=97, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                            num_key_value_heads=2, intermediate_size=96,
                                            initializer_range=initializer_range)).to(device)
    return GPT2LMHeadModel(GPT2Config(vocab_size=97, n_embd=64, n_layer=2, n_head=4, bos_token_id=0,
                                      eos_token_id=0, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                                      initializer_range=initializer_range)).to(device)


def _batch(device):
    ids = torch.randint(0, 97, (2, 12), device=device)
    labels = ids.clone()
    labels[1, :4] = -100
    return ids, labels


def _loss_and_grads(model, ids, labels, **kw):
    out = model(input_ids=ids, labels=labels, **kw)
    grads = torch.autograd.grad(out.loss, [p for p in model.parameters()], allow_unused=True)
    return out, grads


@pytest.mark.parametrize("name", ["llama", "gpt2"])
def test_loss_and_gradients_match(name, device):
    model = _lm(name, device).train()
    ref = copy.deepcopy(model).double()
    theirs_model = copy.deepcopy(model)
    ids, labels = _batch(device)
    tritonic.optimize(model, training=True)
    report = str(model.tritonic_report)
    assert "fused_linear_cross_entropy" in report, report
    out, grads = _loss_and_grads(model, ids, labels)
    assert out.logits is None  # the point: no (tokens, vocab) tensor
    theirs, grads_theirs = _loss_and_grads(theirs_model, ids, labels)
    truth, grads_ref = _loss_and_grads(ref, ids, labels)
    assert_close_to_reference("loss", out.loss, theirs.loss, truth.loss, atol_ulps=16)
    for (n, _), a, b, r in zip(model.named_parameters(), grads, grads_theirs, grads_ref):
        if r is not None:
            assert_close_to_reference(f"d {n}", a, b, r, atol_ulps=16)


def test_evaluation_and_accumulation_paths(device):
    model = _lm("llama", device)
    tritonic.optimize(model, training=True)
    ids, labels = _batch(device)
    with torch.no_grad():  # evaluation: the original forward, logits included
        out = model(input_ids=ids, labels=labels)
    assert out.logits.shape == (2, 12, 97)
    n = (labels[:, 1:] != -100).sum()
    summed = model(input_ids=ids, labels=labels, num_items_in_batch=n).loss
    torch.testing.assert_close(summed, out.loss, rtol=1e-5, atol=1e-6)


def test_the_loss_path_keeps_the_causal_mask_implicit_where_transformers_cannot_look(device, monkeypatch):
    """Inside a CUDA-graph capture or torch.compile, transformers treats tensors as opaque. The
    loss path must still hand attention no mask (causality from is_causal): a (B, 1, S, S) mask,
    e.g. from packed-sequence detection without a cache, halves cuDNN's speed."""
    import transformers.masking_utils as mu

    from tritonic.integrations import hf

    model = _lm("gpt2", device).train()
    tritonic.optimize(model, training=True)
    masks = []
    real = hf._sdpa

    def spy(module, query, key, value, attention_mask, *args, **kwargs):
        masks.append(attention_mask)
        return real(module, query, key, value, attention_mask, *args, **kwargs)

    monkeypatch.setattr(hf, "_sdpa", spy)
    if hasattr(mu, "is_tracing"):
        monkeypatch.setattr(mu, "is_tracing", lambda *a, **k: True)
    ids, labels = _batch(device)
    for m in model.modules():
        if hasattr(m, "attn_dropout"):  # dropout while training: SDPA's path, which the spy sees
            m.attn_dropout.p = 0.1
    model(input_ids=ids, labels=labels).loss.backward()
    assert masks and all(m is None for m in masks)


def test_the_loss_path_builds_no_cache_unless_asked(device):
    model = _lm("gpt2", device).train()
    tritonic.optimize(model, training=True)
    ids, labels = _batch(device)
    assert model(input_ids=ids, labels=labels).past_key_values is None
    asked = model(input_ids=ids, labels=labels, use_cache=True)
    assert asked.past_key_values is not None and asked.past_key_values.get_seq_length() == 12
    torch.testing.assert_close(asked.loss, model(input_ids=ids, labels=labels).loss)


def test_without_transformers_packing_search_the_loss_path_keeps_its_cache(device, monkeypatch):
    """A transformers whose packing search tritonic cannot wrap (_install_no_packing says so):
    the loss path keeps the cache (a cache-less call could meet an unanswerable search)."""
    from tritonic.integrations import hf_training

    monkeypatch.setattr(hf_training, "_NO_PACKING", [False])
    monkeypatch.setattr(hf_training, "_install_no_packing", lambda: False)
    model = _lm("gpt2", device).train()
    tritonic.optimize(model, training=True)
    assert "fused_linear_cross_entropy" in str(model.tritonic_report)
    ids, labels = _batch(device)
    assert model(input_ids=ids, labels=labels).past_key_values is not None


@pytest.mark.parametrize("name", ["llama", "gpt2"])
def test_packed_sequences_given_by_position_ids_are_still_detected(name, device):
    """Only calls without position_ids skip transformers' packed-sequence detection: with
    position_ids that restart (two sequences in one row), the loss is the original's."""
    import transformers.masking_utils as mu

    # Weights ten times the default scale, so that attention patterns (and so the packing)
    # move the loss well past float32 noise (at the default scale the gap was ~1e-5).
    model = _lm(name, device, initializer_range=0.2).train()
    ref = copy.deepcopy(model)
    tritonic.optimize(model, training=True)
    ids, labels = _batch(device)
    positions = torch.cat([torch.arange(5), torch.arange(7)]).to(device).expand(2, -1)
    out = model(input_ids=ids, labels=labels, position_ids=positions)
    want = ref(input_ids=ids, labels=labels, position_ids=positions)
    assert mu.find_packed_sequence_indices(positions) is not None  # the wrapper answers outside the loss path
    torch.testing.assert_close(out.loss, want.loss, rtol=1e-5, atol=1e-6)
    unpacked = ref(input_ids=ids, labels=labels).loss
    assert not torch.allclose(want.loss, unpacked, rtol=1e-3)  # the packing changes the loss: the case is real


def test_gradient_checkpointing(device):
    model = _lm("llama", device).train()
    enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
    enable()
    ref = copy.deepcopy(model)
    tritonic.optimize(model, training=True)
    ids, labels = _batch(device)
    out, grads = _loss_and_grads(model, ids, labels)
    ref_out, ref_grads = _loss_and_grads(ref, ids, labels)
    torch.testing.assert_close(out.loss, ref_out.loss, rtol=1e-5, atol=1e-6)
    for a, b in zip(grads, ref_grads):
        if b is not None:
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_heads_that_do_more_are_left_alone(device):
    model = _lm("llama", device)
    model.config.logit_scale = 0.5  # e.g. Cohere-style scaled logits: the fused loss would be wrong
    tritonic.optimize(model, training=True)
    report = str(model.tritonic_report)
    assert "config.logit_scale = 0.5 changes the loss" in report, report
    assert model(input_ids=_batch(device)[0], labels=_batch(device)[1]).logits is not None
