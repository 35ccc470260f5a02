"""Greedy and sampled ``generate()`` with several decode steps in one CUDA graph.

``transformers``' generation loop runs Python and a dozen small GPU ops around every decode
step (input preparation, a 4-D mask, logits processors, stopping criteria). At batch 1 that host
work takes longer than the step itself. ``optimize`` therefore routes the plain cases (one beam,
greedy or sampled with temperature / top-k / top-p, the default or a static cache) to
:class:`FastGreedy`:

1. ``transformers`` runs the prefill and picks the first new token, into a static cache that
   tritonic owns, sized for the prompt, the new tokens and one graph's worth of spare steps.
2. The rest runs ``steps`` decode steps per graph replay. Each step runs everything on the
   device: it marks the new key position in the mask, runs the forward, and picks the token
   in float32, holding end-of-sequence tokens back until ``min_new_tokens``. Greedy calls take
   the argmax. Sampled calls apply transformers' warpers in its order (temperature, top-k,
   top-p) and draw. The step then pads finished rows and stores the token. The host checks
   once per replay whether every row has finished.
3. A run may overshoot by up to ``steps - 1`` tokens, into the spare room. The result is cut to
   what ``transformers`` returns: ``max_new_tokens`` tokens, or fewer when every row ended early.

The cache, its graph and the step's buffers are kept per (batch, cache length bucket, dtype,
end tokens, sampling options), so a second call of the same shape replays at once. The cache is
reset before each call. The last four such runs are kept.

Any other call goes to ``transformers``' own ``generate``, and the reason is counted in
``stats``: beams, other warpers (min-p, typical, epsilon, eta, top-h), logits processors other
than ``min_new_tokens``, streamers, ``return_dict_in_generate``, a user's cache, other
``cache_implementation`` values, caches with sliding-window layers, autograd. So does a call
whose fast loop fails (one warning; running out of memory is raised as it is).

A call that leaves the cache to transformers' default gets a static cache here. The keys are
the same; only the decode kernel's splits, and so the last bits of rounding, can differ.

The tokens equal those of ``transformers``' loop, which computes the same forward with the same
mask. ``tests/integrations/test_greedy.py`` checks this with left padding, early ends and
``min_new_tokens``. It also checks sampled tokens from the same seed on the CPU, since the draw
uses the random numbers that ``torch.multinomial`` would.
"""

from __future__ import annotations

import collections
import inspect

import torch

from tritonic.integrations.graphs import cache_counters
from tritonic.runtime.checks import warn_once
from tritonic.runtime.cudagraph import recover_from_failed_capture
from tritonic.runtime.pdl import while_capturing

__all__ = ["FastGreedy"]

# Arguments of generate() this path takes; anything else goes to transformers.
_ARGS = {"input_ids", "attention_mask", "max_new_tokens", "max_length", "min_new_tokens", "do_sample", "num_beams",
         "cache_implementation", "pad_token_id", "eos_token_id", "use_cache", "temperature", "top_k", "top_p"}
# GenerationConfig fields that may differ from their defaults (everything else must not).
_CONFIG_OK = {"max_length", "max_new_tokens", "min_new_tokens", "pad_token_id", "eos_token_id", "bos_token_id",
              "decoder_start_token_id", "cache_implementation", "disable_compile", "do_sample", "num_beams",
              "use_cache", "transformers_version", "_from_model_config", "max_cache_len", "temperature", "top_k",
              "top_p"}
_LENGTH_BUCKET = 256  # cache lengths are rounded up to this, so calls of similar lengths share a graph
_MAX_RUNS = 4  # (batch, length, ...) runs kept, each with its cache and graph


