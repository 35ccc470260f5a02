"""The fast launcher's specialisation keys (the launch itself needs a GPU: tests/ops/*_gpu.py
run every op through it)."""

from types import SimpleNamespace

import pytest
import torch

from tritonic.runtime import launcher as L


def _kernel(*params):
    return SimpleNamespace(params=[SimpleNamespace(name=n, is_constexpr=c) for n, c in params])


def _bind():
    return L._FastKernel(_kernel(("X", False), ("n", False), ("eps", False), ("P", False), ("BLOCK", True))).bind


def test_bind_returns_all_arguments_in_order():
    x = torch.empty(64)
    key, args = _bind()(x, 128, 1e-5, None, BLOCK=32, num_warps=4)
    assert args == (x, 128, 1e-5, None, 32)
    assert key[-1] == (("num_warps", 4),)


def test_bind_fills_parameters_left_at_their_defaults():
    """A constexpr with a default (a flag added to a kernel later) may be left out, as with
    Triton's own call: the generic binder fills in the default (it used to raise TypeError)."""
    params = [SimpleNamespace(name="X", is_constexpr=False, has_default=False),
              SimpleNamespace(name="BLOCK", is_constexpr=True, has_default=False),
              SimpleNamespace(name="FLAG", is_constexpr=True, has_default=True, default=True)]
    bind = L._FastKernel(SimpleNamespace(params=params)).bind
    x = torch.empty(8)
    assert bind(x, BLOCK=4)[1] == (x, 4, True)
    assert bind(x, BLOCK=4, FLAG=False)[1] == (x, 4, False)
    assert bind(x, BLOCK=4)[0] != bind(x, BLOCK=4, FLAG=False)[0]



def test_traced_launches_name_every_defaulted_constexpr():
    """Inductor's launcher for a user kernel breaks on a constexpr left at its default
    ("missing '_grid_2'", torch 2.11: the attention forward's WARP_SPEC under torch.compile),
    so a traced launch names them all; what the call gives is kept."""
    params = [SimpleNamespace(name="X", is_constexpr=False, has_default=False),
              SimpleNamespace(name="BLOCK", is_constexpr=True, has_default=False),
              SimpleNamespace(name="FLAG", is_constexpr=True, has_default=True, default=False),
              SimpleNamespace(name="PDL", is_constexpr=True, has_default=True, default=True),
              SimpleNamespace(name="n", is_constexpr=False, has_default=True, default=3)]
    kernel = SimpleNamespace(params=params)
    assert L._with_defaults(kernel, 1, {"BLOCK": 4, "PDL": False, "num_warps": 4}) == {
        "BLOCK": 4, "PDL": False, "num_warps": 4, "FLAG": False}
    assert L._with_defaults(kernel, 5, {}) == {}  # all given positionally
    assert L._with_defaults(SimpleNamespace(), 1, {"A": 1}) == {"A": 1}
    import triton
    import triton.language as tl

    @triton.jit
    def k(X, n, BLOCK: tl.constexpr, FLAG: tl.constexpr = False):
        pass

    assert L._with_defaults(k, 2, {"BLOCK": 16}) == {"BLOCK": 16, "FLAG": False}  # a real JITFunction
    assert L._with_defaults(SimpleNamespace(fn=k), 2, {"BLOCK": 16}) == {"BLOCK": 16, "FLAG": False}

def test_key_separates_what_triton_specialises_on():
    bind = _bind()
    base = torch.empty(64, dtype=torch.float32)

    def key(x=base, n=128, P=None, BLOCK=32, **opts):
        return bind(x, n, 1e-5, P, BLOCK=BLOCK, **opts)[0]

    assert key() == key(x=torch.empty(64, dtype=torch.float32))  # same dtype, both aligned
    assert key() != key(x=torch.empty(64, dtype=torch.float16))  # dtype
    assert key() != key(x=base[1:])  # 4-byte offset: not 16-byte aligned
    assert key(n=1) != key(n=2)  # == 1
    assert key(n=32) != key(n=33)  # divisible by 16
    assert key(n=2**31 + 16) != key(n=16)  # 64-bit integer
    assert key(BLOCK=32) != key(BLOCK=64)  # constexpr
    assert key(num_warps=4) != key(num_warps=8)  # launch option
    assert key(P=base) != key()  # None vs tensor
    assert key(n=48) == key(n=64)  # same class: both divisible by 16, neither is 1


def test_unknown_argument_type_is_refused():
    with pytest.raises(TypeError, match="no fast-launch key"):
        L._spec(object())


def test_interpreter_takes_the_plain_path(monkeypatch):
    monkeypatch.setattr(L, "interpreter_active", lambda: True)
    marker = object()
    L._fast.pop(marker, None)
    assert L._fast_kernel(marker) is None
    L._fast.pop(marker, None)


def _layer_norm_checks(offsets):
    """layer_norm at these offsets into one buffer (16-byte aligned or not) against PyTorch;
    returns the last input and the weight."""
    import torch.nn.functional as F

    from tritonic.ops import layer_norm

    base = torch.randn(64 * 64 + 8, device="cuda")
    w = torch.randn(64, device="cuda")
    for off in offsets:
        x = base[off:off + 64 * 64].view(64, 64)
        torch.testing.assert_close(layer_norm(x, w), F.layer_norm(x, (64,), w), atol=1e-5, rtol=1e-5)
    return x, w


def _layer_norm_on_a_side_stream(x, w):
    import torch.nn.functional as F

    from tritonic.ops import layer_norm

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        y = layer_norm(x, w)
    side.synchronize()
    torch.testing.assert_close(y, F.layer_norm(x, (64,), w), atol=1e-5, rtol=1e-5)


@pytest.mark.gpu
def test_fast_path_on_gpu_respects_alignment_and_streams():
    from tritonic.kernels.norm import _norm_fwd

    x, w = _layer_norm_checks((0, 1, 0, 1, 2))  # aligned, misaligned, then the cached keys again
    assert L._fast[_norm_fwd] is not None and len(L._fast[_norm_fwd].compiled) >= 2
    _layer_norm_on_a_side_stream(x, w)


# ----------------------------------------------------------------------------- the fast binder


def _fast(args):
    fk = L._FastKernel(_kernel(("X", False), ("n", False), ("eps", False), ("P", False), ("BLOCK", True)))
    fk.device = lambda: 0  # no CUDA here
    fk.make_fast_binder(args)
    assert fk.bind_fast is not None
    return fk.bind_fast


