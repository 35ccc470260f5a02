"""Hugging Face ``transformers`` integration: attention through tritonic's kernels.

    import tritonic
    model = tritonic.optimize(model)        # attention now runs tritonic.ops.attention
    print(model.tritonic_report)

Attention is plugged in the way ``transformers`` intends, without patching model files: one
function registered with its ``AttentionInterface`` under the name ``"tritonic"`` and, with
its ``AttentionMaskInterface``, the mask function SDPA uses (boolean masks, True = attend,
or None where causality alone describes the mask), except for causal masks with as many
keys as queries (see :func:`tritonic_mask`). Without padding, such a mask stays None inside
a CUDA-graph capture or ``torch.compile`` too. With padding, it becomes the padding's
(B, 1, 1, S) key row, to which the attention adds the causality. Every model that dispatches
through the interface is covered: BERT (key padding), GPT-2 (causal), T5 (``position_bias`` as an
additive bias, no 1/sqrt(d) scaling; encoder, decoder and cross attention), Llama, Mistral,
Qwen2 (causal, GQA), and others.

What the kernels do not cover goes to ``transformers``' own SDPA function, and the report
says so: attention dropout while training, paged caches, key and value head dims that differ
from the query's. What SDPA cannot compute either (a ``softcap``, attention sinks passed as
``s_aux`` as gpt-oss does, ``output_attentions``) goes to the model's own eager attention
function (``eager_attention_forward`` of its modeling file), with the boolean mask turned
back into the additive one that function expects; a model without one raises an error
rather than returning a wrong answer.

Norms are swapped for tritonic modules (``integrations/swaps.py``), each checked on a probe
input; inference calls replay CUDA graphs per (batch, sequence bucket)
(``integrations/graphs.py``), and decode steps of ``generate()`` over a static cache per
(batch, cache).
"""

from __future__ import annotations

import collections
import contextlib
import sys
import weakref

import torch

from tritonic.ops.attention import attention
from tritonic.ops.attention_decode import attention_decode
from tritonic.runtime.pdl import capturing

__all__ = ["ATTENTION_NAME", "optimize", "register", "tritonic_attention_forward"]

ATTENTION_NAME = "tritonic"

# (reason -> calls) of attention calls handed to SDPA instead of the kernels, this process
FALLBACKS: collections.Counter = collections.Counter()


def _sdpa(*args, **kwargs):
    """``transformers``' SDPA function, inputs as given. (GPT-2's query, key and value are
    strided views of one projection; on the H200 cuDNN's attention with dropout took 0.34 ms
    forward+backward on those views at 8×12×1024, d64, and 0.42 ms with key and value copied
    contiguous first: ``scripts/sdpa_layout_ab.py``.)"""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    return sdpa_attention_forward(*args, **kwargs)


# Fallback reasons that SDPA cannot take either: the model's own eager attention runs them.
_EAGER = ("output_attentions=True (the kernels never form the attention weights)", "softcap",
          "attention sinks (s_aux)")


def _fallback_reason(module, query, key, value, dropout, kwargs) -> str | None:
    if kwargs.get("output_attentions"):
        return _EAGER[0]
    if kwargs.get("softcap") is not None:
        return _EAGER[1]
    if kwargs.get("s_aux") is not None:
        return _EAGER[2]
    if dropout and module.training:
        return "attention dropout while training"
    if kwargs.get("cache") is not None:
        return "a paged cache"
    if query.dim() != 4 or key.shape[-1] != query.shape[-1] or value.shape[-1] != query.shape[-1]:
        return "query, key and value head dims differ"
    return None


