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