def test_fast_binder_passes_pointers_as_integers():
    x = torch.empty(64)
    key, args = _fast((x, 128, 1e-5, None))((x, 128, 1e-5, None), dict(BLOCK=32, num_warps=4))
    assert args == (x.data_ptr(), 128, 1e-5, None, None)  # every parameter in order; constexprs as None
    assert key[0] == "fast" and key[-1] == (("BLOCK", 32), ("num_warps", 4))


def test_fast_and_generic_binders_hand_over_the_same_arguments():
    """Constexprs (the last parameters, as in every tritonic kernel) are handed over too:
    the C launcher takes every parameter."""
    fk = L._FastKernel(_kernel(("X", False), ("n", False), ("P", False), ("f", False), ("A", True), ("B", True)))
    fk.device = lambda: 0  # no CUDA here
    x = torch.empty(8)
    fk.make_fast_binder((x, 3, None, 2.0))
    _, fast_args = fk.bind_fast((x, 3, None, 2.0), dict(A=1, B=4))
    _, plain_args = fk.bind(x, 3, None, 2.0, A=1, B=4)
    assert fast_args == (x.data_ptr(),) + plain_args[1:4] + (None, None)  # the launcher ignores constexprs
    assert plain_args == (x, 3, None, 2.0, 1, 4)


def test_fast_key_separates_what_triton_specialises_on():
    base = torch.empty(64, dtype=torch.float32)
    bind = _fast((base, 128, 1e-5, None))

    def key(x=base, n=128, BLOCK=32, **opts):
        return bind((x, n, 1e-5, None), dict(BLOCK=BLOCK, **opts))[0]

    assert key() == key(x=torch.empty(64, dtype=torch.float32))
    assert key() != key(x=torch.empty(64, dtype=torch.float16))
    assert key() != key(x=base[1:])
    assert key(n=1) != key(n=2)
    assert key(n=32) != key(n=33)
    assert key(n=2**31 + 16) != key(n=16)
    assert key(n=2**63 + 16) != key(n=2**31 + 16)
    assert key(BLOCK=32) != key(BLOCK=64)
    assert key(num_warps=4) != key(num_warps=8)
    assert key(n=48) == key(n=64)


@pytest.mark.parametrize("change", ["tensor for None", "None for tensor", "float for int", "bool for int",
                                    "int for float", "subclass"])
def test_fast_binder_refuses_other_kinds(change):
    x = torch.empty(64)
    bind = _fast((x, 128, 1e-5, None))
    args = {"tensor for None": (x, 128, 1e-5, x), "None for tensor": (None, 128, 1e-5, None),
            "float for int": (x, 128.0, 1e-5, None), "bool for int": (x, True, 1e-5, None),
            "int for float": (x, 128, 1, None),
            "subclass": (type("Sub", (torch.Tensor,), {})(x), 128, 1e-5, None)}[change]
    with pytest.raises((L._Miss, AttributeError, TypeError, RuntimeError)):
        bind(args, dict(BLOCK=32))


def test_no_fast_binder_for_unknown_kinds():
    fk = L._FastKernel(_kernel(("X", False), ("BLOCK", True)))
    fk.make_fast_binder((object(),))
    assert fk.bind_fast is None


def test_descriptor_without_validation_equals_tritons(monkeypatch):
    """launcher.descriptor skips TensorDescriptor's per-call checks (its callers checked the
    layout) and must give the same object Triton's constructor gives."""
    from triton.tools.tensor_descriptor import TensorDescriptor

    from tritonic.runtime import launch_keys, launcher

    t = torch.zeros(64, 32, dtype=torch.float16)
    ours = launcher.descriptor(t, [64, 32], [32, 1], [16, 16])
    theirs = TensorDescriptor(t, [64, 32], [32, 1], [16, 16])
    assert type(ours) is TensorDescriptor and ours == theirs and launch_keys._FAST_DESCRIPTOR
    monkeypatch.setattr(launch_keys, "_FAST_DESCRIPTOR", False)  # another Triton: the validating constructor
    with pytest.raises((AssertionError, ValueError)):
        launcher.descriptor(t, [64, 32], [32, 1], [16, 12])  # a block that is not a power of two


def _runnable(stream=7):
    """A fast kernel whose one compiled entry records its C-launcher calls (no GPU here)."""
    kernel = _kernel(("X", False), ("n", False), ("eps", False), ("P", False), ("BLOCK", True))
    fk = L._FastKernel(kernel)
    fk.device, fk.stream = (lambda: 0), (lambda d: stream)
    x = torch.empty(64)
    fk.make_fast_binder((x, 128, 1e-5, None))
    calls = []
    key, _ = fk.bind_fast((x, 128, 1e-5, None), dict(BLOCK=32))
    fk.compiled[key] = (lambda *a: calls.append(a), False, True, "FUNCTION", "METADATA", None)
    return kernel, fk, x, calls


def test_run_fast_hands_the_c_launcher_what_bind_fast_gives():
    _, fk, x, calls = _runnable()
    assert fk.run_fast((3, 2), (x, 128, 1e-5, None), dict(BLOCK=32)) is True
    _, launch_args = fk.bind_fast((x, 128, 1e-5, None), dict(BLOCK=32))
    assert calls == [(3, 2, 1, 7, "FUNCTION", False, True, None, None, "METADATA", None, None, None, *launch_args)]
    assert fk.run_fast((5,), (x, 256, 1e-5, None), dict(BLOCK=32)) is True  # same class of n
    assert calls[-1][:3] == (5, 1, 1) and calls[-1][-4] == 256


@pytest.mark.parametrize("call", ["misaligned", "n is 1", "other BLOCK", "option", "None for tensor",
                                  "tensor for None", "float for int", "arguments missing"])
def test_run_fast_declines_what_is_not_compiled_or_not_its_kind(call):
    _, fk, x, calls = _runnable()
    args, meta = {
        "misaligned": ((x[1:], 128, 1e-5, None), dict(BLOCK=32)),
        "n is 1": ((x, 1, 1e-5, None), dict(BLOCK=32)),
        "other BLOCK": ((x, 128, 1e-5, None), dict(BLOCK=64)),
        "option": ((x, 128, 1e-5, None), dict(BLOCK=32, num_warps=8)),
        "None for tensor": ((None, 128, 1e-5, None), dict(BLOCK=32)),
        "tensor for None": ((x, 128, 1e-5, x), dict(BLOCK=32)),
        "float for int": ((x, 128.0, 1e-5, None), dict(BLOCK=32)),
        "arguments missing": ((x, 128, 1e-5), dict(BLOCK=32)),
    }[call]
    try:
        assert fk.run_fast((1,), args, meta) is False
    except (AttributeError, TypeError, ValueError):  # launch() catches these and takes the slow path
        pass
    assert calls == []


