"""RoPE in Hugging Face attention modules through :func:`tritonic.ops.rope`: one kernel for
q and k instead of PyTorch's ``rotate_half`` (a ``cat``), two products and a sum for each.

Llama-family attention modules call a module-level ``apply_rotary_pos_emb(q, k, cos, sin)``
from their ``forward``. Rewriting those forwards would tie tritonic to each family's code of
each transformers release (their cache arguments changed between 5.17 and 5.24). Instead,
each attention class's ``forward`` is *relinked*: a copy of the same function (same code,
defaults, closure) whose global ``apply_rotary_pos_emb`` is tritonic's, bound to each
instance (``module.forward``). A decorator's wrapper (transformers' ``deprecate_kwarg``)
is copied with its closure cell pointing at the relinked function. Everything else the
forward does stays the model's own.

Tritonic's function takes the common case: q ``(B, H, S, D)``, k ``(B, Hk, S, D)``,
cos and sin ``(B or 1, S, r)`` (the default ``unsqueeze_dim=1``), tensors the kernels can
run. ``r`` is the head's width, or narrower (partial rotary: GPT-NeoX, Phi-3) for families
whose function rotates the first ``r`` columns too. Any other call, such as other layouts
or extra arguments, goes to the family's own function. Before a class is relinked, its
family's function and tritonic's are compared on probe inputs (full and partial width)
against the function in float64, under the correctness rule of the other swaps. Interleaved (GPT-J style) or otherwise
different formulas fail the probe and are left alone, and the report says so.
"""

from __future__ import annotations

import types

import torch

from tritonic import ops
from tritonic.runtime import checks as _checks
from tritonic.runtime.checks import KERNEL_DTYPES

__all__ = ["install_rope"]

NAME = "apply_rotary_pos_emb"


def _fits(q, k, cos, sin, partial: bool) -> bool:
    """The case tritonic's function takes (cheap comparisons: this runs in every layer);
    ``partial``: cos and sin may be narrower than the head (the first columns rotate)."""
    return (isinstance(q, torch.Tensor) and isinstance(k, torch.Tensor) and isinstance(cos, torch.Tensor)
            and isinstance(sin, torch.Tensor) and q.dim() == 4 and k.dim() == 4 and cos.dim() == 3
            and cos.shape == sin.shape and q.shape[-1] == k.shape[-1]
            and (cos.shape[-1] == q.shape[-1] or partial and cos.shape[-1] < q.shape[-1] and cos.shape[-1] % 2 == 0)
            and cos.shape[1] == q.shape[2] == k.shape[2] and cos.shape[0] in (1, q.shape[0])
            and q.shape[0] == k.shape[0] and q.dtype in KERNEL_DTYPES and k.dtype == q.dtype
            and cos.dtype in KERNEL_DTYPES and sin.dtype == cos.dtype and q.device == cos.device
            and _checks.can_run_kernels(q.device))


def _tritonic_version(original, partial: bool):
    """``apply_rotary_pos_emb`` through ``ops.rope`` where it fits, else ``original``."""

    def apply_rotary_pos_emb(q, k, cos, sin, *args, **kwargs):
        plain = not args and (not kwargs or kwargs == {"unsqueeze_dim": 1})
        if plain and _fits(q, k, cos, sin, partial):
            return ops.rope(q, k, cos, sin)  # (narrower angles: the first columns rotate, as theirs)
        return original(q, k, cos, sin, *args, **kwargs)

    apply_rotary_pos_emb.__wrapped__ = original
    apply_rotary_pos_emb._tritonic = True
    return apply_rotary_pos_emb


def _relinked(fn, value):
    """A copy of ``fn`` whose global ``NAME`` is ``value``, or None when neither ``fn`` nor a
    function in its closure (a decorator's wrapped function) reads that global."""
    if not isinstance(fn, types.FunctionType):
        return None
    if NAME in fn.__code__.co_names and NAME in fn.__globals__:
        new_globals = dict(fn.__globals__)
        new_globals[NAME] = value
        new = types.FunctionType(fn.__code__, new_globals, fn.__name__, fn.__defaults__, fn.__closure__)
        new.__kwdefaults__ = fn.__kwdefaults__
        new.__dict__.update(fn.__dict__)
        return new
    if not fn.__closure__:
        return None
    cells, changed = [], False
    for cell in fn.__closure__:
        try:
            inner = _relinked(cell.cell_contents, value)
        except ValueError:  # an empty cell
            inner = None
        changed |= inner is not None
        cells.append(types.CellType(inner) if inner is not None else cell)
    if not changed:
        return None
    new = types.FunctionType(fn.__code__, fn.__globals__, fn.__name__, fn.__defaults__, tuple(cells))
    new.__kwdefaults__ = fn.__kwdefaults__
    new.__dict__.update(fn.__dict__)
    if "__wrapped__" in new.__dict__:  # functools.wraps: point at the relinked function
        for cell in cells:
            try:
                if isinstance(cell.cell_contents, types.FunctionType):
                    new.__wrapped__ = cell.cell_contents
                    break
            except ValueError:  # an empty cell
                continue
    return new


