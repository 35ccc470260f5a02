"""Swapping a model's modules for tritonic's, by what they do, each swap checked.

A small registry maps a module to a replacement that computes the same function with
tritonic's kernels: ``torch.nn.Embedding`` to :class:`tritonic.nn.Embedding` (one gather
kernel; its probe must give the original's rows exactly), a module made of one ``nn.Linear`` and one activation (BERT's
intermediate layer) to :class:`LinearActBlock` (one GEMM, activation in the epilogue); a
``gate_proj``/``up_proj``/``down_proj``/``act_fn`` MLP to :class:`GatedMLPBlock` (the gate
product in one kernel); GPT-2's ``Conv1D`` MLP to :class:`Conv1DActBlock`; BERT's
``LayerNorm(dense(h) + input)`` output layers to :class:`DenseAddNormBlock` (the add in the
norm's kernel); BERT's embedding module to :class:`EmbeddingsNormBlock` (one kernel at
inference) and its pooler to :class:`PoolerBlock` (one GEMM, tanh in the epilogue); T5's
feed-forward (``wi``/``wo``, or gated ``wi_0``/``wi_1``/``wo``) to
:class:`DenseActDenseBlock`; ``torch.nn.LayerNorm`` to :class:`tritonic.nn.LayerNorm`; RMSNorm
modules of the common shapes (Llama/Mistral/Qwen2/T5 cast the normalised input back
before the weight; Gemma scales by ``1 + weight`` in float32) to :class:`RMSNormLike`,
which hands inputs of another dtype than its weight to the original module. A candidate shares the original's parameters (same ``state_dict``
keys, the optimizer keeps working) and is kept only when, on a probe input, its error
against the original module run in float64 is within the correctness rule (at most twice
the original's own error, plus a few units in the last place); otherwise the original stays
and the reason is recorded.
"""

from __future__ import annotations

import copy
import inspect

import torch

from tritonic import nn as tnn
from tritonic import ops
from tritonic.nn.norm import add_norm_ahead, take_ahead
from tritonic.runtime.autotune import untuned

__all__ = ["PROBE_ROWS", "RMSNormLike", "swap_modules"]

# Probe inputs: (2, 8) tokens, 16 rows. Triton specialises integer arguments on divisibility by
# 16, so a probe of 16 rows compiles the variant a real batch of 16, 32, ... rows runs too
# (with 15 rows the first real call compiled every probed kernel a second time).
PROBE_ROWS = (2, 8)
# The embedding block's kernel also takes the sequence length and the ids' row stride, so its
# probe's sequence is 16 long too (at (2, 8), BERT's cold 1x16 first call compiled it twice more).
PROBE_SEQS = (2, 16)
# The pooler multiplies one row per sequence, and Triton specialises a count of 1 apart: its
# probe is one sequence, the variant of single-sequence calls (batches of 2+ compile their own).
PROBE_POOLER = (1, 8)


class RMSNormLike(torch.nn.Module):
    """An RMSNorm with a model family's rounding: ``upcast=False`` casts the normalised input
    to its dtype before the weight (Llama), ``upcast=True`` scales in float32 and casts once
    (Gemma, with ``offset=1``). The weight is the original module's parameter."""

    def __init__(self, original: torch.nn.Module, weight: torch.nn.Parameter, eps: float, offset: float = 0.0,
                 upcast: bool = False):
        super().__init__()
        self.weight = weight
        self.eps, self.offset, self.upcast = eps, offset, upcast
        self._original = (original,)  # not a submodule: its weight is this module's

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if "_tritonic_ahead" in self.__dict__:  # computed by the previous layer's closing add
            y = take_ahead(self, x)
            if y is not None:
                return y
        if x.dtype != self.weight.dtype:  # mixed precision: the family's own type promotion rules
            return self._original[0](x)
        return ops.rms_norm(x, self.weight, self.eps, offset=self.offset, upcast=self.upcast)

    def add_norm(self, a: torch.Tensor, b: torch.Tensor):
        """``(self(a + b), a + b)`` with the add inside the norm's kernel (see
        :mod:`tritonic.integrations.residual`); other dtypes or shapes: the add, then the module."""
        if a.dtype != self.weight.dtype or b.dtype != a.dtype or a.shape != b.shape:
            s = a + b
            return self(s), s
        return ops.rms_norm(a, self.weight, self.eps, residual=b, offset=self.offset, upcast=self.upcast)

    add_norm_ahead = add_norm_ahead

    def extra_repr(self) -> str:
        return f"{tuple(self.weight.shape)}, eps={self.eps}, offset={self.offset}, upcast={self.upcast}"