def test_run_fast_declines_kernels_that_need_scratch_buffers():
    _, fk, x, calls = _runnable()
    key = next(iter(fk.compiled))
    fk.compiled[key] = (None,) + fk.compiled[key][1:]  # no C launcher: compiled.run allocates per launch
    assert fk.run_fast((1,), (x, 128, 1e-5, None), dict(BLOCK=32)) is False


def test_int_keys_of_other_ranges_differ_from_the_common_range():
    _, fk, x, _ = _runnable()

    def key(n):
        return fk.bind_fast((x, n, 1e-5, None), dict(BLOCK=32))[0]

    assert key(0) == key(16) != key(-16)
    assert key(2**31 - 16) == key(16) != key(2**31)
    assert key(2**31 + 16) != key(2**63 + 16)
    assert key(-1) != key(1) != key(17)


def test_launch_takes_the_generated_path(monkeypatch):
    kernel, fk, x, calls = _runnable()
    monkeypatch.setitem(L._by_id, id(kernel), (kernel, fk))
    monkeypatch.setattr(L, "FAST", True)
    monkeypatch.setattr(L, "_knobs", None)  # no profiler hooks
    L.launch(kernel, (2,), x, 128, 1e-5, None, BLOCK=32)
    assert len(calls) == 1 and calls[0][0] == 2
    stale = _kernel(("X", False))  # an id reused by another object is not mistaken for the kernel
    monkeypatch.setitem(L._by_id, id(stale), (kernel, fk))
    monkeypatch.setattr(L, "_fast_kernel", lambda k: None)
    monkeypatch.setattr(L, "is_traced", lambda *a: False)
    with pytest.raises(TypeError):  # the plain path: kernel[grid] on a namespace that is no kernel
        L.launch(stale, (2,), x, BLOCK=32)
    assert len(calls) == 1


# ----------------------------------------------------------------------------- the C launch


# (the c_launch fixture, shared with test_launch_meta.py, is in conftest.py)


def _c_runnable(monkeypatch):
    kernel, fk, x, calls = _runnable()
    monkeypatch.setitem(L._by_id, id(kernel), (kernel, fk))
    monkeypatch.setitem(L._c_specs, id(kernel), L._c_specs[id(kernel)])  # (removed again afterwards)
    return kernel, fk, x, calls


def test_c_launch_gives_the_c_launcher_what_the_python_path_gives(c_launch, monkeypatch):
    kernel, fk, x, calls = _c_runnable(monkeypatch)
    slow = []
    real_slow = L._c_slow
    monkeypatch.setattr(L, "_c_slow", lambda *a: (slow.append(a[4]), real_slow(*a)))
    L._configure_c(c_launch, device=lambda: 0, stream=lambda d: 7)
    c_launch.launch(kernel, (3, 2), x, 128, 1e-5, None, BLOCK=32)  # the C key is filed on the way out
    assert len(slow) == 1 and slow[0] is not None and len(calls) == 1
    assert len(fk.ccompiled) == 1
    c_launch.launch(kernel, (3, 2), x, 256, 1e-5, None, BLOCK=32)  # now straight from C
    assert len(slow) == 1 and len(calls) == 2
    L._launch_py(kernel, (3, 2), x, 256, 1e-5, None, BLOCK=32)
    assert calls[1] == calls[2]  # the same call of Triton's launcher from C and from Python
    assert calls[1][:3] == (3, 2, 1) and calls[1][3] == 7 and calls[1][-5] == x.data_ptr()


def test_c_launch_takes_calls_of_other_argument_kinds_too(c_launch, monkeypatch):
    """A kernel called with None in one place and a tensor in another (the norm without and
    with a residual): after its first call, the second kinds get a C spec of their own, so
    from the third call on neither goes through Python (no bouncing between C and Python)."""
    kernel, fk, x, calls = _c_runnable(monkeypatch)
    p = torch.empty(32)
    other = []
    fk.compiled[(0, fk.bind(x, 128, 1e-5, p, BLOCK=32)[0])] = (lambda *a: other.append(a), False, False, "F2", "M2",
                                                              None)
    slow = []
    real_slow = L._c_slow
    monkeypatch.setattr(L, "_c_slow", lambda *a: (slow.append(a[4]), real_slow(*a)))
    L._configure_c(c_launch, device=lambda: 0, stream=lambda d: 7)
    c_launch.launch(kernel, (1,), x, 128, 1e-5, None, BLOCK=32)  # the first kinds' key filed
    for _ in range(3):
        c_launch.launch(kernel, (1,), x, 128, 1e-5, p, BLOCK=32)
    assert slow[1:] == [None, slow[2]] and slow[2] is not None  # no key, then its key (filed), then C alone
    for _ in range(2):
        c_launch.launch(kernel, (1,), x, 128, 1e-5, None, BLOCK=32)
        c_launch.launch(kernel, (1,), x, 128, 1e-5, p, BLOCK=32)
    assert len(slow) == 3 and len(calls) == 3 and len(other) == 5
    assert other[-1][:13] == other[0][:13] and other[-1][4] == "F2" and other[-1][-2] == p.data_ptr()
    assert len(fk.cvariants) == 2 and all(len(d) == 1 for d in fk.cvariants.values())


@pytest.mark.parametrize("call", ["misaligned", "n is 1", "other BLOCK", "option", "None for tensor",
                                  "tensor for None", "float for int", "bool for int", "int over 2**31",
                                  "negative int", "subclass", "arguments missing", "grid as list"])
