"""tritonic.optimize on small random Hugging Face models: outputs against the float64 model
under the correctness rule (tests/helpers.py), padded batches, the fallbacks."""

import copy
import importlib

import pytest
import torch

from tests.helpers import assert_close_to_reference

transformers = pytest.importorskip("transformers")

import tritonic  # noqa: E402

hf = importlib.import_module("tritonic.integrations.hf")


def _models():
    from transformers import (BertConfig, BertModel, GPT2Config, GPT2Model, LlamaConfig, LlamaModel, T5Config,
                              T5Model)

    return {
        "bert": (BertModel, BertConfig(vocab_size=97, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                       intermediate_size=96, max_position_embeddings=64)),
        "gpt2": (GPT2Model, GPT2Config(vocab_size=97, n_embd=64, n_layer=2, n_head=4, n_positions=64)),
        "llama": (LlamaModel, LlamaConfig(vocab_size=97, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                          num_key_value_heads=2, intermediate_size=96, max_position_embeddings=64)),
        "t5": (T5Model, T5Config(vocab_size=97, d_model=64, d_kv=16, num_heads=4, num_layers=2, d_ff=96)),
    }


def _inputs(name, B, S, device, pad=0):
    ids = torch.randint(1, 97, (B, S), device=device)
    mask = torch.ones(B, S, dtype=torch.long, device=device)
    if pad:
        mask[0, S - pad:] = 0  # right padding on the first row
    kw = dict(input_ids=ids, attention_mask=mask)
    if name == "t5":
        kw["decoder_input_ids"] = torch.randint(1, 97, (B, S - 2), device=device)
    return kw


def _run(model, kw):
    with torch.no_grad():
        return model(**kw).last_hidden_state


@pytest.mark.parametrize("pad", [0, 3])
@pytest.mark.parametrize("name", ["bert", "gpt2", "llama", "t5"])
def test_outputs_match_the_original(name, pad, device, monkeypatch):
    cls, config = _models()[name]
    torch.manual_seed(0)
    model = cls(config).to(device).eval()
    model.set_attn_implementation("sdpa")
    ref_model = copy.deepcopy(model).double()
    kw = _inputs(name, 2, 11, device, pad)
    theirs = _run(model, kw)
    ref = _run(ref_model, kw)
    calls = []
    real = hf.attention
    monkeypatch.setattr(hf, "attention", lambda *a, **k: calls.append(1) or real(*a, **k))
    hf.FALLBACKS.clear()
    ours_model = tritonic.optimize(model)
    if hf._attention_modules(model) == 0:  # e.g. T5 in transformers 5.17: its attention is its own
        assert "no module of this model dispatches" in str(ours_model.tritonic_report)
        pytest.skip(f"{name}'s attention does not use the attention interface in transformers "
                    f"{transformers.__version__}")
    ours = _run(ours_model, kw)
    assert calls and not hf.FALLBACKS, f"kernel calls {len(calls)}, fallbacks {dict(hf.FALLBACKS)}"
    keep = kw["attention_mask"].bool() if name != "t5" else torch.ones_like(ours[..., 0], dtype=torch.bool)
    if pad and name in ("gpt2", "llama"):  # padded query rows of causal models are not meaningful outputs
        ours, theirs, ref = ours[keep], theirs[keep], ref[keep]
    assert_close_to_reference(f"{name} last_hidden_state", ours, theirs, ref, atol_ulps=8)
    report = str(ours_model.tritonic_report)
    expected = {"bert": "BertSelfOutput -> DenseAddNormBlock (2)", "llama": "LlamaMLP -> GatedMLPBlock (2)",
                "gpt2": "GPT2MLP -> Conv1DActBlock (2)", "t5": "T5LayerNorm -> RMSNormLike"}[name]
    assert "attention: sdpa -> tritonic" in report and expected in report, report


