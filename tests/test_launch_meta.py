"""``launch_meta(kernel, grid, meta, *args)``: the keywords as one cached dict, keyed in C by
its identity. The C module is built here when a compiler is at hand; Triton's launcher is a
stub that records its calls (no GPU)."""

import gc
import sys

import pytest
import torch

from tests.test_launch import _c_runnable, _runnable
from tritonic.runtime import launcher as L


@pytest.fixture(autouse=True)
def _no_kept_dicts(monkeypatch):
    monkeypatch.setattr(L, "_c_kept", {})


def _filed_then_recorded(c_launch, monkeypatch, grid=(1,)):
    """The runnable kernel with its launch_meta key filed by one call (dict BLOCK=32); later
    slow-path calls are recorded in the returned list instead of run."""
    kernel, fk, x, calls = _c_runnable(monkeypatch)
    meta = dict(BLOCK=32)
    c_launch.launch_meta(kernel, grid, meta, x, 128, 1e-5, None)  # files the key on the way out
    slow = []
    monkeypatch.setattr(L, "_c_slow", lambda *a: slow.append(a))
    L._configure_c(c_launch, device=lambda: 0, stream=lambda d: 7)
    return kernel, fk, x, calls, meta, slow


def test_launch_meta_calls_what_launch_calls(c_launch, monkeypatch):
    kernel, fk, x, calls, meta, slow = _filed_then_recorded(c_launch, monkeypatch, (3, 2))
    assert len(calls) == 1 and len(fk.ccompiled) == 1 and L._c_kept == {id(meta): meta}
    c_launch.launch_meta(kernel, (3, 2), meta, x, 256, 1e-5, None)  # from C
    c_launch.launch(kernel, (3, 2), x, 256, 1e-5, None, BLOCK=32)  # the keyword form: its own key, not filed
    L._launch_py(kernel, (3, 2), x, 256, 1e-5, None, BLOCK=32)
    assert len(slow) == 1 and len(calls) == 3
    assert calls[1] == calls[2] and calls[1][:4] == (3, 2, 1, 7)


def test_an_equal_dict_is_another_key_and_the_python_path_gets_a_copy(c_launch, monkeypatch):
    kernel, fk, x, calls, meta, slow = _filed_then_recorded(c_launch, monkeypatch)
    twin = dict(BLOCK=32)
    c_launch.launch_meta(kernel, (1,), twin, x, 128, 1e-5, None)
    k, g, a, m, key, keep = slow[0]
    assert k is kernel and g == (1,) and a == (x, 128, 1e-5, None)
    assert m == twin and m is not twin and keep is twin and key is not None


@pytest.mark.parametrize("call", ["misaligned", "other BLOCK", "None for tensor", "arguments missing"])
def test_launch_meta_leaves_the_rest_to_python(c_launch, monkeypatch, call):
    kernel, fk, x, calls, meta, slow = _filed_then_recorded(c_launch, monkeypatch)
    m, args = {"misaligned": (meta, (x[1:], 128, 1e-5, None)), "other BLOCK": (dict(BLOCK=64), (x, 128, 1e-5, None)),
               "None for tensor": (meta, (None, 128, 1e-5, None)), "arguments missing": (meta, (x, 128, 1e-5))}[call]
    c_launch.launch_meta(kernel, (1,), m, *args)
    assert len(slow) == 1 and len(calls) == 1 and slow[0][2] == args and slow[0][3] == m


def test_launch_meta_refuses_what_is_not_a_dict(c_launch):
    kernel, _, x, _ = _runnable()
    for bad in ((kernel, (1,)), (kernel, (1,), [("BLOCK", 32)], x)):
        with pytest.raises(TypeError, match="launch_meta"):
            c_launch.launch_meta(*bad)


def test_a_dict_filed_in_a_key_is_kept_so_its_address_is_never_reused(c_launch, monkeypatch):
    """The key holds the dict's address: once filed, the dict is kept alive, so a new dict
    with other contents can never come to that address and find the old kernel."""
    kernel, fk, x, calls = _c_runnable(monkeypatch)
    meta = dict(BLOCK=32)
    c_launch.launch_meta(kernel, (1,), meta, x, 128, 1e-5, None)
    address = id(meta)
    del meta
    gc.collect()
    assert address in L._c_kept  # still alive
    for _ in range(200):  # fresh dicts never land on the kept address
        other = dict(BLOCK=64)
        assert id(other) != address


def test_launch_meta_leaks_no_references(c_launch, monkeypatch):
    kernel, fk, x, calls = _c_runnable(monkeypatch)
    meta = dict(BLOCK=32)
    c_launch.launch_meta(kernel, (3, 2), meta, x, 128, 1e-5, None)
    slow = []
    monkeypatch.setattr(L, "_c_slow", lambda *a: slow.append(1))
    L._configure_c(c_launch, device=lambda: 0, stream=lambda d: 7)
    grid, y, miss = (3, 2), torch.empty(8), dict(BLOCK=64)
    objs = [x, y, grid, meta, miss, kernel, fk.ccompiled]
    before = [sys.getrefcount(o) for o in objs]
    for _ in range(2000):
        c_launch.launch_meta(kernel, grid, meta, x, 128, 1e-5, None)  # fast
        c_launch.launch_meta(kernel, grid, meta, x, 128, 1e-5, y)  # tensor for None
        c_launch.launch_meta(kernel, grid, miss, x, 128, 1e-5, None)  # key miss
    assert len(calls) == 2001 and len(slow) == 4000
    assert [sys.getrefcount(o) for o in objs] == before


def test_the_python_launch_meta_is_launch(monkeypatch):
    seen = []
    monkeypatch.setattr(L, "launch", lambda *a, **k: seen.append((a, k)))
    L._launch_meta_py("K", (1,), {"BLOCK": 8}, 1, 2)
    assert seen == [(("K", (1,), 1, 2), {"BLOCK": 8})]


def test_shared_meta_gives_one_dict_per_set_of_keywords(monkeypatch):
    monkeypatch.setattr(L, "_metas", {})
    a = L.shared_meta(dict(BLOCK=32, num_warps=4))
    assert L.shared_meta(dict(BLOCK=32, num_warps=4)) is a
    assert L.shared_meta(dict(BLOCK=64, num_warps=4)) is not a
    flag = L.shared_meta(dict(FLAG=True))
    assert L.shared_meta(dict(FLAG=1)) is not flag and L.shared_meta(dict(FLAG=True)) is flag  # True == 1, apart
    odd = dict(BLOCK=32, table=[1, 2])  # unhashable: its own copy, never shared
    assert L.shared_meta(odd) == odd and L.shared_meta(odd) is not odd and len(L._metas) == 4


def test_the_norm_forward_launches_of_two_shapes_share_their_keywords():
    """Another row count with the same launch is the same dict (one C key), not a new one per
    shape: the C table grows with distinct launches only."""
    import importlib

    norm = importlib.import_module("tritonic.ops.norm")
    args = (False, False, True, True, True, False, True, False, False, None, False)
    g1, m1 = norm._fwd_launch(16, 768, *args)
    g2, m2 = norm._fwd_launch(4096, 768, *args)
    assert g1 != g2 and m1 is m2