def _eager(module, query, key, value, attention_mask, dropout, scaling, is_causal, reason, kwargs):
    """The model's own ``eager_attention_forward`` (softcap, sinks, attention weights). Our mask
    function hands out SDPA's masks: boolean (True = attend), or None where causality alone
    describes it; eager functions add a float mask to the scores, so it is rebuilt as one."""
    fn = getattr(sys.modules.get(type(module).__module__), "eager_attention_forward", None)
    if fn is None:
        raise NotImplementedError(
            f"tritonic.optimize: {type(module).__name__} asks for {reason}, which neither tritonic's kernels nor "
            f"SDPA compute, and its modeling file has no eager_attention_forward to hand it to; run this model "
            f"without tritonic.optimize")
    q_len, kv_len = query.shape[2], key.shape[2]
    neg = torch.finfo(query.dtype).min
    if attention_mask is None:
        causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
        if causal and q_len > 1:  # bottom-right aligned, as the cache's query positions are the last ones
            i = torch.arange(q_len, device=query.device)[:, None] + (kv_len - q_len)
            keep = torch.arange(kv_len, device=query.device)[None, :] <= i
            attention_mask = torch.zeros(q_len, kv_len, dtype=query.dtype, device=query.device)
            attention_mask = attention_mask.masked_fill(~keep, neg)[None, None]
    elif attention_mask.dtype == torch.bool:
        attention_mask = torch.zeros(attention_mask.shape, dtype=query.dtype,
                                     device=query.device).masked_fill(~attention_mask, neg)
    return fn(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)


# (weakref to a mask, its version, whether a CUDA graph was being captured, (seqlens, key mask))
_LAST_DECODE_MASK: list = [None, -1, False, None]


def _capturing(t: torch.Tensor) -> bool:
    """Whether ``t``'s work would go into a CUDA graph being captured."""
    return t.is_cuda and torch.cuda.is_current_stream_capturing()


def _decode_lengths(attention_mask, batch: int, kv_len: int, device):
    """(cache_seqlens, key_mask) for ``attention_decode`` from a decode step's mask: None (every
    key of the cache counts), or SDPA's boolean (B or 1, 1, 1, kv_len) key mask, whose last
    True position ends each sequence (a static cache's unused slots lie past it) and whose
    holes are left padding. None for any other mask. Computed on the device (no host sync,
    so it can be captured); the layers of one forward share their mask, so it is computed
    once per step."""
    if attention_mask is None:
        return torch.full((batch,), kv_len, dtype=torch.int32, device=device), None
    if attention_mask.dtype != torch.bool or attention_mask.dim() != 4 or attention_mask.shape[1:3] != (1, 1) or \
            attention_mask.shape[3] != kv_len or attention_mask.shape[0] not in (1, batch):
        return None
    # a graph must compute its own (a warm-up's tensors, reused in the capture, would be
    # replayed unchanged every step), and eager calls must not read a graph's buffers
    capturing = _capturing(attention_mask)
    ref, version, was_capturing, cached = _LAST_DECODE_MASK
    if ref is not None and ref() is attention_mask and version == attention_mask._version and \
            was_capturing == capturing:
        return cached
    key_mask = attention_mask[:, 0, 0, :].expand(batch, kv_len)
    if key_mask.stride(-1) != 1:
        key_mask = key_mask.contiguous()
    positions = torch.arange(1, kv_len + 1, dtype=torch.int32, device=device)
    seqlens = torch.where(key_mask, positions, 0).amax(-1).to(torch.int32)
    _LAST_DECODE_MASK[:] = [weakref.ref(attention_mask), attention_mask._version, capturing, (seqlens, key_mask)]
    return seqlens, key_mask


def _causal_key_mask(module, query, key, attention_mask, is_causal) -> bool:
    """Is ``attention_mask`` the (B, 1, 1, S) key row that :func:`tritonic_mask` hands a causal
    attention in place of the full mask (causality still to be applied)?"""
    return (attention_mask is not None and attention_mask.dtype == torch.bool and attention_mask.dim() == 4
            and attention_mask.shape[1] == 1 and attention_mask.shape[2] == 1 and query.dim() == 4
            and 1 < query.shape[2] == key.shape[2] == attention_mask.shape[3]
            and (is_causal if is_causal is not None else getattr(module, "is_causal", False)) is True)


# (weakref to a key row, its version, whether a CUDA graph was being captured, the full mask)
_LAST_FULL_MASK: list = [None, -1, False, None]


