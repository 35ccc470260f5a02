"""``optimize(model, training=True)`` for ``transformers`` causal LMs: the loss without logits.

A causal LM's forward computes ``logits = lm_head(hidden)`` for every token and then the
cross-entropy of the shifted labels: at 8192 tokens and a 128k vocabulary the logits and
their gradient are gigabytes. With ``training=True``, whenever ``labels`` are passed and
gradients are enabled, the model's forward runs its base model, then
:func:`tritonic.ops.fused_linear_cross_entropy` on the hidden states and the head's weight
(chunks of logits that never all exist); the output's ``logits`` is ``None`` on that path.
That path leaves ``use_cache`` as the call sets it. (Turning the new key/value cache off there
saves its ``torch.cat`` copies, but in ``transformers`` 5.17 a causal mask without a cache
goes through packed-sequence detection: a host sync per step, and under a CUDA-graph capture
or ``torch.compile``, where it cannot look, a full (B, 1, S, S) mask. GPT-2 124M's captured
step on the H200 went from 20.7 to 23.5 ms, cuDNN's attention taking twice as long.)
Without labels, or under ``torch.no_grad()`` (evaluation), the original forward runs.

The swap is checked like the others: on a probe batch, the loss and the gradients of the
head and the input embeddings must match the original forward's; otherwise the original
stays and the report says why. Models whose head does more than a linear map (logit
scaling, mixture-of-experts auxiliary losses) are left alone.
"""

from __future__ import annotations

import types

import torch

from tritonic.ops.loss import fused_linear_cross_entropy

__all__ = ["install_fused_loss"]


def _unsupported(model) -> str | None:
    cfg = model.config
    head = getattr(model, "lm_head", None)
    if not isinstance(head, torch.nn.Linear):
        return "no nn.Linear lm_head"
    base = getattr(model, getattr(model, "base_model_prefix", ""), None)
    if not isinstance(base, torch.nn.Module):
        return "no base model under base_model_prefix"
    for attr in ("logit_scale", "logits_scaling", "output_router_logits", "router_aux_loss_coef"):
        if getattr(cfg, attr, None) not in (None, False, 1, 1.0):
            return f"config.{attr} = {getattr(cfg, attr)!r} changes the loss"
    return None


def _fused_forward(self, *args, labels=None, logits_to_keep=0, num_items_in_batch=None, **kwargs):
    if labels is None or not torch.is_grad_enabled() or args:
        return self._tritonic_original_forward(*args, labels=labels, logits_to_keep=logits_to_keep,
                                               num_items_in_batch=num_items_in_batch, **kwargs)
    from transformers.modeling_outputs import CausalLMOutputWithPast

    kwargs.pop("return_dict", None)
    outputs = getattr(self, self.base_model_prefix)(**kwargs, return_dict=True)
    hidden = outputs.last_hidden_state
    shift = torch.nn.functional.pad(labels, (0, 1), value=-100)[..., 1:]  # tokens < n predict n
    softcap = getattr(self.config, "final_logit_softcapping", None)
    head = self.lm_head
    if num_items_in_batch is None:
        loss = fused_linear_cross_entropy(hidden, head.weight, shift.to(hidden.device), head.bias, softcap=softcap,
                                          check_targets=False)
    else:  # gradient accumulation: transformers divides the summed loss by the batch's token count
        loss = fused_linear_cross_entropy(hidden, head.weight, shift.to(hidden.device), head.bias, reduction="sum",
                                          softcap=softcap, check_targets=False) / num_items_in_batch
    return CausalLMOutputWithPast(loss=loss, logits=None, past_key_values=getattr(outputs, "past_key_values", None),
                                  hidden_states=getattr(outputs, "hidden_states", None),
                                  attentions=getattr(outputs, "attentions", None))


def _probe(model) -> str | None:
    """None when the fused forward gives the original's loss and gradients on a probe batch."""
    device = model.lm_head.weight.device
    vocab = model.lm_head.weight.shape[0]
    gen = torch.Generator(device="cpu").manual_seed(0)
    ids = torch.randint(0, vocab, (2, 9), generator=gen).to(device)
    labels = ids.clone()
    labels[0, :3] = -100
    params = [p for p in (model.lm_head.weight, model.get_input_embeddings().weight) if p.requires_grad]
    was_training = model.training
    model.eval()  # no dropout: both forwards must see the same network
    try:
        results = []
        for fwd in (model._tritonic_original_forward, types.MethodType(_fused_forward, model)):
            out = fwd(input_ids=ids, labels=labels, use_cache=False)
            grads = torch.autograd.grad(out.loss, params, allow_unused=True) if params else ()
            results.append((out.loss.detach().double(), [None if g is None else g.double() for g in grads]))
    except Exception as e:
        return f"probe failed: {type(e).__name__}: {e}"
    finally:
        model.train(was_training)
    (l0, g0), (l1, g1) = results
    tol = 8 * torch.finfo(model.lm_head.weight.dtype).eps
    if not torch.allclose(l0, l1, rtol=tol * 4, atol=tol * 4):
        return f"probe loss {l1.item():.6g}, the original gives {l0.item():.6g}"
    for a, b in zip(g0, g1):
        if (a is None) != (b is None) or (a is not None and not torch.allclose(a, b, rtol=1e-2, atol=tol * 16 *
                                                                               a.abs().max().item())):
            return "probe gradients differ from the original's"
    return None


def install_fused_loss(model) -> tuple[list[str], list[str]]:
    """Give a causal LM the fused-loss forward (checked on a probe batch); (replaced, kept) lines."""
    why = _unsupported(model)
    if why is not None:
        return [], [f"loss ({type(model).__name__}): {why}"]
    if not hasattr(model, "_tritonic_original_forward"):
        model._tritonic_original_forward = model.forward
    why = _probe(model)
    if why is not None:
        return [], [f"loss ({type(model).__name__}): {why}"]
    model.forward = types.MethodType(_fused_forward, model)
    return ["loss: lm_head + cross-entropy -> fused_linear_cross_entropy (no logits when labels are given and "
            "gradients are on)"], []
