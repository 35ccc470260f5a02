"""capture_train_step: the warm-up leaves nothing behind, the captured step checks its batch,
and (on a GPU) a captured step trains exactly as the same steps run plainly."""

import copy

import pytest
import torch

import tritonic
from tritonic.runtime import cudagraph


def _setup(device, lr=1e-2):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.GELU(), torch.nn.Linear(16, 4)).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=torch.tensor(lr, device=device), weight_decay=0.1,
                            foreach=False)
    return model, opt


def _step_fn(model, opt):
    def step(x, y):
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()
        return loss
    return step


@pytest.mark.parametrize("prior_steps", [0, 2])
def test_warm_up_changes_nothing(prior_steps):
    """Warm-up steps at learning rate 0 with the optimizer state put back: the next real steps
    give the parameters of a run that never warmed up (with or without state beforehand)."""
    model, opt = _setup("cpu")
    twin, twin_opt = copy.deepcopy((model, opt))
    x, y = torch.randn(5, 8), torch.randn(5, 4)
    for m, o in ((model, opt), (twin, twin_opt)):
        for _ in range(prior_steps):
            o.zero_grad()
            _step_fn(m, o)(x, y)
    cudagraph._warm_up(_step_fn(model, opt), opt, (x, y), 3, None)
    assert all(p.grad is None for p in model.parameters())
    assert float(opt.param_groups[0]["lr"]) == pytest.approx(1e-2)
    for m, o in ((model, opt), (twin, twin_opt)):
        for _ in range(2):
            o.zero_grad()
            _step_fn(m, o)(x, y)
    for p, q in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0)


def test_optimizer_made_capturable():
    model, _ = _setup("cpu")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    cudagraph._make_capturable(opt, torch.device("cpu"))
    group = opt.param_groups[0]
    assert group["capturable"] and torch.is_tensor(group["lr"]) and float(group["lr"]) == pytest.approx(1e-3)
    with pytest.raises(ValueError, match="no 'capturable' option"):
        cudagraph._make_capturable(torch.optim.SGD(model.parameters(), lr=0.1), torch.device("cpu"))


def test_captured_step_checks_its_batch():
    class Graph:
        replays = 0

        def replay(self):
            Graph.replays += 1

    inputs = (torch.zeros(2, 3), torch.zeros(2, dtype=torch.long))
    step = cudagraph.CapturedStep(Graph(), inputs, "loss")
    assert step(torch.ones(2, 3), torch.tensor([4, 5])) == "loss" and Graph.replays == 1
    assert inputs[0].eq(1).all() and inputs[1].tolist() == [4, 5]
    with pytest.raises(ValueError, match=r"batch tensor 0 must be \(2, 3\)"):
        step(torch.ones(3, 3), torch.tensor([4, 5]))
    with pytest.raises(ValueError, match="torch.int64"):
        step(torch.ones(2, 3), torch.tensor([4.0, 5.0]))
    with pytest.raises(TypeError, match="captured with 2 batch tensors"):
        step(torch.ones(2, 3))


def test_batch_must_be_on_the_gpu():
    model, opt = _setup("cpu")
    with pytest.raises(ValueError, match="CUDA tensors"):
        tritonic.capture_train_step(_step_fn(model, opt), opt, (torch.randn(5, 8), torch.randn(5, 4)))


@pytest.mark.gpu
def test_captured_hf_training_steps_match_plain_ones():
    """GPT-2 (tiny, no dropout) with optimize(training=True): four captured steps give the
    losses and parameters of four plain steps from the same start."""
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(vocab_size=101, n_embd=64, n_layer=2, n_head=4, n_positions=64, resid_pdrop=0.0,
                        embd_pdrop=0.0, attn_pdrop=0.0)
    torch.manual_seed(0)
    models = [tritonic.optimize(GPT2LMHeadModel(config).cuda().train(), training=True) for _ in range(2)]
    models[1].load_state_dict(models[0].state_dict())
    opts = [torch.optim.AdamW(m.parameters(), lr=torch.tensor(1e-3, device="cuda"), fused=True, capturable=True)
            for m in models]
    batches = [torch.randint(0, 101, (2, 33), device="cuda") for _ in range(4)]

    def fn(model, opt):
        def step(ids):
            loss = model(input_ids=ids, labels=ids).loss
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=False)
            return loss.detach()
        return step

    plain = [fn(models[0], opts[0])(ids).item() for ids in batches]
    step = tritonic.capture_train_step(fn(models[1], opts[1]), opts[1], batches[0])
    captured = [step(ids).item() for ids in batches]
    assert captured == pytest.approx(plain, rel=1e-4, abs=1e-5)
    for (name, p), q in zip(models[0].named_parameters(), models[1].parameters()):
        if name.endswith("attn.c_attn.bias"):
            # the key third of this bias has a true gradient of exactly zero (softmax ignores a
            # shift shared by all keys), so its gradient is rounding noise that Adam scales up to
            # steps of ~lr: compare the query and value thirds tightly, the key third within 4 lr
            p, q = p.view(3, -1), q.view(3, -1)
            torch.testing.assert_close(p[[0, 2]], q[[0, 2]], rtol=1e-3, atol=1e-5)
            assert (p[1] - q[1]).abs().max() <= 4e-3
        else:
            torch.testing.assert_close(p, q, rtol=1e-3, atol=1e-5)


@pytest.mark.gpu
def test_a_step_that_syncs_is_refused_and_plain_steps_still_work():
    model, _ = _setup("cuda")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, fused=True)
    x, y = torch.randn(5, 8, device="cuda"), torch.randn(5, 4, device="cuda")

    def syncing(x, y):
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        if loss.item() > 1e9:  # a host sync: not capturable
            pass
        opt.step()
        return loss

    with pytest.raises(RuntimeError, match="cannot be captured"):
        tritonic.capture_train_step(syncing, opt, (x, y))
    assert all(p.grad is None for p in model.parameters())
    before = [p.detach().clone() for p in model.parameters()]
    opt.zero_grad()
    syncing(x, y)  # without the graph: an ordinary step that moves the parameters
    assert any(not torch.equal(p, q) for p, q in zip(model.parameters(), before))
    assert torch.randn(2, device="cuda").isfinite().all()  # the generator is usable again