def _with_causality(attention_mask, q_len: int):
    """The full (B, 1, S, S) boolean mask from a key row: the keys kept and not in the future.
    The layers of one forward share their key row, so it is built once per forward (and,
    as for the decode lengths, never reused across the start of a CUDA-graph capture)."""
    tril = lambda: torch.ones(q_len, q_len, dtype=torch.bool, device=attention_mask.device).tril()  # noqa: E731
    if torch.compiler.is_compiling():  # traced once anyway; no memo of traced tensors
        return attention_mask & tril()
    capturing = _capturing(attention_mask)
    ref, version, was_capturing, full = _LAST_FULL_MASK
    if ref is not None and ref() is attention_mask and version == attention_mask._version and \
            was_capturing == capturing:
        return full
    full = attention_mask & tril()
    _LAST_FULL_MASK[:] = [weakref.ref(attention_mask), attention_mask._version, capturing, full]
    return full


def tritonic_attention_forward(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                               attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                               is_causal: bool | None = None, position_bias: torch.Tensor | None = None,
                               **kwargs) -> tuple[torch.Tensor, None]:
    """``transformers``' attention-function interface: query ``(B, H, Sq, D)``, key and value
    ``(B, H_kv, Sk, D)`` (grouped-query attention is handled by the kernel, no ``repeat_kv``);
    returns ``(output (B, Sq, H, D), None)``."""
    reason = _fallback_reason(module, query, key, value, dropout, kwargs)
    key_row = _causal_key_mask(module, query, key, attention_mask, is_causal)
    if reason is not None:
        if not torch.compiler.is_compiling():  # a traced count would guard the graph on it: a recompile per call
            FALLBACKS[reason] += 1
        if key_row:  # SDPA and eager functions take causality from the mask
            attention_mask = _with_causality(attention_mask, query.shape[2])
        if reason in _EAGER:
            return _eager(module, query, key, value, attention_mask, dropout, scaling, is_causal, reason, kwargs)
        return _sdpa(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                     is_causal=is_causal, position_bias=position_bias, **kwargs)
    q_len, kv_len = query.shape[2], key.shape[2]
    if q_len == 1 and position_bias is None and not torch.compiler.is_compiling():
        decode = _decode_lengths(attention_mask, query.shape[0], kv_len, query.device)
        if decode is not None:  # one new token per sequence over a cache: flash-decoding
            seqlens, key_mask = decode
            out = attention_decode(query, key, value, seqlens, causal=False, scale=scaling, key_mask=key_mask)
            return out.transpose(1, 2).contiguous(), None
    causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    # a mask, when given, holds the causality, except tritonic_mask's key row
    causal = bool(q_len > 1 and (attention_mask is None or key_row) and causal)
    if causal and kv_len > q_len:
        # prefill into an empty static cache: the slots past the prompt are empty, and
        # transformers' causal convention here is top-left (ours is bottom-right)
        key, value = key[:, :, :q_len], value[:, :, :q_len]
        if position_bias is not None:
            position_bias = position_bias[..., :q_len]
    mask = bias = None
    if attention_mask is not None:
        if attention_mask.dtype == torch.bool:
            mask = attention_mask
        else:  # an additive float mask (eager-style): a bias with -inf or dtype-min entries
            bias = attention_mask
    if position_bias is not None:
        bias = position_bias if bias is None else bias + position_bias
    out = attention(query, key, value, causal=causal, mask=mask, bias=bias, scale=scaling)
    return out.transpose(1, 2).contiguous(), None


