"""The warp-specialised attention kernels (kernels/attention_ws.py, kernels/attention_ws_bwd.py),
forced in the interpreter (TRITONIC_ATTENTION_TMA=1 for the descriptors, the module's switches
on): the forward's scope
(non-causal, causal with Sq <= Sk, key counts that are not a multiple of the block, GQA, padded
head dims, a (B, S, H, D) storage) against the float64 reference with gradients, and the
cases it must leave to the general kernel. (float16 only: the interpreter's tl.dot gets
bfloat16 wrong, in the general kernel too; tests/ops/test_attention_gpu.py covers it.)"""

import importlib

import pytest
import torch

from tests.helpers import check_op
from tritonic.ops import attention, attention_reference

mod = importlib.import_module("tritonic.ops.attention")
ws_mod = importlib.import_module("tritonic.ops.attention_ws")


@pytest.fixture
def ws(monkeypatch):
    """Force the path and record which forward kernels ran."""
    monkeypatch.setenv("TRITONIC_ATTENTION_TMA", "1")
    monkeypatch.setattr(ws_mod, "ENABLED", True)
    monkeypatch.setattr(ws_mod, "ENABLED_BWD", True)
    monkeypatch.setattr(ws_mod, "MIN_WAVES", 0.0)  # (the interpreter's 4 "SMs" would reject small grids)
    ran = []
    for m in (mod, ws_mod):
        real = m.launch
        monkeypatch.setattr(m, "launch", lambda kernel, *a, real=real, **k: (ran.append(kernel), real(kernel, *a, **k)))
    return ran


def _qkv(B, H, Hk, Sq, Sk, D, dtype, device):
    return dict(q=torch.randn(B, H, Sq, D, dtype=dtype, device=device),
                k=torch.randn(B, Hk, Sk, D, dtype=dtype, device=device),
                v=torch.randn(B, Hk, Sk, D, dtype=dtype, device=device))


def _check(args, **kw):
    check_op(lambda **a: attention(**a, **kw), lambda **a: attention_reference(**a, **kw), args,
             grads=["q", "k", "v"], atol_ulps=8)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("Sq,Sk", [(1, 7), (16, 16), (21, 37), (37, 37)])
def test_ws_forward_and_gradients(Sq, Sk, causal, device, ws):
    _check(_qkv(2, 2, 2, Sq, Sk, 16, torch.float16, device), causal=causal)
    assert ws_mod._attn_fwd_ws in ws


def test_ws_gqa_padded_head_and_layout(device, ws):
    _check(_qkv(1, 4, 2, 19, 23, 16, torch.float16, device), causal=True)
    _check(_qkv(1, 2, 1, 9, 9, 24, torch.float16, device))  # MQA, head dim padded to 32
    q, k, v = (torch.randn(2, 23, 2, 16, dtype=torch.float16, device=device).transpose(1, 2) for _ in range(3))
    _check(dict(q=q, k=k, v=v), causal=True)  # (B, S, H, D) storage
    assert ws.count(ws_mod._attn_fwd_ws) >= 3


@pytest.mark.parametrize("causal", [False, True])
def test_ws_key_padding_mask(causal, device, ws):
    """BERT's (B, 1, 1, Sk) mask through its byte descriptor: right padding of different
    lengths, a hole, an entry with no key (zeros, zero gradients), left padding longer than a
    key block (rows without a key for a whole block), one row shared by the batch; and a key
    count that is no multiple of the key block (the mask's zeros past Sk bound the keys)."""
    for Sk in (48, 45):
        args = _qkv(5, 2, 2, 37, Sk, 16, torch.float16, device)
        mask = torch.ones(5, 1, 1, Sk, dtype=torch.bool, device=device)
        mask[0, ..., 20:] = False
        mask[1, ..., 5:9] = False
        mask[2] = False
        mask[3, ..., :35] = False
        _check(args, mask=mask, causal=causal)  # (45 bytes a row: not addressable, the general kernel)
        for row in (0, 1, 3):  # one row shared by the batch (1, 3: the last key kept)
            _check(args, mask=mask[row:row + 1].clone().expand(5, 1, 1, Sk), causal=causal)
    assert ws.count(ws_mod._attn_fwd_ws) >= 7