def _layer_norm(m):
    if type(m) is not torch.nn.LayerNorm:
        return None
    new = tnn.LayerNorm(m.normalized_shape, m.eps, elementwise_affine=m.elementwise_affine,
                        bias=m.bias is not None, device="meta")
    new.weight, new.bias = m.weight, m.bias  # shared parameters
    return new


def _embedding(m):
    if type(m) is not torch.nn.Embedding or m.max_norm is not None or m.sparse:
        return None
    new = tnn.Embedding(m.num_embeddings, m.embedding_dim, m.padding_idx, scale_grad_by_freq=m.scale_grad_by_freq,
                        device="meta")
    new.weight = m.weight  # shared (and still tied where the model ties it to its output layer)
    return new


def _probe_embedding(orig, new) -> str | None:
    """None when the lookup gives the original's rows exactly (a gather rounds nothing)."""
    gen = torch.Generator(device="cpu").manual_seed(1234)
    ids = torch.randint(0, orig.num_embeddings, PROBE_ROWS, generator=gen).to(orig.weight.device)
    with torch.no_grad():
        try:
            ours = new(ids)
        except Exception as e:  # noqa: BLE001 (a table the kernel does not take)
            return f"{type(e).__name__}: {e}"
        theirs = orig(ids)
    if ours.shape != theirs.shape or ours.dtype != theirs.dtype or not torch.equal(ours, theirs):
        return "probe rows differ from the original's"
    return None


def _rms_norm(m):
    name = type(m).__name__
    if not name.endswith("RMSNorm") and name != "T5LayerNorm":
        return None
    weight = getattr(m, "weight", None)
    eps = getattr(m, "variance_epsilon", getattr(m, "eps", None))
    if not isinstance(weight, torch.nn.Parameter) or weight.dim() != 1 or not isinstance(eps, float):
        return None
    if name.startswith("Gemma"):
        return RMSNormLike(m, weight, eps, offset=1.0, upcast=True)
    return RMSNormLike(m, weight, eps, upcast=False)  # Llama, Mistral, Qwen2, T5 (same dtypes)


def _activation_name(m) -> str | None:
    """The tritonic name of an activation module (the probe confirms it), or None."""
    name = type(m).__name__
    if isinstance(m, torch.nn.SiLU) or name == "SiLUActivation":
        return "silu"
    if isinstance(m, torch.nn.ReLU):
        return "relu"
    if isinstance(m, torch.nn.GELU):
        return "gelu_tanh" if m.approximate == "tanh" else "gelu"
    if name == "GELUActivation":
        return "gelu"
    if name in ("NewGELUActivation", "GELUTanh", "PytorchGELUTanh", "GELUPytorchTanh"):
        return "gelu_tanh"
    return None


class _Adopted(torch.nn.Module):
    """A replacement that adopts the original's children under their names (same parameters,
    same ``state_dict`` keys) and falls back to the original where its kernels do not apply."""

    def __init__(self, original: torch.nn.Module):
        super().__init__()
        for n, c in original.named_children():
            setattr(self, n, c)
        self._original = (original,)  # not a submodule
        self.training = original.training  # (a new module starts in training mode; the model may be in eval)

    def _kernels_apply(self, x, linear) -> bool:
        from tritonic.runtime import can_run_kernels

        return x.dtype == linear.weight.dtype and can_run_kernels(x.device)


class LinearActBlock(_Adopted):
    """``act(linear(x))`` (BERT's intermediate layer) as one GEMM with the activation in its epilogue."""

    def __init__(self, original, linear_name: str, activation: str):
        super().__init__(original)
        self._linear, self.activation = linear_name, activation

    def forward(self, x):
        lin = getattr(self, self._linear)
        if not self._kernels_apply(x, lin):
            return self._original[0](x)
        return ops.linear(x, lin.weight, lin.bias, activation=self.activation)