def test_dense_add_norm_block(device, monkeypatch):
    """BERT's output layers, LayerNorm(dropout(dense(h)) + input): the residual add goes into
    the norm kernel (ops.layer_norm with residual=), in eval and in training (gradients as the
    original's); state_dict kept; a lookalike whose forward adds differently is rejected."""
    from tritonic.integrations.swaps import DenseAddNormBlock

    cls, config = _models()["bert"]
    torch.manual_seed(0)
    model = cls(config).to(device).eval()
    keys = list(model.state_dict())

    class Lookalike(torch.nn.Module):  # the same children, another function
        def __init__(self, original):
            super().__init__()
            self.dense, self.LayerNorm, self.dropout = original.dense, original.LayerNorm, original.dropout

        def forward(self, hidden_states, input_tensor):
            return self.LayerNorm(self.dense(hidden_states) - input_tensor)

    model.encoder.layer[1].output = Lookalike(model.encoder.layer[1].output)
    original = copy.deepcopy(model)
    tritonic.optimize(model, cuda_graphs=False)
    report = str(model.tritonic_report)
    assert list(model.state_dict()) == keys
    assert "BertOutput -> DenseAddNormBlock (1)" in report and "BertSelfOutput -> DenseAddNormBlock (2)" in report
    assert "encoder.layer.1.output (Lookalike): probe error" in report, report
    assert isinstance(model.encoder.layer[0].output, DenseAddNormBlock)
    residuals = []
    norm_mod = importlib.import_module("tritonic.ops.norm")
    real = norm_mod.layer_norm
    monkeypatch.setattr(tritonic.ops, "layer_norm", lambda *a, **k: residuals.append(k.get("residual") is not None)
                        or real(*a, **k))
    kw = _inputs("bert", 2, 9, device, pad=2)
    with torch.no_grad():
        torch.testing.assert_close(model(**kw).last_hidden_state, original(**kw).last_hidden_state,
                                   atol=2e-5, rtol=2e-5)
    assert residuals.count(True) == 3  # two self-outputs and one output fused the add
    for m in (model, original):  # training, dropout off so that both compute the same function
        m.train()
        for d in m.modules():
            if isinstance(d, torch.nn.Dropout):
                d.p = 0.0
    residuals.clear()
    grads = []
    for m in (model, original):
        m.zero_grad()
        m(**kw).last_hidden_state.square().sum().backward()
        grads.append({n: p.grad for n, p in m.named_parameters() if p.grad is not None})
    assert residuals.count(True) == 3 and grads[0].keys() == grads[1].keys()
    for n in grads[0]:
        torch.testing.assert_close(grads[0][n], grads[1][n], atol=1e-4, rtol=1e-4, msg=n)


def test_bert_probes_compile_what_a_first_call_runs(device, monkeypatch):
    """optimize()'s probes launch the embedding block's kernel and the pooler's GEMM in the
    variants (Triton's specialisation of every argument, the constexprs) that a single-sequence
    call of 16 tokens launches next, with or without token types: a cold first call compiles
    each once (H100, 50feaaf: probes at 2x8 tokens and 2 pooler rows, three compiles of each in
    BERT's 1x16)."""
    import inspect

    from tritonic.kernels.embedding import UNSPECIALISED
    from tritonic.runtime.launch_keys import _spec

    emb = importlib.import_module("tritonic.ops.embedding")
    mm = importlib.import_module("tritonic.ops.matmul")
    seen = []

    def key(kernel, args, meta):  # (the arguments the block's kernel is not specialised on left out)
        names = [n for n in inspect.signature(kernel.fn).parameters if n not in meta]
        specs = tuple(_spec(a) for n, a in zip(names, args) if n not in UNSPECIALISED)
        return kernel.fn.__name__, specs, tuple(sorted((k, repr(v)) for k, v in meta.items()))

    real_launch, real_meta = emb.launch, mm.launch_meta
    monkeypatch.setattr(emb, "launch", lambda k, g, *a, **m: (seen.append(key(k, a, m)), real_launch(k, g, *a, **m)))
    monkeypatch.setattr(mm, "launch_meta", lambda k, g, kw, *a: (seen.append(key(k, a, kw)), real_meta(k, g, kw, *a)))
    cls, config = _models()["bert"]
    torch.manual_seed(0)
    model = cls(config).to(device).eval()
    tritonic.optimize(model, cuda_graphs=False)
    assert "BertPooler -> PoolerBlock (1)" in str(model.tritonic_report)
    probed = set(seen)
    seen.clear()
    with torch.no_grad():  # without token types (the buffer's, by position) and with them
        model(**_inputs("bert", 1, 16, device))
        model(**_inputs("bert", 1, 16, device), token_type_ids=torch.ones(1, 16, dtype=torch.long, device=device))
    ran = set(seen)
    assert {k[0] for k in ran} >= {"_embeddings_norm_fwd", "_matmul"}
    assert ran <= probed, ran - probed


