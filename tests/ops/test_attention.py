"""attention (forward and backward kernels) against a float64 reference: masks, bias,
ALiBi, windows, GQA, Sq != Sk, odd lengths, fully masked rows, gradients of q, k, v and a
broadcast bias, bad input."""

import importlib

import pytest
import torch

from tests.helpers import check_op, spy_launches
from tritonic.ops import attention, attention_reference

ULPS = 8


def _qkv(B, H, Hk, Sq, Sk, D, dtype, device):
    return dict(q=torch.randn(B, H, Sq, D, dtype=dtype, device=device),
                k=torch.randn(B, Hk, Sk, D, dtype=dtype, device=device),
                v=torch.randn(B, Hk, Sk, D, dtype=dtype, device=device))


QKV = ["q", "k", "v"]


def _check(args, grads=QKV, **kw):
    check_op(lambda **a: attention(**a, **kw), lambda **a: attention_reference(**a, **kw), args, grads=grads,
             atol_ulps=ULPS)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("Sq,Sk", [(1, 7), (7, 7), (33, 20), (20, 33)])
def test_plain_and_causal(Sq, Sk, causal, device):
    _check(_qkv(2, 2, 2, Sq, Sk, 16, torch.float32, device), causal=causal)


@pytest.mark.parametrize("D", [8, 40])
def test_head_dims_padded(D, device):
    _check(_qkv(1, 2, 2, 17, 19, D, torch.float32, device), causal=True)


def test_gqa_and_float16(device):
    _check(_qkv(1, 4, 2, 19, 23, 16, torch.float16, device), causal=True)
    _check(_qkv(1, 4, 1, 9, 9, 16, torch.float32, device))  # MQA


@pytest.mark.parametrize("causal", [False, True])
def test_key_padding_broadcast_mask(causal, device):
    """A (B, 1, 1, Sk) mask: the kernels stop at each batch entry's last kept key and test the
    mask only from its first masked one (right padding of different lengths, a hole before
    it, an entry with no key at all, one with every key)."""
    args = _qkv(5, 2, 2, 37, 37, 16, torch.float32, device)
    mask = torch.ones(5, 1, 1, 37, dtype=torch.bool, device=device)
    mask[0, ..., 20:] = False  # padded after 20 keys: two of the 16-key blocks skipped
    mask[1, ..., 5:9] = False  # a hole, no padding
    mask[1, ..., 33:] = False
    mask[2] = False  # nothing to attend to: zeros and zero gradients
    mask[4, ..., 17:21] = False  # a hole after a whole kept block (which takes no mask test), then padding
    mask[4, ..., 30:] = False
    _check(args, mask=mask, causal=causal)
    _check(args, mask=mask[:1], causal=causal)  # one row of keys shared by the batch


def test_key_padding_mask_with_fully_masked_rows(device):
    args = _qkv(2, 2, 2, 10, 12, 16, torch.float32, device)
    mask = torch.rand(2, 1, 10, 12, device=device) > 0.4
    mask[0, 0, 3] = False  # a query row that sees no key: zeros, not NaN
    mask[1] = mask[1, :, :, :1].expand(1, 10, 12) & False  # a whole batch entry masked
    _check(args, mask=mask)
    args = {name: t.clone().requires_grad_(True) for name, t in args.items()}
    out = attention(**args, mask=mask)
    assert torch.isfinite(out).all() and (out[0, :, 3] == 0).all() and (out[1] == 0).all()
    out.sum().backward()
    assert (args["q"].grad[0, :, 3] == 0).all() and (args["k"].grad[1] == 0).all()  # zero gradients, no NaN


def test_bias_broadcast_scale_and_gradients(device):
    args = _qkv(2, 2, 2, 9, 11, 16, torch.float32, device)
    args["bias"] = torch.randn(1, 2, 9, 11, device=device)  # T5: per head, shared over the batch
    _check(args, grads=["q", "k", "v", "bias"], scale=1.0)


