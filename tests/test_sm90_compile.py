"""Every kernel the ops launch, compiled for an H100 (sm_90) without a GPU (tests/sm90.py).

The ops run in the interpreter on small inputs, forward and backward, over the flags that
pick different code (masks, biases, residuals, options); their launches are then compiled
by Triton's real compiler, which the interpreter never runs. What it catches: code that
only the compiler sees (after an early return in a constexpr branch, a None argument used
in a branch the interpreter skipped), types the compiler rejects, ptxas failures. What it
does not: anything that depends on the GPU's launch (shared memory, timing, results).
"""

import importlib

import pytest
import torch

from tests import sm90
from tritonic import ops

MODULES = ["activation", "attention", "attention_decode", "embedding", "flce", "gated", "linear", "loss",
           "matmul", "norm", "rope", "softmax"]


def _grads(out, *leaves):
    out = out[0] if isinstance(out, tuple) else out
    torch.autograd.grad(out.float().square().sum(), [t for t in leaves if t.requires_grad])


def _run_variants(dt, monkeypatch):
    """Options that pick other code: norms without weights / with offsets, the softmax's
    multi-pass path (both loops), CE's options, FLCE with a bias, the GEMM's epilogues, the
    gated GEMM and MLP, attention with ALiBi, a window, packed sequences; decode's mask and window."""
    r = lambda *s, g=True: torch.randn(*s, dtype=dt, requires_grad=g)  # noqa: E731
    x, w, res = r(6, 96), r(96), r(6, 96)
    _grads(ops.layer_norm(x, None, None, residual=res), x, res)
    _grads(ops.rms_norm(x, w, offset=1.0, upcast=False), x, w)
    sm = importlib.import_module("tritonic.ops.softmax")
    for pipe in (False, True):
        for name, v in (("FUSED_WIDTH", 16), ("CHUNK", 16), ("FWD_CHUNK", 16), ("PREFETCH", pipe), ("BWD_PIPE", pipe)):
            monkeypatch.setattr(sm, name, v)
        _grads(ops.softmax(x, mask=torch.rand(6, 96) > 0.2), x)
        _grads(ops.log_softmax(x, scale=0.7), x)
    logits, target = r(6, 50), torch.randint(0, 50, (6,))
    target[0] = -100
    _grads(ops.cross_entropy(logits, target, reduction="none", softcap=30.0), logits)
    h, wt, bias = r(6, 32), r(50, 32), r(50)
    _grads(ops.fused_linear_cross_entropy(h, wt, target, bias, label_smoothing=0.1, low_memory=True), h, wt, bias)
    xl, wl = r(8, 64), r(48, 64)
    for act in ("relu", "gelu_tanh", "silu", "tanh"):
        _grads(ops.linear(xl, wl, None, activation=act, residual=r(8, 48)), xl, wl)
    wg = r(96, 64)
    for layout in ("concat", "interleaved"):
        _grads(ops.gated_linear(xl, wg, "silu", layout=layout), xl, wg)
    wd = r(64, 48)
    _grads(ops.gated_mlp(xl, wl, wl.detach().clone().requires_grad_(True), wd, "gelu_tanh"), xl, wl, wd)
    qa, ka, va = r(2, 4, 24, 32), r(2, 4, 24, 32), r(2, 4, 24, 32)
    _grads(ops.attention(qa, ka, va, alibi_slopes=torch.rand(4), window=5, causal=True), qa, ka, va)
    qv, kv, vv = r(30, 4, 32), r(30, 2, 32), r(30, 2, 32)
    cu = torch.tensor([0, 11, 30], dtype=torch.int32)
    _grads(ops.attention_varlen(qv, kv, vv, cu, cu, 19, 19, causal=True), qv, kv, vv)
    lens = torch.tensor([24, 9], dtype=torch.int32)
    with torch.no_grad():
        for splits in (1, 3):
            ops.attention_decode(qa[:, :, :2].detach(), ka.detach(), va.detach(), lens, num_splits=splits, window=7,
                                 key_mask=torch.rand(2, 24) > 0.2, causal=False)