def _gated_product(gate, up, activation: str):
    """``act(gate) * up`` in one kernel (SwiGLU for "silu", GeGLU for "gelu" / "gelu_tanh")."""
    if activation == "silu":
        return ops.swiglu(gate, up)
    return ops.geglu(gate, up, approximate="tanh" if activation == "gelu_tanh" else "none")


class GatedMLPBlock(_Adopted):
    """``down_proj(act(gate_proj(x)) * up_proj(x))`` (Llama-family MLPs) with the gate product in
    one kernel (``swiglu`` / ``geglu``); the projections keep their own weights. Without biases,
    through :func:`tritonic.ops.gated_mlp`, whose backward recomputes the product rather than
    keeping it from the forward (less memory in training)."""

    def __init__(self, original, activation: str):
        super().__init__(original)
        self.activation = activation

    _stacked = None  # the interleaved gate/up weight (see stacking.stack_gated_mlps), or None

    def forward(self, x):
        if not self._kernels_apply(x, self.gate_proj):
            return self._original[0](x)
        w = self._stacked
        if w is not None and not torch.is_grad_enabled() and self._interleaved_intact():
            # inference: one GEMM over the interleaved [gate, up] rows, the gated product in its epilogue
            return self.down_proj(ops.gated_linear(x, w, self.activation, layout="interleaved"))
        lin = (self.gate_proj, self.up_proj, self.down_proj)
        if all(m.bias is None and m.weight.dtype == x.dtype for m in lin):
            # one op that recomputes the gated product in the backward instead of keeping it
            return ops.gated_mlp(x, *(m.weight for m in lin), activation=self.activation)
        return self.down_proj(_gated_product(self.gate_proj(x), self.up_proj(x), self.activation))

    def _interleaved_intact(self) -> bool:
        """gate_proj and up_proj still the even and odd rows of the interleaved weight (a
        ``model.to(...)`` or new tensors make them something else: then they run alone)."""
        w, g, u = self._stacked, self.gate_proj.weight, self.up_proj.weight
        return (g.dtype == w.dtype and u.dtype == w.dtype and g.device == w.device and g.data_ptr() == w.data_ptr()
                and u.data_ptr() == w.data_ptr() + w.stride(0) * w.element_size()
                and g.stride() == u.stride() == (2 * w.stride(0), 1))


class DenseAddNormBlock(_Adopted):
    """``LayerNorm(dropout(dense(h)) + input)`` (BERT's self-output and output layers, and their
    RoBERTa/ELECTRA copies): the residual add inside the norm's kernel, one elementwise pass
    and one launch less per layer, in training too (the dropout is the original module)."""

    def forward(self, hidden_states, input_tensor):
        ln = self.LayerNorm
        if not self._kernels_apply(hidden_states, self.dense) or input_tensor.dtype != hidden_states.dtype or \
                input_tensor.shape[-1] != self.dense.out_features or \
                (ln.weight is not None and ln.weight.dtype != hidden_states.dtype):
            return self._original[0](hidden_states, input_tensor)
        return ops.layer_norm(self.dropout(self.dense(hidden_states)), ln.weight, ln.bias, ln.eps,
                              residual=input_tensor, return_sum=False)  # (the sum is not used: not written)


class DenseActDenseBlock(_Adopted):
    """T5's feed-forward, ``wo(dropout(act(wi(x))))``, or gated (T5 v1.1, Flan-T5),
    ``wo(dropout(act(wi_0(x)) * wi_1(x)))``: the activation in the first GEMM's epilogue, or the
    gated product in one kernel; the dropout and ``wo`` are the original modules, after T5's
    cast to ``wo``'s dtype (Flan-T5 keeps ``wo`` in float32)."""

    def __init__(self, original, activation: str, gated: bool):
        super().__init__(original)
        self.activation, self.gated = activation, gated

    def forward(self, x):
        first = self.wi_0 if self.gated else self.wi
        if not self._kernels_apply(x, first):
            return self._original[0](x)
        if self.gated:
            h = _gated_product(self.wi_0(x), self.wi_1(x), self.activation)
        else:
            h = ops.linear(x, self.wi.weight, self.wi.bias, activation=self.activation)
        h = self.dropout(h)
        wo = self.wo.weight
        if isinstance(wo, torch.Tensor) and h.dtype != wo.dtype and wo.dtype != torch.int8:
            h = h.to(wo.dtype)
        return self.wo(h)