def test_bias_rows_of_minus_inf(device):
    """An additive mask as a bias: rows that are -inf everywhere have no key, so they give zeros
    and zero gradients (not NaN), in unmasked key blocks too (32 keys: two full blocks)."""
    args = _qkv(2, 2, 2, 21, 32, 16, torch.float32, device)
    bias = torch.randn(2, 2, 21, 32, device=device)
    bias[:, :, 3] = float("-inf")
    bias[0, 1, 7, :16] = float("-inf")  # a row whose first block is all masked, not the second
    args["bias"] = bias
    _check(args, grads=["q", "k", "v", "bias"])


def test_alibi_and_window(device):
    args = _qkv(1, 2, 2, 21, 21, 16, torch.float32, device)
    slopes = torch.tensor([0.5, 0.125], device=device)
    _check(args, alibi_slopes=slopes, causal=True)
    _check(args, causal=True, window=5)
    _check(args, window=4)
    _check(_qkv(1, 2, 2, 6, 40, 16, torch.float32, device), causal=True, window=9)  # Sq < Sk


def test_bad_input(device):
    q = torch.randn(1, 4, 5, 16, device=device)
    with pytest.raises(ValueError, match="head dims differ"):
        attention(q, torch.randn(1, 4, 5, 8, device=device), torch.randn(1, 4, 5, 8, device=device))
    with pytest.raises(ValueError, match="do not divide"):
        attention(q, torch.randn(1, 3, 5, 16, device=device), torch.randn(1, 3, 5, 16, device=device))
    with pytest.raises(ValueError, match="does not broadcast"):
        attention(q, q, q, mask=torch.ones(2, 1, 5, 5, dtype=torch.bool, device=device))
    with pytest.raises(ValueError, match="does not broadcast"):
        attention(q, q, q, bias=torch.zeros(1, 1, 4, 5, 5, device=device))
    with pytest.raises(TypeError, match="boolean"):
        attention(q, q, q, mask=torch.ones(5, 5, device=device))
    with pytest.raises(ValueError, match="4-D"):
        attention(q[0], q, q)
    with pytest.raises(ValueError, match="window"):
        attention(q, q, q, window=0)
    for bad in (0.0, -0.5, float("nan"), float("inf")):  # the kernels fold the scale into the row maximum
        with pytest.raises(ValueError, match="scale must be positive"):
            attention(q, q, q, scale=bad)
    with pytest.raises(TypeError, match="scale must be a number"):
        attention(q, q, q, scale="0.1")


def test_the_kernel_runs(device, monkeypatch):
    """The comparisons above are against the reference: make sure they compared the kernel."""
    import importlib

    mod = importlib.import_module("tritonic.ops.attention")
    calls = []
    real = mod._forward_impl
    monkeypatch.setattr(mod, "_forward_impl", lambda *a, **k: calls.append(1) or real(*a, **k))
    args = _qkv(1, 2, 2, 5, 5, 16, torch.float32, device)
    attention(**args)
    back = []
    real_back = mod._backward_impl
    monkeypatch.setattr(mod, "_backward_impl", lambda *a, **k: back.append(1) or real_back(*a, **k))
    args["q"].requires_grad_(True)
    attention(**args).sum().backward()
    assert len(calls) == 2 and len(back) == 1


# ----------------------------------------------------------------------------- decode

from tritonic.ops import attention_decode, attention_decode_reference  # noqa: E402


@pytest.mark.parametrize("Sq,causal", [(1, True), (3, True), (3, False)])
@pytest.mark.parametrize("splits", [None, 1, 3])
def test_decode_over_a_cache(Sq, causal, splits, device):
    B, H, Hk, S_max, D = 3, 4, 2, 70, 16
    q = torch.randn(B, H, Sq, D, device=device)
    k = torch.randn(B, Hk, S_max, D, device=device)
    v = torch.randn(B, Hk, S_max, D, device=device)
    seqlens = torch.tensor([70, 5, 33], dtype=torch.int32, device=device)
    check_op(lambda q, k, v: attention_decode(q, k, v, seqlens, causal=causal, num_splits=splits),
             lambda q, k, v: attention_decode_reference(q, k, v, seqlens, causal=causal), dict(q=q, k=k, v=v),
             atol_ulps=ULPS)