def tritonic_mask(batch_size, q_length, kv_length, q_offset=0, kv_offset=0, mask_function=None, attention_mask=None,
                  local_size=None, allow_is_causal_skip=True, **kwargs):
    """``transformers``' SDPA mask function, except for a causal mask with as many keys as
    queries and no cache offset, and a bidirectional (encoder) mask without offsets, which is
    the padding mask's key row (B, 1, 1, S), or None without a padding mask. Without an ``attention_mask`` it is None, so attention runs
    causal without a mask, also where ``transformers`` refuses to look (inside a CUDA-graph
    capture, under ``torch.compile``). With a 2-D padding mask it is that mask's (B, 1, 1, S)
    key row, and the attention adds the causality itself
    (:func:`_causal_key_mask`): the kernel's key-padding and causal paths, no (B, 1, S, S)
    tensor, and no host sync (``transformers`` reads the padding mask to decide whether it
    can skip it). Every fact that decides this is a shape or an argument, never a tensor's
    contents, so a captured graph or a compiled function stays right for every later call.
    Where ``transformers`` 5.17 builds the (B, 1, S, S) mask instead, GPT-2 124M's captured
    training step on the H200 spent 3.7 ms more in cuDNN's attention than without it."""
    from transformers.masking_utils import causal_mask_function, sdpa_mask

    if mask_function is None:
        mask_function = causal_mask_function
    if (mask_function is _bidirectional() and kwargs.get("allow_is_bidirectional_skip", True) and local_size is None
            and type(q_length) is int and type(kv_length) is int and q_length >= 1
            and type(q_offset) is int and q_offset == 0 and type(kv_offset) is int and kv_offset == 0):
        # a bidirectional (encoder) mask is the padding mask's key row for every query:
        # (B, 1, 1, S), read by the kernel's key-padding path. transformers instead reads the
        # mask's contents to drop an all-ones one (a host sync) except under capture, where it
        # builds (B, 1, S, S); a graph warmed up without a mask then captured with one ran an
        # attention variant the warm-up had not tuned.
        if attention_mask is None:
            return None
        if attention_mask.dim() == 2 and tuple(attention_mask.shape) == (batch_size, kv_length):
            return attention_mask.bool()[:, None, None, :]
    if (mask_function is causal_mask_function and allow_is_causal_skip
            and local_size is None and type(q_length) is int and type(kv_length) is int and 1 < q_length == kv_length
            and type(q_offset) is int and q_offset == 0 and type(kv_offset) is int and kv_offset == 0):
        if attention_mask is None:
            return None
        if attention_mask.dim() == 2 and tuple(attention_mask.shape) == (batch_size, kv_length):
            # padding over a causal mask: the keys' row alone, (B, 1, 1, S); the attention adds
            # the causality (see tritonic_attention_forward)
            return attention_mask.bool()[:, None, None, :]
    return sdpa_mask(batch_size, q_length, kv_length, q_offset=q_offset, kv_offset=kv_offset,
                     mask_function=mask_function, attention_mask=attention_mask, local_size=local_size,
                     allow_is_causal_skip=allow_is_causal_skip, **kwargs)


def _bidirectional():
    """``transformers``' bidirectional mask function (None in releases without one)."""
    from transformers import masking_utils

    return getattr(masking_utils, "bidirectional_mask_function", None)