def test_bert_embeddings_in_one_kernel(device, monkeypatch):
    """BERT's embedding module becomes one kernel at inference, and its pooler one GEMM (positions and token types found
    as the module finds them, given or not, a cache offset too); state_dict kept; inputs_embeds,
    autograd and training-mode dropout run the original forward; RoBERTa's embeddings (positions
    counted from the padding) fail the probe and stay."""
    from transformers import RobertaConfig, RobertaModel

    from tritonic.integrations.swaps import EmbeddingsNormBlock

    cls, config = _models()["bert"]
    torch.manual_seed(0)
    model = cls(config).to(device).eval()
    keys = list(model.state_dict())
    original = copy.deepcopy(model)
    tritonic.optimize(model, cuda_graphs=False)
    assert "BertEmbeddings -> EmbeddingsNormBlock (1)" in str(model.tritonic_report)
    assert isinstance(model.embeddings, EmbeddingsNormBlock) and list(model.state_dict()) == keys
    emb = importlib.import_module("tritonic.ops.embedding")
    launched = []
    real = emb.launch
    monkeypatch.setattr(emb, "launch", lambda k, *a, **m: launched.append(k.fn.__name__) or real(k, *a, **m))
    kw = _inputs("bert", 2, 9, device, pad=2)
    types = torch.randint(0, 2, (2, 9), device=device)
    offset = "past_key_values_length" if "past_key_values_length" in \
        type(original.embeddings).forward.__code__.co_varnames else "cache_length"
    with torch.no_grad():
        for extra in ({}, {"token_type_ids": types}, {"position_ids": torch.arange(5, 14, device=device)[None]},
                      {"position_ids": torch.arange(9, device=device), "token_type_ids": types}):  # (1-D positions:
            # the original forward broadcasts them, and so runs here)
            torch.testing.assert_close(model(**kw, **extra).last_hidden_state,
                                       original(**kw, **extra).last_hidden_state, atol=2e-5, rtol=2e-5)
        ids = kw["input_ids"]
        torch.testing.assert_close(model.embeddings(input_ids=ids, **{offset: 3}),
                                   original.embeddings(input_ids=ids, **{offset: 3}), atol=2e-5, rtol=2e-5)
        assert launched == ["_embeddings_norm_fwd"] * 4  # (not the 1-D positions)
        launched.clear()
        embeds = original.embeddings.word_embeddings(ids)
        torch.testing.assert_close(model.embeddings(inputs_embeds=embeds), original.embeddings(inputs_embeds=embeds))
    assert launched == []  # the original forward, with PyTorch's lookups
    model.train()
    original.train()
    torch.manual_seed(1)
    a = model.embeddings(input_ids=ids)
    torch.manual_seed(1)
    b = original.embeddings(input_ids=ids)
    torch.testing.assert_close(a, b)  # the same dropout draws: the original forward ran
    a.square().sum().backward()
    assert model.embeddings.word_embeddings.weight.grad is not None
    assert launched == []

    # BERT's pooler: tanh(dense(h[:, 0])) in one GEMM; eval outputs and training gradients as the original's
    assert "BertPooler -> PoolerBlock (1)" in str(model.tritonic_report)
    model.eval()
    original.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(**kw).pooler_output, original(**kw).pooler_output, atol=2e-5, rtol=2e-5)
    for m in (model, original):
        m.zero_grad()
        m(**kw).pooler_output.square().sum().backward()
    torch.testing.assert_close(model.pooler.dense.weight.grad, original.pooler.dense.weight.grad, atol=1e-4,
                               rtol=1e-4)

    rob = RobertaModel(RobertaConfig(vocab_size=97, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=64, max_position_embeddings=40)).to(device).eval()
    rob_original = copy.deepcopy(rob)
    tritonic.optimize(rob, cuda_graphs=False)
    assert "embeddings (RobertaEmbeddings): probe error" in str(rob.tritonic_report), str(rob.tritonic_report)
    with torch.no_grad():
        torch.testing.assert_close(rob(**kw).last_hidden_state, rob_original(**kw).last_hidden_state,
                                   atol=2e-5, rtol=2e-5)


