"""The correctness rule of DESIGN.md, shared by every op test.

An op is compared with PyTorch on the same inputs in three versions:

* ``ours``: tritonic, run with outputs poisoned (NaN) before its kernels write them;
* ``torch``: PyTorch's own implementation in the test dtype;
* ``ref``: the PyTorch implementation in float64 on upcast inputs, taken as the truth.

For every output and every gradient, tritonic's largest error against ``ref`` must be at
most twice PyTorch's own, plus a small absolute term (a couple of units in the last place
of the largest reference value). NaN or inf where the reference is finite always fails.
"""

from __future__ import annotations

import torch

from tritonic.runtime import poisoning


def _tensors(out):
    return list(out) if isinstance(out, (tuple, list)) else [out]


def assert_close_to_reference(name: str, ours: torch.Tensor, theirs: torch.Tensor, ref: torch.Tensor,
                              atol_ulps: float = 2.0) -> None:
    """tritonic's error against the float64 ``ref`` is at most 2x PyTorch's plus a small term."""
    assert ours.shape == ref.shape, f"{name}: shape {tuple(ours.shape)}, expected {tuple(ref.shape)}"
    assert ours.dtype == theirs.dtype, f"{name}: dtype {ours.dtype}, PyTorch gives {theirs.dtype}"
    ref = ref.double()
    finite = torch.isfinite(ref)
    bad = finite & ~torch.isfinite(ours.double())
    assert not bad.any(), f"{name}: {int(bad.sum())} non-finite values (unwritten or overflowed) where the reference is finite"
    err = (ours.double() - ref)[finite].abs().max().item() if finite.any() else 0.0
    err_torch = (theirs.double() - ref)[finite].abs().max().item() if finite.any() else 0.0
    scale = max(ref[finite].abs().max().item() if finite.any() else 0.0, 1e-3)
    atol = atol_ulps * torch.finfo(ours.dtype).eps * scale
    assert err <= 2 * err_torch + atol, (
        f"{name}: max error {err:.3e} against float64 is above 2 x PyTorch's {err_torch:.3e} + {atol:.3e}"
    )


def check_op(ours_fn, torch_fn, args: dict, *, grads=(), ref_fn=None, atol_ulps: float = 2.0) -> None:
    """Run ``ours_fn(**args)`` and ``torch_fn(**args)`` and check outputs and gradients.

    ``args`` maps argument names to values (tensors in the test dtype, or anything else);
    ``grads`` names the tensor arguments whose gradients are checked (backward runs with one
    random cotangent per floating output, the same for all three versions). ``ref_fn``
    (default ``torch_fn``) is run on float64 copies of the tensors as the truth.
    """
    ref_fn = ref_fn or torch_fn

    def leaves(cast):
        out = {}
        for k, v in args.items():
            if isinstance(v, torch.Tensor):
                v = cast(v.detach()).clone()
                if k in grads:
                    v.requires_grad_(True)
            out[k] = v
        return out

    a_ours, a_torch, a_ref = leaves(lambda t: t), leaves(lambda t: t), leaves(lambda t: t.double())
    with poisoning():
        out_ours = _tensors(ours_fn(**a_ours))
    out_torch = _tensors(torch_fn(**a_torch))
    out_ref = _tensors(ref_fn(**a_ref))
    assert len(out_ours) == len(out_torch) == len(out_ref), "different numbers of outputs"
    for i, (o, t, r) in enumerate(zip(out_ours, out_torch, out_ref)):
        assert_close_to_reference(f"output {i}", o, t, r, atol_ulps)
    if not grads:
        return
    cots = [torch.randn_like(o) for o in out_ours]  # in the test dtype, so all three see the same values
    inputs = [k for k in grads]

    def grad_of(outs, a):
        pairs = [(o, c.to(o.dtype)) for o, c in zip(outs, cots) if o.requires_grad]
        return torch.autograd.grad([p[0] for p in pairs], [a[k] for k in inputs], [p[1] for p in pairs],
                                   allow_unused=True)

    with poisoning():
        g_ours = grad_of(out_ours, a_ours)
    g_torch, g_ref = grad_of(out_torch, a_torch), grad_of(out_ref, a_ref)
    for k, o, t, r in zip(inputs, g_ours, g_torch, g_ref):
        assert (o is None) == (r is None), f"grad of {k}: None mismatch"
        if r is not None:
            assert_close_to_reference(f"grad of {k}", o, t, r, atol_ulps)


def assert_graph_replays(step, refill, **close) -> None:
    """``step()`` (returning a tuple of tensors) captured in a CUDA graph after a warm-up on a
    side stream; ``refill()`` writes new values into its inputs in place; the replay must give
    what an eager ``step()`` gives on the new inputs (``close``: assert_close tolerances)."""
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(3):
            step()
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        outs = step()
    with torch.no_grad():
        refill()
    g.replay()
    torch.cuda.synchronize()
    for a, b in zip(outs, step()):
        torch.testing.assert_close(a, b, **close)


def spy_launches(monkeypatch, module) -> list:
    """Every launch ``module`` makes from now on, as (kernel, keyword arguments); each still runs."""
    seen = []
    real = module.launch
    monkeypatch.setattr(module, "launch", lambda kernel, *a, **k: (seen.append((kernel, k)), real(kernel, *a, **k)))
    return seen