def test_c_launch_leaves_the_rest_to_python(c_launch, monkeypatch, call):
    kernel, fk, x, calls = _c_runnable(monkeypatch)
    c_launch.launch(kernel, (1,), x, 128, 1e-5, None, BLOCK=32)  # files the C key
    assert len(calls) == 1
    slow = []
    monkeypatch.setattr(L, "_c_slow", lambda *a: slow.append(a))
    L._configure_c(c_launch, device=lambda: 0, stream=lambda d: 7)
    grid, args, meta = (1,), (x, 128, 1e-5, None), dict(BLOCK=32)
    args, meta, grid = {
        "misaligned": ((x[1:], 128, 1e-5, None), meta, grid),
        "n is 1": ((x, 1, 1e-5, None), meta, grid),
        "other BLOCK": (args, dict(BLOCK=64), grid),
        "option": (args, dict(BLOCK=32, num_warps=8), grid),
        "None for tensor": ((None, 128, 1e-5, None), meta, grid),
        "tensor for None": ((x, 128, 1e-5, x), meta, grid),
        "float for int": ((x, 128.0, 1e-5, None), meta, grid),
        "bool for int": ((x, True, 1e-5, None), meta, grid),
        "int over 2**31": ((x, 2**31 + 16, 1e-5, None), meta, grid),
        "negative int": ((x, -16, 1e-5, None), meta, grid),
        "subclass": ((type("Sub", (torch.Tensor,), {})(x), 128, 1e-5, None), meta, grid),
        "arguments missing": ((x, 128, 1e-5), meta, grid),
        "grid as list": (args, meta, [1]),
    }[call]
    c_launch.launch(kernel, grid, *args, **meta)
    assert len(slow) == 1 and len(calls) == 1
    k, g, a, m, key, keep = slow[0]
    assert keep is None and k is kernel and g == grid and a == args and m == meta  # handed over whole


def test_c_launch_off_and_under_hooks(c_launch, monkeypatch):
    kernel, fk, x, calls = _c_runnable(monkeypatch)
    c_launch.launch(kernel, (1,), x, 128, 1e-5, None, BLOCK=32)
    slow = []
    monkeypatch.setattr(L, "_c_slow", lambda *a: slow.append(a))
    L._configure_c(c_launch, device=lambda: 0, stream=lambda d: 7)
    monkeypatch.setattr(L, "FAST", False)
    c_launch.launch(kernel, (1,), x, 128, 1e-5, None, BLOCK=32)
    monkeypatch.setattr(L, "FAST", True)
    monkeypatch.setattr(L, "_knobs", SimpleNamespace(launch_enter_hook=lambda *a: None))
    L._configure_c(c_launch, device=lambda: 0, stream=lambda d: 7)
    c_launch.launch(kernel, (1,), x, 128, 1e-5, None, BLOCK=32)
    monkeypatch.setattr(L, "_knobs", SimpleNamespace(launch_enter_hook=SimpleNamespace(calls=[])))  # a chain, empty
    L._configure_c(c_launch, device=lambda: 0, stream=lambda d: 7)
    c_launch.launch(kernel, (1,), x, 128, 1e-5, None, BLOCK=32)
    assert len(slow) == 2 and len(calls) == 2  # off, a hook: Python; an empty hook chain: C


def test_c_launch_with_a_descriptor_and_a_parameter(c_launch, monkeypatch):
    kernel = _kernel(("D", False), ("W", False), ("BLOCK", True))
    fk = L._FastKernel(kernel)
    fk.device, fk.stream = (lambda: 0), (lambda d: 7)
    t = torch.zeros(64, 32, dtype=torch.float16)
    w = torch.nn.Parameter(torch.zeros(8))
    desc = L.descriptor(t, [64, 32], [32, 1], [16, 16])
    fk.make_fast_binder((desc, w))
    calls = []
    key, _ = fk.bind_fast((desc, w), dict(BLOCK=16))
    fk.compiled[key] = (lambda *a: calls.append(a), False, False, "F", "M", None)
    monkeypatch.setitem(L._by_id, id(kernel), (kernel, fk))
    monkeypatch.setitem(L._c_specs, id(kernel), L._c_specs[id(kernel)])
    for _ in range(2):
        c_launch.launch(kernel, (1,), desc, w, BLOCK=16)
    assert len(fk.ccompiled) == 1 and len(calls) == 2 and calls[0] == calls[1]
    assert calls[1][13] is desc and calls[1][14] == w.data_ptr() and calls[1][15] is None
    other = L.descriptor(t, [64, 32], [32, 1], [32, 16])  # another block shape: another key
    slow = []
    monkeypatch.setattr(L, "_c_slow", lambda *a: slow.append(a))
    L._configure_c(c_launch, device=lambda: 0, stream=lambda d: 7)
    c_launch.launch(kernel, (1,), other, w, BLOCK=16)
    assert len(slow) == 1 and slow[0][4] is not None


def test_the_c_launch_is_built_at_the_first_kernel_and_replaces_launch(monkeypatch):
    """Nothing is compiled at import: _init_c runs at the first kernel on a GPU, then points
    ``launch`` at the C function in the launcher and in the op modules (a test's own
    replacement of an op module's ``launch`` is left alone)."""
    import sys

    if L._build_c() is None:
        pytest.skip("no C compiler here")
    import tritonic.ops  # noqa: F401  (the op modules, imported)

    ops = [m for n, m in sys.modules.items() if n.startswith("tritonic.ops.") and getattr(m, "launch", None)
           is L._launch_py]
    assert ops, "no op module imports launch"
    for m in ops:
        monkeypatch.setattr(m, "launch", L._launch_py)  # (put back afterwards)
    mine = lambda *a, **k: None  # noqa: E731
    monkeypatch.setattr(ops[0], "launch", mine)
    metas = [m for n, m in sys.modules.items() if n.startswith("tritonic.ops.")
             and getattr(m, "launch_meta", None) is L._launch_meta_py]
    assert metas, "no op module imports launch_meta"
    for m in metas:
        monkeypatch.setattr(m, "launch_meta", L._launch_meta_py)
    for name in ("_C", "launch", "launch_meta", "_c_tried"):
        monkeypatch.setattr(L, name, getattr(L, name))
    monkeypatch.setattr(L, "_c_wanted", lambda: True)
    L._init_c()
    assert L._C is not None and L.launch is L._C.launch and L._c_tried
    assert ops[0].launch is mine and all(m.launch is L._C.launch for m in ops[1:])
    assert L.launch_meta is L._C.launch_meta and all(m.launch_meta is L._C.launch_meta for m in metas)