def test_decode_window_float16_and_empty_cache(device):
    q = torch.randn(2, 2, 1, 16, dtype=torch.float16, device=device)
    k = torch.randn(2, 1, 40, 16, dtype=torch.float16, device=device)
    v = torch.randn(2, 1, 40, 16, dtype=torch.float16, device=device)
    seqlens = torch.tensor([40, 17], device=device)
    check_op(lambda q, k, v: attention_decode(q, k, v, seqlens, window=8),
             lambda q, k, v: attention_decode_reference(q, k, v, seqlens, window=8), dict(q=q, k=k, v=v),
             atol_ulps=ULPS)
    out = attention_decode(q, k, v, torch.tensor([0, 17], device=device))  # an empty cache: zeros
    assert (out[0] == 0).all() and torch.isfinite(out).all()
    out = attention_decode(q, k, v, torch.tensor([0, 17], device=device), num_splits=1)  # (one pass)
    assert (out[0] == 0).all() and torch.isfinite(out).all()


def test_decode_with_one_split_runs_one_kernel(device, monkeypatch):
    """One split: the first pass writes the output itself (no partials, no combine pass)."""
    import importlib

    mod = importlib.import_module("tritonic.ops.attention_decode")
    launched = []
    real = mod.launch
    monkeypatch.setattr(mod, "launch", lambda kernel, *a, **k: (launched.append(kernel), real(kernel, *a, **k)))
    q = torch.randn(2, 4, 1, 16, device=device)
    k = torch.randn(2, 2, 50, 16, device=device)
    v = torch.randn(2, 2, 50, 16, device=device)
    lens = torch.tensor([50, 21], dtype=torch.int32, device=device)
    check_op(lambda q, k, v: attention_decode(q, k, v, lens, num_splits=1),
             lambda q, k, v: attention_decode_reference(q, k, v, lens), dict(q=q, k=k, v=v), atol_ulps=ULPS)
    assert mod._attn_decode_combine not in launched and mod._attn_decode_split in launched
    launched.clear()
    attention_decode(q, k, v, lens, num_splits=2)
    assert launched == [mod._attn_decode_split, mod._attn_decode_combine]


def test_decode_pdl_only_for_the_split_pair(device, monkeypatch):
    """Inside tritonic's captures the split pair launches with PDL (the combine starts while the
    splits finish); the one-split launch does not (an H100 timed it slower with PDL)."""
    import importlib

    mod = importlib.import_module("tritonic.ops.attention_decode")
    monkeypatch.setattr(mod._pdl, "ACTIVE", True)
    monkeypatch.setattr(mod._pdl, "pdl_meta", lambda device, rows: mod._pdl.ON)
    launched = []  # (recorded, not run: the interpreter has no PDL)
    monkeypatch.setattr(mod, "launch", lambda kernel, *a, **k: launched.append((kernel, k.get("USE_PDL", False))))
    q = torch.randn(2, 4, 1, 16, device=device)
    k = torch.randn(2, 2, 50, 16, device=device)
    lens = torch.tensor([50, 21], dtype=torch.int32, device=device)
    attention_decode(q, k, k, lens, num_splits=1)
    assert launched == [(mod._attn_decode_split, False)]
    launched.clear()
    attention_decode(q, k, k, lens, num_splits=2)
    assert launched == [(mod._attn_decode_split, True), (mod._attn_decode_combine, True)]


