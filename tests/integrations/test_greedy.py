"""FastGreedy (integrations/greedy.py): the greedy loop with several decode steps per graph
gives transformers' own generate() tokens. Run here without graphs (capture=False), on tiny
random models, with left padding, early ends, min_new_tokens and overshooting steps."""

import pytest
import torch

transformers = pytest.importorskip("transformers")

from tritonic.integrations.greedy import FastGreedy  # noqa: E402


def _model(kind):
    torch.manual_seed(0)
    if kind == "gpt2":
        config = transformers.GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=97, n_positions=128)
    else:
        config = transformers.LlamaConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                          num_key_value_heads=2, intermediate_size=64, vocab_size=97,
                                          max_position_embeddings=128)
    config.pad_token_id = 0
    model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation="sdpa").eval()
    model.generation_config.eos_token_id = None
    return model


def _inputs(batch=3, prompt=6):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1, 97, (batch, prompt), generator=g)
    mask = torch.ones_like(ids)
    mask[1:, :2] = 0  # left padding on all rows but the first
    return ids, mask


def _fast(model, steps=3):
    return FastGreedy(model, model.generate, model.forward, capture=False, steps=steps)


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
@pytest.mark.parametrize("steps", [1, 3, 8])
def test_tokens_equal_transformers(kind, steps):
    model = _model(kind)
    ids, mask = _inputs()
    kw = dict(input_ids=ids, attention_mask=mask, max_new_tokens=7, do_sample=False, cache_implementation="static")
    fast = _fast(model, steps)
    torch.testing.assert_close(fast(**kw), model.generate(**kw), rtol=0, atol=0)
    assert not any(k.startswith("transformers") for k in fast.stats)
    again = fast(**kw)  # the same run (cache, buffers) serves a second call
    torch.testing.assert_close(again, model.generate(**kw), rtol=0, atol=0)
    assert len(fast.runs) == 1


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_end_tokens_padding_early_stop_and_min_new_tokens(kind):
    model = _model(kind)
    ids, mask = _inputs()
    kw = dict(input_ids=ids, attention_mask=mask, max_new_tokens=9, do_sample=False, cache_implementation="static")
    free = model.generate(**kw)[:, ids.shape[1]:]
    fast = _fast(model)
    cases = [
        [int(free[0, 2])],  # row 0 ends at its third token, the others go on (padded after their end)
        [int(t) for t in free[:, 1]],  # every row ends at its second token: transformers stops early
        [int(free[1, 0]), int(free[2, 4])],  # two end tokens
    ]
    for eos in cases:
        for min_new in (0, 4):
            k = dict(kw, eos_token_id=eos, pad_token_id=0, min_new_tokens=min_new)
            want = model.generate(**k)
            got = fast(**k)
            assert got.shape == want.shape, (eos, min_new)
            torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert not any(k.startswith("transformers") for k in fast.stats)


def test_other_calls_go_to_transformers():
    model = _model("gpt2")
    ids, mask = _inputs()
    fast = _fast(model)
    base = dict(input_ids=ids, attention_mask=mask, max_new_tokens=4)
    for kw, reason in [
        (dict(base, cache_implementation="static", do_sample=True, min_p=0.1), "arguments min_p"),
        (dict(base, cache_implementation="static", num_beams=2), "beams or no cache"),
        (dict(base, cache_implementation="dynamic"), "cache_implementation='dynamic'"),
        (dict(base, cache_implementation="static", repetition_penalty=1.3), "arguments repetition_penalty"),
        (dict(base, cache_implementation="static", max_new_tokens=1), "fewer than 2 new tokens"),
        (dict(input_ids=ids, attention_mask=mask, max_length=7), "fewer than 2 new tokens"),
    ]:
        torch.manual_seed(0)  # (one case samples)
        got = fast(**kw)
        torch.manual_seed(0)
        torch.testing.assert_close(got, model.generate(**kw), rtol=0, atol=0)
        assert any(reason in k for k in fast.stats), (reason, dict(fast.stats))
    model.generation_config.repetition_penalty = 1.3
    kw = dict(base, cache_implementation="static")
    torch.testing.assert_close(fast(**kw), model.generate(**kw), rtol=0, atol=0)
    assert any("generation config sets repetition_penalty" in k for k in fast.stats)