@pytest.mark.gpu
@pytest.mark.parametrize("mode", ["1", "2"])
def test_c_launch_on_gpu(monkeypatch, mode):
    """TRITONIC_C_LAUNCH=1 on a GPU: built at the first kernel, then op launches take it (the
    kernel's C keys fill), with the same results, alignments and side streams as before.
    TRITONIC_C_LAUNCH=2: the norm kernel's entries carry a direct-launch spec and run by it.
    The test starts from the state of a fresh process (Python path, no C module, the kernel
    never launched), whatever the tests before it left: the module is one per process."""
    import importlib
    import sys

    from tritonic.kernels.norm import _norm_fwd

    norm_mod = importlib.import_module("tritonic.ops.norm")
    for name in ("_C", "_C_DIRECT", "launch", "launch_meta", "_c_tried", "FAST"):
        monkeypatch.setattr(L, name, getattr(L, name))
    was_direct = L._C_DIRECT
    for n, m in list(sys.modules.items()):  # every module's launch back on the Python path (put back afterwards)
        if n.startswith("tritonic.") and n != L.__name__ and getattr(m, "launch", None) is not None \
                and (m.launch is L._launch_py or L._C is not None and m.launch is L._C.launch):
            monkeypatch.setattr(m, "launch", L._launch_py)
        if n.startswith("tritonic.") and n != L.__name__ and getattr(m, "launch_meta", None) is not None \
                and (m.launch_meta is L._launch_meta_py or L._C is not None and m.launch_meta is L._C.launch_meta):
            monkeypatch.setattr(m, "launch_meta", L._launch_meta_py)
    monkeypatch.setenv("TRITONIC_C_LAUNCH", mode)
    L.FAST, L._C, L._C_DIRECT, L._c_tried, L.launch, L.launch_meta = \
        True, None, False, False, L._launch_py, L._launch_meta_py
    for table in (L._fast, L._by_id, L._c_specs):
        table.pop(_norm_fwd, None)
        table.pop(id(_norm_fwd), None)
    assert not L._hooks_active(), "a launch hook is installed (a profiler?): launches take Triton's path"
    try:
        x, w = _layer_norm_checks((0, 1, 0, 1, 2, 0, 1, 2))
        fast = L._fast.get(_norm_fwd)
        state = dict(C=L._C, direct=L._C_DIRECT, fast=fast, launch=norm_mod.launch,
                     ccompiled=None if fast is None else list(fast.ccompiled))
        assert L._C is not None and norm_mod.launch is L._C.launch, state
        assert norm_mod.launch_meta is L._C.launch_meta, state
        assert fast is not None and len(fast.ccompiled) >= 2, state
        entries = list(fast.ccompiled.values())
        assert L._C_DIRECT == (mode == "2"), state
        assert all((len(e) == 7 and isinstance(e[6], tuple)) == (mode == "2") for e in entries), \
            [(len(e), type(e[-1]).__name__) for e in entries]
        _layer_norm_on_a_side_stream(x, w)
    finally:
        if L._C is not None:  # (the module is shared by the process: its flag as the process had it)
            L._C.enable_direct(was_direct)


def test_precompile_submits_compiles_and_runs_nothing(monkeypatch):
    """Inside precompile(): a launch calls the kernel's warmup (Triton's compile, submitted to
    the pool by AsyncCompileMode) instead of running; outside, launches run again. A no-op in
    the interpreter and when nested."""
    pytest.importorskip("triton.runtime._async_compile")
    from tritonic.runtime import precompile as P

    monkeypatch.setattr(P, "interpreter_active", lambda: True)
    with P.precompile():
        assert not P.precompiling()  # the interpreter compiles nothing
    monkeypatch.setattr(P, "interpreter_active", lambda: False)
    warmed, ran = [], []

    class Kernel:
        def warmup(self, *args, grid, **meta):
            warmed.append((args, grid, meta))

        def __getitem__(self, grid):
            return lambda *a, **k: ran.append(grid)

    k = Kernel()
    monkeypatch.setattr(L, "FAST", False)  # (the plain path: a namespace is no JITFunction)
    x = torch.empty(4)
    with P.precompile(workers=2):
        assert P.precompiling()
        with P.precompile():  # nested: the outer one is in charge
            L._launch_py(k, (3,), x, 5, BLOCK=16)
        assert P.precompiling()
    assert not P.precompiling()
    assert warmed == [((x, 5), (3,), {"BLOCK": 16})] and ran == []
    L._launch_py(k, (3,), x, 5, BLOCK=16)
    assert ran == [(3,)] and len(warmed) == 1


def test_precompile_builds_the_launchers_of_kernels_not_loaded(monkeypatch):
    """Leaving precompile() builds Triton's per-signature launchers of the kernels it compiled
    (in the pool), skipping kernels already loaded and missing ones; a failing build is left
    for the real load to report."""
    from concurrent.futures import ThreadPoolExecutor
    from types import SimpleNamespace

    import importlib

    from tritonic.runtime import precompile as P

    D = importlib.import_module("triton.runtime.driver")  # (the module: triton.runtime.driver is also a name in it)

    built = []

    def launcher_cls(src, metadata):
        if src == "bad":
            raise RuntimeError("gcc failed")
        built.append((src, metadata))

    monkeypatch.setattr(D, "driver", SimpleNamespace(active=SimpleNamespace(launcher_cls=launcher_cls)))
    def src(name, sig):
        return SimpleNamespace(name=name, signature=sig)

    a, a2 = src("a", {"x": "*fp32", "B": "constexpr"}), src("a2", {"x": "*fp32", "B": "constexpr"})
    kernels = [SimpleNamespace(src=a, metadata=1, _run=None), SimpleNamespace(src=a2, metadata=5, _run=None),
               SimpleNamespace(src=src("b", {}), metadata=2, _run=object()), None,
               SimpleNamespace(src="bad", metadata=3, _run=None), SimpleNamespace(src=src("c", {"y": "i32"}), metadata=4)]
    with ThreadPoolExecutor(2) as pool:  # a2 has a's signature (another config): one launcher for both
        assert P._warm_launchers(pool, kernels) == 3
    assert sorted(s.name for s, _ in built) == ["a", "c"]
    # with the lazy launcher and the direct launch on, a kernel the direct launch takes needs none
    direct = _Compiled(signature={"x": "*fp32", "n": "i32"})
    direct.src.name, direct._run = "d", None
    described = _Compiled(signature={"D": "tensordesc<bf16[16,16]>"})
    described.src.name, described._run = "e", None
    monkeypatch.setattr(L, "_C_DIRECT", True)
    monkeypatch.setattr(L, "LAZY", True)
    with ThreadPoolExecutor(2) as pool:
        assert P._warm_launchers(pool, [direct, described]) == 1
    assert built[-1][0].name == "e"