class Conv1DActBlock(_Adopted):
    """GPT-2's MLP, ``dropout(c_proj(act(c_fc(x))))`` with ``Conv1D`` layers (weights stored
    (in, out)): the first product and its activation in one GEMM over the transposed view of
    ``c_fc.weight``; ``c_proj`` and the dropout are the original modules."""

    def __init__(self, original, activation: str):
        super().__init__(original)
        self.activation = activation

    def forward(self, x):
        if not self._kernels_apply(x, self.c_fc):
            return self._original[0](x)
        h = ops.linear(x, self.c_fc.weight.t(), self.c_fc.bias, activation=self.activation)
        return self.dropout(self.c_proj(h))


class PoolerBlock(_Adopted):
    """BERT's pooler, ``tanh(dense(hidden_states[:, 0]))``: the first token's product and its tanh
    in one GEMM (the activation in the epilogue) instead of a product and an elementwise pass.
    Its key is not tuned (``autotune.untuned``): the shipped table's entry, else the first config."""

    def forward(self, hidden_states):
        if hidden_states.dim() != 3 or not self._kernels_apply(hidden_states, self.dense):
            return self._original[0](hidden_states)
        with untuned():  # a few rows: tuning its key (seconds of compiles in a cold first call) saves ~1 us
            return ops.linear(hidden_states[:, 0], self.dense.weight, self.dense.bias, activation="tanh")


def _pooler(m):
    children = dict(m.named_children())
    if set(children) != {"dense", "activation"} or type(children["dense"]) is not torch.nn.Linear or \
            type(children["activation"]) is not torch.nn.Tanh:
        return None
    try:
        params = list(inspect.signature(m.forward).parameters)
    except (TypeError, ValueError):
        return None
    return PoolerBlock(m) if len(params) == 1 else None  # forward(hidden_states)


class EmbeddingsNormBlock(_Adopted):
    """BERT's embedding module (``word + token_type + position`` rows, ``LayerNorm``, dropout) at
    inference as one kernel (``ops.embeddings_layer_norm``) instead of eight. Positions and token
    types are found as the module finds them: the ``position_ids`` buffer from the cache offset on
    when none are given, the ``token_type_ids`` buffer read at those positions when no types are
    given. Anything else (``inputs_embeds``, autograd, training-mode dropout, other dtypes, an
    argument it does not know) runs the original ``forward`` on this module, which holds the
    same children and buffers. Its probe compares with the original module on random ids, with
    and without token types: a module that finds its positions otherwise (RoBERTa counts them
    from the padding) fails it and stays as it was."""

    _ARGS = ("input_ids", "token_type_ids", "position_ids", "inputs_embeds")

    def __init__(self, original, offset_name: str | None):
        super().__init__(original)
        for name, buf in original.named_buffers(recurse=False):  # shared tensors, kept as the original keeps them
            self.register_buffer(name, buf, persistent=name not in original._non_persistent_buffers_set)
        for name, value in vars(original).items():  # plain attributes its forward may read
            if not name.startswith("_") and name != "training" and name not in self.__dict__:
                setattr(self, name, value)
        self._offset_name = offset_name  # the forward's cache-offset argument (its name moved between releases)
        self._forward = type(original).forward

    def forward(self, *args, **kwargs):
        bound = dict(zip(self._ARGS, args))
        known = len(args) <= len(self._ARGS) and not set(kwargs) & set(bound) and \
            set(kwargs) <= {*self._ARGS, *((self._offset_name,) if self._offset_name else ())}
        bound.update(kwargs)
        ids = bound.get("input_ids")
        offset = bound.get(self._offset_name, 0) if known and self._offset_name else 0
        ln, word = self.LayerNorm, self.word_embeddings.weight
        if (not known or bound.get("inputs_embeds") is not None or not isinstance(ids, torch.Tensor) or ids.dim() != 2
                or type(offset) is not int or (self.training and self.dropout.p > 0) or not self._fused_applies(word, ln)
                or (torch.is_grad_enabled() and any(p.requires_grad for p in self.parameters()))):
            return self._forward(self, *args, **kwargs)
        B, S = ids.shape
        pos = bound.get("position_ids")
        if pos is None:
            pos = self.position_ids[:, offset:offset + S]  # (past the table: the original's own error, below)
        types, by_pos = bound.get("token_type_ids"), False
        if types is None:
            types, by_pos = self.token_type_ids[0], True
        if not all(isinstance(t, torch.Tensor) and t.dim() == 2 and t.shape[1] == S and t.shape[0] in (1, B)
                   for t in ((pos,) if by_pos else (pos, types))):  # other shapes broadcast in the original
            return self._forward(self, *args, **kwargs)
        return ops.embeddings_layer_norm(ids, word, pos, self.position_embeddings.weight, types,
                                         self.token_type_embeddings.weight, ln.weight, ln.bias, ln.eps, by_pos)

    def _fused_applies(self, word, ln) -> bool:
        from tritonic.runtime import can_run_kernels

        return (ln.weight is not None and ln.bias is not None and ln.weight.dtype == word.dtype
                and all(e.weight.dtype == word.dtype for e in (self.position_embeddings, self.token_type_embeddings))
                and can_run_kernels(word.device))


