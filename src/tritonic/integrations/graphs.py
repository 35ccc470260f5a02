"""CUDA graphs for ``optimize``d inference: one graph per (batch, sequence bucket).

``optimize(model)`` (``cuda_graphs=True``, the default, on a GPU) replaces ``model.forward``
with a :class:`GraphedForward`. An inference call — no autograd, ``model.eval()``, inputs
given as ``input_ids`` (and optionally ``attention_mask``, ``token_type_ids``) — is padded on
the right to the smallest sequence bucket that holds it (the padding is masked out through
the attention mask), copied into the static inputs of that (batch, bucket) graph, and the
graph is replayed; the outputs are cut back to the real length and copied out (the next
replay overwrites the graph's own). The first call of a new (batch, bucket) runs the model
twice on a side stream (compiling and tuning the kernels) and then captures it. All graphs
share one memory pool.

**Decode steps over a static KV cache** (``generate(..., cache_implementation="static")``,
or a ``StaticCache`` passed by the caller) get one graph per (batch, cache): a call of one new
token per sequence with the cache (``past_key_values=`` or ``cache=``, by transformers
release) and a 4-D boolean attention mask as long as the cache. Everything such a step does
stays on the device: the cache writes its keys and values at, and advances, its own
``cumulative_length`` tensor, and positions derive from it, so a replay is the next step.
The warm-up runs before the capture would advance the cache too: its small integer tensors
are saved first and put back after each run. A new cache object (each ``generate`` call
makes one) replaces the graph of the previous one at that batch size.

Everything else runs the model's own forward, unchanged: calls under autograd or in training
mode, other arguments (``labels``, ``inputs_embeds``, ``output_attentions``, a dynamic
cache, ...; so ``generate()`` with its default cache works as before, without graphs), sequences
longer than the largest bucket, and a graph whose capture failed (the reason is in
``stats``; the model then runs eagerly for it). Bucket-graphed calls run with
``use_cache=False``: they return no KV cache (pass ``use_cache=True`` to get one, without a graph).

Right padding leaves the real tokens' outputs unchanged: their positions are the same, keys
past the real length are masked, and in causal models they lie in the future anyway (so a
causal model's call without ``attention_mask`` is graphed without one, and its attention
runs causal with no mask at all). A
graph holds the parameters it was captured with: assign new values in place
(``param.data.copy_``), or call ``model.tritonic_graphs.clear()`` after replacing tensors.
"""

from __future__ import annotations

import collections
import contextlib
import inspect

import torch

from tritonic.runtime.cudagraph import recover_from_failed_capture
from tritonic.runtime.pdl import while_capturing
from tritonic.runtime.precompile import precompile, precompile_wanted

__all__ = ["DEFAULT_BUCKETS", "GraphedForward"]

DEFAULT_BUCKETS = (16, 32, 64, 128, 256, 512, 1024, 2048)
_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
_PASSTHROUGH_TRUE = ("return_dict",)  # accepted when True (the default output type)