@pytest.mark.parametrize("splits", [None, 3])
def test_decode_with_a_key_mask(splits, device):
    """Left-padded prompts leave holes before the valid length: the key mask skips them (a
    row whose kept keys all sit in other splits still combines right)."""
    B, H, Hk, S_max, D = 3, 4, 2, 70, 16
    q = torch.randn(B, H, 1, D, device=device)
    k = torch.randn(B, Hk, S_max, D, device=device)
    v = torch.randn(B, Hk, S_max, D, device=device)
    seqlens = torch.tensor([70, 9, 40], dtype=torch.int32, device=device)
    key_mask = torch.ones(B, S_max, dtype=torch.bool, device=device)
    key_mask[0, :30] = False  # left padding
    key_mask[2, 3:38] = False
    check_op(lambda q, k, v: attention_decode(q, k, v, seqlens, causal=False, num_splits=splits, key_mask=key_mask),
             lambda q, k, v: attention_decode_reference(q, k, v, seqlens, causal=False, key_mask=key_mask),
             dict(q=q, k=k, v=v), atol_ulps=ULPS)
    with pytest.raises(ValueError, match="key_mask"):
        attention_decode(q, k, v, seqlens, key_mask=key_mask[:, :10])


def test_decode_launches_compile_for_sm90(monkeypatch, device):
    """Both decode paths compile for an H100 (the interpreter never compiles them): with one
    split the first pass leaves PO / PLSE None, with a key mask and bfloat16 too."""
    from tests import sm90
    mod = importlib.import_module("tritonic.ops.attention_decode")
    seen = sm90.record(monkeypatch, mod)
    q = torch.randn(2, 4, 1, 64, dtype=torch.float16, device=device)
    k, v = (torch.randn(2, 2, 40, 64, dtype=torch.float16, device=device) for _ in "kv")
    lens = torch.tensor([40, 17], dtype=torch.int32, device=device)
    key_mask = torch.ones(2, 40, dtype=torch.bool, device=device)
    for splits in (1, 2):
        attention_decode(q, k, v, lens, num_splits=splits)
        attention_decode(q, k, v, lens, num_splits=splits, key_mask=key_mask, causal=False)
    assert [x["name"] for x in seen].count("_attn_decode_split") == 4
    assert sm90.compile_all(seen) == []


def test_decode_bad_input(device):
    q = torch.randn(1, 4, 1, 16, device=device)
    k = torch.randn(1, 3, 8, 16, device=device)
    with pytest.raises(ValueError, match="do not divide"):
        attention_decode(q, k, k, torch.tensor([8], device=device))
    k = torch.randn(1, 2, 8, 16, device=device)
    with pytest.raises(ValueError, match="cache_seqlens"):
        attention_decode(q, k, k, torch.tensor([8.0], device=device))


# ----------------------------------------------------------------------------- varlen

from tritonic.ops import attention_varlen, attention_varlen_reference  # noqa: E402


@pytest.mark.parametrize("causal,window", [(False, None), (True, None), (True, 6)])
def test_varlen_packed_sequences(causal, window, device):
    lq, lk = [5, 1, 23, 17], [5, 9, 23, 30]
    cu_q = torch.tensor([0] + list(torch.tensor(lq).cumsum(0)), dtype=torch.int32, device=device)
    cu_k = torch.tensor([0] + list(torch.tensor(lk).cumsum(0)), dtype=torch.int32, device=device)
    H, Hk, D = 4, 2, 16
    a = dict(q=torch.randn(sum(lq), H, D, device=device), k=torch.randn(sum(lk), Hk, D, device=device),
             v=torch.randn(sum(lk), Hk, D, device=device))
    kw = dict(causal=causal, window=window)
    check_op(lambda **t: attention_varlen(**t, cu_seqlens_q=cu_q, cu_seqlens_k=cu_k, max_seqlen_q=max(lq),
                                          max_seqlen_k=max(lk), **kw),
             lambda **t: attention_varlen_reference(**t, cu_seqlens_q=cu_q, cu_seqlens_k=cu_k, **kw), a,
             grads=QKV, atol_ulps=ULPS)


