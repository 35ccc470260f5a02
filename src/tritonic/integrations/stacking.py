"""Sibling projections that read one input, run as one GEMM (inference): q/k/v, and the
gate/up pair of gated MLPs (:func:`stack_gated_mlps`, rows interleaved, the gated product in
the GEMM's epilogue).

Attention modules project the same hidden states three times (``q_proj``/``k_proj``/``v_proj``
in Llama-family models, ``query``/``key``/``value`` in BERT, ``q``/``k``/``v`` in T5). At the
sizes of inference the three GEMMs are short kernels whose launch and ramp cost more than
their arithmetic: on an H100, three 768-wide projections of 16 tokens took 10.0 µs in a CUDA
graph and one over the stacked weight 3.6 µs (``scripts/infer_gemm_ab.py``).

:func:`stack_projections` gives each such group one stacked weight ``(N_q + N_k + N_v, K)``
(and bias): the members' parameters become views into it, so nothing is copied twice, the
``state_dict`` keeps its keys and shapes, in-place updates (``load_state_dict``, an
optimizer) reach the stacked weight, and ``save_pretrained`` still writes each tensor. Each
member becomes a :class:`StackedLinear` (an ``nn.Linear``, same parameters). Under no
autograd, the first member called with an input computes the whole stacked product and
returns its columns; the others, called with that very tensor (same object, not written in
place since; inference-mode tensors keep no version counter, so there the object alone), get
theirs as views of the same output. Anything else runs the member's own ``F.linear``:

- autograd on (training), or an input of another dtype than the weights;
- a group whose members turn out not to share their input (cross-attention: queries from the
  decoder, keys and values from the encoder). The first such call turns the group off for
  good (one stacked product was wasted), and ``report()`` says so;
- parameters no longer views of the stacked weight (``model.to(dtype)`` or assigning new
  tensors re-creates them): the group turns off rather than read a stale copy.

The outputs are column slices of one ``(..., N_q + N_k + N_v)`` tensor, views with a row
stride wider than their width; the attention code's ``view(..., heads, head_dim)`` and
``transpose`` keep them views, and tritonic's RoPE and attention kernels take any strides.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tritonic.integrations.gemm_route import plain_linear
from tritonic.integrations.swaps import PROBE_ROWS, within_rule
from tritonic.nn.norm import tensor_version

__all__ = ["StackedLinear", "stack_gated_mlps", "stack_parameters", "stack_projections"]

GROUPS = (("q_proj", "k_proj", "v_proj"), ("query", "key", "value"), ("q", "k", "v"))


def stack_parameters(linears) -> tuple[torch.Tensor, torch.Tensor | None] | None:
    """One ``(sum N, K)`` weight (and bias) whose row blocks the linears' parameters become
    views of, in order; None (nothing changed) where they cannot share one: other types,
    widths, dtypes or devices, some with a bias and some without, tensor subclasses."""
    ws = [m.weight for m in linears]
    bs = [m.bias for m in linears]
    if not all(type(w) is torch.nn.Parameter and type(w.data) is torch.Tensor for w in ws):
        return None
    w0 = ws[0]
    if any(w.dim() != 2 or w.shape[1] != w0.shape[1] or w.dtype != w0.dtype or w.device != w0.device or
           w.device.type == "meta" for w in ws):
        return None
    has_bias = [b is not None for b in bs]
    if any(has_bias) and not all(has_bias):
        return None
    if all(has_bias) and not all(type(b) is torch.nn.Parameter and b.dtype == w0.dtype and b.device == w0.device
                                 for b in bs):
        return None
    with torch.no_grad():
        weight = torch.cat([w.detach() for w in ws])
        bias = torch.cat([b.detach() for b in bs]) if all(has_bias) else None
        start = 0
        for w, b in zip(ws, bs):
            n = w.shape[0]
            w.data = weight[start:start + n]
            if b is not None:
                b.data = bias[start:start + n]
            start += n
    return weight, bias


class _Group:
    """What the members of one stacked group share: the stacked parameters, where each
    member's columns are, and the last stacked product with the members still to take theirs."""

    def __init__(self, names, members, weight, bias):
        self.names, self.members = names, members
        self.weight, self.bias = weight, bias
        self.bounds, start = [], 0
        for m in members:
            self.bounds.append((start, start + m.out_features))
            start += m.out_features
        self.on, self.why_off = True, None
        self.x = self.version = self.out = None
        self.pending: set[int] = set()

    def intact(self) -> bool:
        """Every member's parameters still views of the stacked ones."""
        for m, (start, _) in zip(self.members, self.bounds):
            w = m.weight
            if w.dtype != self.weight.dtype or w.device != self.weight.device or \
                    w.data_ptr() != self.weight.data_ptr() + start * self.weight.stride(0) * w.element_size():
                return False
            if (m.bias is None) != (self.bias is None) or (
                    m.bias is not None and m.bias.data_ptr() != self.bias.data_ptr() + start * m.bias.element_size()):
                return False
        return True

    def turn_off(self, why: str) -> None:
        self.on, self.why_off = False, why
        self.release()

    def release(self) -> None:
        self.x = self.out = self.version = None
        self.pending = set()

    def take(self, i: int, x: torch.Tensor):
        """Member i's output for x from the stacked product, or None (then it runs alone)."""
        if self.x is x and self.version == tensor_version(x) and i in self.pending:
            self.pending.discard(i)
            start, stop = self.bounds[i]
            y = self.out[..., start:stop]
            if not self.pending:
                self.release()  # every member has its columns: the group holds no activation
            return y
        if self.pending:
            self.turn_off(f"{self.names[i]} was called with another input than the one "
                          f"{'/'.join(self.names[j] for j in sorted(self.pending))} still waited for "
                          f"(the projections do not share their input)")
            return None
        if not self.intact():
            self.turn_off("the parameters are no longer views of the stacked weight (moved or replaced)")
            return None
        self.out = plain_linear(x, self.weight, self.bias)  # F.linear unless TRITONIC_INFER_GEMM=triton
        self.x, self.version = x, tensor_version(x)
        self.pending = set(range(len(self.members))) - {i}
        start, stop = self.bounds[i]
        return self.out[..., start:stop]