def test_c_launch_leaks_no_references(c_launch, monkeypatch):
    """Reference counts of the arguments stay put over many fast and slow C launches."""
    import sys

    kernel, fk, x, calls = _c_runnable(monkeypatch)
    c_launch.launch(kernel, (3, 2), x, 128, 1e-5, None, BLOCK=32)  # files the C key
    slow = []
    monkeypatch.setattr(L, "_c_slow", lambda *a: slow.append(1))
    L._configure_c(c_launch, device=lambda: 0, stream=lambda d: 7)
    grid, big, y = (3, 2), 1 << 40, torch.empty(8)
    objs = [x, y, grid, big, kernel, fk.ccompiled]
    before = [sys.getrefcount(o) for o in objs]
    for _ in range(2000):
        c_launch.launch(kernel, grid, x, 128, 1e-5, None, BLOCK=32)  # fast
        c_launch.launch(kernel, grid, x, big, 1e-5, None, BLOCK=32)  # int out of range
        c_launch.launch(kernel, grid, x, 128, 1e-5, y, BLOCK=32)  # tensor for None
        c_launch.launch(kernel, grid, x, 128, 1e-5, None, BLOCK=64)  # key miss
    assert len(calls) == 2001 and len(slow) == 6000
    assert [sys.getrefcount(o) for o in objs] == before


def test_c_direct_path_packs_parameters_as_tritons_launcher_does():
    """The direct path (TRITONIC_C_LAUNCH=2) packs each parameter into an 8-byte slot, value in
    the low bytes: pointers, ints by width, fp32, fp16 (IEEE half), bf16 (the float32's top
    half, as Triton packs it), fp64; constexprs are skipped; two zero scratch pointers follow."""
    import struct

    module = L._build_c()
    if module is None:
        pytest.skip("no C compiler here")
    sig = {"X": "*bf16", "n": "i32", "eps": "fp32", "P": "constexpr", "h": "fp16", "z": "bf16", "big": "i64",
           "flag": "i1", "u": "u64", "d": "fp64", "BLOCK": "constexpr"}
    compiled = SimpleNamespace(src=SimpleNamespace(signature=sig))
    spec = L._direct_spec((lambda *a: None, False, False, 1234, (4, 1, 512), compiled))
    assert spec == (b"PifcezlbLdc", 1234, 128, 512, False)
    layout = b"aaaaaaaaaac"  # ten positional parameters, then BLOCK
    kinds = b"TifNffibif"
    x = torch.empty(8)
    args = (x, 300, 1.5, None, -2.25, 3.14159, -(2**40), True, 2**63 + 5, 0.1)
    got = module.pack_check(spec, layout, kinds, args, (x.data_ptr(),))

    def slot(fmt, v):
        return struct.pack(fmt, v).ljust(8, b"\0")

    bf16 = struct.pack("<I", struct.unpack("<I", struct.pack("<f", 3.14159))[0] >> 16)[:2]
    want = (slot("<Q", x.data_ptr()) + slot("<i", 300) + slot("<f", 1.5) + slot("<e", -2.25) + bf16.ljust(8, b"\0")
            + slot("<q", -(2**40)) + slot("<b", 1) + slot("<Q", 2**63 + 5) + slot("<d", 0.1) + bytes(16))
    assert got == want
    for other in ({"D": "tensordesc<bf16[16, 16]>"}, {"t": ("i32", "i32")}):  # Triton's own launcher for these
        c2 = SimpleNamespace(src=SimpleNamespace(signature={**sig, **other}))
        assert L._direct_spec((lambda *a: None, False, False, 1, (4, 1, 0), c2)) is None
    assert L._direct_spec((lambda *a: None, False, False, 1, (4, 2, 0), compiled)) is None  # a cluster
    assert L._direct_spec((None, False, False, 1, (4, 1, 0), compiled)) is None  # scratch buffers
    # PDL: the direct path too, with the flag that sets the launch attribute
    assert L._direct_spec((lambda *a: None, False, True, 1, (4, 1, 0), compiled)) == (b"PifcezlbLdc", 1, 128, 0, True)


def test_driver_floor_needs_a_recorded_launch():
    """benchmarks/launch.py's floor repeats a recorded direct launch; with none recorded (no GPU
    here) it raises instead of timing nothing, and recording on / off are accepted."""
    module = L._build_c()
    if module is None:
        pytest.skip("no C compiler here")
    with pytest.raises(RuntimeError, match="driver_floor"):
        module.driver_floor(10)
    try:
        module.driver_floor(-1)
    except RuntimeError:  # built without cuda.h: no direct path to record
        return
    module.driver_floor(0)


# ----------------------------------------------------------------------------- the lazy launcher


_XNEPB = (("X", False), ("n", False), ("eps", False), ("P", False), ("BLOCK", True))


def _recording_kernel(launches, *params, compiled=None):
    """A kernel stand-in (hashed by identity) with ``params``; Triton's own launch of it,
    ``kernel[grid](...)``, records its positional arguments in ``launches`` and returns
    ``compiled()`` (None without it)."""
    class Kernel(SimpleNamespace):
        __hash__ = object.__hash__
        __eq__ = object.__eq__

        def __getitem__(self, grid):
            return lambda *a, **k: launches.append(a) or (compiled() if compiled else None)

    return Kernel(params=_kernel(*params).params)


class _Compiled:
    """A compiled kernel as _lazy_entry sees it; reading ``run`` (Triton building its launcher) is recorded."""

    def __init__(self, signature=None, **md):
        meta = dict(global_scratch_size=0, profile_scratch_size=0, launch_cooperative_grid=False, num_ctas=1,
                    shared=1024, num_warps=4, launch_pdl=True)
        meta.update(md)
        self.metadata = SimpleNamespace(**meta)
        self.src = SimpleNamespace(signature=signature or {"X": "*fp32", "n": "i32", "BLOCK": "constexpr"})
        self.name, self.kernel, self.packed_metadata = "k", b"cubin", (meta["num_warps"], meta["num_ctas"], meta["shared"])
        self.built = []

    @property
    def run(self):
        self.built.append(True)
        return SimpleNamespace(launch=lambda *a: self.built.append(a))


def _fake_driver(monkeypatch, loads, max_threads=1024):
    from triton.runtime.driver import driver

    utils = SimpleNamespace(get_device_properties=lambda d: {"max_shared_mem": 232448},
                            load_binary=lambda name, binary, shared, dev: (loads.append(name), "MODULE", 4321, 32, 0,
                                                                           max_threads)[1:])
    monkeypatch.setattr(driver, "_active", SimpleNamespace(utils=utils, get_current_device=lambda: 0))