def _embeddings_norm(m):
    children = dict(m.named_children())
    if set(children) != {"word_embeddings", "position_embeddings", "token_type_embeddings", "LayerNorm", "dropout"}:
        return None
    embs = [children[n] for n in ("word_embeddings", "position_embeddings", "token_type_embeddings")]
    ln = children["LayerNorm"]
    if not all(type(e) is torch.nn.Embedding and e.max_norm is None for e in embs) or \
            type(ln) is not torch.nn.LayerNorm or tuple(ln.normalized_shape) != (embs[0].embedding_dim,) or \
            len({e.embedding_dim for e in embs}) != 1 or not isinstance(children["dropout"], torch.nn.Dropout):
        return None
    buffers = dict(m.named_buffers(recurse=False))
    if any(not isinstance(buffers.get(n), torch.Tensor) or buffers[n].dim() != 2 or buffers[n].dtype != torch.long
           for n in ("position_ids", "token_type_ids")):
        return None
    try:
        params = inspect.signature(m.forward).parameters
    except (TypeError, ValueError):
        return None
    names = list(params)
    offsets = [n for n in names if n in ("past_key_values_length", "cache_length")]
    if names[:4] != list(EmbeddingsNormBlock._ARGS) or len(names) != 4 + len(offsets) or len(offsets) > 1:
        return None
    return EmbeddingsNormBlock(m, offsets[0] if offsets else None)


def _probe_embeddings_norm(orig, new) -> str | None:
    """None when ``new`` passes the correctness rule against ``orig`` (float64 copy as the
    reference) on random ids, without and with token types."""
    word = orig.word_embeddings.weight
    gen = torch.Generator(device="cpu").manual_seed(1234)
    ids = torch.randint(0, word.shape[0], PROBE_SEQS, generator=gen).to(word.device)
    types = torch.randint(0, orig.token_type_embeddings.num_embeddings, PROBE_SEQS, generator=gen).to(word.device)
    modes = {m: m.training for m in (*orig.modules(), *new.modules())}
    orig.eval()
    new.eval()
    try:
        with torch.no_grad():
            ref_module = copy.deepcopy(orig).double()
            for kw in ({}, {"token_type_ids": types}):
                theirs = orig(input_ids=ids, **kw)
                ref = ref_module(input_ids=ids, **kw)
                try:
                    ours = new(input_ids=ids, **kw)
                except Exception as e:  # noqa: BLE001 (a table or dtype the kernel does not take)
                    return f"{type(e).__name__}: {e}"
                if ours.shape != theirs.shape or ours.dtype != theirs.dtype:
                    return f"output {tuple(ours.shape)} {ours.dtype}, the original gives {tuple(theirs.shape)} {theirs.dtype}"
                ok, err, err_theirs = within_rule(ours, theirs, ref)
                if not ok:
                    return f"probe error {err:.2e} against float64, the original's {err_theirs:.2e}"
    finally:
        for m, mode in modes.items():
            m.training = mode
    return None


