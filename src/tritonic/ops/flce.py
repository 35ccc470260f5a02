"""Fused linear cross-entropy: the LM head's product and the loss in chunks, without the
(N, V) logits (``ops/loss.py`` holds the cross-entropy it builds on).

    loss = fused_linear_cross_entropy(hidden, lm_head.weight, target)      # no (N, V) logits
    loss = fused_linear_cross_entropy(hidden, w, target, low_memory=True)  # vocabulary slices

Registered as ``tritonic::fused_linear_cross_entropy``, opaque to ``torch.compile`` (its point
is the memory of its chunked loop). The gradients are computed in the forward, for one scalar
loss, and scaled by the upstream gradient in the backward. The cross-entropy helpers are used
through their module (``_ce._check_targets`` and so on), so that patching them there patches
them here too.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tritonic.kernels.loss import _ce_slice_stats
from tritonic.ops import loss as _ce
from tritonic.runtime import empty
from tritonic.runtime.alloc import empty_like
from tritonic.runtime.checks import KERNEL_DTYPES, check_kernel_device, check_same_device, check_tensor
from tritonic.runtime.launcher import launch

__all__ = ["fused_linear_cross_entropy", "fused_linear_cross_entropy_reference"]


def fused_linear_cross_entropy_reference(hidden, weight, target, bias=None, ignore_index=-100, reduction="mean",
                                         label_smoothing=0.0, z_loss=0.0, softcap=None):
    """``cross_entropy_reference(F.linear(hidden, weight, bias), target, ...)``: all logits at once."""
    return _ce.cross_entropy_reference(F.linear(hidden, weight, bias), target, ignore_index, reduction,
                                       label_smoothing, z_loss, softcap)


def _chunk_rows(N: int, V: int, H: int) -> int:
    """Tokens per chunk (a multiple of 256, at least 1024). Two costs pull apart: a chunk's
    logits (``rows x V``) are the memory the op adds beyond its gradients, and every chunk
    reads and writes the whole ``dW`` once more (its GEMM adds into it), which at 256 rows
    of a 4096-wide head costs more than half the GEMMs' time again. 1024 rows keep that
    under a sixth; larger hidden sizes or batches may go up to a quarter of ``W``'s size
    or ``hidden``'s size in logits, whichever is larger."""
    budget = max(V * H // 4, N * H)  # logits elements one chunk may hold
    rows = max(1024, (budget // max(V, 1)) // 256 * 256)
    return min(N, rows)


def _padded_vocab(V: int, weight: torch.Tensor) -> int:
    """V, or V rounded up to a multiple of 64 when a row of V elements is not a multiple of
    16 bytes (the alignment cuBLAS's fast kernels need of the logits' row stride)."""
    return V if (V * weight.element_size()) % 16 == 0 else -(-V // 64) * 64


def _slice_width(vocab_chunk: int, V: int, Vp: int) -> int:
    width = min(vocab_chunk, V)
    if Vp != V:  # slices start and end on the padded head's 64-row steps
        width = -(-width // 64) * 64
    return width


def _fixed_plan(V: int, width: int, flat):
    """Slices of ``width`` classes, all in one buffer ``flat``: (v0, width, buffer) each."""
    for v0 in range(0, V, width):
        yield v0, width, flat


def _plan_in_dw(V: int, Vp: int, N: int, H: int, width: int, step: int, dw_flat, small_width: int, new_buffer):
    """The second pass's slices with their logits in dW's own rows: slice v0 .. v0 + x writes
    dW's rows v0 .. v0 + x, and its N·x logits sit in the rows after those, which later slices
    have not written yet. So x ≤ (Vp - v0)·H / (N + H): near the end the slices narrow, and
    once that is under ``small_width`` the rest goes through one small buffer of N·small_width
    (made by ``new_buffer`` when first needed). Widths are multiples of ``step``."""
    small = None
    v0 = 0
    while v0 < V:
        # the logits start on an 8-element boundary (16 bytes or more, for the GEMMs' vector access)
        x = min(width, max(0, (Vp - v0) * H - 8) // (N + H)) // step * step
        if x >= small_width:
            start = -(-(v0 + x) * H // 8) * 8
            yield v0, x, dw_flat[start:]
        else:
            if small is None:
                small = new_buffer(N * small_width)
            x = small_width
            yield v0, x, small
        v0 += x


def _vocab_slices(hidden, w_full, b_full, V, Vp, plan):
    """(v0, v1, v1p, logits) for each (v0, width, buffer) of ``plan``: the logits of classes
    v0 .. v1p - 1 (v1: the real classes' end, v1p: the padded head's) for all tokens, in the
    buffer's first N·(v1p - v0) elements (the low-memory path's two passes)."""
    N = hidden.shape[0]
    for v0, width, flat in plan:
        v1, v1p = min(V, v0 + width), min(Vp, v0 + width)
        lv = flat[:N * (v1p - v0)].view(N, v1p - v0)
        if b_full is None:
            torch.mm(hidden, w_full[v0:v1p].t(), out=lv)
        else:
            torch.addmm(b_full[v0:v1p], hidden, w_full[v0:v1p].t(), out=lv)
        yield v0, v1, v1p, lv


def _sliced_stats(hidden, w_full, b_full, target, V, Vp, plan, ignore_index, smoothing, z_coef, softcap):
    """The low-memory path's first pass: every row's loss and (max, log-sum-exp past it) from
    the logits of one vocabulary slice at a time, for all tokens at once (one GEMM per slice,
    the head read once; token chunks of a few hundred rows would each read all of it)."""
    N = hidden.shape[0]
    stats = torch.empty((N, 4), dtype=torch.float32, device=hidden.device)
    stats[:, 0] = float("-inf")
    stats[:, 1:] = 0.0
    flags = dict(HAS_SMOOTHING=bool(smoothing), HAS_SOFTCAP=bool(softcap))
    for v0, v1, _, lv in _vocab_slices(hidden, w_full, b_full, V, Vp, plan):
        if N:
            launch(_ce_slice_stats, (N,), lv, target, stats, lv.stride(0), v1 - v0, v0, softcap, **flags,
                   BLOCK_V=_ce._block_v(v1 - v0), num_warps=8 if v1 - v0 > 4096 else 4)
    lv = plan = None  # (a buffer of the slices' own goes with them, before the second pass makes its own)
    m, s, total, x_t = stats.unbind(1)
    log_s = torch.log(s)
    loss = (m - x_t) + log_s  # the same formulas as _ce_fwd's
    if smoothing:
        loss = (1.0 - smoothing) * loss + smoothing * ((m - total / V) + log_s)
    if z_coef:
        lse = m + log_s
        loss = loss + z_coef * lse * lse
    loss = torch.where((target >= 0) & (target < V), loss, float("nan"))
    loss = torch.where(target != ignore_index, loss, 0.0)
    return loss, torch.stack((m, log_s), dim=1)


def _flce_forward(hidden, weight, bias, target, ignore_index, mean, smoothing, z_coef, softcap, chunk, vocab_chunk,
                  need_dh, need_dw, need_db):
    """(float32 loss, dh, dw, db) with the gradients for an upstream gradient of 1 (empty
    tensors where not needed). Chunk by chunk: logits, loss, then the logits' gradient written
    over the logits themselves, then its products into dh, dW and db.

    ``vocab_chunk`` > 0 (low memory, with dW or db wanted): no token chunks. A first pass over
    slices of the vocabulary gathers every row's softmax statistics (``_sliced_stats``). A
    second pass recomputes each slice's logits for all tokens, turns them into their gradient,
    writes the slice's rows of dW once (K = all tokens), and adds its share of dh. One more
    GEMM, but small slices then cost no dW traffic, and every GEMM has all N rows. The
    slices' logits live in dW's not-yet-written rows (``_plan_in_dw``)."""
    N, H = hidden.shape
    V = weight.shape[0]
    valid = target != ignore_index
    # the per-row gradient weight: 1 for "sum", 1 / (number of valid rows) for "mean"; on the device
    scale = valid.sum().to(torch.float32).reciprocal() if mean else \
        torch.ones((), dtype=torch.float32, device=hidden.device)
    loss_rows = empty((N,), dtype=torch.float32, device=hidden.device)
    # A vocabulary whose rows of logits are not 16-byte multiples (GPT-2's 50257) leaves
    # cuBLAS only unvectorised kernels: ~6x slower for all three GEMMs on an H200. The head
    # is then copied into one padded with zero rows (Vp, a multiple of 64), the logits get
    # Vp columns (the padding's logits and gradients are exact zeros: the kernels see only the
    # first V), and dW is computed for Vp rows, of which the first V are returned (a view).
    Vp = _padded_vocab(V, weight)
    w_full, b_full = weight, bias
    if Vp != V:
        w_full = empty((Vp, H), dtype=weight.dtype, device=weight.device)
        w_full[:V].copy_(weight)
        w_full[V:].zero_()
        if bias is not None:
            b_full = torch.zeros((Vp,), dtype=bias.dtype, device=bias.device)
            b_full[:V].copy_(bias)
    dh = empty_like(hidden) if need_dh else hidden.new_empty(0)
    # dW in the weight's dtype (like PyTorch's own weight gradient): a float32 copy of a
    # 128k x 4096 head would cost 2 GiB more than the unfused loss
    dw_full = empty((Vp, H), dtype=weight.dtype, device=weight.device) if need_dw else None
    dw = dw_full[:V] if need_dw else weight.new_empty(0)  # the first chunk's GEMM writes it whole
    db = torch.zeros((V,), dtype=torch.float32, device=weight.device) if need_db else weight.new_empty(0)
    two_pass = vocab_chunk > 0 and (need_dw or need_db)
    if two_pass:
        width = _slice_width(vocab_chunk, V, Vp)
        step = 64 if Vp != V else 8  # slices start and end on the padded head's 64-row steps; 16-byte rows
        new_buffer = lambda n: empty((n,), dtype=hidden.dtype, device=hidden.device)  # noqa: E731
        # dW is not written until the second pass: the first pass's logits can live in it, in
        # slices as wide as it holds (fewer, larger GEMMs, no memory of their own)
        dw_flat = dw_full.view(-1) if need_dw else None
        wide = (Vp * H // N) // step * step if need_dw and N else 0
        small_width = max(step, width // 8 // step * step)  # no narrower slices in dW than this
        plan1 = _fixed_plan(V, wide, dw_flat) if wide >= small_width else \
            _fixed_plan(V, width, new_buffer(N * width))
        loss_rows, lse_all = _sliced_stats(hidden, w_full, b_full, target, V, Vp, plan1, ignore_index, smoothing,
                                           z_coef, softcap)
        plan1 = None
        if need_dw and N:  # the second pass's logits in dW's not-yet-written rows, a small buffer at the end
            plan2 = _plan_in_dw(V, Vp, N, H, width, step, dw_flat, small_width, new_buffer)
        else:
            plan2 = _fixed_plan(V, width, new_buffer(N * width))
    buf = empty((min(chunk, N), Vp), dtype=hidden.dtype, device=hidden.device) if not two_pass else None
    for lo in range(0, N if not two_pass else 0, chunk):
        hi = min(N, lo + chunk)
        h, t = hidden[lo:hi], target[lo:hi]
        full = buf[:hi - lo]
        if b_full is None:
            torch.mm(h, w_full.t(), out=full)
        else:
            torch.addmm(b_full, h, w_full.t(), out=full)
        logits = full[:, :V]
        rows, lse = _ce._launch_fwd(logits, t, ignore_index, smoothing, z_coef, softcap)
        loss_rows[lo:hi] = rows
        if need_dh or need_dw or need_db:
            g = _ce._launch_bwd(scale.expand(hi - lo), logits, t, lse, ignore_index, smoothing, z_coef, softcap,
                            out=logits)  # the logits are not needed again: their gradient overwrites them
            if need_dh:  # (full: g and the padding's zero columns)
                torch.mm(full, w_full, out=dh[lo:hi])
            if need_dw:  # the GEMM accumulates in float32; the running sum is kept in dw's dtype
                if lo == 0:
                    torch.mm(full.t(), h, out=dw_full)
                else:
                    dw_full.addmm_(full.t(), h)
            if need_db:
                db += g.sum(0, dtype=torch.float32)
    if two_pass:  # the gradients, slice by slice: dW's rows written once, dh summed over the slices
        rows_scale = scale.expand(N)
        for v0, v1, v1p, lv in _vocab_slices(hidden, w_full, b_full, V, Vp, plan2):
            g = _ce._launch_bwd(rows_scale, lv[:, :v1 - v0], target, lse_all, ignore_index, smoothing, z_coef, softcap,
                            out=lv[:, :v1 - v0], col0=v0, V=V)
            if need_dw:
                torch.mm(lv.t(), hidden, out=dw_full[v0:v1p])
            if need_dh:  # the GEMM adds in float32; the running sum is kept in dh's dtype
                if v0 == 0:
                    torch.mm(lv, w_full[v0:v1p], out=dh)
                else:
                    dh.addmm_(lv, w_full[v0:v1p])
            if need_db:
                db[v0:v1] = g.sum(0, dtype=torch.float32)
    total = loss_rows.sum()
    loss = total * scale if mean else total  # no valid row: 0 * inf = NaN, as PyTorch's 0 / 0
    return loss, dh, dw, db.to(weight.dtype) if need_db else db


@torch.library.custom_op("tritonic::fused_linear_cross_entropy", mutates_args=())
def _flce_op(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, target: torch.Tensor,
             ignore_index: int, mean: bool, smoothing: float, z_coef: float, softcap: float, chunk: int,
             vocab_chunk: int, need_dh: bool, need_dw: bool, need_db: bool
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    # an opaque op for torch.compile: its point is the memory of its chunked loop, which must
    # not be traced into one graph that holds every chunk's logits
    return _flce_forward(hidden, weight, bias, target, ignore_index, mean, smoothing, z_coef, softcap, chunk,
                         vocab_chunk, need_dh, need_dw, need_db)


@_flce_op.register_fake
def _flce_fake(hidden, weight, bias, target, ignore_index, mean, smoothing, z_coef, softcap, chunk, vocab_chunk,
               need_dh, need_dw, need_db):
    return (hidden.new_empty((), dtype=torch.float32),
            hidden.new_empty(hidden.shape) if need_dh else hidden.new_empty(0),
            weight.new_empty(weight.shape) if need_dw else weight.new_empty(0),
            weight.new_empty((weight.shape[0],)) if need_db else weight.new_empty(0))


def _flce_setup(ctx, inputs, output):
    ctx.save_for_backward(*output[1:])
    ctx.mark_non_differentiable(*output[1:])
    ctx.set_materialize_grads(False)  # else autograd passes zero "gradients" of dh and dW: the head's size again
    ctx.has_bias = inputs[2] is not None
    ctx.used = False


def _flce_grad(ctx, dloss, _dh, _dw, _db):
    if dloss is None:  # the loss itself was not used
        return (None,) * 14
    if ctx.used:
        raise RuntimeError("fused_linear_cross_entropy: backward through the same loss twice (retain_graph=True) "
                           "is not supported: the gradients were computed in the forward and scaled in place by "
                           "the first backward; run the forward again")
    dh, dw, db = ctx.saved_tensors
    g = dloss.to(torch.float32)  # the loss is one number: so is its gradient
    if torch.compiler.is_compiling():
        scaled = [None if t.numel() == 0 else (t * g).to(t.dtype) for t in (dh, dw, db)]
    else:  # in place: a scaled copy of dW would add the size of the head to the peak memory
        ctx.used = True
        scaled = [None if t.numel() == 0 else t.mul_(g) for t in (dh, dw, db)]
    return (scaled[0], scaled[1], scaled[2] if ctx.has_bias else None, *(None,) * 11)


_flce_op.register_autograd(_flce_grad, setup_context=_flce_setup)


def fused_linear_cross_entropy(hidden, weight, target, bias=None, ignore_index=-100, reduction="mean",
                               label_smoothing=0.0, z_loss=0.0, softcap=None, *, chunk_rows=None,
                               check_targets=True, loss_dtype=None, low_memory=False, vocab_chunk=None):
    """``cross_entropy(F.linear(hidden, weight, bias), target, ...)`` without the (N, V) logits.

    ``hidden`` ``(..., H)``, ``weight`` ``(V, H)`` (the language-model head), ``target``
    ``(...)``. Tokens go through in chunks of ``chunk_rows`` (default: at least 1024 rows,
    more while a chunk's logits stay within a quarter of ``weight``'s or all of ``hidden``'s
    size; fewer rows save memory, but each chunk reads and writes ``dW`` once more); the
    gradients of ``hidden``, ``weight`` and ``bias`` are computed during the forward and
    scaled in place by the upstream gradient in the backward (so one backward per forward),
    so only one chunk of logits ever exists. ``reduction`` is ``"mean"`` or ``"sum"``. The op
    is ``tritonic::fused_linear_cross_entropy``, opaque to ``torch.compile`` (its chunked loop
    is what saves the memory). In half precision ``dW`` accumulates over the chunks in the
    weight's dtype (each chunk's product in float32 inside the GEMM). The loss is summed in
    float32 and returned in ``loss_dtype`` (default: ``hidden``'s dtype, like ``F.cross_entropy``
    on half-precision logits; ``torch.float32`` keeps its digits, as autocast would).

    ``low_memory=True`` trades one more GEMM for memory. The logits are formed for one
    vocabulary slice of ``vocab_chunk`` classes at a time, for all tokens at once (default: as
    many logits as a token chunk of ``chunk_rows``, 1024 by default, would hold). This runs in
    two passes. The first gathers each row's softmax statistics. The second computes the
    gradients: each slice's dW rows are written once, and dh is summed over the slices. Each
    slice is one GEMM over all tokens, so the head is read once per pass; token chunks of a
    few hundred rows would each read all of it. Where dW is wanted, the slices' logits live in
    dW's own memory, which is free until the second pass writes it: the first pass in slices
    as wide as dW holds, the second in the rows after the slice being written (narrowing near
    the end), then one buffer of an eighth of a slice. So the op's memory beyond its gradients
    is that small buffer: at 8192 × 4096 → 128256, 31 MB, against 250 MB for one default
    token chunk of logits."""
    op = "fused_linear_cross_entropy"
    check_tensor(op, "hidden", hidden, min_dim=1)
    check_tensor(op, "weight", weight, min_dim=2)
    if weight.dim() != 2 or weight.shape[1] != hidden.shape[-1]:
        raise ValueError(f"{op}: weight must be (V, H) with H = hidden.shape[-1] = {hidden.shape[-1]}, "
                         f"got {tuple(weight.shape)}")
    if weight.dtype != hidden.dtype:
        raise TypeError(f"{op}: weight must have hidden's dtype ({hidden.dtype}), got {weight.dtype}")
    if bias is not None:
        check_tensor(op, "bias", bias)
        if tuple(bias.shape) != (weight.shape[0],) or bias.dtype != hidden.dtype:
            raise ValueError(f"{op}: bias must be ({weight.shape[0]},) in {hidden.dtype}, got "
                             f"{tuple(bias.shape)} {bias.dtype}")
    fake_logits = hidden.new_empty(()).expand(*hidden.shape[:-1], weight.shape[0])  # for the shared checks
    _ce._check(op, fake_logits, target, ignore_index, reduction, label_smoothing, z_loss, softcap)
    if reduction == "none":
        raise ValueError(f"{op}: reduction must be 'mean' or 'sum' (the gradients are computed in the forward "
                         f"for one scalar loss); use cross_entropy for per-token losses")
    check_same_device(op, "hidden", hidden, weight=weight, bias=bias, target=target)
    V, H = weight.shape
    _ce._check_targets(op, target, V, ignore_index, check_targets)
    kw = dict(ignore_index=ignore_index, reduction=reduction, label_smoothing=label_smoothing, z_loss=z_loss,
              softcap=softcap)
    if hidden.dtype not in KERNEL_DTYPES or hidden.numel() == 0:
        loss = fused_linear_cross_entropy_reference(hidden, weight, target, bias, **kw)
        return loss if loss_dtype is None else loss.to(loss_dtype)
    check_kernel_device(op, "hidden", hidden)
    h2, t2 = hidden.reshape(-1, H), target.reshape(-1)
    N = h2.shape[0]
    chunk = int(chunk_rows) if chunk_rows is not None else (min(N, 1024) if low_memory else _chunk_rows(N, V, H))
    if chunk < 1:
        raise ValueError(f"{op}: chunk_rows must be a positive int, got {chunk_rows!r}")
    vchunk = 0
    if low_memory:
        vchunk = int(vocab_chunk) if vocab_chunk is not None else min(V, max(512, chunk * V // max(N, 1) // 128 * 128))
        if vchunk < 1:
            raise ValueError(f"{op}: vocab_chunk must be a positive int, got {vocab_chunk!r}")
    elif vocab_chunk is not None:
        raise ValueError(f"{op}: vocab_chunk is for low_memory=True")
    grad = torch.is_grad_enabled()
    need = (grad and hidden.requires_grad, grad and weight.requires_grad,
            grad and bias is not None and bias.requires_grad)
    loss = torch.ops.tritonic.fused_linear_cross_entropy(h2, weight, bias, t2, int(ignore_index), reduction == "mean",
                                                         float(label_smoothing), float(z_loss), float(softcap or 0.0),
                                                         chunk, vchunk, *need)[0]
    return loss.to(hidden.dtype if loss_dtype is None else loss_dtype)