@pytest.mark.parametrize("proj", ["relu", "gated-gelu"])
def test_t5_feed_forward_block(proj, device, monkeypatch):
    """T5's feed-forward (v1.0 ReLU, v1.1 / Flan gated GELU): the activation in the first
    GEMM (or the gated product in one kernel), outputs and training gradients as the
    original's; Flan-T5's float32 wo gets its input cast as T5 does."""
    from transformers import T5Config, T5Model

    from tritonic.integrations.swaps import DenseActDenseBlock

    config = T5Config(vocab_size=97, d_model=64, d_kv=16, num_heads=4, num_layers=2, d_ff=96, dropout_rate=0.0,
                      feed_forward_proj=proj)
    torch.manual_seed(0)
    model = T5Model(config).to(device)
    original = copy.deepcopy(model)
    tritonic.optimize(model, cuda_graphs=False)
    kind = "T5DenseGatedActDense" if proj.startswith("gated") else "T5DenseActDense"
    assert f"{kind} -> DenseActDenseBlock (4)" in str(model.tritonic_report), model.tritonic_report
    assert isinstance(model.encoder.block[0].layer[1].DenseReluDense, DenseActDenseBlock)
    kw = dict(input_ids=torch.randint(1, 97, (2, 9), device=device),
              decoder_input_ids=torch.randint(1, 97, (2, 5), device=device))
    grads = []
    for m in (model, original):
        m.train()
        out = m(**kw).last_hidden_state
        out.square().sum().backward()
        grads.append((out.detach(), {n: p.grad for n, p in m.named_parameters() if p.grad is not None}))
    torch.testing.assert_close(grads[0][0], grads[1][0], atol=2e-5, rtol=2e-5)
    assert grads[0][1].keys() == grads[1][1].keys()
    for n in grads[0][1]:
        torch.testing.assert_close(grads[0][1][n], grads[1][1][n], atol=1e-4, rtol=1e-4, msg=n)
    # Flan-T5 keeps wo in float32 in a half-precision model: the input is cast to it, as T5 does
    block = copy.deepcopy(model.encoder.block[0].layer[1].DenseReluDense).half().eval()
    theirs_block = copy.deepcopy(original.encoder.block[0].layer[1].DenseReluDense).half().eval()
    for b in (block, theirs_block):
        b.wo.float()
    x = torch.randn(2, 3, 64, device=device).half()
    with torch.no_grad():
        ours, theirs = block(x), theirs_block(x)
    assert ours.dtype == theirs.dtype == torch.float32
    torch.testing.assert_close(ours, theirs, atol=2e-3, rtol=2e-3)


def test_fallbacks_are_counted_and_correct(device):
    cls, config = _models()["bert"]
    model = cls(config).to(device).train()  # attention dropout while training: SDPA takes the call
    tritonic.optimize(model)
    hf.FALLBACKS.clear()
    model(**_inputs("bert", 2, 5, device))
    assert hf.FALLBACKS["attention dropout while training"] > 0
    assert "handed to SDPA" in str(model.tritonic_report)


def test_a_fallback_under_torch_compile_compiles_once():
    """Counting a fallback inside a compiled function would make dynamo guard on the count
    and recompile on every call (GPT-2 training under compile: 2.6 s per step on the H200)."""
    from torch._dynamo.testing import CompileCounter

    module = torch.nn.Module().train()
    q = torch.randn(1, 2, 4, 8)
    counter = CompileCounter()
    fn = torch.compile(lambda q: hf.tritonic_attention_forward(module, q, q, q, None, dropout=0.1)[0],
                       backend=counter)
    torch._dynamo.reset()
    for _ in range(3):
        assert fn(q).shape == (1, 4, 2, 8)
    assert counter.frame_count == 1