def _original_function(fn):
    """The family's ``apply_rotary_pos_emb`` that ``fn`` (or a function it wraps) reads."""
    seen = 0
    while isinstance(fn, types.FunctionType) and seen < 8:
        if NAME in fn.__code__.co_names and NAME in fn.__globals__:
            return fn.__globals__[NAME]
        inner = None
        for cell in fn.__closure__ or ():
            try:
                if isinstance(cell.cell_contents, types.FunctionType):
                    inner = cell.cell_contents
                    break
            except ValueError:
                continue
        fn, seen = inner, seen + 1
    return None


def _probe(original, device, width: int | None = None) -> str | None:
    """None when tritonic's function matches ``original`` on a probe (GQA, per-batch angles;
    ``width``: angles for the first ``width`` of the 16 columns only, partial rotary)."""
    gen = torch.Generator(device="cpu").manual_seed(0)
    B, Hq, Hk, S, D = 2, 4, 2, 5, 16
    W = width or D
    q, k = (torch.randn(B, h, S, D, generator=gen).to(device) for h in (Hq, Hk))
    pos = torch.arange(S, dtype=torch.float32)[None] + torch.tensor([[0.0], [3.0]])
    freqs = pos[..., None] / 10000 ** (torch.arange(0, W, 2, dtype=torch.float32) / W)
    emb = torch.cat((freqs, freqs), dim=-1)
    cos, sin = emb.cos().to(device), emb.sin().to(device)
    try:
        with torch.no_grad():
            ref = original(q.double(), k.double(), cos.double(), sin.double())
            theirs = original(q, k, cos, sin)
            ours = ops.rope(q, k, cos, sin)
    except Exception as e:  # a signature or shapes this family's function does not take
        return f"probe failed: {type(e).__name__}: {e}"
    if not (isinstance(ref, tuple) and len(ref) == 2):
        return f"{NAME} does not return (q, k)"
    for r, t, o in zip(ref, theirs, ours):
        if o.shape != t.shape:
            return f"probe output {tuple(o.shape)}, the original gives {tuple(t.shape)}"
        err, err_theirs = (o.double() - r).abs().max().item(), (t.double() - r).abs().max().item()
        if not err <= 2 * err_theirs + 8 * torch.finfo(torch.float32).eps * max(r.abs().max().item(), 1e-3):
            return f"probe error {err:.2e} against float64, the original's {err_theirs:.2e} (another RoPE formula)"
    return None


def install_rope(model: torch.nn.Module) -> tuple[list[str], list[str]]:
    """Relink the attention modules of ``model`` that call ``apply_rotary_pos_emb``;
    (replaced, kept) report lines."""
    done: dict[type, object] = {}  # class -> relinked forward, or a reason it is not
    count: dict[str, int] = {}
    kept = []
    for name, module in model.named_modules():
        cls = type(module)
        if "forward" in module.__dict__:  # already wrapped (an accelerate hook, a second optimize)
            if getattr(getattr(module.forward, "__func__", None), "_tritonic_rope", False):
                count[cls.__name__] = count.get(cls.__name__, 0) + 1
            continue
        if cls not in done:
            original = _original_function(cls.forward)
            if original is None:
                done[cls] = None
                continue
            if getattr(original, "_tritonic", False):
                done[cls] = None
                continue
            param = next(module.parameters(), None)
            device = param.device if param is not None else torch.device("cpu")
            why = _probe(original, device) if _checks.can_run_kernels(device) else "its device cannot run the kernels"
            partial = why is None and _probe(original, device, width=8) is None  # (GPT-NeoX, Phi-3)
            relinked = _relinked(cls.forward, _tritonic_version(original, partial)) if why is None else None
            if why is None and relinked is None:
                why = "its forward could not be relinked"
            if why is None:
                relinked._tritonic_rope = True
                done[cls] = relinked
            else:
                done[cls] = why
                kept.append(f"RoPE ({cls.__name__}): {why}")
        fn = done[cls]
        if isinstance(fn, types.FunctionType):
            module.forward = types.MethodType(fn, module)
            count[cls.__name__] = count.get(cls.__name__, 0) + 1
    replaced = [f"RoPE: {NAME} -> tritonic.ops.rope in {c}.forward ({n})" for c, n in count.items()]
    return replaced, kept