def test_varlen_bad_input(device):
    q = torch.randn(10, 4, 16, device=device)
    cu = torch.tensor([0, 10], dtype=torch.int32, device=device)
    with pytest.raises(ValueError, match="3-D"):
        attention_varlen(q[None], q, q, cu, cu, 10, 10)
    with pytest.raises(ValueError, match="cu_seqlens_q"):
        attention_varlen(q, q, q, cu.float(), cu, 10, 10)
    with pytest.raises(ValueError, match="one per sequence"):
        attention_varlen(q, q, q, cu, torch.tensor([0, 5, 10], dtype=torch.int32, device=device), 10, 10)


def test_the_registered_op_matches(device):
    """tritonic::attention (what torch.compile records) runs the same kernels."""
    q, k, v = (torch.randn(1, 2, 9, 16, device=device) for _ in range(3))
    o, lse = torch.ops.tritonic.attention(q, k, v, None, None, None, 0, 0.25, True)
    torch.testing.assert_close(o, attention(q, k, v, causal=True, scale=0.25))
    assert lse.shape == (1, 2, 9)


def test_forward_through_tensor_descriptors(device, monkeypatch):
    """The Hopper path (K/V tiles through 4-D tensor descriptors), forced in the interpreter:
    odd lengths, padded head dim, GQA, causal, a key-padding mask, a transposed layout."""
    monkeypatch.setenv("TRITONIC_ATTENTION_TMA", "1")
    made = []
    ws = importlib.import_module("tritonic.ops.attention_ws")  # (its head_tiles makes the tiles' descriptors)
    real = ws.descriptor
    monkeypatch.setattr(ws, "descriptor", lambda *a, **k: made.append(1) or real(*a, **k))
    _check(_qkv(2, 2, 2, 37, 29, 16, torch.float32, device), causal=True)
    _check(_qkv(1, 4, 2, 19, 40, 8, torch.float32, device))
    mask = torch.ones(2, 1, 1, 29, dtype=torch.bool, device=device)
    mask[0, ..., 17:] = False
    _check(_qkv(2, 2, 2, 21, 29, 16, torch.float32, device), mask=mask)
    q, k, v = (torch.randn(2, 23, 2, 16, device=device).transpose(1, 2) for _ in range(3))  # (B, S, H, D) storage
    _check(dict(q=q, k=k, v=v), causal=True)
    assert made, "the descriptor path did not run"



@pytest.mark.parametrize("dq_mode", ["kernel", "atomic"])
def test_backward_through_tensor_descriptors(device, monkeypatch, dq_mode):
    """The backward's tiles through descriptors (TRITONIC_ATTENTION_TMA_BWD=1 on Hopper: Q and
    dO in the dK/dV kernel, K and V in the dQ kernel), forced in the interpreter: odd lengths
    past the block, GQA, causal, a key-padding mask, a bias with its gradient, (B, S, H, D)
    storage; dQ by the second kernel and by atomics."""
    import importlib

    mod = importlib.import_module("tritonic.ops.attention")
    monkeypatch.setenv("TRITONIC_ATTENTION_TMA", "1")
    monkeypatch.setenv("TRITONIC_ATTENTION_TMA_BWD", "1")
    monkeypatch.setattr(mod, "_DQ_MODE", dq_mode)
    metas = spy_launches(monkeypatch, mod)
    _check(_qkv(2, 4, 2, 37, 29, 16, torch.float32, device), causal=True)
    mask = torch.ones(2, 1, 1, 29, dtype=torch.bool, device=device)
    mask[0, ..., 17:] = False
    _check(_qkv(2, 2, 2, 21, 29, 16, torch.float32, device), mask=mask)
    args = _qkv(1, 2, 2, 19, 19, 16, torch.float32, device)
    args["bias"] = torch.randn(1, 2, 19, 19, device=device)
    _check(args, grads=["q", "k", "v", "bias"], scale=1.0)
    q, k, v = (torch.randn(2, 23, 2, 16, device=device).transpose(1, 2) for _ in range(3))  # (B, S, H, D) storage
    _check(dict(q=q, k=k, v=v), causal=True)
    flags = [k["TMA_QDO"] for kernel, k in metas if kernel is mod._attn_bwd_dkdv]
    flags += [k["TMA_KV"] for kernel, k in metas if kernel is mod._attn_bwd_dq]
    assert flags and all(flags), "the descriptor path did not run"
    if dq_mode == "kernel":
        assert any(kernel is mod._attn_bwd_dq for kernel, _ in metas)