def test_a_causal_mask_without_padding_stays_none_where_transformers_would_build_it(monkeypatch, device):
    """Inside a CUDA-graph capture or torch.compile, transformers' ``is_tracing`` is True and
    its SDPA mask function (5.17; later versions skip it too) builds the full (B, 1, S, S)
    causal mask; ours keeps None where only shapes and arguments decide it, and hands every
    other case to transformers."""
    from transformers import masking_utils as mu

    monkeypatch.setattr(mu, "is_tracing", lambda *a, **k: True)
    kw = dict(batch_size=2, q_length=6, kv_length=6, mask_function=mu.causal_mask_function)
    assert hf.tritonic_mask(**kw) is None
    pad = torch.ones(2, 6, dtype=torch.bool)
    pad[0, :2] = False
    # padding over a causal mask: only the keys' row, the attention adds the causality
    row = hf.tritonic_mask(**dict(kw, attention_mask=pad))
    assert row.shape == (2, 1, 1, 6)
    assert torch.equal(hf._with_causality(row, 6), mu.sdpa_mask(**dict(kw, attention_mask=pad)).expand(2, 1, 6, 6))
    for other in (dict(kw, q_length=1, kv_length=6, q_offset=5),
                  dict(kw, q_length=3, kv_length=6, q_offset=3), dict(kw, allow_is_causal_skip=False)):
        theirs, ours = mu.sdpa_mask(**other), hf.tritonic_mask(**other)
        assert (ours is None and theirs is None) or torch.equal(ours, theirs), other
    # bidirectional (encoder) masks: the padding's key row, or None (every key) without padding
    bi = dict(kw, mask_function=mu.bidirectional_mask_function)
    theirs = mu.sdpa_mask(**bi)
    assert hf.tritonic_mask(**bi) is None and (theirs is None or bool(theirs.all()))
    for q_length in (6, 3):  # (a cross-attention's queries: fewer than its keys)
        other = dict(bi, attention_mask=pad, q_length=q_length)
        row = hf.tritonic_mask(**other)
        assert row.shape == (2, 1, 1, 6)
        assert torch.equal(row.expand(2, 1, q_length, 6), mu.sdpa_mask(**other).expand(2, 1, q_length, 6))
    kept = dict(bi, attention_mask=pad, allow_is_bidirectional_skip=False)  # transformers' own then
    assert torch.equal(hf.tritonic_mask(**kept), mu.sdpa_mask(**kept))
    # a whole GPT-2 forward under "tracing": the attention sees no mask, the output is unchanged
    cls, config = _models()["gpt2"]
    model = tritonic.optimize(cls(config).to(device).eval(), cuda_graphs=False)  # (on the GPU where there is one)
    ids = torch.randint(1, 97, (2, 7), device=device)
    seen = []
    forward = hf.tritonic_attention_forward

    def spy(module, q, k, v, attention_mask, *a, **k_):
        seen.append(attention_mask)
        return forward(module, q, k, v, attention_mask, *a, **k_)

    monkeypatch.setitem(__import__("transformers").AttentionInterface._global_mapping, hf.ATTENTION_NAME, spy)
    traced = _run(model, dict(input_ids=ids))
    assert seen and all(m is None for m in seen)
    monkeypatch.setattr(mu, "is_tracing", lambda *a, **k: False)
    torch.testing.assert_close(traced, _run(model, dict(input_ids=ids)))


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_left_and_right_padding_of_causal_models_through_the_key_row(name, device, monkeypatch):
    """A causal model's padding mask reaches the attention as its (B, 1, 1, S) key row, the
    kernel adding the causality; with dropout while training, SDPA gets the full mask back."""
    cls, config = _models()[name]
    torch.manual_seed(0)
    model = cls(config).to(device).eval()
    model.set_attn_implementation("sdpa")
    ref_model = copy.deepcopy(model).double()
    ids = torch.randint(1, 97, (3, 9), device=device)
    mask = torch.ones(3, 9, dtype=torch.long, device=device)
    mask[0, :3] = 0  # left padding
    mask[1, 6:] = 0  # right padding
    ref = _run(ref_model, dict(input_ids=ids, attention_mask=mask))
    theirs = _run(model, dict(input_ids=ids, attention_mask=mask))
    seen = []
    real = hf.attention
    monkeypatch.setattr(hf, "attention", lambda *a, **k: seen.append(k.get("mask")) or real(*a, **k))
    tritonic.optimize(model, cuda_graphs=False)
    ours = _run(model, dict(input_ids=ids, attention_mask=mask))
    assert seen and all(m is not None and m.shape == (3, 1, 1, 9) for m in seen)
    keep = mask.bool()
    assert_close_to_reference(f"{name} padded", ours[keep], theirs[keep], ref[keep], atol_ulps=8)
    # training with attention dropout: SDPA's path, which takes causality from a full mask
    sdpa_masks = []
    original = hf._sdpa
    monkeypatch.setattr(hf, "_sdpa", lambda m, q, k, v, am, *a, **kw: sdpa_masks.append(am) or
                        original(m, q, k, v, am, *a, **kw))
    model.train()  # GPT-2's attention dropout (0.1) goes to SDPA; Llama's is 0 and stays on the kernel
    with torch.no_grad():
        model(input_ids=ids, attention_mask=mask)
    model.eval()
    assert bool(sdpa_masks) == (name == "gpt2")
    assert all(m.shape == (3, 1, 9, 9) and not m[1, 0, 0, 1] and m[1, 0, 1, 0] and not m[0, 0, 5, 1]
               for m in sdpa_masks)  # causal, and the left padding of row 0 masked


