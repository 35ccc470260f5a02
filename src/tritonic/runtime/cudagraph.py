"""CUDA graphs: helpers shared by the benchmark harness and ``optimize``, and
:func:`capture_train_step`, a whole training step (forward, backward, optimizer) in one graph."""

from __future__ import annotations

import contextlib

import torch

from tritonic.runtime.pdl import while_capturing

__all__ = ["CapturedStep", "capture_train_step", "recover_from_failed_capture"]


def recover_from_failed_capture() -> None:
    """A capture that raised leaves PyTorch's CUDA generator marked as capturing (every later
    ``torch.randn`` on the GPU then fails with "Offset increment outside graph capture"):
    capture one empty graph, whose end clears that mark. Checked on an H100 (torch 2.11)."""
    with contextlib.suppress(Exception):
        torch.cuda.synchronize()
    with contextlib.suppress(Exception):
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g, stream=torch.cuda.current_stream()):
            pass
        del g


# ----------------------------------------------------------------------------- training steps


class CapturedStep:
    """A training step captured in one CUDA graph; call it with a batch of the captured
    shapes and dtypes. The batch is copied into the graph's inputs and the graph replayed;
    the return value is the step function's own output tensors (the graph's buffers: the
    next call overwrites them, so ``.item()`` or clone what you keep)."""

    def __init__(self, graph, inputs, output):
        self.graph, self.inputs, self.output = graph, inputs, output

    def __call__(self, *batch):
        if len(batch) != len(self.inputs):
            raise TypeError(f"capture_train_step: the step was captured with {len(self.inputs)} batch tensors, "
                            f"got {len(batch)}")
        for i, (dst, src) in enumerate(zip(self.inputs, batch)):
            if not torch.is_tensor(src) or src.shape != dst.shape or src.dtype != dst.dtype:
                got = f"{tuple(src.shape)} {src.dtype}" if torch.is_tensor(src) else type(src).__name__
                raise ValueError(f"capture_train_step: batch tensor {i} must be {tuple(dst.shape)} {dst.dtype} "
                                 f"(the captured shape), got {got}; capture another step for other shapes")
            dst.copy_(src, non_blocking=True)
        self.graph.replay()
        return self.output


def _make_capturable(optimizer, device) -> None:
    """Adam-family optimizers keep their step count on the host unless ``capturable``; a
    float learning rate would be baked into the graph, so it becomes a device tensor (change
    it with ``group["lr"].fill_(value)``)."""
    for group in optimizer.param_groups:
        if "capturable" not in group:
            raise ValueError(f"capture_train_step: {type(optimizer).__name__} has no 'capturable' option "
                             f"(its step count stays on the host); use torch.optim.AdamW or Adam")
        group["capturable"] = True
        if not torch.is_tensor(group["lr"]):
            group["lr"] = torch.tensor(float(group["lr"]), device=device)
        for p in group["params"]:  # state from uncaptured steps keeps its step count on the CPU
            state = optimizer.state.get(p, {})
            if torch.is_tensor(state.get("step")) and state["step"].device != p.device:
                state["step"] = state["step"].to(p.device, torch.float32)


def _warm_up(train_step, optimizer, batch, warmup: int, stream) -> None:
    """Run the step ``warmup`` times (compiling and tuning kernels, creating the optimizer's
    state) at learning rate 0, then put the optimizer state back as it was: the parameters
    and the state are those of before, as if the warm-up had not happened. ``stream`` is a
    side stream (capture wants its warm-up off the default stream), or None."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    before = {p: {k: v.clone() for k, v in optimizer.state[p].items() if torch.is_tensor(v)}
              for p in params if optimizer.state.get(p)}
    lrs = [group["lr"].clone() for group in optimizer.param_groups]
    for group in optimizer.param_groups:
        group["lr"].fill_(0.0)  # the update and decoupled weight decay both scale with lr
    try:
        with torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext():
            for _ in range(warmup):
                optimizer.zero_grad(set_to_none=True)
                train_step(*batch)
    finally:
        if stream is not None:
            torch.cuda.current_stream().wait_stream(stream)
        with torch.no_grad():
            for p in params:
                for k, v in optimizer.state.get(p, {}).items():
                    if torch.is_tensor(v):
                        v.copy_(before[p][k]) if p in before else v.zero_()
            for group, lr in zip(optimizer.param_groups, lrs):
                group["lr"].copy_(lr)
        optimizer.zero_grad(set_to_none=True)


@while_capturing
def capture_train_step(train_step, optimizer, batch, *, warmup: int = 3) -> CapturedStep:
    """A whole training step — forward, backward, optimizer step — as one CUDA graph, so a
    step costs the host one replay instead of a Python model's thousands of launches (GPT-2
    124M's step takes the host ~40 ms of Python on our H200 machine, for ~22 ms of kernels).

    ``train_step(*batch)`` must run forward, ``backward()`` and ``optimizer.step()`` and
    return the loss (or any tensors); it may also clip gradients or zero them. ``batch`` is
    an example batch (a tensor or a tuple of tensors) with the shapes every later call
    will have. The warm-up runs (``warmup`` of them, at learning rate 0, with the optimizer
    state put back afterwards, so nothing moves) compile and tune the kernels; then one step
    is captured. Returns a :class:`CapturedStep`: ``loss = step(*batch)``.

    What a graph cannot hold raises a ``RuntimeError`` naming the cause: host syncs in the
    step (``.item()``, a ``GradScaler``, data-dependent shapes), CPU tensors, an optimizer
    without ``capturable``. The learning rate becomes a device tensor: schedule it with
    ``group["lr"].fill_(value)``. Gradients live in the graph's memory; ``p.grad`` of every
    parameter is valid after a call. Buffers that a forward updates itself (BatchNorm's
    running statistics) see the warm-up steps too; parameters and optimizer state do not.
    One GPU; with DDP/FSDP, capture is theirs to support."""
    batch = (batch,) if torch.is_tensor(batch) else tuple(batch)
    if not batch or not all(torch.is_tensor(t) and t.is_cuda for t in batch):
        raise ValueError("capture_train_step: batch must be CUDA tensors (a tensor or a tuple of them)")
    if not torch.cuda.is_available():
        raise RuntimeError("capture_train_step: CUDA graphs need a CUDA GPU")
    with torch.inference_mode(False):
        inputs = tuple(t.clone() for t in batch)
    _make_capturable(optimizer, inputs[0].device)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    _warm_up(train_step, optimizer, inputs, warmup, side)
    graph = torch.cuda.CUDAGraph()
    try:
        with torch.cuda.graph(graph):
            output = train_step(*inputs)
    except Exception as e:
        recover_from_failed_capture()
        # gradients the failed capture set would point into its memory pool: drop them, so
        # that steps run without the graph start clean
        optimizer.zero_grad(set_to_none=True)
        for group in optimizer.param_groups:
            for p in group["params"]:
                p.grad = None
        raise RuntimeError(f"capture_train_step: this step cannot be captured in a CUDA graph "
                           f"({type(e).__name__}: {str(e)[:300]}); run it without capture_train_step") from e
    return CapturedStep(graph, inputs, output)