def _run_ops(dt):
    r = lambda *s, g=True: torch.randn(*s, dtype=dt, requires_grad=g)  # noqa: E731
    x, w, b, res = r(6, 96), r(96), r(96), r(6, 96)
    _grads(ops.layer_norm(x, w, b), x, w, b)
    _grads(ops.rms_norm(x, w, residual=res), x, w, res)
    _grads(ops.softmax(x, scale=0.5), x)
    _grads(ops.log_softmax(x, mask=torch.rand(6, 96) > 0.2), x)
    for f in (ops.gelu, ops.silu):
        _grads(f(x), x)
    _grads(ops.swiglu(x, res), x, res)
    _grads(ops.geglu(x, res), x, res)
    q, k = r(2, 4, 8, 32), r(2, 2, 8, 32)
    cos, sin = torch.randn(2, 8, 32, dtype=dt), torch.randn(2, 8, 32, dtype=dt)
    _grads(ops.rope(q, k, cos, sin), q, k)
    _grads(ops.rope(q, k, cos, sin, interleaved=True), q, k)  # (16-bit tables + interleaved: a Triton layout-pass failure once)
    pos = torch.randint(0, 16, (2, 8))
    _grads(ops.rope(q, k, cos[0, :, :16].repeat(2, 1), sin[0, :, :16].repeat(2, 1), position_ids=pos), q, k)
    logits, target = r(6, 50), torch.randint(0, 50, (6,))
    _grads(ops.cross_entropy(logits, target, label_smoothing=0.1, z_loss=1e-4), logits)
    h, wt = r(6, 32), r(50, 32)
    _grads(ops.fused_linear_cross_entropy(h, wt, target), h, wt)
    emb = r(40, 32)
    _grads(ops.embedding(torch.randint(0, 40, (2, 5)), emb), emb)
    with torch.no_grad():  # BERT's embedding block (inference only), token types given and read at the positions
        tabs = (emb.detach(), r(16, 32, g=False), r(2, 32, g=False), r(32, g=False), r(32, g=False))
        ids, pos = torch.randint(0, 40, (2, 5)), torch.arange(5)[None]
        for types, by_pos in ((torch.zeros(2, 5, dtype=torch.long), False), (torch.zeros(16, dtype=torch.long), True)):
            ops.embeddings_layer_norm(ids, tabs[0], pos, tabs[1], types, *tabs[2:], 1e-12, by_pos)
    xl, wl, bl = r(8, 64), r(48, 64), r(48)
    _grads(ops.linear(xl, wl, bl, activation="gelu"), xl, wl, bl)
    qa, ka, va = r(2, 4, 24, 32), r(2, 2, 24, 32), r(2, 2, 24, 32)
    _grads(ops.attention(qa, ka, va, causal=True), qa, ka, va)
    mask = torch.ones(2, 1, 1, 24, dtype=torch.bool)
    mask[0, ..., 17:] = False
    _grads(ops.attention(qa, ka, va, mask=mask), qa, ka, va)
    bias = r(1, 4, 24, 24)
    _grads(ops.attention(qa, ka, va, bias=bias), qa, ka, va, bias)
    lens = torch.tensor([24, 9], dtype=torch.int32)
    with torch.no_grad():
        for splits in (1, 2):
            ops.attention_decode(qa[:, :, :1].detach(), ka.detach(), va.detach(), lens, num_splits=splits)


@pytest.mark.parametrize("dt", [torch.float16, torch.bfloat16, torch.float32])
def test_every_launch_compiles_for_sm90(dt, monkeypatch, device):
    if device != "cpu":
        pytest.skip("the GPU run compiles every launch itself")
    if dt == torch.bfloat16:  # attention's tiles through descriptors (Hopper's default) in one of the runs,
        monkeypatch.setenv("TRITONIC_ATTENTION_TMA", "1")  # and RoPE's streaming loads and stores
        monkeypatch.setattr(importlib.import_module("tritonic.ops.rope"), "STREAM", True)
        monkeypatch.setattr(importlib.import_module("tritonic.ops.matmul"), "GEMM_CHOICE", "tma")  # Hopper's GEMM
    seen = sm90.record(monkeypatch, *(importlib.import_module(f"tritonic.ops.{m}") for m in MODULES))
    _run_ops(dt)
    if dt != torch.float32:  # (float32 runs the common paths only: its options compile like the others')
        _run_variants(dt, monkeypatch)
    names = {x["name"] for x in seen}
    for kernel in ("_norm_fwd", "_embeddings_norm_fwd", "_attn_fwd", "_attn_bwd_dkdv", "_attn_bwd_dq", "_attn_decode_split", "_rope",
                   "_matmul_tma" if dt == torch.bfloat16 else "_matmul"):
        assert kernel in names, f"{kernel} was not launched: {sorted(names)}"
    if dt == torch.bfloat16:
        assert any(a["sig"].startswith("tensordesc") for x in seen if x["name"] == "_attn_bwd_dkdv" for a in x["args"])
    assert sm90.compile_all(sm90.with_pdl(seen) if dt == torch.bfloat16 else seen) == []


