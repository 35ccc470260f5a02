"""A GPT you can train, built from tritonic's ops, and its pure-PyTorch twin.

    model = GPT(GPTConfig.gpt2_124m())                  # LayerNorm, GELU (tanh), learned positions
    model = GPT(GPTConfig.llama(n_layer=8, ...))        # RMSNorm, RoPE, SwiGLU, grouped-query attention
    twin = GPT(model.config, backend="torch")           # the same parameters, PyTorch ops only
    twin.load_state_dict(model.state_dict())
    loss = model(idx, targets)[1]

One class, two backends: ``backend="tritonic"`` computes every step with tritonic's kernels
(norms, the MLP GEMM with its activation epilogue, RoPE, flash attention, the fused linear
cross-entropy that never forms the logits). Projections with nothing to fuse (QKV, the
attention output, the MLP's down projection) run as cuBLAS through ``F.linear`` on a GPU:
the same speed or better, and its backward needs no Python (the plain training step is
bound by host time; our kernels run them in the interpreter). ``backend="torch"`` computes the same
function with PyTorch ops only. Parameter names, shapes and initialisation are shared, so
the two load each other's ``state_dict`` and can be trained side by side from the same start.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from tritonic import ops
from tritonic.runtime import interpreter_active

__all__ = ["GPT", "GPTConfig"]


@dataclass
class GPTConfig:
    vocab_size: int = 50304
    n_layer: int = 12
    n_head: int = 12
    n_kv_head: int | None = None  # grouped-query attention when fewer than n_head
    d_model: int = 768
    d_ff: int | None = None  # 4·d_model (GPT-2); about 8/3·d_model rounded to 64 (Llama)
    max_seq: int = 1024
    style: str = "gpt2"  # "gpt2": LayerNorm, GELU, learned positions; "llama": RMSNorm, RoPE, SwiGLU
    bias: bool = True
    alibi: bool = False  # ALiBi slopes instead of positions (GPT-2 style only)
    norm_eps: float = 1e-5
    rope_base: float = 10000.0
    tie_embeddings: bool = True
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.style not in ("gpt2", "llama"):
            raise ValueError(f"GPTConfig: style must be 'gpt2' or 'llama', got {self.style!r}")
        self.n_kv_head = self.n_kv_head or self.n_head
        if self.d_model % self.n_head or self.n_head % self.n_kv_head:
            raise ValueError(f"GPTConfig: d_model ({self.d_model}) must divide by n_head ({self.n_head}) and n_head "
                             f"by n_kv_head ({self.n_kv_head})")
        if self.d_ff is None:
            self.d_ff = 4 * self.d_model if self.style == "gpt2" else 64 * math.ceil(8 * self.d_model / 3 / 64)
        if self.alibi and self.style != "gpt2":
            raise ValueError("GPTConfig: alibi replaces GPT-2's learned positions; Llama style uses RoPE")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_head

    @classmethod
    def gpt2_124m(cls, **kw) -> "GPTConfig":
        return cls(**{"vocab_size": 50304, "n_layer": 12, "n_head": 12, "d_model": 768, "max_seq": 1024, **kw})

    @classmethod
    def llama(cls, **kw) -> "GPTConfig":
        return cls(**{"style": "llama", "bias": False, "norm_eps": 1e-6, "tie_embeddings": False, **kw})


def _amp(x: torch.Tensor):
    """torch.autocast's dtype for x's device, or None: tritonic's ops are not autocast-aware,
    so the tritonic backend casts GEMM operands itself, as autocast would."""
    dev = x.device.type
    return torch.get_autocast_dtype(dev) if dev in ("cuda", "cpu") and torch.is_autocast_enabled(dev) else None


def _alibi_slopes(n_head: int) -> torch.Tensor:
    return torch.tensor([2.0 ** (-8.0 * (i + 1) / n_head) for i in range(n_head)])


class _Block(torch.nn.Module):
    def __init__(self, c: GPTConfig, backend: str):
        super().__init__()
        self.c, self.backend = c, backend
        hd, d = c.head_dim, c.d_model
        norm = torch.nn.LayerNorm if c.style == "gpt2" else torch.nn.RMSNorm
        self.norm1 = norm(d, eps=c.norm_eps)
        self.norm2 = norm(d, eps=c.norm_eps)
        self.qkv = torch.nn.Linear(d, (c.n_head + 2 * c.n_kv_head) * hd, bias=c.bias)
        self.proj = torch.nn.Linear(c.n_head * hd, d, bias=c.bias)
        if c.style == "gpt2":
            self.fc = torch.nn.Linear(d, c.d_ff, bias=c.bias)
        else:
            self.gate_up = torch.nn.Linear(d, 2 * c.d_ff, bias=False)  # rows: [gate; up]
        self.fc_out = torch.nn.Linear(c.d_ff, d, bias=c.bias)

    def _norm(self, norm, x):
        if self.backend == "torch":
            return norm(x)
        if isinstance(norm, torch.nn.LayerNorm):
            return ops.layer_norm(x, norm.weight, norm.bias, norm.eps)
        return ops.rms_norm(x, norm.weight, norm.eps, upcast=True)

    def _linear(self, lin, x, activation=None):
        if self.backend == "torch":
            y = F.linear(x, lin.weight, lin.bias)
            return y if activation is None else F.gelu(y, approximate="tanh")
        if activation is None and x.is_cuda and not interpreter_active():
            return F.linear(x, lin.weight, lin.bias)  # (autocast casts, with its cast cache)
        w, b, dt = lin.weight, lin.bias, _amp(x)
        if dt is not None:
            x, w, b = x.to(dt), w.to(dt), None if b is None else b.to(dt)
        return ops.linear(x, w, b, activation=activation)

    def forward(self, x, rope, slopes):
        c = self.c
        B, S, _ = x.shape
        hd, H, Hk = c.head_dim, c.n_head, c.n_kv_head
        qkv = self._linear(self.qkv, self._norm(self.norm1, x))
        q, k, v = qkv.split([H * hd, Hk * hd, Hk * hd], dim=-1)
        q, k, v = (t.view(B, S, -1, hd).transpose(1, 2) for t in (q, k, v))  # (B, heads, S, hd), strided
        if rope is not None:
            cos, sin = rope
            q, k = (ops.rope_reference if self.backend == "torch" else ops.rope)(q, k, cos, sin)
        if self.backend == "torch":
            mask = None
            if slopes is not None:  # ALiBi as an additive bias, causal as -inf
                pos = torch.arange(S, device=x.device)
                rel = (pos[None, :] - pos[:, None]).to(q.dtype)
                mask = (slopes.to(q.dtype)[:, None, None] * rel).masked_fill(pos[None, :] > pos[:, None], float("-inf"))
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None, enable_gqa=H != Hk)
        else:
            y = ops.attention(q, k, v, causal=True, alibi_slopes=slopes)
        x = x + self._linear(self.proj, y.transpose(1, 2).reshape(B, S, H * hd))
        h = self._norm(self.norm2, x)
        if c.style == "gpt2":
            h = self._linear(self.fc, h, "gelu_tanh")
        elif self.backend == "torch":
            g, u = F.linear(h, self.gate_up.weight).chunk(2, dim=-1)
            h = F.silu(g) * u
        else:
            w, dt = self.gate_up.weight, _amp(h)
            if dt is not None:
                h, w = h.to(dt), w.to(dt)
            h = ops.gated_linear(h, w)
        return x + self._linear(self.fc_out, h)


class GPT(torch.nn.Module):
    """A decoder-only transformer; ``forward(idx, targets=None) -> (logits, loss)``. With
    targets the tritonic backend returns ``logits=None`` (the loss never forms them)."""

    def __init__(self, config: GPTConfig, backend: str = "tritonic"):
        super().__init__()
        if backend not in ("tritonic", "torch"):
            raise ValueError(f"GPT: backend must be 'tritonic' or 'torch', got {backend!r}")
        self.config, self.backend = config, backend
        c = config
        self.wte = torch.nn.Embedding(c.vocab_size, c.d_model)
        if c.style == "gpt2" and not c.alibi:
            self.wpe = torch.nn.Embedding(c.max_seq, c.d_model)
        self.blocks = torch.nn.ModuleList(_Block(c, backend) for _ in range(c.n_layer))
        self.norm = (torch.nn.LayerNorm if c.style == "gpt2" else torch.nn.RMSNorm)(c.d_model, eps=c.norm_eps)
        if not c.tie_embeddings:
            self.head = torch.nn.Linear(c.d_model, c.vocab_size, bias=False)
        if c.alibi:
            self.register_buffer("slopes", _alibi_slopes(c.n_head), persistent=False)
        self.reset_parameters()

    def reset_parameters(self, seed: int | None = None) -> None:
        """GPT-2's initialisation: N(0, 0.02), residual projections scaled by 1/sqrt(2·n_layer)."""
        gen = None if seed is None else torch.Generator().manual_seed(seed)
        for name, p in self.named_parameters():
            if p.dim() < 2:
                torch.nn.init.zeros_(p) if name.endswith("bias") else torch.nn.init.ones_(p)
                continue
            std = 0.02 / math.sqrt(2 * self.config.n_layer) if name.endswith(("proj.weight", "fc_out.weight")) else 0.02
            with torch.no_grad():
                p.copy_(torch.randn(p.shape, generator=gen) * std)

    @property
    def head_weight(self) -> torch.Tensor:
        return self.wte.weight if self.config.tie_embeddings else self.head.weight

    def _rope(self, S, device, dtype):
        if self.config.style != "llama":
            return None
        hd = self.config.head_dim
        inv = self.config.rope_base ** (-torch.arange(0, hd, 2, device=device, dtype=torch.float32) / hd)
        angle = torch.arange(S, device=device, dtype=torch.float32)[:, None] * inv[None, :]
        angle = torch.cat([angle, angle], dim=-1)  # (S, hd), halves equal: Hugging Face's layout
        return angle.cos().to(dtype), angle.sin().to(dtype)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        B, S = idx.shape
        if S > self.config.max_seq:
            raise ValueError(f"GPT: sequence of {S} tokens is longer than max_seq ({self.config.max_seq})")
        x = self.wte(idx)
        if hasattr(self, "wpe"):
            x = x + self.wpe(torch.arange(S, device=idx.device))
        rope = self._rope(S, idx.device, _amp(x) or x.dtype)
        slopes = getattr(self, "slopes", None)
        for block in self.blocks:
            x = block(x, rope, slopes)
        h = self.norm(x) if self.backend == "torch" else self.blocks[0]._norm(self.norm, x)
        if targets is None:
            return F.linear(h, self.head_weight), None
        if self.backend == "torch":
            logits = F.linear(h, self.head_weight)
            return logits, F.cross_entropy(logits.float().view(-1, logits.shape[-1]), targets.reshape(-1))
        w, dt = self.head_weight, _amp(h)
        if dt is not None:  # under autocast the head's GEMMs run in its dtype
            h, w = h.to(dt), w.to(dt)
        return None, ops.fused_linear_cross_entropy(h, w, targets, check_targets=False, loss_dtype=torch.float32)
