"""tritonic.models.GPT against its pure-PyTorch twin: same parameters, same loss and
gradients, and 20 training steps that stay on the twin's trajectory (the float64 twin is the
truth; tests/helpers.py's rule at every step)."""

import pytest
import torch

from tests.helpers import assert_close_to_reference
from tritonic.models import GPT, GPTConfig

CONFIGS = {
    "gpt2": GPTConfig(vocab_size=64, n_layer=2, n_head=2, d_model=32, max_seq=16),
    "llama": GPTConfig.llama(vocab_size=64, n_layer=2, n_head=4, n_kv_head=2, d_model=32, max_seq=16),
    "gpt2-alibi": GPTConfig(vocab_size=64, n_layer=1, n_head=2, d_model=32, max_seq=16, alibi=True),
}


def _three(name, device):
    """(tritonic, torch twin, float64 torch twin) from one initialisation."""
    torch.manual_seed(0)
    ours = GPT(CONFIGS[name]).to(device)
    twin = GPT(CONFIGS[name], backend="torch").to(device)
    twin.load_state_dict(ours.state_dict())
    ref = GPT(CONFIGS[name], backend="torch").to(device).double()
    ref.load_state_dict(ours.state_dict())
    return ours, twin, ref


def test_same_parameters_and_bad_config():
    ours, twin = GPT(CONFIGS["llama"]), GPT(CONFIGS["llama"], backend="torch")
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in twin.named_parameters()]
    with pytest.raises(ValueError, match="n_kv_head"):
        GPTConfig(d_model=64, n_head=4, n_kv_head=3)
    with pytest.raises(ValueError, match="backend"):
        GPT(CONFIGS["gpt2"], backend="jax")
    with pytest.raises(ValueError, match="max_seq"):
        GPT(CONFIGS["gpt2"])(torch.zeros(1, 17, dtype=torch.long))


@pytest.mark.parametrize("name", list(CONFIGS))
def test_trains_like_its_twin(name, device):
    ours, twin, ref = _three(name, device)
    opts = [torch.optim.AdamW(m.parameters(), lr=3e-3, weight_decay=0.01) for m in (ours, twin, ref)]
    gen = torch.Generator().manual_seed(1)
    steps = 10 if name != "gpt2-alibi" else 5  # (10: CI time; the loss falls well below 0.97x by then)
    for step in range(steps):
        idx = torch.randint(0, 64, (2, 12), generator=gen).to(device)
        tgt = (idx * 3 + 1) % 64  # a function of the current token: learnable in a few steps
        losses = []
        for model, opt in zip((ours, twin, ref), opts):
            opt.zero_grad(set_to_none=True)
            loss = model(idx, tgt)[1]
            loss.backward()
            opt.step()
            losses.append(loss.detach())
        if step == 0:
            losses_first = losses[0].item()
        assert_close_to_reference(f"{name} loss at step {step}", losses[0], losses[1], losses[2], atol_ulps=16)
    assert losses[0] < 0.97 * losses_first  # it learned something

