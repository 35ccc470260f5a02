"""A rotary position embedding module that holds its cos/sin tables and applies :func:`tritonic.ops.rope.rope`.

    rotary = RotaryEmbedding(head_dim, max_positions=4096, device="cuda")
    q, k = rotary(q, k)                     # positions 0..S-1
    q, k = rotary(q, k, position_ids=pos)   # (B, S) or (S,) positions, e.g. with a KV cache

There is no torch module to subclass here; the tables are non-persistent buffers (they
follow ``.to()`` but stay out of ``state_dict``, as they are recomputed from the arguments).
"""

from __future__ import annotations

import torch

from tritonic.ops.rope import rope, rope_reference
from tritonic.runtime import can_run_kernels


class RotaryEmbedding(torch.nn.Module):
    """RoPE with the standard frequencies ``θ_i = position * base^(-2i / dim)``, i < dim / 2.

    ``dim`` is the rotary dimension (the head dim, or less for partial rotary: GPT-NeoX,
    Phi); the columns of a head past ``dim`` pass through. ``interleaved`` picks GPT-J's
    pairs (x[2i], x[2i+1]) over the half-split pairs (x[i], x[i + dim/2]) of Llama and
    GPT-NeoX. The tables hold one float32 entry per pair for positions ``0..max_positions-1``;
    the angles are computed in float64 before rounding, so they can differ from Hugging
    Face's float32 angles by a float32 rounding at large positions.

    On a device the kernels cannot use (a CPU without Triton's interpreter) it runs
    :func:`tritonic.ops.rope.rope_reference`.
    """

    def __init__(self, dim: int, max_positions: int = 2048, base: float = 10000.0, interleaved: bool = False,
                 device=None):
        super().__init__()
        if not isinstance(dim, int) or dim < 2 or dim % 2:
            raise ValueError(f"RotaryEmbedding: dim must be an even int >= 2, got {dim!r}")
        if not isinstance(max_positions, int) or max_positions < 1:
            raise ValueError(f"RotaryEmbedding: max_positions must be a positive int, got {max_positions!r}")
        if not base > 0:
            raise ValueError(f"RotaryEmbedding: base must be positive, got {base!r}")
        self.dim, self.max_positions, self.base, self.interleaved = dim, max_positions, float(base), interleaved
        inv_freq = self.base ** (-torch.arange(0, dim, 2, dtype=torch.float64, device=device) / dim)
        angles = torch.arange(max_positions, dtype=torch.float64, device=device)[:, None] * inv_freq[None, :]
        self.register_buffer("cos", angles.cos().float(), persistent=False)  # (max_positions, dim / 2)
        self.register_buffer("sin", angles.sin().float(), persistent=False)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, max_positions={self.max_positions}, base={self.base}, interleaved={self.interleaved}"

    def forward(self, q: torch.Tensor, k: torch.Tensor, position_ids: torch.Tensor | None = None,
                inplace: bool = False):
        """Rotate ``q`` (B, Hq, S, D) and ``k`` (B, Hk, S, D); returns ``(q, k)`` rotated.
        Without ``position_ids`` token ``s`` sits at position ``s``."""
        cos, sin = self.cos, self.sin
        if position_ids is None:
            S = q.shape[-2] if q.dim() >= 2 else 0
            if S > self.max_positions:
                raise ValueError(f"RotaryEmbedding: sequence length {S} is above max_positions={self.max_positions}")
            cos, sin = cos[:S], sin[:S]  # per-token angles (S, dim / 2): a view, no copy
        fn = rope if can_run_kernels(q.device) else rope_reference
        return fn(q, k, cos, sin, position_ids=position_ids, interleaved=self.interleaved, rotary_dim=self.dim,
                  inplace=inplace)