class GraphedForward:
    """``model.forward`` with CUDA graphs per (batch, sequence bucket); see the module docstring.

    ``capture=False`` keeps the padding, bucketing and output cutting but runs the padded
    forward eagerly instead of a graph (used on CPUs and by the tests)."""

    def __init__(self, model: torch.nn.Module, buckets=None, capture: bool = True, warmup: int = 2):
        buckets = tuple(sorted(int(b) for b in (buckets or DEFAULT_BUCKETS)))
        if not buckets or buckets[0] < 1:
            raise ValueError(f"optimize: buckets must be positive sequence lengths, got {buckets!r}")
        limit = getattr(model.config, "max_position_embeddings", None) or getattr(model.config, "n_positions", None)
        if isinstance(limit, int) and limit > 0:
            buckets = tuple(b for b in buckets if b <= limit) or (limit,)
        self.model, self.forward = model, model.forward
        self.buckets, self.capture, self.warmup = buckets, capture, warmup
        # transformers reads the forward's signature (whether it takes position_ids, the cache's
        # name): it sees the model's own through this wrapper
        self.__signature__ = inspect.signature(self.forward)
        params = self.__signature__.parameters
        self.takes_use_cache = "use_cache" in params
        self.accepts = {name for name in _INPUTS if name in params}
        self.pad_id = getattr(model.config, "pad_token_id", None)
        self.pad_id = 0 if self.pad_id is None else int(self.pad_id)
        # every attention of the model causal (a decoder-only LM): right padding lies in every
        # real token's future, so a call without a mask needs none after padding either
        attn = [m for m in model.modules() if hasattr(m, "is_causal") and type(m).__name__.endswith("Attention")]
        self.causal = bool(attn) and all(m.is_causal is True for m in attn)
        # (batch, bucket, input names, mask dtype) -> _Entry, or a failure reason; and
        # ("decode", batch, cache argument, mask shape, ids dtype) -> _DecodeEntry, or (cache id, reason)
        self.graphs: dict = {}
        self.pool = None
        self.stats = collections.Counter()  # "replay", "capture", "eager: <reason>"

    def clear(self) -> None:
        """Drop every captured graph (they are captured again on their next call)."""
        self.graphs.clear()
        self.pool = None

    # --------------------------------------------------------------------------- dispatch

    def __call__(self, *args, **kwargs):
        decode = self._decode_plan(args, kwargs)
        if decode is not None:
            return self._decode(*decode)
        plan = self._plan(args, kwargs)
        if isinstance(plan, str):
            self.stats[f"eager: {plan}"] += 1
            return self.forward(*args, **kwargs)
        inputs, batch, length, bucket = plan
        key = (batch, bucket, tuple(sorted(inputs)), inputs.get("attention_mask", inputs["input_ids"]).dtype)
        entry = self.graphs.get(key)
        if isinstance(entry, str):
            self.stats[f"eager: {entry}"] += 1
            return self.forward(*args, **kwargs)
        if entry is None:
            entry = self._build(key, inputs, length, bucket)
            if isinstance(entry, str):
                self.stats[f"eager: {entry}"] += 1
                return self.forward(*args, **kwargs)
        return entry.run(inputs, length, self.stats)

    def _plan(self, args, kwargs):
        """(inputs, batch, length, bucket) for a graphable call, else the reason it is not."""
        if self.model.training:
            return "training mode"
        if torch.is_grad_enabled() and any(p.requires_grad for p in self.model.parameters()):
            return "autograd on (use torch.no_grad() or torch.inference_mode())"
        if len(args) > 1:
            return "positional arguments beyond input_ids"
        inputs = dict(kwargs)
        if args:
            if "input_ids" in inputs:
                return "input_ids given twice"
            inputs["input_ids"] = args[0]
        use_cache = inputs.pop("use_cache", None)
        if use_cache:
            return "use_cache=True (graphed calls return no KV cache)"
        for name in _PASSTHROUGH_TRUE:
            if name in inputs and inputs.pop(name) is not True:
                return f"{name} other than True"
        inputs = {k: v for k, v in inputs.items() if v is not None}
        other = sorted(set(inputs) - self.accepts)
        if other:
            return f"arguments {', '.join(other)}"
        ids = inputs.get("input_ids")
        if not torch.is_tensor(ids) or ids.dim() != 2 or ids.dtype not in (torch.int64, torch.int32):
            return "no 2-D integer input_ids"
        batch, length = ids.shape
        for name, t in inputs.items():
            if not torch.is_tensor(t) or tuple(t.shape) != (batch, length) or t.device != ids.device:
                return f"{name} not of input_ids' shape and device"
        if length == 0 or length > self.buckets[-1]:
            return f"sequence of {length} tokens outside the buckets (largest {self.buckets[-1]})"
        bucket = next(b for b in self.buckets if b >= length)
        return inputs, batch, length, bucket

    # --------------------------------------------------------------------------- decode steps

    def _decode_plan(self, args, kwargs):
        """(cache argument name, cache, input_ids, mask) for a decode step over a static cache,
        else None (the call is then planned as any other)."""
        if args or self.model.training or torch.is_grad_enabled() and any(
                p.requires_grad for p in self.model.parameters()):
            return None
        names = [n for n in ("past_key_values", "cache") if kwargs.get(n) is not None]
        if len(names) != 1 or type(kwargs[names[0]]).__name__ != "StaticCache":
            return None
        rest = {k: v for k, v in kwargs.items() if v is not None and k not in (names[0], "input_ids", "attention_mask")}
        positions = rest.pop("position_ids", None)
        keep = rest.pop("logits_to_keep", None)  # an int: a constant of the step, in the graph's key
        if keep is not None and type(keep) is not int:
            return None
        if rest.pop("use_cache", True) is not True or rest.pop("return_dict", True) is not True or rest:
            return None
        ids, mask, cache = kwargs.get("input_ids"), kwargs.get("attention_mask"), kwargs[names[0]]
        if positions is not None and (not torch.is_tensor(positions) or tuple(positions.shape) != tuple(ids.shape)):
            return None
        if not torch.is_tensor(ids) or ids.dim() != 2 or ids.shape[1] != 1 or not torch.is_tensor(mask) or \
                mask.dtype != torch.bool or mask.dim() != 4 or mask.shape[0] != ids.shape[0] or mask.shape[2] != 1:
            return None
        layers = getattr(cache, "layers", None)
        if not layers or not all(getattr(layer, "is_initialized", False) for layer in layers):
            return None  # the prefill has not run yet: its tensors do not exist
        return names[0], cache, ids, mask, positions, {} if keep is None else {"logits_to_keep": keep}

    def _decode(self, name, cache, ids, mask, positions, const):
        key = ("decode", ids.shape[0], name, tuple(mask.shape), ids.dtype, positions is not None,
               tuple(const.items()))
        entry = self.graphs.get(key)
        if isinstance(entry, tuple):  # (cache id, reason): a capture failed at this batch; not tried again
            self.stats[f"eager: decode capture failed ({entry[1]})"] += 1  # (clear() forgets it)
            return self.forward(input_ids=ids, attention_mask=mask, **{name: cache}, use_cache=True, **const,
                                **({} if positions is None else {"position_ids": positions}))
        if entry is not None and entry.cache is not cache:
            entry = None  # a new cache (each generate call makes one): the old graph goes
        if entry is None:
            self._drop(key)  # the old entry's graph and its hold on the old cache go now
            entry = _DecodeEntry(self, name, cache, ids, mask, positions, const)
            reason = entry.build()
            if reason is not None:
                self.graphs[key] = (id(cache), reason)
                self.stats[f"eager: decode capture failed ({reason})"] += 1
                return self.forward(input_ids=ids, attention_mask=mask, **{name: cache}, use_cache=True, **const,
                                    **({} if positions is None else {"position_ids": positions}))
            self.graphs[key] = entry
        return entry.run(ids, mask, positions, self.stats)

    def _drop(self, key) -> None:
        """Forget one graph. When none is left the memory pool is given up too: the allocator
        frees a pool whose last graph is gone, and capturing into its stale handle fails."""
        self.graphs.pop(key, None)
        self._forget_unused_pool()

    def _forget_unused_pool(self) -> None:
        if not any(getattr(e, "graph", None) is not None for e in self.graphs.values()):
            self.pool = None

    # --------------------------------------------------------------------------- capture

    @while_capturing
    def _build(self, key, inputs, length, bucket):
        batch = key[0]
        static = {}
        with torch.inference_mode(False):  # buffers later calls may fill outside inference mode
            for name, t in inputs.items():
                static[name] = torch.zeros((batch, bucket), dtype=t.dtype, device=t.device)
            if "attention_mask" not in static and "attention_mask" in self.accepts and not self.causal:
                # the padding must be masked: a call without a mask gets an all-ones one for its tokens.
                # (Causal models skip this: their attention then runs causal without a mask,
                # where a built (B, 1, S, S) mask would take the kernels' masked path.)
                static["attention_mask"] = torch.zeros((batch, bucket), dtype=torch.int64,
                                                       device=inputs["input_ids"].device)
        extra = {"use_cache": False} if self.takes_use_cache else {}
        entry = _Entry(self, static, extra)
        entry.fill(inputs, length)
        if not self.capture:
            self.graphs[key] = entry
            return entry
        try:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side), torch.no_grad():
                if precompile_wanted():  # the kernels compiled in parallel first (outputs garbage)
                    with contextlib.suppress(Exception), precompile():
                        self.forward(**static, **extra)
                for _ in range(self.warmup):  # compiles and tunes the kernels for these shapes
                    self.forward(**static, **extra)
            torch.cuda.current_stream().wait_stream(side)
            if self.pool is None:
                self.pool = torch.cuda.graph_pool_handle()
            graph = torch.cuda.CUDAGraph()
            with torch.no_grad(), torch.cuda.graph(graph, pool=self.pool):
                out = self.forward(**static, **extra)
        except Exception as e:  # the model does something a graph cannot hold: run it eagerly
            recover_from_failed_capture()
            self._forget_unused_pool()
            reason = f"capture failed for batch {batch}, bucket {bucket} ({type(e).__name__}: {str(e)[:200]})"
            self.graphs[key] = reason
            return reason
        entry.graph, entry.out = graph, out
        self.graphs[key] = entry
        self.stats["capture"] += 1
        return entry


