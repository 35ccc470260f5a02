"""Attention of a few new tokens per sequence over a KV cache (flash-decoding).

    out = attention_decode(q, k_cache, v_cache, cache_seqlens)   # q (B, H, 1, D), caches (B, Hk, S_max, D)

The cache is split along its length so that a batch of one still fills the GPU
(``kernels/attention_decode.py``); grid and buffers depend on shapes only, so a decode step
can be captured in a CUDA graph. Not registered as a custom op yet: ``torch.compile``
traces the reference.
"""

from __future__ import annotations

import math

import torch

from tritonic.kernels.attention_decode import _attn_decode_combine, _attn_decode_split
from tritonic.ops.attention import _check_qkv, attention_reference
from tritonic.runtime import empty, interpreter_active, num_sms
from tritonic.runtime import pdl as _pdl
from tritonic.runtime.checks import KERNEL_DTYPES, check_kernel_device, check_same_device
from tritonic.runtime.launcher import is_traced, launch

__all__ = ["attention_decode", "attention_decode_reference"]

# The first pass's tile on a GPU: cache positions per step, warps, pipeline stages (scripts/decode_tiles.py
# times the alternatives; the combine's launch is fixed)
TILE = {"block_n": 64, "num_warps": 4, "num_stages": 3}


def default_splits(pairs: int, n_blocks: int, sms: int) -> int:
    """Flash-decoding's split count for ``pairs`` (batch, kv head) programs over ``n_blocks`` key
    blocks: enough programs for every SM twice over, at least one key block each, unless the
    pairs alone fill a wave (b16 1k on an H100: one split 27.8 us, three 30.2; b64 1k: one or two
    within 1 %); long caches split at least 8 ways (16+ blocks each): more loads in flight
    (b64 8k: +9 %)."""
    fill = 1 if 10 * pairs >= 9 * sms else (2 * sms + pairs - 1) // pairs
    return max(1, min(n_blocks, fill), min(8, n_blocks // 16))


def attention_decode_reference(q, k_cache, v_cache, cache_seqlens, *, causal=True, window=None, scale=None,
                               key_mask=None):
    """PyTorch, one sequence at a time over its valid cache length."""
    outs = []
    for b in range(q.shape[0]):
        n = int(cache_seqlens[b])
        mask = None if key_mask is None else key_mask[b:b + 1, :n][:, None, None, :]
        outs.append(attention_reference(q[b:b + 1], k_cache[b:b + 1, :, :n], v_cache[b:b + 1, :, :n],
                                        causal=causal, mask=mask, window=window, scale=scale))
    return torch.cat(outs)


def attention_decode(q, k_cache, v_cache, cache_seqlens, *, causal=True, window=None, scale=None,
                     num_splits=None, key_mask=None):
    """Attention of a few new tokens per sequence over a KV cache (flash-decoding).

    ``q``: (B, H, Sq, D), the new tokens (Sq = 1 for plain decoding); ``k_cache``/``v_cache``:
    (B, H_kv, S_max, D), already holding the new tokens' keys and values; ``cache_seqlens``:
    (B,) integers on the device, each sequence's valid length (new tokens included). The new
    tokens sit at the last ``Sq`` valid positions; ``causal`` masks later ones among them.
    The cache is split along its length so that a batch of one still fills the GPU; grid
    and buffers depend only on the shapes, never on ``cache_seqlens``, so no host sync
    happens and the call can be captured in a CUDA graph. ``key_mask``: (B, S_max) booleans,
    False for cache positions no query attends to (the left padding of a batch of prompts)."""
    op = "attention_decode"
    _check_qkv(op, (("q", q), ("k_cache", k_cache), ("v_cache", v_cache)), "(B, H, S, D)", 1, scale)
    B, H, Sq, D = q.shape
    if k_cache.shape != v_cache.shape or k_cache.shape[0] != B or k_cache.shape[3] != D:
        raise ValueError(f"attention_decode: q {tuple(q.shape)}, k_cache {tuple(k_cache.shape)} and v_cache "
                         f"{tuple(v_cache.shape)} disagree on batch, head dim or cache shape")
    Hk, S_max = k_cache.shape[1], k_cache.shape[2]
    if not isinstance(cache_seqlens, torch.Tensor) or cache_seqlens.shape != (B,) or \
            cache_seqlens.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"attention_decode: cache_seqlens must be an int32/int64 tensor of shape ({B},)")
    if key_mask is not None and (not isinstance(key_mask, torch.Tensor) or key_mask.dtype != torch.bool or
                                 tuple(key_mask.shape) != (B, S_max) or key_mask.stride(-1) != 1):
        raise ValueError(f"attention_decode: key_mask must be a bool tensor of shape ({B}, {S_max}) with unit "
                         f"stride along the cache, got "
                         f"{tuple(key_mask.shape) if isinstance(key_mask, torch.Tensor) else type(key_mask).__name__}")
    check_same_device(op, "q", q, k_cache=k_cache, v_cache=v_cache, cache_seqlens=cache_seqlens, key_mask=key_mask)
    check_kernel_device(op, "q", q)
    if q.dtype not in KERNEL_DTYPES or q.numel() == 0 or S_max == 0:
        return attention_decode_reference(q, k_cache, v_cache, cache_seqlens, causal=causal, window=window,
                                          scale=scale, key_mask=key_mask)
    group = H // Hk
    block_m = max(16, 1 << (group * Sq - 1).bit_length())
    block_d = max(16, 1 << (D - 1).bit_length())
    block_n = 16 if interpreter_active() else TILE["block_n"]
    n_blocks = (S_max + block_n - 1) // block_n
    if num_splits is None:
        num_splits = default_splits(B * Hk, n_blocks, num_sms(q.device.index))
    split_len = ((n_blocks + num_splits - 1) // num_splits) * block_n
    num_splits = (S_max + split_len - 1) // split_len
    direct = num_splits == 1  # one split: the first pass writes the output, no combine
    out = empty((B, H, Sq, D), dtype=q.dtype, device=q.device)
    if direct:
        po = plse = None
    else:
        po = empty((B, Hk, num_splits, group * Sq, D), dtype=torch.float32, device=q.device)  # (poisoned in tests)
        plse = empty((B, Hk, num_splits, group * Sq), dtype=torch.float32, device=q.device)
    precision = "tf32" if q.dtype != torch.float32 or torch.backends.cuda.matmul.allow_tf32 else "ieee"
    seqlens = cache_seqlens.to(torch.int32)
    # inside tritonic's captures (generate's decode graphs) both kernels use PDL: the combine
    # starts while the splits finish, the first pass while the kernel before it finishes. Not the
    # one-split launch: an H100 timed it slower with PDL (b16 1k 42.7 against 32.7 us, 8353b23;
    # b64 1k level), where the split pair gained (b1 32k 58.2 -> 56.0)
    pdl = _pdl.pdl_meta(q.device, B * Sq) if _pdl.ACTIVE and not direct and not is_traced(q, k_cache, v_cache) \
        else _pdl.OFF
    launch(_attn_decode_split, (num_splits, B * Hk), q, k_cache, v_cache, seqlens, key_mask, po, plse, out,
           *q.stride(), *k_cache.stride(), *v_cache.stride(), key_mask.stride(0) if key_mask is not None else 0,
           Hk, group, Sq, D, float(1.0 / math.sqrt(D) if scale is None else scale),
           int(window) if window is not None else 0, split_len,
           CAUSAL=bool(causal), HAS_WINDOW=window is not None, HAS_KMASK=key_mask is not None,
           PRECISION=precision, BLOCK_M=block_m,
           BLOCK_N=block_n, BLOCK_D=block_d, DIRECT=direct, num_warps=TILE["num_warps"],
           num_stages=1 if interpreter_active() else TILE["num_stages"], **pdl)
    if direct:
        return out
    launch(_attn_decode_combine, (group * Sq, B * Hk), po, plse, out, Hk, group, Sq, D, num_splits,
           BLOCK_S=max(2, 1 << (num_splits - 1).bit_length()), BLOCK_D=block_d, num_warps=4, **pdl)
    return out