def register() -> None:
    """Register ``"tritonic"`` with ``transformers``' attention and attention-mask interfaces
    (idempotent)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(ATTENTION_NAME, tritonic_attention_forward)
    AttentionMaskInterface.register(ATTENTION_NAME, tritonic_mask)


def _attention_modules(model) -> int:
    """Attention modules that will call our function: named ``*Attention``, with ``is_causal``,
    a ``config`` whose attention implementation is now ours (T5 in transformers 5.17 keeps
    per-stack copies of the config that ``set_attn_implementation`` does not reach), from a
    modeling file that imports ``ALL_ATTENTION_FUNCTIONS``."""
    return sum(1 for m in model.modules() if hasattr(m, "config") and hasattr(m, "is_causal")
               and m.__class__.__name__.endswith("Attention")
               and getattr(m.config, "_attn_implementation", None) == ATTENTION_NAME
               and hasattr(sys.modules.get(type(m).__module__), "ALL_ATTENTION_FUNCTIONS"))


class Report:
    """What :func:`optimize` did to a model: one line per change, plus what was kept and why."""

    def __init__(self):
        self.replaced: list[str] = []
        self.kept: list[str] = []
        self.stacks: list = []  # (module name, stacking group): groups turned off at run time are reported

    def __str__(self) -> str:
        lines = ["tritonic.optimize:"]
        lines += [f"  replaced: {r}" for r in self.replaced] or ["  replaced: nothing"]
        lines += [f"  kept:     {k}" for k in self.kept]
        lines += [f"  unstacked at run time: {name}: {g.why_off}" for name, g in self.stacks if not g.on]
        if FALLBACKS:
            for why, n in FALLBACKS.items():
                to = "the model's eager attention" if why in _EAGER else "SDPA"
                lines.append(f"  attention calls handed to {to} so far: {n} ({why})")
        return "\n".join(lines)

    __repr__ = __str__


def optimize(model, *, dtype=None, cuda_graphs: bool = True, buckets=None, training: bool = False):
    """Make a ``transformers`` model run tritonic's kernels, in place; returns the model.

    Today this sets the model's attention implementation to ``"tritonic"`` (see the module
    docstring), which every model using ``transformers``' attention interface honours, and
    swaps norms for tritonic modules where a probe input shows they compute the same thing
    (:mod:`tritonic.integrations.swaps`). With ``training=True``, causal LMs also compute their
    loss with the fused linear cross-entropy, never forming the logits
    (:mod:`tritonic.integrations.hf_training`). The report is ``model.tritonic_report``.

    ``dtype`` casts the model first (``torch.float16``, ``torch.bfloat16``). With
    ``cuda_graphs`` (the default; GPU models, not with ``training``), inference calls replay a
    CUDA graph per (batch, sequence bucket), ``buckets`` being the sequence lengths inputs
    are padded up to (default 16, 32, ..., 2048): see :mod:`tritonic.integrations.graphs`;
    ``model.tritonic_graphs.stats`` counts replays, captures and eager calls with reasons."""
    try:
        import transformers  # noqa: F401
    except ImportError as e:
        raise ImportError("tritonic.optimize needs transformers (pip install 'tritonic[hf]')") from e
    if not hasattr(model, "set_attn_implementation") or not hasattr(model, "config"):
        raise TypeError(f"tritonic.optimize: expected a transformers PreTrainedModel, got {type(model).__name__}")
    report = Report()
    if dtype is not None:
        if dtype not in (torch.float16, torch.bfloat16, torch.float32):
            raise ValueError(f"tritonic.optimize: dtype must be torch.float16, torch.bfloat16 or torch.float32, "
                             f"got {dtype!r}")
        model.to(dtype)
    param = next(model.parameters(), None)
    if param is not None:
        from tritonic.runtime import can_run_kernels, has_cuda

        if not can_run_kernels(param.device):
            from tritonic.runtime.device import gpu_problem

            problem = gpu_problem(param.device.index or 0) if param.device.type == "cuda" and has_cuda() else None
            if problem:
                hint = problem
            elif has_cuda():
                hint = "move it to the GPU first (model.cuda())"
            else:
                hint = "set TRITON_INTERPRET=1 before importing tritonic to run the kernels in Triton's interpreter"
            report.kept.append(f"everything: the model is on {param.device}, where tritonic's kernels cannot run; "
                               f"{hint}")
            model.tritonic_report = report
            return model
        if param.dtype not in (torch.float16, torch.bfloat16, torch.float32):
            report.kept.append(f"everything: the model is in {param.dtype}; the kernels take float16, bfloat16 and "
                               f"float32 (model.half() or model.bfloat16())")
            model.tritonic_report = report
            return model
    register()
    before = getattr(model.config, "_attn_implementation", None)
    try:
        model.set_attn_implementation(ATTENTION_NAME)
    except (ValueError, NotImplementedError) as e:  # a model that cannot take a custom function
        report.kept.append(f"attention ({before}): {e}")
    else:
        # Copies of the config that set_attn_implementation did not reach (T5's encoder and
        # decoder stacks deep-copy it; transformers 5.17 leaves those copies as they were).
        for m in model.modules():
            cfg = getattr(m, "config", None)
            if cfg is not model.config and getattr(cfg, "_attn_implementation", None) == before:
                try:
                    cfg._attn_implementation = ATTENTION_NAME
                except (AttributeError, ValueError):  # a config that does not take it: left as it is
                    pass
        n = _attention_modules(model)
        report.replaced.append(f"attention: {before} -> {ATTENTION_NAME} ({n} modules use the interface)")
        if n == 0:
            report.kept.append("attention: no module of this model dispatches through transformers' attention "
                               "interface with it in this transformers release, so its own attention still runs")
    # The probes below compile the kernels they run. With graphs (inference), the captures of
    # small buckets launch PDL variants (runtime/pdl.py): probing inside capturing() compiles
    # those, so that the first call of a small bucket does not compile every kernel twice.
    with capturing() if cuda_graphs and not training else contextlib.nullcontext():
        from tritonic.integrations.swaps import swap_modules

        replaced, kept = swap_modules(model)
        report.replaced += replaced
        report.kept += kept
        if not training:  # (under autograd the members run alone anyway)
            from tritonic.integrations.stacking import stack_gated_mlps, stack_projections

            for stack in (stack_projections, stack_gated_mlps):
                replaced, kept = stack(model)
                report.replaced += replaced
                report.kept += kept
            report.stacks = model.tritonic_stacks
            from tritonic.integrations.residual import fuse_residual_norms

            replaced, kept = fuse_residual_norms(model)
            report.replaced += replaced
            report.kept += kept
            from tritonic.integrations.gemm_route import route_plain_products  # (opt-in, TRITONIC_INFER_GEMM)

            replaced, kept = route_plain_products(model)
            report.replaced += replaced
            report.kept += kept
        from tritonic.integrations.rotary import install_rope

        replaced, kept = install_rope(model)
        report.replaced += replaced
        report.kept += kept
    if training:
        from tritonic.integrations.hf_training import install_fused_loss

        replaced, kept = install_fused_loss(model)
        report.replaced += replaced
        report.kept += kept
    _install_graphs(model, report, cuda_graphs, buckets, training)
    model.tritonic_report = report
    return model


def _install_graphs(model, report, cuda_graphs, buckets, training) -> None:
    from tritonic.integrations.graphs import GraphedForward
    from tritonic.integrations.greedy import FastGreedy

    current = model.__dict__.get("forward")
    if isinstance(current, GraphedForward):  # optimized before: start again from the model's own forward
        del model.forward
    if isinstance(model.__dict__.get("generate"), FastGreedy):
        del model.generate
    if not cuda_graphs:
        return
    param = next(model.parameters(), None)
    if training:
        report.kept.append("CUDA graphs: not with training=True (inference calls only)")
    elif param is None or param.device.type != "cuda":
        report.kept.append("CUDA graphs: the model is not on a CUDA GPU")
    else:
        graphed = GraphedForward(model, buckets)
        model.forward = graphed
        model.tritonic_graphs = graphed
        gen = getattr(model, "generation_config", None)
        if gen is not None and hasattr(gen, "disable_compile"):
            # generate() would otherwise torch.compile the forward for a static cache (its
            # "auto-compile"), tracing into our graphs; the decode steps are captured by us
            gen.disable_compile = True
            report.replaced.append("generate(): transformers' auto-compile for static caches off (the decode steps "
                                   "replay tritonic's graphs instead)")
        if callable(getattr(model, "generate", None)) and not model.config.is_encoder_decoder:
            greedy = FastGreedy(model, model.generate, graphed.forward)
            model.generate = greedy
            model.tritonic_greedy = greedy
            report.replaced.append(f"generate(): greedy decoding over a static cache runs {greedy.steps} decode steps "
                                   f"per CUDA graph (other generate() calls: transformers' loop)")
        report.replaced.append(f"forward: CUDA graphs per (batch, sequence bucket), buckets {list(graphed.buckets)}; "
                               f"generate()'s decode steps over a static cache per (batch, cache); other calls "
                               f"(autograd, training mode, other arguments, a dynamic cache) run eagerly")