@pytest.mark.parametrize("D,flags", [(64, []), (128, []), (64, ["kpm"]), (128, ["kpm", "causal", "mask"]),
                                     (64, ["bias", "hm"])])
def test_warp_specialised_forward_compiles_for_sm90(D, flags, device):
    """The warp-specialised forward (Hopper's default for dense and long masked calls; never
    run by the interpreter) compiles for sm_90 at its first config and is split into warp
    groups (scripts/ws_compile_check.py, in a process without the interpreter)."""
    if device != "cpu":
        pytest.skip("the GPU run compiles it itself")
    import os
    import subprocess
    import sys
    from pathlib import Path

    meta = importlib.import_module("tritonic.ops.attention_ws").TUNER.configs[0].meta()
    arg = f"{meta['BLOCK_M']},{meta['BLOCK_N']},{meta['num_warps']},{meta['num_stages']}"
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "TRITONIC_INTERPRET")}
    script = Path(__file__).resolve().parents[1] / "scripts" / "ws_compile_check.py"
    r = subprocess.run([sys.executable, str(script), "fwd", str(D), arg, *flags], capture_output=True, text=True,
                       env=env, timeout=600)
    assert r.returncode == 0, r.stdout[-1500:] + r.stderr[-1500:]
    assert "warp-specialised True" in r.stdout, r.stdout[-1500:]


def test_attention_backward_gpu_tiles_compile_with_key_padding(monkeypatch, device):
    """The dK/dV kernel with a key-padding mask (and with a bias too) at the GPU's tile configs,
    descriptors on: ptxas (CUDA 12.8) crashed on four of them once the kernel skipped mask tests
    before the first padded key; the interpreter's 16x16 tiles never showed it."""
    if device != "cpu":
        pytest.skip("the GPU run compiles these itself")
    att = importlib.import_module("tritonic.ops.attention")
    monkeypatch.setenv("TRITONIC_ATTENTION_TMA", "1")
    seen = []
    monkeypatch.setattr(att, "launch", lambda kernel, grid, *a, **m: seen.append(
        {"module": kernel.fn.__module__, "name": kernel.fn.__name__, "args": [sm90._describe(x) for x in a],
         "meta": dict(m)}))  # recorded, not run: only the types matter
    tiles = {(64, 64, 4, 2, 0), (128, 64, 8, 2, 0), (64, 64, 4, 2, 1), (128, 128, 8, 2, 1)}
    configs = [c for c in att._BWD_TUNERS["narrow"].configs
               if (c.meta()["BLOCK_M"], c.meta()["BLOCK_N"], c.meta()["num_warps"], c.meta()["num_stages"],
                   c.meta().get("ATOMIC_DQ", 0)) in tiles and "DQ_BLOCK_M" not in c.meta()]
    assert len(configs) == len(tiles)
    for config in configs:
        monkeypatch.setattr(att, "_INTERPRETER_CONFIG", config)
        for with_bias in (False, True):
            q, k, v = (torch.randn(2, 4, 128, 64, dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
            mask = torch.ones(2, 1, 1, 128, dtype=torch.bool)
            mask[0, ..., 80:] = False
            bias = torch.randn(1, 4, 128, 128, dtype=torch.bfloat16, requires_grad=True) if with_bias else None
            _grads(ops.attention(q, k, v, mask=mask, bias=bias), q, k, v)
    launches = [x for x in sm90.unique(seen) if x["name"] == "_attn_bwd_dkdv"]
    assert len(launches) == 2 * len(tiles)
    assert sm90.compile_all(launches) == []