class StackedLinear(torch.nn.Linear):
    """An ``nn.Linear`` of a stacked group (same parameters); see the module docstring."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        group = self._group[0]
        if group.on and not torch.is_grad_enabled() and x.dtype == self.weight.dtype:
            y = group.take(self._index, x)
            if y is not None:
                return y
        return F.linear(x, self.weight, self.bias)


def _probe(linears, weight, bias) -> str | None:
    """None when the stacked product's columns match each member's own product on a probe
    input under the correctness rule (against float64), else why not."""
    torch.manual_seed(1234)
    x = torch.randn(*PROBE_ROWS, weight.shape[1], device=weight.device).to(weight.dtype)
    with torch.no_grad():
        stacked = F.linear(x, weight, bias)
        start = 0
        for m in linears:
            n = m.out_features
            ref = F.linear(x.double(), m.weight.double(), None if m.bias is None else m.bias.double())
            own = F.linear(x, m.weight, m.bias)
            ok, err, err_own = within_rule(stacked[..., start:start + n], own, ref)
            if not ok:
                return f"stacked probe error {err:.2e} against float64, the separate products' {err_own:.2e}"
            start += n
    return None


def stack_projections(model: torch.nn.Module) -> tuple[list[str], list[str]]:
    """Stack every group of sibling projections the module knows (see ``GROUPS``); returns
    (replaced, kept) lines for the report. ``model.tritonic_stacks`` lists the groups."""
    count = 0
    kept: list[str] = []
    groups = []
    for parent_name, parent in list(model.named_modules()):
        children = dict(parent.named_children())
        for names in GROUPS:
            if not all(type(children.get(n)) is torch.nn.Linear for n in names):
                continue
            linears = [children[n] for n in names]
            full = f"{parent_name}.{'/'.join(names)}" if parent_name else "/".join(names)
            stacked = stack_parameters(linears)
            if stacked is None:
                kept.append(f"{full}: not stacked (widths, dtypes, devices or biases differ)")
                continue
            why = _probe(linears, *stacked)
            if why is not None:
                kept.append(f"{full}: not stacked ({why})")
                continue
            members = []
            for i, (n, lin) in enumerate(zip(names, linears)):
                new = StackedLinear(lin.in_features, lin.out_features, bias=lin.bias is not None, device="meta")
                new.weight, new.bias = lin.weight, lin.bias  # the same Parameters (views of the stack)
                new.train(lin.training)
                new._index = i
                members.append(new)
            group = _Group(names, members, *stacked)
            for n, new in zip(names, members):
                new._group = (group,)  # (a tuple: not a submodule, not in the state_dict)
                setattr(parent, n, new)
            groups.append((parent_name, group))
            count += 1
    model.tritonic_stacks = groups
    replaced = [f"{len(groups)} groups of projections -> one stacked GEMM each (inference)"] if count else []
    return replaced, kept


def _interleave(gate: torch.nn.Linear, up: torch.nn.Linear) -> torch.Tensor:
    """One (2F, K) weight whose rows alternate gate, up; the two parameters become its even and
    odd rows (views with a row stride of 2K)."""
    with torch.no_grad():
        w = torch.stack([gate.weight.detach(), up.weight.detach()], dim=1).reshape(-1, gate.in_features)
        gate.weight.data, up.weight.data = w[0::2], w[1::2]
    return w


def _contiguous_gate_up(module, state_dict, prefix, local_metadata):
    """The state_dict holds the gate and up weights as tensors of their own: the parameters are
    interleaved views of one weight, which checkpoint writers would see as overlapping tensors."""
    for name in ("gate_proj.weight", "up_proj.weight"):
        t = state_dict.get(prefix + name)
        if isinstance(t, torch.Tensor) and not t.is_contiguous():
            state_dict[prefix + name] = t.contiguous()


def _probe_gated(block, w) -> str | None:
    from tritonic import ops

    torch.manual_seed(1234)
    x = torch.randn(*PROBE_ROWS, w.shape[1], device=w.device).to(w.dtype)
    with torch.no_grad():
        g, u = block.gate_proj.weight, block.up_proj.weight
        ref = ops.gated_mlp_reference(x.double(), g.double(), u.double(), block.down_proj.weight.double(),
                                      block.activation)
        own = ops.gated_mlp_reference(x, g, u, block.down_proj.weight, block.activation)
        try:
            ours = block.down_proj(ops.gated_linear(x, w, block.activation, layout="interleaved"))
        except Exception as e:  # noqa: BLE001 (a shape the kernel does not take)
            return f"{type(e).__name__}: {e}"
    ok, err, err_own = within_rule(ours, own, ref)
    return None if ok else f"probe error {err:.2e} against float64, the original's {err_own:.2e}"


def stack_gated_mlps(model: torch.nn.Module) -> tuple[list[str], list[str]]:
    """Give each swapped gated MLP (:class:`~tritonic.integrations.swaps.GatedMLPBlock`) one
    weight whose rows alternate gate and up. Under no autograd it runs one GEMM over it with the
    gated product in the epilogue (``ops.gated_linear(layout="interleaved")``): on an H100 this
    beat the two projections and the gated-product kernel at every size measured (Llama-1B's MLP,
    16 rows 18.3 against 22.6 µs, 1024 rows 70.7 against 76.5, 8192 rows 678 against 694;
    ``scripts/infer_gemm_ab.py``). ``gate_proj.weight`` and ``up_proj.weight`` become the even
    and odd rows of that weight (no second copy); the ``state_dict`` gives them as tensors of
    their own, and ``load_state_dict`` writes through the views."""
    from tritonic.integrations.swaps import GatedMLPBlock

    count = 0
    kept = []
    for name, m in model.named_modules():
        if not isinstance(m, GatedMLPBlock) or m._stacked is not None:
            continue
        gate, up = m.gate_proj, m.up_proj
        if any(type(lin) is not torch.nn.Linear or lin.bias is not None or type(lin.weight.data) is not torch.Tensor
               for lin in (gate, up)) or gate.weight.shape != up.weight.shape or gate.weight.dtype != up.weight.dtype \
                or gate.weight.device != up.weight.device or gate.weight.device.type == "meta":
            continue  # (biased or mismatched gate/up projections keep the block's own path)
        w = _interleave(gate, up)
        why = _probe_gated(m, w)
        if why is not None:
            kept.append(f"{name}.gate_proj/up_proj: not interleaved ({why})")
            continue
        m._stacked = w
        hook = getattr(m, "register_state_dict_post_hook", None) or m._register_state_dict_hook
        hook(_contiguous_gate_up)
        count += 1
    return ([f"{count} gated MLPs: gate_proj and up_proj -> one interleaved GEMM with the gated product in its "
             f"epilogue (inference)"] if count else []), kept