def test_ws_additive_bias(device, ws):
    """T5's bias through its descriptor: per batch and head, broadcast over the batch, over the
    heads, and rows made all -inf (an additive mask) that must give zeros."""
    args = _qkv(2, 2, 2, 21, 32, 16, torch.float16, device)
    full = torch.randn(2, 2, 21, 32, dtype=torch.float16, device=device)
    _check(args, bias=full, scale=1.0)
    _check(args, bias=full[:1], scale=1.0)
    _check(args, bias=full[:, :1], causal=True)
    neg = full.clone()
    neg[:, :, 3] = float("-inf")
    check_op(lambda **a: attention(**a, bias=neg), lambda **a: attention_reference(**a, bias=neg), args,
             grads=["q", "k", "v"], atol_ulps=8)
    assert ws.count(ws_mod._attn_fwd_ws) >= 4


def test_ws_leaves_other_cases_to_the_general_kernel(device, ws):
    """float32, a general boolean mask, a bias broadcast over the queries, a window, and
    causal with more queries than keys take the general kernel."""
    args = _qkv(1, 2, 2, 12, 16, 16, torch.float16, device)
    mask = torch.rand(1, 1, 12, 16, device=device) > 0.3
    bias = torch.randn(1, 2, 1, 16, dtype=torch.float16, device=device)
    for kw in (dict(mask=mask), dict(bias=bias), dict(window=3)):
        _check(args, **kw)
    _check(_qkv(1, 2, 2, 12, 10, 16, torch.float16, device), causal=True)
    _check(_qkv(2, 2, 2, 16, 16, 160, torch.float16, device))  # head dim above 128
    _check(_qkv(1, 2, 2, 8, 8, 16, torch.float32, device))
    assert ws_mod._attn_fwd_ws not in ws and mod._attn_fwd in ws


@pytest.mark.parametrize("Sq,Sk,Hk,D", [(16, 16, 2, 16), (20, 37, 2, 16), (36, 36, 1, 16), (8, 24, 2, 24)])
def test_ws_backward(Sq, Sk, Hk, D, device, ws):
    """Both backward kernels: GQA (each dK/dV program walks every query head of its group in
    one loop), keys not a multiple of the block, Sq < Sk, a padded head dim."""
    _check(_qkv(2, 4, Hk, Sq, Sk, D, torch.float16, device))
    assert ws_mod._attn_bwd_dkdv_ws in ws and ws_mod._attn_bwd_dq_ws in ws


def test_ws_backward_not_causal(device, ws):
    """Causal calls take the general backward (the WS dK/dV left non-finite blocks in 2 of 10
    H100 runs), after the warp-specialised forward."""
    _check(_qkv(2, 4, 2, 20, 37, 16, torch.float16, device), causal=True)
    assert ws_mod._attn_fwd_ws in ws and mod._attn_bwd_dkdv in ws
    assert ws_mod._attn_bwd_dkdv_ws not in ws and ws_mod._attn_bwd_dq_ws not in ws


def test_ws_backward_leaves_other_cases_to_the_general_kernels(device, ws):
    """Query counts whose log-sum-exp rows are not 16-byte aligned, a bias, a key-padding mask:
    the general backward (the forward may still be warp-specialised)."""
    _check(_qkv(1, 2, 2, 21, 32, 16, torch.float16, device), causal=True)
    args = _qkv(2, 2, 2, 16, 32, 16, torch.float16, device)
    _check(args, mask=torch.ones(2, 1, 1, 32, dtype=torch.bool, device=device))
    bias = torch.randn(1, 2, 16, 32, dtype=torch.float16, device=device)
    _check(args, bias=bias)
    assert ws_mod._attn_bwd_dkdv_ws not in ws and mod._attn_bwd_dkdv in ws and ws_mod._attn_fwd_ws in ws


def test_ws_only_with_a_wave_of_programs(device, monkeypatch):
    """Below a wave of 128-row programs (the interpreter counts 4 SMs) the general kernels run."""
    monkeypatch.setenv("TRITONIC_ATTENTION_TMA", "1")
    monkeypatch.setattr(ws_mod, "ENABLED", True)
    monkeypatch.setattr(ws_mod, "ENABLED_BWD", True)
    ran = []
    for m in (mod, ws_mod):
        real = m.launch
        monkeypatch.setattr(m, "launch", lambda kernel, *a, real=real, **k: (ran.append(kernel), real(kernel, *a, **k)))
    _check(_qkv(1, 2, 2, 16, 16, 16, torch.float16, device))  # 2 programs
    assert ws_mod._attn_fwd_ws not in ran and ws_mod._attn_bwd_dkdv_ws not in ran
    _check(_qkv(2, 2, 2, 16, 16, 16, torch.float16, device))  # 4
    assert ws_mod._attn_fwd_ws in ran and ws_mod._attn_bwd_dkdv_ws in ran


