"""tritonic.optimize on the GPU: half-precision models against the float64 model."""

import copy

import pytest
import torch

from tests.helpers import assert_close_to_reference
from tests.integrations.test_hf import _inputs, _models, _run

pytestmark = pytest.mark.gpu
pytest.importorskip("transformers")

import tritonic  # noqa: E402


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", ["bert", "gpt2", "llama", "t5"])
def test_half_precision_models(name, dtype):
    cls, config = _models()[name]
    torch.manual_seed(0)
    model = cls(config).cuda().eval()
    model.set_attn_implementation("sdpa")
    ref = _run(copy.deepcopy(model).double(), kw := _inputs(name, 4, 40, "cuda", pad=7))
    model = model.to(dtype)
    theirs = _run(model, kw)
    ours = _run(tritonic.optimize(model), kw)
    keep = kw["attention_mask"].bool() if name in ("gpt2", "llama") else torch.ones_like(ours[..., 0], dtype=torch.bool)
    assert_close_to_reference(f"{name} {dtype}", ours[keep], theirs[keep], ref[keep].to(torch.float64), atol_ulps=8)


@pytest.mark.parametrize("name", ["bert", "gpt2", "llama"])
def test_cuda_graphs_replay_per_bucket(name):
    cls, config = _models()[name]
    torch.manual_seed(0)
    model = cls(config).cuda().half().eval()
    eager = tritonic.optimize(copy.deepcopy(model), cuda_graphs=False)
    graphed = tritonic.optimize(model, buckets=(16, 32))
    stats = graphed.tritonic_graphs.stats
    for B, S, pad in ((2, 11, 3), (2, 13, 0), (2, 30, 5), (3, 9, 0)):
        kw = _inputs(name, B, S, "cuda", pad)
        with torch.inference_mode():
            ours = graphed(**kw).last_hidden_state
        theirs = _run(eager, kw)
        keep = kw["attention_mask"].bool()
        torch.testing.assert_close(ours[keep], theirs[keep], atol=2e-3, rtol=2e-3)
    assert stats["capture"] == 3 and stats["replay"] == 4, dict(stats)  # (2,16) twice, (2,32), (3,16)
    with torch.no_grad():  # longer than the largest bucket: eager, still right
        kw = _inputs(name, 1, 40, "cuda")
        torch.testing.assert_close(graphed(**kw).last_hidden_state, _run(eager, kw), atol=2e-3, rtol=2e-3)
    assert any("outside the buckets" in k for k in stats), dict(stats)


@pytest.mark.parametrize("name", ["bert", "llama"])
def test_cuda_graphs_with_precompiling(name, monkeypatch):
    """TRITONIC_PRECOMPILE=1: a new bucket's first forward (outputs thrown away) only submits
    the kernels' compiles to a thread pool; the warm-up and the capture then run as before."""
    from tritonic.runtime.precompile import precompiling

    monkeypatch.setenv("TRITONIC_PRECOMPILE", "1")
    cls, config = _models()[name]
    torch.manual_seed(0)
    model = cls(config).cuda().half().eval()
    eager = tritonic.optimize(copy.deepcopy(model), cuda_graphs=False)
    graphed = tritonic.optimize(model, buckets=(16, 32))
    kw = _inputs(name, 2, 13, "cuda", 3)
    with torch.inference_mode():
        ours = graphed(**kw).last_hidden_state
    keep = kw["attention_mask"].bool()
    torch.testing.assert_close(ours[keep], _run(eager, kw)[keep], atol=2e-3, rtol=2e-3)
    assert graphed.tritonic_graphs.stats["capture"] == 1 and not precompiling()


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_generate_replays_captured_decode_steps(name):
    """generate() with a static cache on the GPU: the decode step is captured once per
    (batch, cache) and replayed; greedy tokens equal those of the same model without graphs
    (tritonic's kernels either way, so the arithmetic is the same)."""
    from transformers import GPT2LMHeadModel, LlamaForCausalLM

    _, config = _models()[name]
    config.pad_token_id = 0
    torch.manual_seed(0)
    model = {"gpt2": GPT2LMHeadModel, "llama": LlamaForCausalLM}[name](config).cuda().half().eval()
    eager = tritonic.optimize(copy.deepcopy(model), cuda_graphs=False)
    eager.generation_config.disable_compile = True  # the same kernels, run plainly
    graphed = tritonic.optimize(model)
    assert graphed.generation_config.disable_compile  # transformers' auto-compile would trace our graphs
    ids = torch.randint(1, 97, (2, 9), device="cuda")
    mask = torch.ones_like(ids)
    mask[1, :3] = 0
    kw = dict(input_ids=ids, attention_mask=mask, max_new_tokens=12, do_sample=False, cache_implementation="static")
    theirs = eager.generate(**kw)
    for _ in range(2):  # greedy: FastGreedy, 8 steps per graph; the second call replays the same graph
        assert torch.equal(graphed.generate(**kw), theirs)
    greedy = graphed.tritonic_greedy.stats
    assert greedy["capture"] == 1 and greedy["replay"] == 4, dict(greedy)  # 11 steps: 2 replays per call
    sampled = graphed.generate(**dict(kw, do_sample=True, top_k=1))  # sampling from one token: greedy's
    assert torch.equal(sampled, theirs) and greedy["capture"] == 2, dict(greedy)
    kw["repetition_penalty"] = 1.0  # (a no-op) another argument: transformers' loop, with its decode step graphed
    for _ in range(2):  # the second call brings a new cache: captured again
        assert torch.equal(graphed.generate(**kw), theirs)
    stats = graphed.tritonic_graphs.stats
    assert stats["capture decode"] == 2 and stats["replay decode"] == 22, dict(stats)


def test_generate_under_transformers_compile():
    """``optimize(model, cuda_graphs=False)`` leaves transformers' own compile of static-cache
    decode steps on: it traces our ops (custom ops) and gives the tokens of plain steps."""
    from transformers import LlamaForCausalLM

    _, config = _models()["llama"]
    config.pad_token_id = 0
    torch.manual_seed(0)
    model = tritonic.optimize(LlamaForCausalLM(config).cuda().eval(), cuda_graphs=False)
    assert not model.generation_config.disable_compile
    ids = torch.randint(1, 97, (2, 9), device="cuda")
    kw = dict(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=8, do_sample=False,
              cache_implementation="static")
    compiled = model.generate(**kw)
    model.generation_config.disable_compile = True
    torch.testing.assert_close(compiled, model.generate(**kw), atol=0, rtol=0)