def test_lazy_entry_loads_the_kernel_and_builds_no_triton_launcher(monkeypatch):
    loads = []
    _fake_driver(monkeypatch, loads)
    compiled = _Compiled()
    kernel = SimpleNamespace(warmup=lambda *a, grid, **meta: compiled)
    entry = L._lazy_entry(kernel, (1,), (torch.empty(4), 16), dict(BLOCK=32))
    assert entry is not None and loads == ["k"] and compiled.built == []
    assert isinstance(entry[0], L._LazyLauncher) and entry[1:5] == (False, True, 4321, (4, 1, 1024))
    assert L._direct_spec(entry) == (b"Pic", 4321, 128, 1024, True)
    entry[0](1, 1, 1, 7, 4321)  # a launch the direct path declines: Triton's launcher is built then
    assert compiled.built == [True, (1, 1, 1, 7, 4321)]


@pytest.mark.parametrize("case", ["scratch", "profile scratch", "cooperative", "cluster", "descriptor", "shared",
                                  "threads", "compile error", "load hook"])
def test_lazy_entry_leaves_to_triton_what_the_direct_path_cannot_launch(monkeypatch, case):
    loads = []
    _fake_driver(monkeypatch, loads, max_threads=64 if case == "threads" else 1024)
    compiled = {
        "scratch": _Compiled(global_scratch_size=128),
        "profile scratch": _Compiled(profile_scratch_size=64),
        "cooperative": _Compiled(launch_cooperative_grid=True),
        "cluster": _Compiled(num_ctas=2),
        "descriptor": _Compiled(signature={"D": "tensordesc<bf16[16,16]>", "n": "i32"}),
        "shared": _Compiled(shared=300000),
    }.get(case, _Compiled())

    def warmup(*a, grid, **meta):
        if case == "compile error":
            raise RuntimeError("does not compile")
        return compiled
    if case == "load hook":
        monkeypatch.setattr(L, "_knobs", SimpleNamespace(kernel_load_start_hook=lambda *a: None))
    assert L._lazy_entry(SimpleNamespace(warmup=warmup), (1,), (torch.empty(4), 16), {}) is None
    assert compiled.built == [] and loads == (["k"] if case == "threads" else [])


@pytest.mark.parametrize("lazy", [True, False])
def test_c_launch_first_call_launches_directly_without_tritons_launcher(c_launch, monkeypatch, lazy):
    """With the direct path, a specialisation's first call from C files a lazy entry (nothing
    launched by Triton, ``kernel[grid]`` never called) and is launched from C by its new key;
    later calls go straight from C. With TRITONIC_LAZY_LAUNCHER=0: Triton's own first launch."""
    triton_launches, launched = [], []

    kernel = _recording_kernel(triton_launches, *_XNEPB, compiled=_Compiled)  # (Triton's own launch
    # would build the launcher)
    fk = L._FastKernel(kernel)
    fk.device, fk.stream = (lambda: 0), (lambda d: 7)
    x = torch.empty(64)
    fk.make_fast_binder((x, 128, 1e-5, None))
    monkeypatch.setitem(L._by_id, id(kernel), (kernel, fk))
    monkeypatch.setitem(L._c_specs, id(kernel), L._c_specs[id(kernel)])
    compiled = _Compiled()
    entry = (lambda *a: launched.append(a), False, False, 4321, (4, 1, 1024), compiled)
    monkeypatch.setattr(L, "_lazy_entry", lambda *a: entry)
    monkeypatch.setattr(L, "_direct", lambda c: (lambda *a: launched.append(a), False, False, 1, (4, 1, 0), c))
    monkeypatch.setattr(L, "_C", c_launch)
    monkeypatch.setattr(L, "_C_DIRECT", True)  # (no libcuda here: C hands the launch to the entry's function)
    monkeypatch.setattr(L, "LAZY", lazy)
    c_launch.launch(kernel, (3, 2), x, 128, 1e-5, None, BLOCK=32)
    assert len(fk.ccompiled) == 1
    assert (len(triton_launches), len(launched)) == ((0, 1) if lazy else (1, 0))
    if lazy:
        assert launched[0][:5] == (3, 2, 1, 7, 4321) and launched[0][13:] == (x.data_ptr(), 128, 1e-5, None, None)
    c_launch.launch(kernel, (3, 2), x, 128, 1e-5, None, BLOCK=32)
    assert (len(triton_launches), len(launched)) == ((0, 2) if lazy else (1, 1))
    assert not getattr(L._defer, "on", False) and not getattr(L._defer, "hit", False)


def test_c_launch_other_kinds_with_lazy_entries_do_not_bounce(c_launch, monkeypatch):
    """With the direct path and lazy entries: the first call of other argument kinds (a tensor
    where the first call passed None) adds their C spec and is launched once (no Triton launch,
    no bouncing between C and Python); later calls of either kinds go straight from C. A call C
    declines for another reason (an int past 2**31) reaches Python once and runs once."""
    triton_launches, launched = [], []

    kernel = _recording_kernel(triton_launches, *_XNEPB, compiled=_Compiled)
    fk = L._FastKernel(kernel)
    fk.device, fk.stream = (lambda: 0), (lambda d: 7)
    x, p = torch.empty(64), torch.empty(32)
    fk.make_fast_binder((x, 128, 1e-5, None))
    monkeypatch.setitem(L._by_id, id(kernel), (kernel, fk))
    monkeypatch.setitem(L._c_specs, id(kernel), L._c_specs[id(kernel)])
    monkeypatch.setattr(L, "_lazy_entry", lambda *a: (lambda *b: launched.append(b), False, False, 4321, (4, 1, 1024),
                                                      _Compiled()))
    monkeypatch.setattr(L, "_C", c_launch)
    monkeypatch.setattr(L, "_C_DIRECT", True)
    monkeypatch.setattr(L, "LAZY", True)
    slow = []
    real_slow = L._c_slow
    monkeypatch.setattr(L, "_c_slow", lambda *a: (slow.append(a[4]), real_slow(*a)))
    L._configure_c(c_launch, device=lambda: 0, stream=lambda d: 7)
    c_launch.launch(kernel, (1,), x, 128, 1e-5, None, BLOCK=32)
    assert len(launched) == 1
    n = len(slow)
    c_launch.launch(kernel, (1,), x, 128, 1e-5, p, BLOCK=32)  # no key, then its key (filed): launched once
    assert len(launched) == 2 and len(slow) == n + 2 and slow[n] is None and slow[n + 1] is not None
    for args in ((x, 128, 1e-5, p), (x, 128, 1e-5, None)):
        c_launch.launch(kernel, (1,), *args, BLOCK=32)
    assert len(launched) == 4 and len(slow) == n + 2 and triton_launches == []
    assert launched[-2][13:17] == (x.data_ptr(), 128, 1e-5, p.data_ptr())
    c_launch.launch(kernel, (1,), x, 2**31 + 16, 1e-5, p, BLOCK=32)  # C declines it (no key): Python, once
    assert len(launched) + len(triton_launches) == 5 and len(slow) == n + 3
    assert not getattr(L._defer, "on", False) and not getattr(L._defer, "hit", False)