def _conv1d_mlp(m):
    children = dict(m.named_children())
    if set(children) != {"c_fc", "c_proj", "act", "dropout"} or type(children["c_fc"]).__name__ != "Conv1D" or \
            not isinstance(children["dropout"], torch.nn.Dropout):
        return None
    act = _activation_name(children["act"])
    return None if act is None else Conv1DActBlock(m, act)


def _dense_act_dense(m):
    children = dict(m.named_children())
    gated = set(children) == {"wi_0", "wi_1", "wo", "dropout", "act"}
    if not gated and set(children) != {"wi", "wo", "dropout", "act"}:
        return None
    linears = ("wi_0", "wi_1", "wo") if gated else ("wi", "wo")
    if not all(type(children[n]) is torch.nn.Linear for n in linears) or \
            not isinstance(children["dropout"], torch.nn.Dropout):
        return None
    act = _activation_name(children["act"])
    if act is None or (gated and act not in ("silu", "gelu", "gelu_tanh")):
        return None
    return DenseActDenseBlock(m, act, gated)


def _dense_add_norm(m):
    children = dict(m.named_children())
    if set(children) != {"dense", "LayerNorm", "dropout"} or type(children["dense"]) is not torch.nn.Linear or \
            not isinstance(children["LayerNorm"], torch.nn.LayerNorm) or \
            not isinstance(children["dropout"], torch.nn.Dropout):
        return None
    ln = children["LayerNorm"]
    if len(ln.normalized_shape) != 1 or ln.normalized_shape[0] != children["dense"].out_features:
        return None
    try:
        params = list(inspect.signature(m.forward).parameters)
    except (TypeError, ValueError):
        return None
    return DenseAddNormBlock(m) if len(params) == 2 else None  # forward(hidden_states, input_tensor)


def _linear_act(m):
    children = dict(m.named_children())
    linears = [n for n, c in children.items() if type(c) is torch.nn.Linear]
    acts = {n: _activation_name(c) for n, c in children.items() if n not in linears}
    if len(linears) != 1 or len(acts) != 1 or None in acts.values() or "gate_proj" in children:
        return None  # only exactly one Linear and one known activation (no dropout, no norm)
    return LinearActBlock(m, linears[0], next(iter(acts.values())))


def _gated_mlp(m):
    children = dict(m.named_children())
    if set(children) != {"gate_proj", "up_proj", "down_proj", "act_fn"} or \
            not all(type(children[n]) is torch.nn.Linear for n in ("gate_proj", "up_proj", "down_proj")):
        return None
    act = _activation_name(children["act_fn"])
    return None if act not in ("silu", "gelu", "gelu_tanh") else GatedMLPBlock(m, act)


REGISTRY = [_embeddings_norm, _embedding, _layer_norm, _rms_norm, _dense_add_norm, _dense_act_dense, _pooler, _linear_act,
            _gated_mlp, _conv1d_mlp]