def test_broadcast_gradient_takes_pointer_loads(device, monkeypatch):
    """A gradient expanded over the batch (stride 0, from a sum over it) is not given to a
    descriptor: the backward loads it through pointers, and the gradients stay right."""
    import importlib

    mod = importlib.import_module("tritonic.ops.attention")
    monkeypatch.setenv("TRITONIC_ATTENTION_TMA", "1")
    metas = spy_launches(monkeypatch, mod)
    a = _qkv(3, 2, 2, 16, 16, 16, torch.float32, device)
    ours = {k: v.clone().requires_grad_(True) for k, v in a.items()}
    ref = {k: v.double().requires_grad_(True) for k, v in a.items()}
    g = torch.randn(2, 16, 16, device=device)  # dO = g expanded over the batch: strides (0, S*D, D, 1)
    (attention(**ours).sum(0) * g).sum().backward()
    (attention_reference(**ref).sum(0) * g.double()).sum().backward()
    for k in ours:
        torch.testing.assert_close(ours[k].grad.double(), ref[k].grad, atol=1e-4, rtol=1e-4)
    flags = [k["TMA_QDO"] for kernel, k in metas if kernel is mod._attn_bwd_dkdv]
    assert flags and not any(flags)


@pytest.mark.parametrize("dq_mode", ["kernel", "atomic"])
def test_head_major_programs_for_a_bias_shared_by_the_batch(device, monkeypatch, dq_mode):
    """A bias broadcast over the batch (T5's) orders the programs head-major (HEAD_MAJOR), in
    the forward and both backward kernels: same answers and gradients, GQA included; a bias with
    a batch axis, or one sequence, keeps the batch-major order."""
    import importlib

    mod = importlib.import_module("tritonic.ops.attention")
    monkeypatch.setattr(mod, "_DQ_MODE", dq_mode)
    metas = spy_launches(monkeypatch, mod)
    args = _qkv(3, 4, 2, 19, 23, 16, torch.float32, device)
    args["bias"] = torch.randn(1, 4, 19, 23, device=device)
    _check(args, grads=["q", "k", "v", "bias"], scale=1.0, causal=True)
    flags = [k["HEAD_MAJOR"] for kernel, k in metas if kernel in (mod._attn_fwd, mod._attn_bwd_dkdv, mod._attn_bwd_dq)]
    assert len(flags) >= 2 and all(flags)
    metas.clear()
    args["bias"] = torch.randn(3, 4, 19, 23, device=device)
    _check(args, grads=["q", "k", "v", "bias"], scale=1.0)
    assert not any(k["HEAD_MAJOR"] for kernel, k in metas if "HEAD_MAJOR" in k)


def test_dq_kernel_with_its_own_blocks(device, monkeypatch):
    """A backward config with DQ_* entries runs the dQ kernel on its own blocks, warps and
    stages (the dK/dV kernel keeps the config's): same gradients, odd lengths, GQA, causal."""
    import importlib

    from tritonic.runtime.autotune import Config

    mod = importlib.import_module("tritonic.ops.attention")
    monkeypatch.setattr(mod, "_DQ_MODE", "kernel")
    cfg = Config.of(num_warps=4, num_stages=1, BLOCK_M=16, BLOCK_N=16, DQ_BLOCK_M=32, DQ_BLOCK_N=16, DQ_WARPS=4,
                    DQ_STAGES=1)
    real_run = mod._tuned_run
    monkeypatch.setattr(mod, "_tuned_run", lambda tuner, run, key, traced=False: run(cfg) if tuner in
                        mod._BWD_TUNERS.values() else real_run(tuner, run, key, traced))
    metas = spy_launches(monkeypatch, mod)
    _check(_qkv(2, 4, 2, 37, 29, 16, torch.float32, device), causal=True)
    dq = [k for kernel, k in metas if kernel is mod._attn_bwd_dq]
    dkdv = [k for kernel, k in metas if kernel is mod._attn_bwd_dkdv]
    assert dq and all(k["BLOCK_M"] == 32 and k["BLOCK_N"] == 16 for k in dq)
    assert dkdv and all(k["BLOCK_M"] == 16 and "DQ_BLOCK_M" not in k for k in dkdv)

