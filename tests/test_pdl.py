"""Programmatic dependent launch (runtime/pdl.py, kernels/pdl.py): inside tritonic's captures, for
launches of at most 128 rows; TRITONIC_PDL=0 turns it off.

On the CPU: when it is off, launches carry nothing new; when on, the norm forward, the
GEMMs, attention's forward and decode kernels, the embedding gather, RoPE and the activations launch with
``USE_PDL`` and ``launch_pdl`` (the kernels themselves only run it on a GPU: the interpreter
has no griddepcontrol). On a GPU: the same ops with it on match the ones with it off,
eagerly and replayed from a CUDA graph."""

import importlib

import pytest
import torch

from tritonic import ops
from tritonic.runtime import pdl

ON = {"USE_PDL": True, "launch_pdl": True}
OP_MODULES = ("norm", "matmul", "attention", "attention_decode", "embedding", "rope", "activation")
PDL_KERNELS = ("_norm_fwd", "_attn_fwd", "_attn_decode_split", "_attn_decode_combine", "_embedding_fwd", "_matmul",
               "_matmul_tma", "_rope", "_act_fwd")


def test_on_by_default_inside_captures_for_small_launches(monkeypatch):
    monkeypatch.setenv("TRITONIC_PDL", "0")
    assert not pdl.requested()
    monkeypatch.delenv("TRITONIC_PDL", raising=False)
    assert pdl.requested()
    monkeypatch.setattr(pdl, "REQUESTED", True)
    monkeypatch.setattr(pdl, "_on", lambda index: True)  # (as on an sm_90 GPU)
    gpu = torch.device("cuda", 0)  # (a device object only: nothing runs)
    assert not pdl.ACTIVE and pdl.pdl_meta(gpu, 16) is pdl.OFF  # outside a capture: off
    seen = []
    captured = pdl.while_capturing(lambda: seen.append((pdl.ACTIVE, pdl.pdl_meta(gpu, 16), pdl.pdl_meta(gpu, 129),
                                                        pdl.pdl_meta(torch.device("cpu"), 16))))
    with pdl.capturing():
        captured()  # nested: still on inside, off after the outer one closes
        assert pdl.ACTIVE
    assert seen == [(True, pdl.ON, pdl.OFF, pdl.OFF)] and pdl.MAX_ROWS == 128
    assert not pdl.ACTIVE
    monkeypatch.setattr(pdl, "REQUESTED", False)  # TRITONIC_PDL=0: a capture changes nothing
    with pdl.capturing():
        assert not pdl.ACTIVE and pdl.pdl_meta(gpu, 16) is pdl.OFF
    assert pdl.OFF == {"USE_PDL": False}  # (named when off: Inductor needs every constexpr given)


def _capture(monkeypatch, module, on):
    """Launches of ``tritonic.ops.<module>`` recorded (kernel name, keywords), not run."""
    mod = importlib.import_module(f"tritonic.ops.{module}")
    seen = []
    if hasattr(mod, "launch"):
        monkeypatch.setattr(mod, "launch", lambda kernel, grid, *a, **kw: seen.append((kernel.fn.__name__, kw)))
    if hasattr(mod, "launch_meta"):  # (the cached-keywords form: the dict itself)
        monkeypatch.setattr(mod, "launch_meta", lambda kernel, grid, meta, *a: seen.append((kernel.fn.__name__, meta)))
    return seen


def _force(monkeypatch, on):
    """PDL on or off whatever the device (the CPU included: the launches are stubs)."""
    monkeypatch.setattr(pdl, "ACTIVE", on)
    monkeypatch.setattr(pdl, "pdl_meta", lambda device, rows: pdl.ON if on else pdl.OFF)


def _kernels_launched(monkeypatch, on):
    seen = [_capture(monkeypatch, m, on) for m in OP_MODULES]
    _force(monkeypatch, on)
    x = torch.randn(4, 32)
    ops.layer_norm(x, torch.ones(32), torch.zeros(32))
    ops.rms_norm(x, torch.ones(32))
    with torch.no_grad():
        ops.linear(x, torch.randn(16, 32), torch.zeros(16), activation="gelu")
    q = torch.randn(1, 2, 8, 16)
    ops.attention(q, q, q, causal=True)
    kc = torch.randn(1, 2, 40, 16)  # (two splits: both passes)
    ops.attention_decode(q[:, :, :1], kc, kc, torch.tensor([40], dtype=torch.int32), num_splits=2)
    ops.embedding(torch.tensor([1, 2, 3]), torch.randn(10, 32))
    ops.rope(q, q, torch.randn(1, 8, 16), torch.randn(1, 8, 16))
    ops.gelu(x)
    return [k for s in seen for k in s]