@pytest.mark.gpu
def test_lazy_first_launches_on_gpu_build_no_triton_launcher(monkeypatch):
    """With the direct launch (the default) and the lazy launcher on, each specialisation's first call (aligned
    pointers, misaligned ones, a length not a multiple of 16) runs without Triton building its
    C launcher, on the current stream, with the right results."""
    import triton
    import triton.language as tl

    @triton.jit
    def _lazy_probe(X, Y, n, c, BLOCK: tl.constexpr):
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        tl.store(Y + offs, tl.load(X + offs, mask=offs < n) * c + 1.0, mask=offs < n)

    L._fast_kernel(_lazy_probe)  # (builds the C launch if no kernel has yet)
    if L._C is None or not L._C_DIRECT:
        pytest.skip("the direct C launch is off here")
    monkeypatch.setattr(L, "LAZY", True)
    x = torch.randn(4096, device="cuda")
    for src, n in ((x, 4096), (x[1:], 4095), (x, 3000)):
        y = torch.full_like(x, float("nan"))
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            L._C.launch(_lazy_probe, ((n + 255) // 256,), src, y, n, 2.0, BLOCK=256)
        torch.cuda.current_stream().wait_stream(side)
        torch.testing.assert_close(y[:n], src[:n] * 2.0 + 1.0)
    compiled = list(_lazy_probe.device_caches[torch.cuda.current_device()][0].values())
    assert len(compiled) == 3 and all(getattr(c, "_run", None) is None for c in compiled), compiled


def test_c_launch_very_first_call_of_a_kernel_is_deferred_through_c(c_launch, monkeypatch):
    """A kernel's very first call has no C spec (C hands over without a key): the Python path
    files the lazy entry unlaunched, the relaunch from C computes the key and comes back once
    to file it, and the launch then comes from C (here, with no libcuda, C calls the entry's
    launcher: the lazy one, which builds Triton's launcher only then). Once, no recursion,
    ``kernel[grid]`` never called; the next call goes straight from C."""
    triton_launches, launched = [], []

    kernel = _recording_kernel(triton_launches, *_XNEPB)
    fk = L._FastKernel(kernel)
    fk.device, fk.stream = (lambda: 0), (lambda d: 7)
    monkeypatch.setitem(L._by_id, id(kernel), (kernel, fk))
    monkeypatch.setattr(L, "_c_specs", L._c_specs)  # (the spec the first call registers is dropped afterwards)
    compiled = _Compiled()
    compiled._run = None
    compiled.__class__ = type("C", (_Compiled,), {"run": property(lambda self: (
        setattr(self, "_run", True), SimpleNamespace(launch=lambda *a: launched.append(a)))[1])})
    entry = (L._LazyLauncher(compiled), False, False, 4321, (4, 1, 1024), compiled)
    monkeypatch.setattr(L, "_lazy_entry", lambda *a: entry)
    monkeypatch.setattr(L, "_C", c_launch)
    monkeypatch.setattr(L, "_C_DIRECT", True)
    monkeypatch.setattr(L, "LAZY", True)
    slow = []
    real_slow = L._c_slow
    monkeypatch.setattr(L, "_c_slow", lambda *a: (slow.append(a[4]), real_slow(*a))[1])
    L._configure_c(c_launch, device=lambda: 0, stream=lambda d: 7)
    x = torch.empty(64)
    try:
        c_launch.launch(kernel, (3, 2), x, 128, 1e-5, None, BLOCK=32)
        assert triton_launches == [] and len(launched) == 1 and compiled._run is True
        assert len(slow) == 2 and slow[0] is None and slow[1] is not None  # no key, then the key
        assert len(fk.ccompiled) == 1 and launched[0][:5] == (3, 2, 1, 7, 4321)
        c_launch.launch(kernel, (3, 2), x, 128, 1e-5, None, BLOCK=32)
        assert len(slow) == 2 and len(launched) == 2  # straight from C
        assert getattr(L._defer, "depth", 0) == 0 and not getattr(L._defer, "on", False)
    finally:
        L._c_specs.pop(id(kernel), None)


def test_first_kernel_of_a_process_goes_through_the_c_launch_it_built(monkeypatch):
    """The process's first kernel builds the C launch (``_init_c``, from ``_fast_kernel``) on its
    way through the Python path; that call then goes through the C launch too (so the lazy
    launcher defers its first specialisation as it does every later kernel's), not on to
    Triton's ``kernel[grid]``. Later calls from the Python path (the C launch's way out) stay there."""
    triton_launches, c_launches = [], []

    kernel = _recording_kernel(triton_launches, ("X", False), ("n", False), ("BLOCK", True))
    fake_c = SimpleNamespace(launch=lambda k, g, *a, **m: c_launches.append((k, g, a, m)))

    def fake_init():
        L._c_tried = True
        L._C = fake_c
        L.launch = fake_c.launch

    monkeypatch.setattr(L, "interpreter_active", lambda: False)
    monkeypatch.setattr(L, "_c_tried", False)
    monkeypatch.setattr(L, "_C", None)
    monkeypatch.setattr(L, "launch", L._launch_py)
    monkeypatch.setattr(L, "_init_c", fake_init)
    monkeypatch.setattr(L, "FAST", True)
    monkeypatch.setattr(L, "_knobs", SimpleNamespace())
    x = torch.empty(64)
    try:
        L._launch_py(kernel, (2,), x, 64, BLOCK=32)
        assert c_launches == [(kernel, (2,), (x, 64), {"BLOCK": 32})] and triton_launches == []
        fk = L._by_id[id(kernel)][1]  # (its fast state made once, as before)
        fk.device, fk.stream = (lambda: 0), (lambda d: 7)
        c_launches.clear()
        L._launch_py(kernel, (2,), x, 64, BLOCK=32)  # C tried already: no redirect (no loop from C's way out)
        assert c_launches == [] and len(triton_launches) == 1
    finally:
        L._fast.pop(kernel, None)
        L._by_id.pop(id(kernel), None)