def _sample(logits, temperature: float, top_k: int, top_p: float):
    """transformers' sampling, on the device: temperature, top-k, top-p (as its warpers do them,
    keeping at least one token), softmax, then one draw. The draw is the exponential trick
    that torch.multinomial uses for one sample (the same tokens from the same generator state
    on the CPU), written out because multinomial's checks do not fit in a CUDA graph."""
    if temperature != 1.0:
        logits = logits / temperature
    if top_k:
        kth = torch.topk(logits, min(top_k, logits.shape[-1]))[0][..., -1, None]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        ordered, order = torch.sort(logits, descending=False)
        drop = ordered.softmax(dim=-1).cumsum(dim=-1) <= (1 - top_p)
        drop[..., -1:] = False
        logits = logits.masked_fill(drop.scatter(1, order, drop), float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    return (probs / torch.empty_like(probs).exponential_(1)).argmax(-1)


class _Run:
    """One (batch, cache length, dtype): the static cache, the step's device state, the graph."""

    def __init__(self, cache, batch: int, length: int, spare: int, device):
        self.cache, self.length = cache, length
        z = dict(device=device, dtype=torch.long)
        self.tok = torch.zeros((batch, 1), **z)  # the token the next step feeds in
        self.posids = torch.zeros((batch, 1), **z)  # its position: attended tokens before it (left padding)
        self.mask2d = torch.zeros((batch, length), dtype=torch.bool, device=device)
        self.mask = self.mask2d[:, None, None, :]  # (B, 1, 1, L): True = attend
        self.pos = torch.zeros(1, **z)  # the key position the next step writes
        self.k = torch.ones(1, **z)  # the index, among the new tokens, of the token it picks
        self.count = torch.ones((), **z)  # tokens transformers would have generated so far
        self.unfinished = torch.ones(batch, dtype=torch.bool, device=device)
        self.out = torch.zeros((batch, 0), **z)
        self.spare = spare
        self.graph = None

    def state(self):
        """The tensors a step changes (the cache's counters included), for putting back after a warm-up."""
        own = [self.tok, self.posids, self.mask2d, self.pos, self.k, self.count, self.unfinished, self.out]
        return [(t, t.clone()) for t in own + cache_counters(self.cache)]


class FastGreedy:
    """``model.generate`` for greedy and sampled decoding over a static cache; see the module
    docstring.

    ``forward`` is the model's own forward (not a graphed wrapper); ``capture=False`` runs the
    same steps without graphs (CPUs, tests)."""

    def __init__(self, model, generate, forward, capture: bool = True, steps: int = 8):
        self.model, self.generate, self.forward = model, generate, forward
        self.capture, self.steps = capture, max(1, int(steps))
        self.runs: dict = {}
        self.pool = None
        self._layers_ok = None
        params = inspect.signature(forward).parameters
        # transformers passes position ids (from the attention mask: left padding) to forwards
        # that take them, and the cache under the name the forward takes
        self.takes_positions = "position_ids" in params
        self.cache_name = "cache" if "cache" in params else "past_key_values"
        self.stats = collections.Counter()

    def clear(self) -> None:
        self.runs.clear()
        self.pool = None

    # --------------------------------------------------------------------------- dispatch

    def __call__(self, *args, **kwargs):
        plan = self._plan(args, kwargs)
        if isinstance(plan, str):
            self.stats[f"transformers: {plan}"] += 1
            return self.generate(*args, **kwargs)
        # outside inference mode: the cache and buffers live on across calls, and a tensor made
        # under inference_mode cannot be updated in place by a later call outside it
        try:
            with torch.inference_mode(False), torch.no_grad():
                return self._run(*plan)
        except torch.cuda.OutOfMemoryError:
            raise
        except Exception as e:  # a model this path does not fit: transformers' loop, from the start
            self.clear()
            self.stats[f"transformers: the fast loop failed ({type(e).__name__}: {str(e)[:120]})"] += 1
            warn_once(("fast-generate", type(self.model).__name__, type(e).__name__),
                      f"tritonic: generate() of {type(self.model).__name__} fell back to transformers' loop "
                      f"({type(e).__name__}: {str(e)[:200]})")
            return self.generate(*args, **kwargs)

    def _plan(self, args, kwargs):
        """(input_ids, mask, new, min_new, eos list, pad) for this path, else the reason it is not."""
        try:
            from transformers import GenerationConfig
            from transformers.cache_utils import StaticCache, StaticLayer
        except ImportError:
            return "transformers without StaticCache"
        kwargs = dict(kwargs)
        if args:
            if len(args) > 1 or "input_ids" in kwargs:
                return "positional arguments"
            kwargs["input_ids"] = args[0]
        other = sorted(set(kwargs) - _ARGS)
        if other:
            return f"arguments {', '.join(other)}"
        if self.model.training:
            return "training mode"
        gen = getattr(self.model, "generation_config", None)
        if gen is None or self.model.config.is_encoder_decoder:
            return "not a decoder-only model with a generation config"
        # transformers fills fields left None with its global defaults (top_k 50, max_length 20, ...)
        defaults = getattr(GenerationConfig, "_get_default_generation_params", dict)()
        diff = sorted(k for k, v in gen.to_diff_dict().items()  # None, False, 0, empty: switched off
                      if k not in _CONFIG_OK and v not in (None, False, 0) and v != {} and v != []
                      and not (k in defaults and v == defaults[k]))
        if diff:
            return f"generation config sets {', '.join(diff)}"
        if not hasattr(GenerationConfig(), "max_cache_len"):
            return "this transformers has no max_cache_len"

        def get(name):
            value = kwargs[name] if name in kwargs else getattr(gen, name, None)
            return defaults.get(name) if value is None else value

        if (get("num_beams") or 1) != 1 or get("use_cache") is False:
            return "beams or no cache"
        sampling = None
        if get("do_sample"):  # transformers' order: temperature, then top-k, then top-p
            t, k, p = get("temperature"), get("top_k"), get("top_p")
            t = 1.0 if t is None else t
            k = 0 if k is None else k
            p = 1.0 if p is None else p
            if not (isinstance(t, (int, float)) and t > 0 and isinstance(k, int) and k >= 0
                    and isinstance(p, (int, float)) and 0 < p <= 1):
                return "sampling options out of range"
            sampling = (float(t), int(k), float(p))
        if get("cache_implementation") not in (None, "static"):  # None: transformers' default cache, whose
            return f"cache_implementation={get('cache_implementation')!r}"  # greedy tokens a static one gives too
        ids, mask = kwargs.get("input_ids"), kwargs.get("attention_mask")
        if not torch.is_tensor(ids) or ids.dim() != 2 or ids.dtype not in (torch.int64, torch.int32) or \
                ids.numel() == 0:
            return "no 2-D integer input_ids"
        if mask is not None and (not torch.is_tensor(mask) or tuple(mask.shape) != tuple(ids.shape)):
            return "attention_mask not of input_ids' shape"
        new, min_new = get("max_new_tokens"), get("min_new_tokens") or 0
        if new is None and isinstance(get("max_length"), int):  # transformers' rule: max_new_tokens first
            new = get("max_length") - ids.shape[1]
        if not isinstance(new, int) or new < 2 or not isinstance(min_new, int):
            return "fewer than 2 new tokens"
        eos = get("eos_token_id")
        eos = [] if eos is None else ([int(eos)] if isinstance(eos, int) else [int(e) for e in eos])
        pad = get("pad_token_id")
        pad = int(pad) if pad is not None else (eos[0] if eos else 0)
        if self._layers_ok is None:  # (the model's layer types do not change): "" or why not
            try:
                layers = StaticCache(config=self.model.config.get_text_config(decoder=True), max_cache_len=8).layers
                ok = bool(layers) and all(type(layer) is StaticLayer for layer in layers)
                self._layers_ok = "" if ok else "a cache with other layers than full-attention static ones"
            except Exception as e:  # a config a static cache cannot be made for
                self._layers_ok = f"no static cache for this model ({type(e).__name__})"
        if self._layers_ok:
            return self._layers_ok
        return ids, mask, new, min_new, eos, pad, sampling

    # --------------------------------------------------------------------------- the run

    def _get_run(self, batch, prompt, new, device, dtype, eos, pad, min_new, sampling):
        from transformers.cache_utils import StaticCache

        spare = self.steps - 1
        need = prompt + new + spare
        length = -(-need // _LENGTH_BUCKET) * _LENGTH_BUCKET
        # a graph holds its step's constants (the end tokens, the pad, min_new_tokens) too
        key = (batch, length, dtype, device, tuple(eos), pad, min_new if eos and min_new > 1 else 0, sampling)
        run = self.runs.get(key)
        if run is None:
            cache = StaticCache(config=self.model.config.get_text_config(decoder=True), max_cache_len=length)
            run = _Run(cache, batch, length, spare, device)
            eos_t = torch.tensor(eos, dtype=torch.long, device=device) if eos else None
            run.consts = (eos_t, pad, min_new, sampling)
            if len(self.runs) >= _MAX_RUNS:  # each run holds a whole cache: the oldest goes
                self.runs.pop(next(iter(self.runs)))
                if not any(r.graph is not None for r in self.runs.values()):
                    self.pool = None  # (the allocator frees a pool whose last graph is gone)
            self.runs[key] = run
        run.cache.reset()
        return run

    def _run(self, ids, mask, new, min_new, eos, pad, sampling):
        batch, prompt = ids.shape
        device = ids.device
        dtype = next(self.model.parameters()).dtype
        run = self._get_run(batch, prompt, new, device, dtype, eos, pad, min_new, sampling)
        knobs = {} if sampling is None else dict(zip(("temperature", "top_k", "top_p"), sampling))
        first = self.generate(input_ids=ids, attention_mask=mask, max_new_tokens=1, min_new_tokens=min(min_new, 1),
                              do_sample=sampling is not None, **knobs, num_beams=1, **{self.cache_name: run.cache},
                              cache_implementation=None,
                              return_dict_in_generate=True, pad_token_id=pad, eos_token_id=eos or None)
        tok0 = first.sequences[:, -1]
        # the step's state for this call
        run.tok.copy_(tok0[:, None])
        run.mask2d.zero_()
        run.mask2d[:, :prompt] = True if mask is None else mask.bool()
        run.pos.fill_(prompt)
        run.k.fill_(1)
        run.count.fill_(1)
        eos_t = run.consts[0]
        run.unfinished.copy_(~torch.isin(tok0, eos_t) if eos else torch.ones_like(run.unfinished))
        total = new + run.spare
        if run.out.shape[1] < total:
            run.out = torch.zeros((batch, total), dtype=torch.long, device=device)
            run.graph = None  # (the graph wrote into the old buffer)
        run.out.zero_()
        run.out[:, 0] = tok0
        consts = run.consts
        steps_left = new - 1
        if self.capture and run.graph is None:
            reason = self._capture(run, consts)
            if reason is not None:
                self.stats[f"eager steps: capture failed ({reason})"] += 1
        while steps_left > 0:
            if run.graph is not None:
                run.graph.replay()
                steps_left -= self.steps
                self.stats["replay"] += 1
            else:
                for _ in range(min(self.steps, steps_left)):
                    self._step(run, consts)
                steps_left -= self.steps
                self.stats["eager steps"] += 1
            if eos and steps_left > 0 and not bool(run.unfinished.any()):  # one sync per replay
                break
        n = min(int(run.count), new)
        return torch.cat([ids, run.out[:, :n].to(ids.dtype)], dim=1)

    def _step(self, run: _Run, consts) -> None:
        """One decode step, every tensor on the device (so that a graph can hold it)."""
        eos_t, pad, min_new, sampling = consts
        run.mask2d.index_fill_(1, run.pos, True)
        extra = {self.cache_name: run.cache}
        if self.takes_positions:  # as transformers counts them: attended tokens before this one
            torch.sub(run.mask2d.sum(-1, keepdim=True), 1, out=run.posids)
            extra["position_ids"] = run.posids
        out = self.forward(input_ids=run.tok, attention_mask=run.mask, use_cache=True, return_dict=True, **extra)
        logits = out.logits[:, -1].float()
        if eos_t is not None and min_new > 1:  # min_new_tokens: no end before it
            held = torch.where(run.k < min_new, float("-inf"), logits[:, eos_t])
            logits[:, eos_t] = held
        if sampling is None:
            nxt = logits.argmax(-1)
        else:
            nxt = _sample(logits, *sampling)
        if eos_t is not None:
            run.count.add_(run.unfinished.any().long())  # transformers runs a step while any row is open
            nxt = torch.where(run.unfinished, nxt, pad)
            run.unfinished.logical_and_(~torch.isin(nxt, eos_t))
        else:
            run.count.add_(1)
        run.out.index_copy_(1, run.k, nxt[:, None])
        run.tok.copy_(nxt[:, None])
        run.pos.add_(1)
        run.k.add_(1)

    @while_capturing
    def _capture(self, run: _Run, consts) -> str | None:
        """Warm up one step (kernels compiled and tuned for this batch; the state put back) and
        capture ``steps`` steps; the reason on failure (the steps then run eagerly)."""
        saved = run.state()
        try:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                self._step(run, consts)
                for t, value in saved:
                    t.copy_(value)
            torch.cuda.current_stream().wait_stream(side)
            if self.pool is None:
                self.pool = torch.cuda.graph_pool_handle()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=self.pool):
                for _ in range(self.steps):
                    self._step(run, consts)
        except Exception as e:  # something a graph cannot hold: eager steps for this shape
            recover_from_failed_capture()
            for t, value in saved:
                t.copy_(value)
            return f"{type(e).__name__}: {str(e)[:200]}"
        run.graph = graph
        self.stats["capture"] += 1
        return None