def test_bad_use():
    with pytest.raises(TypeError, match="PreTrainedModel"):
        tritonic.optimize(torch.nn.Linear(2, 2))


def test_norm_swaps_keep_the_state_dict_and_reject_lookalikes(device):
    cls, config = _models()["llama"]
    model = cls(config).to(device)
    keys = list(model.state_dict())

    class OddRMSNorm(torch.nn.Module):  # named like an RMSNorm, computes something else
        def __init__(self, n):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.ones(n, device=device))
            self.variance_epsilon = 1e-6

        def forward(self, x):
            return x * self.weight + 1

    model.norm = OddRMSNorm(config.hidden_size)
    keys = list(model.state_dict())
    tritonic.optimize(model)
    assert list(model.state_dict()) == keys
    report = str(model.tritonic_report)
    assert "LlamaRMSNorm -> RMSNormLike (4)" in report, report
    assert "norm (OddRMSNorm): probe error" in report, report
    assert type(model.norm) is OddRMSNorm
    from tritonic.integrations.swaps import RMSNormLike

    swapped = model.layers[0].input_layernorm
    assert isinstance(swapped, RMSNormLike) and swapped.weight is model.layers[0].input_layernorm.weight


def test_models_the_kernels_cannot_take_are_left_alone(device, monkeypatch):
    cls, config = _models()["bert"]
    model = cls(config).to(device).double()  # float64: nothing to gain, nothing changed
    tritonic.optimize(model)
    assert "the model is in torch.float64" in str(model.tritonic_report)
    assert model.config._attn_implementation != "tritonic"
    import tritonic.runtime as rt

    model = cls(config).to(device)
    monkeypatch.setattr(hf, "register", lambda: pytest.fail("must not register"))
    monkeypatch.setattr(rt, "can_run_kernels", lambda d: False)  # e.g. a CPU model on a GPU machine
    tritonic.optimize(model)
    assert "where tritonic's kernels cannot run" in str(model.tritonic_report)


def _sinks_and_softcap_models():
    from transformers import Gemma2Config, Gemma2Model, GptOssConfig, GptOssModel

    return {
        # attention sinks (s_aux): computed by neither the kernels nor SDPA
        "gpt_oss": (GptOssModel, GptOssConfig(vocab_size=97, hidden_size=64, num_hidden_layers=2,
                                              num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                                              intermediate_size=64, num_local_experts=4, num_experts_per_tok=2,
                                              sliding_window=4, max_position_embeddings=64)),
        # attention logit softcapping: SDPA refuses it
        "gemma2": (Gemma2Model, Gemma2Config(vocab_size=97, hidden_size=64, num_hidden_layers=2,
                                             num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                                             intermediate_size=96, attn_logit_softcapping=5.0, sliding_window=4,
                                             max_position_embeddings=64)),
    }


