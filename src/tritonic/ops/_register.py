"""How every op family plugs into torch: one call registers the forward and backward as
torch custom ops (``tritonic::<name>`` and ``tritonic::<name>_backward``, through
``torch.library.triton_op`` so Inductor sees the Triton kernels) with their autograd, and
returns an eager ``torch.autograd.Function`` that runs the very same functions without the
dispatcher's per-call cost. The public functions call the Function in eager mode and the
custom op while torch traces."""

from __future__ import annotations

import torch
from torch.library import triton_op


def register(name: str, fwd, bwd, setup, grad, *, n_nondiff: int = 0):
    """``fwd``/``bwd`` are annotated functions of tensors and scalars. ``setup(ctx, inputs,
    output, backward_impl)`` saves what ``grad(ctx, *output_grads)`` needs, and ``grad``
    calls ``ctx.backward_impl`` (the backward op, or ``bwd`` itself in eager mode). The last
    ``n_nondiff`` outputs (saved statistics, say) get no gradient; gradients of unused
    outputs arrive as None."""
    op = triton_op(f"tritonic::{name}", mutates_args=())(fwd)
    triton_op(f"tritonic::{name}_backward", mutates_args=())(bwd)
    backward_op = getattr(torch.ops.tritonic, f"{name}_backward")

    def op_setup(ctx, inputs, output):
        setup(ctx, inputs, output, backward_op)

    op.register_autograd(grad, setup_context=op_setup)

    # forward(ctx, ...) rather than a separate setup_context: the latter makes apply() bind
    # the arguments with inspect on every call, which costs more than the launch.
    def forward(ctx, *inputs):
        output = fwd(*inputs)
        setup(ctx, inputs, output, bwd)
        ctx.set_materialize_grads(False)
        if n_nondiff:
            ctx.mark_non_differentiable(*output[len(output) - n_nondiff:])
        return output

    return type(f"_{name}_function", (torch.autograd.Function,),
                {"forward": staticmethod(forward), "backward": staticmethod(grad)})