def test_backward_with_atomic_dq(device, monkeypatch):
    """dQ added from the dK/dV pass into a float32 accumulator (one kernel instead of two):
    the same gradients under causality, Sq != Sk, GQA, masks with empty rows, a bias with its
    gradient, ALiBi, windows and packed sequences."""
    import importlib

    mod = importlib.import_module("tritonic.ops.attention")  # (the package exports a function of that name)
    monkeypatch.setattr(mod, "_DQ_MODE", "atomic")
    launched = []
    real = mod.launch
    monkeypatch.setattr(mod, "launch", lambda kernel, *a, **k: (launched.append(kernel), real(kernel, *a, **k)))
    _check(_qkv(2, 2, 2, 33, 20, 16, torch.float32, device), causal=True)
    _check(_qkv(1, 4, 2, 19, 23, 16, torch.float16, device), causal=True)
    args = _qkv(2, 2, 2, 10, 12, 16, torch.float32, device)
    mask = torch.rand(2, 1, 10, 12, device=device) > 0.4
    mask[0, 0, 3] = False
    mask[1] = False
    _check(args, mask=mask)
    args["bias"] = torch.randn(1, 2, 10, 12, device=device)
    _check(args, grads=["q", "k", "v", "bias"], scale=1.0)
    args = _qkv(1, 2, 2, 21, 21, 16, torch.float32, device)
    _check(args, alibi_slopes=torch.tensor([0.5, 0.125], device=device), causal=True, window=5)
    assert mod._attn_bwd_dkdv in launched and mod._attn_bwd_dq not in launched
    launched.clear()
    monkeypatch.setattr(torch, "are_deterministic_algorithms_enabled", lambda: True)
    _check(_qkv(1, 2, 2, 9, 9, 16, torch.float32, device), causal=True)
    assert mod._attn_bwd_dq in launched  # deterministic algorithms: no atomics
    monkeypatch.undo()
    monkeypatch.setattr(mod, "_DQ_MODE", "atomic")
    lq, lk = [5, 1, 23], [5, 9, 30]
    cu_q = torch.tensor([0, 5, 6, 29], dtype=torch.int32, device=device)
    cu_k = torch.tensor([0, 5, 14, 44], dtype=torch.int32, device=device)
    a = dict(q=torch.randn(sum(lq), 4, 16, device=device), k=torch.randn(sum(lk), 2, 16, device=device),
             v=torch.randn(sum(lk), 2, 16, device=device))
    check_op(lambda **t: attention_varlen(**t, cu_seqlens_q=cu_q, cu_seqlens_k=cu_k, max_seqlen_q=23,
                                          max_seqlen_k=30, causal=True),
             lambda **t: attention_varlen_reference(**t, cu_seqlens_q=cu_q, cu_seqlens_k=cu_k, causal=True), a,
             grads=QKV, atol_ulps=ULPS)