@pytest.mark.skipif(torch.cuda.is_available(), reason="the launches are stubbed on the CPU")
@pytest.mark.parametrize("on", [False, True])
def test_launches_carry_pdl_only_when_on(monkeypatch, on):
    launched = _kernels_launched(monkeypatch, on)
    names = {name for name, _ in launched}
    assert {"_norm_fwd", "_attn_fwd", "_attn_decode_split", "_attn_decode_combine", "_embedding_fwd", "_rope",
            "_act_fwd"} <= names, names
    assert names & {"_matmul", "_matmul_tma"}, names
    for name, kw in launched:
        if name in PDL_KERNELS:
            assert (kw.get("USE_PDL"), kw.get("launch_pdl")) == ((True, True) if on else (False, None)), (name, kw)


@pytest.mark.gpu
def test_ops_with_pdl_match_and_replay_in_a_graph(monkeypatch):
    """PDL forced on (the GPU is sm_90 or later): results equal those with it off, and a CUDA
    graph of the chain (embedding, norm, GEMM, attention, norm) replays to the same values."""
    if torch.cuda.get_device_capability()[0] < 9:
        pytest.skip("programmatic dependent launch needs compute capability 9.0")
    dt = torch.float16
    emb, w_ln = torch.randn(100, 256, device="cuda", dtype=dt), torch.randn(256, device="cuda", dtype=dt)
    w_qkv = torch.randn(768, 256, device="cuda", dtype=dt) / 16
    ids = torch.randint(0, 100, (2, 64), device="cuda")

    def chain():
        h = ops.embedding(ids, emb)
        h = ops.layer_norm(h, w_ln)
        q, k, v = ops.linear(h, w_qkv).view(2, 64, 3, 4, 64).permute(2, 0, 3, 1, 4)
        o = ops.attention(q, k, v, causal=True).transpose(1, 2).reshape(2, 64, 256)
        return ops.rms_norm(o + h, w_ln)

    with torch.no_grad():
        want = chain()
        monkeypatch.setattr(pdl, "ACTIVE", True)  # (as inside a capture; every launch here has 128 rows)
        monkeypatch.setattr(pdl, "_on", lambda index: True)
        assert pdl.pdl_meta(ids.device, 128) is pdl.ON
        got = chain()
        torch.testing.assert_close(got, want, atol=0, rtol=0)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            chain()
        torch.cuda.current_stream().wait_stream(side)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            out = chain()
        for _ in range(3):
            ids.copy_(torch.randint(0, 100, (2, 64), device="cuda"))
            g.replay()
            monkeypatch.setattr(pdl, "ACTIVE", False)
            ref = chain()
            monkeypatch.setattr(pdl, "ACTIVE", True)
            torch.testing.assert_close(out, ref, atol=0, rtol=0)


@pytest.mark.gpu
def test_decode_with_pdl_matches_and_replays(monkeypatch):
    """Flash-decoding's two kernels with PDL (the combine waits for the splits inside): equal
    to PDL off, eagerly and replayed from a graph after the cache and lengths change."""
    if torch.cuda.get_device_capability()[0] < 9:
        pytest.skip("programmatic dependent launch needs compute capability 9.0")
    dt = torch.bfloat16
    q = torch.randn(3, 8, 1, 128, device="cuda", dtype=dt)
    k, v = (torch.randn(3, 2, 4096, 128, device="cuda", dtype=dt) for _ in range(2))
    lens = torch.tensor([4096, 1000, 17], device="cuda", dtype=torch.int32)
    want = ops.attention_decode(q, k, v, lens)
    monkeypatch.setattr(pdl, "ACTIVE", True)
    monkeypatch.setattr(pdl, "_on", lambda index: True)
    torch.testing.assert_close(ops.attention_decode(q, k, v, lens), want, atol=0, rtol=0)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        ops.attention_decode(q, k, v, lens)
    torch.cuda.current_stream().wait_stream(side)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        out = ops.attention_decode(q, k, v, lens)
    for n in (3000, 64, 4096):
        k.normal_()
        lens.fill_(n)
        g.replay()
        monkeypatch.setattr(pdl, "ACTIVE", False)
        ref = ops.attention_decode(q, k, v, lens)
        monkeypatch.setattr(pdl, "ACTIVE", True)
        torch.testing.assert_close(out, ref, atol=0, rtol=0)