@pytest.mark.parametrize("pad", [0, 3])
@pytest.mark.parametrize("name", ["gpt_oss", "gemma2"])
def test_what_sdpa_cannot_compute_goes_to_the_models_eager_attention(name, pad, device):
    """Sinks and softcap are not in the kernels, and SDPA ignores or refuses them: those calls
    run the model's own eager attention, with the mask rebuilt as the additive one it adds,
    so the outputs match the original model's instead of silently dropping the feature."""
    cls, config = _sinks_and_softcap_models()[name]
    torch.manual_seed(0)
    model = cls(config).to(device).eval()
    model.set_attn_implementation("eager")
    if hasattr(model, "set_experts_implementation"):
        model.set_experts_implementation("eager")  # the grouped GEMM path has no float64 (the reference)
    if name == "gpt_oss":
        for layer in model.layers:  # non-zero sinks, so that dropping them would show
            layer.self_attn.sinks.data.normal_(0, 2)
    ref_model = copy.deepcopy(model).double()
    kw = _inputs(name, 2, 11, device, pad)
    theirs, ref = _run(model, kw), _run(ref_model, kw)
    hf.FALLBACKS.clear()
    ours = _run(tritonic.optimize(model, cuda_graphs=False), kw)
    reason = "attention sinks (s_aux)" if name == "gpt_oss" else "softcap"
    assert hf.FALLBACKS[reason] > 0, dict(hf.FALLBACKS)
    assert "handed to the model's eager attention" in str(model.tritonic_report)
    keep = kw["attention_mask"].bool()
    assert_close_to_reference(f"{name} last_hidden_state", ours[keep], theirs[keep], ref[keep], atol_ulps=8)


def test_no_eager_function_is_an_error_not_a_wrong_answer(monkeypatch):
    class Attn(torch.nn.Module):
        is_causal = True
    q = torch.randn(1, 2, 3, 8)
    monkeypatch.setattr(hf, "FALLBACKS", hf.collections.Counter())
    with pytest.raises(NotImplementedError, match="softcap"):
        hf.tritonic_attention_forward(Attn(), q, q, q, None, softcap=5.0)


@pytest.mark.parametrize("cache", [None, "static"])
@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_generate_greedy_matches_the_original(name, cache, device):
    """generate() after optimize (attention through the kernels, decode steps of one query
    over the cache, left-padded prompts) gives the original model's greedy tokens."""
    from transformers import GPT2LMHeadModel, LlamaForCausalLM

    _, config = _models()[name]
    config.pad_token_id = 0
    torch.manual_seed(0)
    model = {"gpt2": GPT2LMHeadModel, "llama": LlamaForCausalLM}[name](config).to(device).eval()
    model.set_attn_implementation("sdpa")
    ids = torch.randint(1, 97, (2, 7), device=device)
    mask = torch.ones_like(ids)
    mask[0, :2] = 0  # left padding, as generate expects for decoder-only models
    kw = dict(input_ids=ids, attention_mask=mask, max_new_tokens=6, do_sample=False)
    if cache:
        kw["cache_implementation"] = cache
    theirs = model.generate(**kw)
    calls, decode = [], []
    real, real_decode = hf.attention, hf.attention_decode
    # transformers' own loop, step by step (graphs would replay the steps without calling the
    # counting wrappers below; tests/integrations/test_greedy.py covers the graphed loop)
    ours_model = tritonic.optimize(model, cuda_graphs=False)
    # and not transformers' auto-compile of static-cache steps (on GPUs): traced steps take the
    # flash kernel, not flash-decoding, which this test counts
    ours_model.generation_config.disable_compile = True
    import unittest.mock

    with unittest.mock.patch.object(hf, "attention", lambda *a, **k: calls.append(a[0].shape[2]) or real(*a, **k)), \
            unittest.mock.patch.object(hf, "attention_decode",
                                       lambda *a, **k: decode.append(k["key_mask"] is not None) or real_decode(*a, **k)):
        ours = ours_model.generate(**kw)
    assert torch.equal(ours, theirs), (ours[:, 7:].tolist(), theirs[:, 7:].tolist())
    n_layers = config.num_hidden_layers if name == "llama" else config.n_layer
    assert calls == [7] * n_layers, calls  # the prompt through the flash kernel
    assert len(decode) == 5 * n_layers and all(decode), decode  # then flash-decoding, left padding masked


