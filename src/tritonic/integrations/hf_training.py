"""``optimize(model, training=True)`` for ``transformers`` causal LMs: the loss without logits.

A causal LM's forward computes ``logits = lm_head(hidden)`` for every token and then the
cross-entropy of the shifted labels: at 8192 tokens and a 128k vocabulary the logits and
their gradient are gigabytes. With ``training=True``, whenever ``labels`` are passed and
gradients are enabled, the model's forward runs its base model, then
:func:`tritonic.ops.fused_linear_cross_entropy` on the hidden states and the head's weight
(chunks of logits that never all exist); the output's ``logits`` is ``None`` on that path.
That path also runs the base model without a new key/value cache (unless the call sets
``use_cache`` or passes ``past_key_values``): a loss needs none, and building one copies every
layer's keys and values with ``torch.cat`` (GPT-2 124M, batch 8×1024: ~1.2 ms of a 20 ms
step on an H200) and keeps them alive through the backward. Without a cache, ``transformers``
(5.17) looks for packed sequences in the position ids, which syncs with the host every step,
and inside a CUDA-graph capture or ``torch.compile``, where it cannot look, it assumes there
may be some and builds a full (B, 1, S, S) mask, which halves cuDNN's attention speed
(GPT-2 124M's captured step: 23.5 ms instead of 20.7). So while the base model runs for a
call that passed no ``position_ids``, whose positions the model therefore numbers 0..S-1
itself, the detection answers "not packed" without looking (:func:`_install_no_packing`);
calls with ``position_ids`` (packed batches) are detected as before.
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


# True while the base model runs for a loss-path call without position_ids (see the module's
# docstring); a plain global so that torch.compile guards on it instead of breaking the graph.
_MODEL_NUMBERS_POSITIONS = False
_NO_PACKING = [False]  # whether _install_no_packing has wrapped transformers' detection


def _install_no_packing() -> bool:
    """Wrap ``transformers.masking_utils.find_packed_sequence_indices`` (idempotent): "not
    packed" while :data:`_MODEL_NUMBERS_POSITIONS`, the original otherwise. False where this
    ``transformers`` has no such function (then the loss path keeps its cache)."""
    try:
        import transformers.masking_utils as mu
    except ImportError:
        return False
    real = getattr(mu, "find_packed_sequence_indices", None)
    if real is None:
        return False
    if getattr(real, "_tritonic_wrapped", False):
        _NO_PACKING[0] = True
        return True

    def find_packed_sequence_indices(position_ids, *args, **kwargs):
        if _MODEL_NUMBERS_POSITIONS:
            return None
        return real(position_ids, *args, **kwargs)

    find_packed_sequence_indices._tritonic_wrapped = True
    find_packed_sequence_indices.__doc__ = real.__doc__
    mu.find_packed_sequence_indices = find_packed_sequence_indices
    _NO_PACKING[0] = True
    return True


def _fused_forward(self, *args, labels=None, logits_to_keep=0, num_items_in_batch=None, **kwargs):
    if labels is None or not torch.is_grad_enabled() or args:
        return self._tritonic_original_forward(*args, labels=labels, logits_to_keep=logits_to_keep,
                                               num_items_in_batch=num_items_in_batch, **kwargs)
    from transformers.modeling_outputs import CausalLMOutputWithPast

    global _MODEL_NUMBERS_POSITIONS

    kwargs.pop("return_dict", None)
    own_positions = kwargs.get("position_ids") is None
    if "use_cache" not in kwargs and kwargs.get("past_key_values") is None and own_positions and _NO_PACKING[0]:
        kwargs["use_cache"] = False  # see the module's docstring
    outer, _MODEL_NUMBERS_POSITIONS = _MODEL_NUMBERS_POSITIONS, own_positions
    try:
        outputs = getattr(self, self.base_model_prefix)(**kwargs, return_dict=True)
    finally:
        _MODEL_NUMBERS_POSITIONS = outer
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
    _install_no_packing()
    model.forward = types.MethodType(_fused_forward, model)
    return ["loss: lm_head + cross-entropy -> fused_linear_cross_entropy (no logits when labels are given and "
            "gradients are on; no new key/value cache there)"], []
