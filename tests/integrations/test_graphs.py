"""GraphedForward (integrations/graphs.py) without capturing: the right-padding to a bucket,
the output cutting and the eager fallbacks, in the interpreter. Capture itself is tested on
the GPU (test_hf_gpu.py)."""

import copy
import importlib
import types

import pytest
import torch

from tests.helpers import assert_close_to_reference

pytest.importorskip("transformers")

import tritonic  # noqa: E402

graphs = importlib.import_module("tritonic.integrations.graphs")
test_hf = importlib.import_module("tests.integrations.test_hf")


@pytest.mark.parametrize("name", ["bert", "gpt2", "llama"])
def test_padded_to_the_bucket_gives_the_same_outputs(name, device):
    cls, config = test_hf._models()[name]
    torch.manual_seed(0)
    model = cls(config).to(device).eval()
    model.set_attn_implementation("sdpa")
    ref_model = copy.deepcopy(model).double()
    tritonic.optimize(model, cuda_graphs=False)
    runner = graphs.GraphedForward(model, buckets=(8, 16), capture=False)
    kw = test_hf._inputs(name, 2, 11, device, pad=2)
    with torch.no_grad():
        plain = model(**kw)
        out = runner(**kw)
        ref = ref_model(**kw)
    assert type(out) is type(plain) and runner.stats["eager padded"] == 1, runner.stats
    keep = kw["attention_mask"].bool()
    a, b, r = out.last_hidden_state, plain.last_hidden_state, ref.last_hidden_state
    assert a.shape == b.shape
    assert_close_to_reference(f"{name} padded", a[keep], b[keep], r[keep], atol_ulps=8)
    if name == "bert":  # pooled from token 0: unaffected by the padding
        assert_close_to_reference("bert pooler", out.pooler_output, plain.pooler_output, ref.pooler_output, atol_ulps=8)
    # no mask given: the runner masks its own padding, and positional input_ids work
    with torch.no_grad():
        out2 = runner(kw["input_ids"])
        plain2 = model(input_ids=kw["input_ids"])
    torch.testing.assert_close(out2.last_hidden_state, plain2.last_hidden_state, atol=1e-4, rtol=1e-4)
    # causal models need no mask over right padding (the padding is every real token's future)
    unmasked = [e for k, e in runner.graphs.items() if "attention_mask" not in k[2]]
    assert runner.causal == (name != "bert") and len(unmasked) == 1
    assert ("attention_mask" in unmasked[0].static) == (name == "bert")


def test_what_runs_eagerly(device):
    cls, config = test_hf._models()["gpt2"]
    model = cls(config).to(device).eval()
    runner = graphs.GraphedForward(model, buckets=(16,), capture=False)
    ids = torch.randint(1, 97, (1, 5), device=device)
    with torch.no_grad():
        runner(ids, use_cache=True)
        runner(ids, output_attentions=True)
        runner(torch.randint(1, 97, (1, 17), device=device))  # past the largest bucket
        runner(ids, None)  # a second positional argument (past_key_values)
    runner(ids)  # autograd on
    model.train()
    with torch.no_grad():
        runner(ids)
    reasons = " | ".join(runner.stats)
    for part in ("use_cache=True", "output_attentions", "outside the buckets", "positional", "autograd", "training"):
        assert part in reasons, reasons
    assert "eager padded" not in runner.stats


def test_optimize_wires_graphs_only_on_a_gpu(device):
    cls, config = test_hf._models()["bert"]
    model = cls(config).to(device).eval()
    tritonic.optimize(model)
    report = str(model.tritonic_report)
    if device == "cpu":
        assert "CUDA graphs: the model is not on a CUDA GPU" in report and "forward" not in model.__dict__
    with pytest.raises(ValueError, match="buckets"):
        graphs.GraphedForward(model, buckets=(0,))
    with pytest.raises(ValueError, match="dtype"):
        tritonic.optimize(model, dtype=torch.int8)
    model.config.max_position_embeddings = 24  # buckets beyond the model's positions are dropped
    assert graphs.GraphedForward(model, capture=False).buckets == (16,)