def test_only_the_last_runs_are_kept(monkeypatch):
    from tritonic.integrations import greedy

    monkeypatch.setattr(greedy, "_MAX_RUNS", 2)
    model = _model("llama")
    fast = _fast(model)
    for batch in (1, 2, 3, 1):
        ids, mask = _inputs(batch=batch)
        kw = dict(input_ids=ids, attention_mask=mask, max_new_tokens=3, do_sample=False, cache_implementation="static")
        torch.testing.assert_close(fast(**kw), model.generate(**kw), rtol=0, atol=0)
        assert len(fast.runs) <= 2
    assert [k[0] for k in fast.runs] == [3, 1]


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_the_default_cache_and_max_length(kind):
    """generate() without cache_implementation (transformers' dynamic cache) or with max_length
    instead of max_new_tokens: the same tokens, through the static cache of this path."""
    model = _model(kind)
    ids, mask = _inputs()
    fast = _fast(model)
    for kw in (dict(input_ids=ids, attention_mask=mask, max_new_tokens=6),
               dict(input_ids=ids, attention_mask=mask, max_length=11, do_sample=False)):
        torch.testing.assert_close(fast(**kw), model.generate(**kw), rtol=0, atol=0)
    assert not any(k.startswith("transformers") for k in fast.stats), dict(fast.stats)


def test_calls_inside_and_outside_inference_mode():
    """The cache and buffers outlive a call: one made under torch.inference_mode() is still
    updated in place by a later call outside it."""
    model = _model("gpt2")
    ids, mask = _inputs()
    fast = _fast(model)
    kw = dict(input_ids=ids, attention_mask=mask, max_new_tokens=5, do_sample=False, cache_implementation="static")
    with torch.inference_mode():
        inside = fast(**kw)
    torch.testing.assert_close(fast(**kw), inside, rtol=0, atol=0)
    with torch.inference_mode():
        torch.testing.assert_close(fast(**kw), model.generate(**kw), rtol=0, atol=0)


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
@pytest.mark.parametrize("knobs", [dict(), dict(temperature=0.7), dict(top_k=5), dict(top_p=0.8),
                                   dict(temperature=1.3, top_k=20, top_p=0.9), dict(top_k=0, top_p=0.5)])
def test_sampled_tokens_equal_transformers_from_the_same_seed(kind, knobs):
    """do_sample=True: transformers' warpers in its order, then a draw with the random numbers
    torch.multinomial would use, so on the CPU the same seed gives the same tokens."""
    model = _model(kind)
    ids, mask = _inputs()
    fast = _fast(model)
    kw = dict(input_ids=ids, attention_mask=mask, max_new_tokens=7, do_sample=True, cache_implementation="static",
              **knobs)
    for seed in (0, 1):
        torch.manual_seed(seed)
        want = model.generate(**kw)
        torch.manual_seed(seed)
        got = fast(**kw)
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert not any(k.startswith("transformers") for k in fast.stats), dict(fast.stats)
    eos = [int(want[0, ids.shape[1] + 2])]  # an end token, with min_new_tokens
    for min_new in (0, 4):
        k = dict(kw, eos_token_id=eos, pad_token_id=0, min_new_tokens=min_new)
        torch.manual_seed(3)
        want = model.generate(**k)
        torch.manual_seed(3)
        torch.testing.assert_close(fast(**k), want, rtol=0, atol=0)


def test_other_warpers_go_to_transformers():
    model = _model("gpt2")
    ids, mask = _inputs()
    fast = _fast(model)
    model.generation_config.typical_p = 0.9
    kw = dict(input_ids=ids, attention_mask=mask, max_new_tokens=4, do_sample=True, cache_implementation="static")
    torch.manual_seed(0)
    want = model.generate(**kw)
    torch.manual_seed(0)
    torch.testing.assert_close(fast(**kw), want, rtol=0, atol=0)
    assert any("generation config sets typical_p" in k for k in fast.stats), dict(fast.stats)


def test_a_model_without_a_static_cache_goes_to_transformers(monkeypatch):
    from transformers import cache_utils

    model = _model("gpt2")
    ids, mask = _inputs()
    fast = _fast(model)
    kw = dict(input_ids=ids, attention_mask=mask, max_new_tokens=4)  # (transformers' loop: a dynamic cache)
    want = model.generate(**kw)

    def refuse(*a, **k):
        raise ValueError("no static cache for this config")

    monkeypatch.setattr(cache_utils, "StaticCache", refuse)
    torch.testing.assert_close(fast(**kw), want, rtol=0, atol=0)
    assert any("no static cache for this model (ValueError)" in k for k in fast.stats), dict(fast.stats)


def test_a_failure_in_the_fast_loop_falls_back_to_transformers(monkeypatch):
    model = _model("llama")
    ids, mask = _inputs()
    fast = _fast(model)
    kw = dict(input_ids=ids, attention_mask=mask, max_new_tokens=5, do_sample=False, cache_implementation="static")

    def broken(*a, **k):
        raise RuntimeError("a model this loop does not fit")

    monkeypatch.setattr(fast, "_step", broken)
    with pytest.warns(UserWarning, match="fell back to transformers' loop"):
        got = fast(**kw)
    torch.testing.assert_close(got, model.generate(**kw), rtol=0, atol=0)
    assert any("the fast loop failed (RuntimeError" in k for k in fast.stats) and not fast.runs
