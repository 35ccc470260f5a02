"""optimize on model families the other tests do not build: every generic rewrite (stacked
projections, interleaved gate/up, fused residual norms, RoPE, encoder masks) must leave a
tiny random model's output as the original's, with a padded batch."""

import copy

import pytest
import torch

transformers = pytest.importorskip("transformers")

import tritonic  # noqa: E402

DECODERS = ["qwen3", "gemma", "mixtral", "starcoder2", "olmo2", "gpt_neox", "phi"]
ENCODERS = ["roberta", "albert", "bart"]


def _config(name):
    from transformers import AutoConfig

    if name == "bart":
        kw = dict(d_model=64, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=4,
                  encoder_ffn_dim=96, decoder_ffn_dim=96, max_position_embeddings=64)
    else:
        kw = dict(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                  max_position_embeddings=64)
        if name in DECODERS:
            kw["num_key_value_heads"] = 2
        if name in ("gemma", "qwen3"):
            kw["head_dim"] = 16
        if name == "albert":
            kw["embedding_size"] = 32
    try:
        return AutoConfig.for_model(name, vocab_size=97, **kw)
    except (ValueError, KeyError) as e:  # a family this transformers release does not have
        pytest.skip(f"{name}: {e}")


@pytest.mark.parametrize("name", DECODERS + ENCODERS)
def test_family_matches_the_original(name, device):
    from transformers import AutoModel

    torch.manual_seed(0)
    model = AutoModel.from_config(_config(name), attn_implementation="sdpa").to(device).eval()
    ref = copy.deepcopy(model)
    tritonic.optimize(model, cuda_graphs=False)
    ids = torch.randint(3, 97, (2, 9), device=device)
    mask = torch.ones_like(ids)
    mask[0, 6:] = 0  # padding on the right (the families' generate() pads left; both are masks here)
    kw = dict(input_ids=ids, attention_mask=mask)
    if name == "bart":
        kw["decoder_input_ids"] = torch.randint(3, 97, (2, 5), device=device)
    with torch.no_grad():
        for _ in range(2):  # the second call runs what the first may have turned off (cross-attention stacks)
            ours = model(**kw).last_hidden_state
    theirs = ref(**kw).last_hidden_state
    torch.testing.assert_close(ours, theirs, atol=2e-5, rtol=2e-5)