def _causal_lm(name, device):
    from transformers import GPT2LMHeadModel, LlamaForCausalLM

    _, config = test_hf._models()[name]
    config.pad_token_id = 0
    torch.manual_seed(0)
    model = {"gpt2": GPT2LMHeadModel, "llama": LlamaForCausalLM}[name](config).to(device).eval()
    model.set_attn_implementation("sdpa")
    return model


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_decode_steps_over_a_static_cache(name, device):
    """generate() with a static cache: each decode step runs from the entry's static inputs,
    after warm-up runs whose advance of the cache is undone (were it not, positions would be
    off and the tokens would differ); a second generate() brings a new cache and a new entry."""
    model = _causal_lm(name, device)
    ids = torch.randint(1, 97, (2, 7), device=device)
    mask = torch.ones_like(ids)
    mask[0, :2] = 0
    kw = dict(input_ids=ids, attention_mask=mask, max_new_tokens=6, do_sample=False, cache_implementation="static")
    theirs = model.generate(**kw)
    model.generation_config.disable_compile = True  # (a GPU would compile the runner's steps)
    tritonic.optimize(model, cuda_graphs=False)
    runner = graphs.GraphedForward(model, capture=False, warmup=2)
    model.forward = runner
    ours = model.generate(**kw)
    assert torch.equal(ours, theirs), (ours[:, 7:].tolist(), theirs[:, 7:].tolist())
    assert runner.stats["eager decode (no capture)"] == 5, runner.stats  # 6 tokens: the prefill gives the first
    first = next(e for k, e in runner.graphs.items() if k[0] == "decode")
    assert torch.equal(model.generate(**kw), theirs)
    entries = [e for k, e in runner.graphs.items() if k[0] == "decode"]
    assert len(entries) == 1 and entries[0] is not first and runner.stats["eager decode (no capture)"] == 10


def test_a_failed_decode_capture_runs_eagerly(device, monkeypatch):
    model = _causal_lm("llama", device)
    ids = torch.randint(1, 97, (1, 5), device=device)
    kw = dict(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=4, do_sample=False,
              cache_implementation="static")
    theirs = model.generate(**kw)
    model.generation_config.disable_compile = True  # (a GPU would compile the runner's steps)
    tritonic.optimize(model, cuda_graphs=False)
    runner = graphs.GraphedForward(model, capture=False, warmup=1)
    model.forward = runner

    def broken(self):
        raise RuntimeError("operation not permitted when stream is capturing")

    monkeypatch.setattr(graphs._DecodeEntry, "_step", broken)
    assert torch.equal(model.generate(**kw), theirs)
    failed = [k for k in runner.stats if k.startswith("eager: decode capture failed")]
    assert failed and runner.stats[failed[0]] == 3, runner.stats
    assert torch.equal(model.generate(**kw), theirs)  # a new cache: the failure is remembered, not retried
    assert runner.stats[failed[0]] == 6, runner.stats


def test_the_memory_pool_goes_with_the_last_graph(device):
    """The allocator frees a graph pool whose last graph is destroyed; a later capture into
    its stale handle fails (an internal assert in CUDACachingAllocator, seen on the H200 when
    a second generate() replaced the only decode graph), so the handle is dropped with it."""
    runner = graphs.GraphedForward(_causal_lm("gpt2", device), capture=False)
    live = types.SimpleNamespace(graph=object())
    runner.graphs.update({"a": live, "b": types.SimpleNamespace(graph=object()), "c": "capture failed"})
    runner.pool = (0, 1)
    runner._drop("a")
    assert runner.pool == (0, 1)  # "b" still uses it
    runner._drop("b")
    assert runner.pool is None and runner.graphs == {"c": "capture failed"}