def _probe_ok(orig, new, hidden: int, dtype, device, out_width: int | None = None,
              rows: tuple[int, int] = PROBE_ROWS) -> str | None:
    """None when ``new`` passes the correctness rule against ``orig`` on a probe input of
    ``rows`` (batch, tokens), else why not. ``out_width``: the module also takes a residual
    input of that width (its second argument)."""
    torch.manual_seed(1234)
    xs = [torch.randn(*rows, hidden, device=device).to(dtype)]
    if out_width is not None:
        xs.append(torch.randn(*rows, out_width, device=device).to(dtype))
    modes = {m: m.training for m in (*orig.modules(), *new.modules())}
    orig.eval()  # the function is probed, not dropout (and not the fallback a training-mode block takes)
    new.eval()
    try:
        with torch.no_grad():
            theirs = orig(*xs)
            ref = copy.deepcopy(orig).double()(*(x.double() for x in xs))
            try:
                ours = new(*xs)
            except Exception as e:  # a shape or dtype the replacement does not take
                return f"{type(e).__name__}: {e}"
    finally:
        for m, mode in modes.items():
            m.training = mode
    if ours.shape != theirs.shape or ours.dtype != theirs.dtype:
        return f"output {tuple(ours.shape)} {ours.dtype}, the original gives {tuple(theirs.shape)} {theirs.dtype}"
    ok, err, err_theirs = within_rule(ours, theirs, ref)
    if not ok:
        return f"probe error {err:.2e} against float64, the original's {err_theirs:.2e}"
    return None


def _probe_swap(child, new, dtype) -> str | None:
    """``_probe_ok`` with the probe's width, device and dtype read off the module being replaced."""
    weight = getattr(child, "weight", None)
    if isinstance(new, Conv1DActBlock):  # Conv1D weights are (in, out)
        weight = child.c_fc.weight
        hidden = weight.shape[0]
    elif isinstance(new, _Adopted):  # the input width is the first Linear's
        first = next(c for c in child.children() if isinstance(c, torch.nn.Linear))
        weight, hidden = first.weight, first.in_features
    elif isinstance(weight, torch.Tensor) and weight.dim() == 1:
        hidden = weight.shape[0]
    else:
        hidden = child.normalized_shape[-1]
    device = weight.device if isinstance(weight, torch.Tensor) else torch.device("cpu")
    probe_dtype = dtype or (weight.dtype if isinstance(weight, torch.Tensor) else torch.float32)
    out_width = child.dense.out_features if isinstance(new, DenseAddNormBlock) else None
    rows = PROBE_POOLER if isinstance(new, PoolerBlock) else PROBE_ROWS
    return _probe_ok(child, new, hidden, probe_dtype, device, out_width, rows)


def within_rule(ours: torch.Tensor, theirs: torch.Tensor, ref: torch.Tensor) -> tuple[bool, float, float]:
    """The correctness rule of the probes: ``ours``' error against the float64 ``ref`` is at most
    twice ``theirs``' plus a few units in the last place of ``theirs``' dtype. Returns (ok,
    our error, their error)."""
    err = (ours.double() - ref).abs().max().item()
    err_theirs = (theirs.double() - ref).abs().max().item()
    atol = 8 * torch.finfo(theirs.dtype).eps * max(ref.abs().max().item(), 1e-3)
    return err <= 2 * err_theirs + atol, err, err_theirs


def swap_modules(model: torch.nn.Module, dtype=None) -> tuple[list[str], list[str]]:
    """Replace what the registry knows in ``model``, in place; returns (replaced, kept) lines."""
    replaced: dict[str, int] = {}
    kept: list[str] = []
    gone: list[str] = []  # modules replaced: their subtrees are no longer the model's
    for parent_name, parent in list(model.named_modules()):
        if any(parent_name == g or parent_name.startswith(g + ".") for g in gone):
            continue  # (a block that adopted these children calls the kernels itself)
        for name, child in list(parent.named_children()):
            for make in REGISTRY:
                new = make(child)
                if new is None:
                    continue
                full = f"{parent_name}.{name}" if parent_name else name
                if isinstance(new, tnn.Embedding):
                    why = _probe_embedding(child, new)
                elif isinstance(new, EmbeddingsNormBlock):
                    why = _probe_embeddings_norm(child, new)
                else:
                    why = _probe_swap(child, new, dtype)
                if why is None:
                    setattr(parent, name, new)
                    gone.append(full)
                    label = "tritonic Embedding" if isinstance(new, tnn.Embedding) else type(new).__name__
                    key = f"{type(child).__name__} -> {label}"
                    replaced[key] = replaced.get(key, 0) + 1
                else:
                    kept.append(f"{full} ({type(child).__name__}): {why}")
                break
    return [f"{k} ({n})" for k, n in replaced.items()], kept