def test_forced_dq_kernel_under_an_atomic_config(device, monkeypatch):
    """TRITONIC_ATTENTION_DQ=kernel with a tuned config that chose atomic dQ (ATOMIC_DQ=1 in
    its meta): the second kernel runs, with the config's blocks, and the gradients hold."""
    import importlib

    from tritonic.runtime.autotune import Config

    mod = importlib.import_module("tritonic.ops.attention")
    monkeypatch.setattr(mod, "_DQ_MODE", "kernel")
    monkeypatch.setattr(mod, "_INTERPRETER_CONFIG",
                        Config.of(num_warps=4, num_stages=1, BLOCK_M=16, BLOCK_N=16, ATOMIC_DQ=1))
    launched = []
    real = mod.launch
    monkeypatch.setattr(mod, "launch", lambda kernel, *a, **k: (launched.append(kernel), real(kernel, *a, **k)))
    _check(_qkv(1, 2, 2, 19, 19, 16, torch.float32, device), causal=True)
    assert mod._attn_bwd_dq in launched


def test_output_stored_sequence_major_and_strided_output_gradient(device):
    """The output is a (B, H, S, D) view of (B, S, H, D) memory, so the usual transpose back
    to (B, S, H·D) costs no copy; the gradient arriving in that layout is read in place."""
    args = _qkv(2, 3, 3, 13, 13, 16, torch.float32, device)
    args = {n: t.requires_grad_(True) for n, t in args.items()}
    out = attention(**args, causal=True)
    assert out.transpose(1, 2).is_contiguous()
    grad = torch.randn(2, 13, 3, 16, device=device)  # (B, S, H, D): what a reshape's backward hands over
    torch.autograd.backward(out, grad.transpose(1, 2))
    ref = {n: t.detach().double().requires_grad_(True) for n, t in args.items()}
    torch.autograd.backward(attention_reference(**ref, causal=True), grad.transpose(1, 2).double())
    for n in QKV:
        torch.testing.assert_close(args[n].grad.double(), ref[n].grad, rtol=1e-4, atol=1e-5)


def test_decode_split_count_heuristic():
    """Measured on an H100 (132 SMs, 8 kv heads, 64-key blocks): a batch of 16 or more fills a wave
    with one split at 1k keys; batch 1 splits until every SM has two programs; long caches at
    least 8 ways."""
    from tritonic.ops.attention_decode import default_splits
    assert default_splits(16 * 8, 16, 132) == 1     # b16 1k (was 3: 30.2 us against 27.8)
    assert default_splits(64 * 8, 16, 132) == 1     # b64 1k
    assert default_splits(1 * 8, 16, 132) == 16     # b1 1k: one block a split
    assert default_splits(1 * 8, 128, 132) == 33    # b1 8k
    assert default_splits(16 * 8, 128, 132) == 8    # b16 8k: the long-cache floor
    assert default_splits(4 * 8, 16, 132) == 9      # b4 1k: two programs an SM
    assert default_splits(1, 1, 132) == 1


def test_a_config_that_does_not_compile_falls_back_to_one_that_does(monkeypatch):
    """A tuned (or shipped) config that fails to build here, out of shared memory or in the
    compiler (ptxas crashed on some masked-backward tiles once), runs the next config that
    builds instead, remembers it, and warns for a compiler failure."""
    import triton.runtime.errors as terr

    mod = importlib.import_module("tritonic.ops.attention")
    monkeypatch.setattr(mod, "interpreter_active", lambda: False)
    bad, oom, good = object(), object(), object()

    class Tuner:
        name = "attention_test"
        configs = [bad, oom, good]
        chosen = {}

    ran = []

    def run(config):
        ran.append(config)
        if config is bad:
            raise terr.PTXASError("ptxas died")
        if config is oom:
            raise terr.OutOfResources(300000, 232448, "shared memory")

    key = (torch.bfloat16, 512, 512, 64, ())
    tuner = Tuner()
    tuner.chosen[(str(torch.bfloat16), 512, 512, 64, ())] = bad
    with pytest.warns(UserWarning, match="did not compile"):
        mod._tuned_run(tuner, run, key)
    assert ran == [bad, oom, good] and tuner.chosen[(str(torch.bfloat16), 512, 512, 64, ())] is good
    mod._tuned_run(tuner, run, key)
    assert ran[-1] is good and len(ran) == 4