def test_decode_lengths_from_the_mask(device):
    """Each sequence's length is its mask's last kept key; the layers of one step share the
    result, and a mask changed in place (or a new one) is read again."""
    mask = torch.zeros(3, 1, 1, 10, dtype=torch.bool, device=device)
    mask[0, ..., 2:7] = True  # left padding, then unused cache slots
    mask[1, ..., :10] = True
    seqlens, key_mask = hf._decode_lengths(mask, 3, 10, device)
    assert seqlens.tolist() == [7, 10, 0] and key_mask.shape == (3, 10)
    assert hf._decode_lengths(mask, 3, 10, device)[0] is seqlens  # once per step
    mask[2, ..., 4] = True
    assert hf._decode_lengths(mask, 3, 10, device)[0].tolist() == [7, 10, 5]
    shared = torch.ones(1, 1, 1, 4, dtype=torch.bool, device=device)  # one mask for the whole batch
    assert hf._decode_lengths(shared, 2, 4, device)[0].tolist() == [4, 4]
    assert hf._decode_lengths(None, 2, 6, device)[0].tolist() == [6, 6]
    assert hf._decode_lengths(torch.zeros(2, 1, 1, 6, device=device), 2, 6, device) is None  # a float mask


def test_decode_lengths_are_not_shared_across_a_graph_capture(device, monkeypatch):
    """A decode step's graph is captured right after warm-up runs over the same static mask:
    reusing the warm-up's lengths in the capture would bake them into the graph (every replay
    would attend over the first step's keys only), and after the capture the graph's own
    buffers must not leak into eager calls."""
    mask = torch.ones(2, 1, 1, 8, dtype=torch.bool, device=device)
    warm = hf._decode_lengths(mask, 2, 8, device)[0]
    monkeypatch.setattr(hf, "_capturing", lambda t: True)
    captured = hf._decode_lengths(mask, 2, 8, device)[0]
    assert captured is not warm and hf._decode_lengths(mask, 2, 8, device)[0] is captured  # shared within
    monkeypatch.setattr(hf, "_capturing", lambda t: False)
    assert hf._decode_lengths(mask, 2, 8, device)[0] is not captured


@pytest.mark.parametrize("graphs", [True, False])
def test_probes_run_as_the_graphs_will(graphs, device, monkeypatch):
    """With CUDA graphs, optimize's probes run inside pdl.capturing(), as the small buckets'
    captures will, so that their kernels compile once (runtime/pdl.py); without, outside."""
    from tritonic.runtime import pdl

    swaps = importlib.import_module("tritonic.integrations.swaps")
    seen = []
    monkeypatch.setattr(pdl, "REQUESTED", True)
    monkeypatch.setattr(swaps, "swap_modules", lambda model: seen.append(pdl.ACTIVE) or ([], []))
    cls, cfg = _models()["bert"]
    tritonic.optimize(cls(cfg).to(device).eval(), cuda_graphs=graphs)
    assert seen == [graphs] and not pdl.ACTIVE


def test_compile_with_dynamic_shapes(device, monkeypatch):
    """``torch.compile(dynamic=True)`` of an optimized Llama (what transformers' compiled
    decoding does) traces our ops with symbolic token counts: the fake kernels must take
    them without hashing or specialising them, and pass the kernels constant constexprs.
    (The interpreter's kernels cannot be traced, so the traced launch is recorded here; on
    a GPU, tests/integrations/test_hf_gpu.py traces the real ones.)"""
    if device != "cpu":
        pytest.skip("the GPU run traces the real kernels (test_generate_under_transformers_compile)")
    launcher = importlib.import_module("tritonic.runtime.launcher")
    traced = []

    class _Recorded:  # wrap_triton(kernel)[grid](*args, **meta), recorded instead of run
        def __init__(self, kernel):
            self.name = kernel.__name__

        def __getitem__(self, grid):
            def run(*args, **meta):
                consts = all(isinstance(v, (bool, int, float, str, type(None))) for v in meta.values())
                traced.append((self.name, consts))
            return run

    monkeypatch.setattr(launcher, "wrap_triton", _Recorded)
    cls, config = _models()["llama"]
    torch.manual_seed(0)
    model = cls(config).eval()
    model.set_attn_implementation("sdpa")
    ref_model = copy.deepcopy(model).double()
    compiled = torch.compile(tritonic.optimize(copy.deepcopy(model)), dynamic=True, backend="eager")
    for S in (11, 7):
        kw = _inputs("llama", 2, S, device, 2)
        keep = kw["attention_mask"].bool()
        ours = _run(compiled, kw)[keep]
        assert_close_to_reference(f"llama S={S}", ours, _run(model, kw)[keep], _run(ref_model, kw)[keep], atol_ulps=8)
    names = {name for name, _ in traced}
    assert {"_norm_fwd", "_rope", "_attn_fwd"} <= names and all(c for _, c in traced), traced