def test_auto_choice_takes_only_the_measured_cases(monkeypatch):
    """TRITONIC_ATTENTION_WS=auto (the default): the warp-specialised forward only where it was
    timed faster on an H100 (Hopper, non-causal, d64 / d128, 1024+ keys, 2048+ with a bias, no
    key-padding mask, not traced); a CPU tensor never."""
    from types import SimpleNamespace

    monkeypatch.setattr(ws_mod, "AUTO", True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))

    def fake(S, D, cuda=True):
        return SimpleNamespace(shape=(2, 16, S, D), is_cuda=cuda, device="cuda:0")

    q, k = fake(4096, 128), fake(4096, 128)
    assert ws_mod._auto(q, k, None, None, False, False)
    assert ws_mod._auto(fake(2048, 64), fake(8192, 64), None, None, False, False)
    assert not ws_mod._auto(q, k, None, None, True, False)  # causal
    assert not ws_mod._auto(q, k, object(), None, False, False)  # a key-padding mask
    assert ws_mod._auto(q, k, None, object(), False, False)  # a bias
    assert ws_mod._auto(fake(1024, 64), fake(1024, 64), None, None, False, False)
    assert not ws_mod._auto(fake(1024, 64), fake(1024, 64), object(), None, False, False)  # short, masked
    assert not ws_mod._auto(fake(1024, 64), fake(1024, 64), None, object(), False, False)  # short, bias
    assert not ws_mod._auto(q, k, None, None, False, True)  # traced
    assert not ws_mod._auto(fake(4096, 128), fake(512, 128), None, None, False, False)  # short
    assert not ws_mod._auto(fake(4096, 96), fake(4096, 96), None, None, False, False)  # head dim
    assert not ws_mod._auto(fake(4096, 128, False), k, None, None, False, False)  # not on a GPU
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (10, 0))
    assert not ws_mod._auto(q, k, None, None, False, False)  # not Hopper
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    monkeypatch.setattr(ws_mod, "AUTO", False)
    assert not ws_mod._auto(q, k, None, None, False, False)  # TRITONIC_ATTENTION_WS=0


def test_auto_choice_off_the_gpu_runs_the_general_kernel(device, monkeypatch):
    """With the default choice a dense long call on this device (the interpreter: not Hopper)
    takes the general kernel."""
    monkeypatch.setenv("TRITONIC_ATTENTION_TMA", "1")
    monkeypatch.setattr(ws_mod, "AUTO", True)
    monkeypatch.setattr(ws_mod, "AUTO_MIN_KEYS", 16)
    ran = []
    for m in (mod, ws_mod):
        real = m.launch
        monkeypatch.setattr(m, "launch", lambda kernel, *a, real=real, **k: (ran.append(kernel), real(kernel, *a, **k)))
    _check(_qkv(2, 2, 2, 32, 32, 64, torch.float16, device))
    assert ws_mod._attn_fwd_ws not in ran and mod._attn_fwd in ran


def test_auto_choice_falls_back_when_the_kernel_does_not_compile(device, monkeypatch):
    """Under "auto", a WS forward that fails to compile (another Triton's pass) turns the kernel
    off for the process with a warning, and the general kernel gives the answer; forced, the
    error is raised."""
    monkeypatch.setenv("TRITONIC_ATTENTION_TMA", "1")
    monkeypatch.setattr(ws_mod, "AUTO", True)
    monkeypatch.setattr(ws_mod, "ENABLED", False)
    monkeypatch.setattr(ws_mod, "_auto", lambda *a: ws_mod.AUTO)
    monkeypatch.setattr(ws_mod, "MIN_WAVES", 0.0)

    def broken(*a, **k):
        raise RuntimeError("PassManager::run failed")

    monkeypatch.setattr(ws_mod, "forward", broken)
    with pytest.warns(UserWarning, match="warp-specialised attention forward failed"):
        _check(_qkv(2, 2, 2, 32, 32, 16, torch.float16, device))
    assert ws_mod.AUTO is False
    monkeypatch.setattr(ws_mod, "ENABLED", True)
    args = _qkv(2, 2, 2, 32, 32, 16, torch.float16, device)
    with pytest.raises(RuntimeError, match="PassManager"):
        attention(**args)