class _Entry:
    """One (batch, bucket): static inputs, and a graph with its outputs (or eager padding)."""

    def __init__(self, owner: GraphedForward, static: dict, extra: dict):
        self.owner, self.static, self.extra = owner, static, extra
        self.graph = self.out = None

    def fill(self, inputs: dict, length: int) -> None:
        for name, buf in self.static.items():
            if name in inputs:
                buf[:, :length].copy_(inputs[name])
            elif name == "attention_mask":
                buf[:, :length].fill_(1)
            buf[:, length:].fill_(self.owner.pad_id if name == "input_ids" else 0)

    def run(self, inputs: dict, length: int, stats):
        self.fill(inputs, length)
        if self.graph is None:
            with torch.no_grad():
                out = self.owner.forward(**self.static, **self.extra)
            stats["eager padded"] += 1
        else:
            self.graph.replay()
            out = self.out
            stats["replay"] += 1
        return _cut(out, length, next(iter(self.static.values())).shape[1])


class _DecodeEntry:
    """One decode step of a given batch over one static cache: static input_ids and mask,
    and a graph (or, without capture, the same step run eagerly from the static inputs)."""

    def __init__(self, owner: GraphedForward, name: str, cache, ids, mask, positions=None, const=None):
        self.owner, self.name, self.cache, self.const = owner, name, cache, dict(const or {})
        with torch.inference_mode(False):  # the warm-up and capture run this step's real inputs
            self.ids, self.mask = ids.clone(), mask.clone()
            self.positions = None if positions is None else positions.clone()
        self.graph = self.out = None

    def _step(self):
        extra = dict(self.const) if self.positions is None else {"position_ids": self.positions, **self.const}
        return self.owner.forward(input_ids=self.ids, attention_mask=self.mask, **{self.name: self.cache},
                                  use_cache=True, return_dict=True, **extra)

    def _counters(self):
        return [(t, t.clone()) for t in cache_counters(self.cache)]

    @while_capturing
    def build(self) -> str | None:
        """Warm up (kernels compiled and tuned for this batch) and capture; the reason on failure."""
        owner = self.owner
        saved = self._counters()
        try:
            side = torch.cuda.Stream() if owner.capture else None
            if side is not None:
                side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side) if side is not None else contextlib.nullcontext(), torch.no_grad():
                for _ in range(owner.warmup):
                    self._step()
                    for t, value in saved:  # the warm-up advanced the cache: undo it
                        t.copy_(value)
            if side is not None:
                torch.cuda.current_stream().wait_stream(side)
            if not owner.capture:
                return None
            if owner.pool is None:
                owner.pool = torch.cuda.graph_pool_handle()
            graph = torch.cuda.CUDAGraph()
            with torch.no_grad(), torch.cuda.graph(graph, pool=owner.pool):
                out = self._step()
        except Exception as e:  # something in the step a graph cannot hold: eager steps
            if owner.capture:
                recover_from_failed_capture()
                owner._forget_unused_pool()
            for t, value in saved:
                t.copy_(value)
            return f"{type(e).__name__}: {str(e)[:200]}"
        self.graph, self.out = graph, out
        owner.stats["capture decode"] += 1
        return None

    def run(self, ids, mask, positions, stats):
        self.ids.copy_(ids)
        self.mask.copy_(mask)
        if positions is not None:
            self.positions.copy_(positions)
        if self.graph is None:
            with torch.no_grad():
                out = self._step()
            stats["eager decode (no capture)"] += 1
        else:
            self.graph.replay()
            out = self.out
            stats["replay decode"] += 1
        return _cut(out, 1, 1)  # one token per sequence: nothing to cut, every tensor copied out


def cache_counters(cache) -> list:
    """A static cache's small integer tensors (its lengths and offsets): what a warm-up step
    advances and must put back."""
    return [t for layer in cache.layers for t in vars(layer).values()
            if torch.is_tensor(t) and not t.is_floating_point() and t.numel() <= 16]


def _cut(out, length: int, bucket: int):
    """Outputs back to the real length, copied out of the graph's buffers: tensors of 3 or more
    dims whose dim 1 is the bucket are cut to ``length``; others are copied whole."""
    if torch.is_tensor(out):
        if out.dim() >= 3 and out.shape[1] == bucket:
            out = out[:, :length]
        return out.clone()
    if isinstance(out, dict):  # ModelOutput is an OrderedDict: rebuild it with the same class
        return out.__class__(**{k: _cut(v, length, bucket) for k, v in out.items()})
    if isinstance(out, (tuple, list)):
        return type(out)(_cut(v, length, bucket) for v in out)
    return out
