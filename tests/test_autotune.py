"""The persistent autotuner: modes, the on-disk cache, shipped tables, corrupt files and
several processes writing at once. Timings are faked: what is tested is the bookkeeping."""

import json
import multiprocessing as mp
import threading

import pytest

from tritonic.runtime import autotune as at
from tritonic.runtime import checks

GPU, TRITON = "NVIDIA H100 80GB HBM3", "3.6.0"
CONFIGS = [at.Config.of(num_warps=w, BLOCK=b) for w in (4, 8) for b in (64, 128)]


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("TRITONIC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(at, "TABLES", tmp_path / "tables")
    monkeypatch.delenv("TRITONIC_AUTOTUNE", raising=False)
    at._files.clear()
    checks._warned.clear()
    yield
    at._files.clear()


def _timer(best=CONFIGS[2]):
    calls = []

    def time_config(c):
        calls.append(c)
        return 1.0 if c == best else 2.0 + len(calls)
    return time_config, calls


def _pick(tuner, key=(4096,), timer=None):
    timer = timer or _timer()[0]
    return tuner.pick(key, timer, device_name=GPU, triton_version=TRITON)


def test_full_mode_tunes_once_and_persists():
    t, calls = _timer()
    spent, n_tuned = at.tuning_seconds, len(at.tuned)
    assert _pick(at.Autotuner("k", CONFIGS), timer=t) == CONFIGS[2]
    assert len(calls) == len(CONFIGS)
    assert at.tuning_seconds > spent
    assert len(at.tuned) == n_tuned + 1 and at.tuned[-1][:2] == ("k", (4096,))  # what was tuned, listed
    files = list((at.cache_dir()).glob("autotune-h100-80gb-hbm3-triton3.6.0.json"))
    assert len(files) == 1
    # a new process (simulated: fresh tuner, no in-memory file) reads the choice from disk
    at._files.clear()
    t2, calls2 = _timer(best=CONFIGS[0])
    assert _pick(at.Autotuner("k", CONFIGS), timer=t2) == CONFIGS[2]
    assert calls2 == []



def test_tune_log_lists_every_timed_config(tmp_path, monkeypatch):
    """TRITONIC_TUNE_LOG: one JSON line per config timed, with its time."""
    log = tmp_path / "tune.jsonl"
    monkeypatch.setenv("TRITONIC_TUNE_LOG", str(log))
    t, _ = _timer()
    _pick(at.Autotuner("logged", CONFIGS), timer=t)
    lines = [json.loads(x) for x in log.read_text().splitlines()]
    assert [x["config"] for x in lines] == [c.to_json() for c in CONFIGS]
    assert [x["kernel"] for x in lines] == ["logged"] * len(CONFIGS) and lines[0]["key"] == [4096]
    assert lines[2]["ms"] == 1.0 and min(x["ms"] for x in lines) == 1.0

def test_keys_and_kernels_are_separate():
    tuner = at.Autotuner("k", CONFIGS)
    _pick(tuner, (4096,))
    t, calls = _timer(best=CONFIGS[1])
    assert _pick(tuner, (8192,), t) == CONFIGS[1] and calls
    t, calls = _timer(best=CONFIGS[3])
    assert _pick(at.Autotuner("other", CONFIGS), (4096,), t) == CONFIGS[3] and calls


@pytest.mark.parametrize("m", ["off", "cached"])
def test_off_and_cached_never_time(m, monkeypatch):
    monkeypatch.setenv("TRITONIC_AUTOTUNE", m)
    t, calls = _timer()
    assert _pick(at.Autotuner("k", CONFIGS), timer=t) == CONFIGS[0]
    assert calls == []


def test_cached_mode_uses_the_disk_and_off_ignores_it(monkeypatch):
    _pick(at.Autotuner("k", CONFIGS))  # full: writes CONFIGS[2]
    at._files.clear()
    monkeypatch.setenv("TRITONIC_AUTOTUNE", "cached")
    assert _pick(at.Autotuner("k", CONFIGS)) == CONFIGS[2]
    monkeypatch.setenv("TRITONIC_AUTOTUNE", "off")
    assert _pick(at.Autotuner("k", CONFIGS)) == CONFIGS[0]


def test_shipped_table_needs_no_tuning(monkeypatch):
    at.TABLES.mkdir(parents=True)
    (at.TABLES / "h100-80gb-hbm3.json").write_text(json.dumps({"k|[4096]": CONFIGS[3].to_json()}))
    assert at.shipped_gpus() == ["h100-80gb-hbm3"]
    for m in ("off", "cached", "full"):
        monkeypatch.setenv("TRITONIC_AUTOTUNE", m)
        at._files.clear()
        t, calls = _timer()
        assert _pick(at.Autotuner("k", CONFIGS), timer=t) == CONFIGS[3]
        assert calls == []


def test_a_sibling_gpus_table_fills_the_keys_this_gpus_lacks():
    at.TABLES.mkdir(parents=True)
    (at.TABLES / "h100-80gb-hbm3.json").write_text(json.dumps({"k|[4096]": CONFIGS[3].to_json(),
                                                               "k|[8192]": CONFIGS[1].to_json()}))
    (at.TABLES / "h200.json").write_text(json.dumps({"k|[8192]": CONFIGS[0].to_json()}))
    assert at._siblings("h200") == ["h100-80gb-hbm3"] and at._siblings("h100-80gb-hbm3") == ["h200"]
    assert at._siblings("gh200-480gb") == ["h100-80gb-hbm3", "h200"] and at._siblings("a10g") == []
    t, calls = _timer()
    h200 = at.Autotuner("k", CONFIGS)
    assert h200.pick((4096,), t, device_name="NVIDIA H200", triton_version=TRITON) == CONFIGS[3]
    assert h200.pick((8192,), t, device_name="NVIDIA H200", triton_version=TRITON) == CONFIGS[0]  # its own first
    assert calls == []
    # another architecture borrows nothing: it tunes
    got = at.Autotuner("k", CONFIGS).pick((4096,), t, device_name="NVIDIA A10G", triton_version=TRITON)
    assert got == CONFIGS[2] and calls == CONFIGS


def test_tuning_compiles_every_config_side_by_side_first(monkeypatch):
    from tritonic.runtime import launcher, precompile as pc

    events = []

    class FakePrecompile:  # what precompile() does to launches, without Triton's pool
        active = True

        def __enter__(self):
            launcher._precompiling = threading.get_ident()
            return self

        def __exit__(self, *exc):
            launcher._precompiling = 0
            events.append("waited")

    monkeypatch.setattr(pc, "precompile", FakePrecompile)
    monkeypatch.setenv("TRITONIC_TUNE_POOL", "1")

    def run(c):
        events.append(("compile" if launcher._precompiling else "run", c))

    t = lambda c: at.time_run(run, c) if launcher._precompiling else (run(c), 1.0 if c == CONFIGS[2] else 2.0)[1]
    assert _pick(at.Autotuner("k", CONFIGS), timer=t) == CONFIGS[2]
    n = len(CONFIGS)
    assert events[:n] == [("compile", c) for c in CONFIGS] and events[n] == "waited"
    assert events[n + 1:] == [("run", c) for c in CONFIGS]
    assert not launcher._precompiling
    # opt-in: without TRITONIC_TUNE_POOL=1 each config compiles as it is timed
    monkeypatch.delenv("TRITONIC_TUNE_POOL")
    events.clear()
    assert _pick(at.Autotuner("k2", CONFIGS), timer=t) == CONFIGS[2]
    assert events == [("run", c) for c in CONFIGS]


def test_retune_times_again_over_the_cache_and_the_table(monkeypatch):
    at.TABLES.mkdir(parents=True)
    (at.TABLES / "h100-80gb-hbm3.json").write_text(json.dumps({"k|[4096]": CONFIGS[3].to_json()}))
    _pick(at.Autotuner("k", CONFIGS), timer=_timer(best=CONFIGS[1])[0])  # (the table wins: nothing cached)
    monkeypatch.setenv("TRITONIC_AUTOTUNE", "retune")
    t, calls = _timer(best=CONFIGS[0])
    assert _pick(at.Autotuner("k", CONFIGS), timer=t) == CONFIGS[0] and calls == CONFIGS
    monkeypatch.setenv("TRITONIC_AUTOTUNE", "full")  # the new choice is on disk, ahead of the table
    t, calls = _timer()
    assert _pick(at.Autotuner("k", CONFIGS), timer=t) == CONFIGS[0] and calls == []



def test_retune_only_some_tuners(monkeypatch):
    """TRITONIC_RETUNE_ONLY limits a retune to the named tuners; the others keep their choice."""
    t, _ = _timer()
    _pick(at.Autotuner("a", CONFIGS), timer=t)
    _pick(at.Autotuner("b", CONFIGS), timer=t)
    monkeypatch.setenv("TRITONIC_AUTOTUNE", "retune")
    monkeypatch.setenv("TRITONIC_RETUNE_ONLY", "b")
    ta, calls_a = _timer(best=CONFIGS[0])
    tb, calls_b = _timer(best=CONFIGS[0])
    assert _pick(at.Autotuner("a", CONFIGS), timer=ta) == CONFIGS[2] and calls_a == []
    assert _pick(at.Autotuner("b", CONFIGS), timer=tb) == CONFIGS[0] and len(calls_b) == len(CONFIGS)

def test_corrupt_cache_warns_once_and_is_rebuilt():
    path = at.cache_dir() / "autotune-h100-80gb-hbm3-triton3.6.0.json"
    path.parent.mkdir(parents=True)
    path.write_text("{ not json")
    with pytest.warns(UserWarning, match="could not be read .* rebuilt"):
        assert _pick(at.Autotuner("k", CONFIGS)) == CONFIGS[2]
    assert json.loads(path.read_text()) == {"k|[4096]": CONFIGS[2].to_json()}


def test_unwritable_cache_keeps_results_in_memory(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("TRITONIC_CACHE_DIR", str(blocker / "sub"))  # a directory under a file
    tuner = at.Autotuner("k", CONFIGS)
    with pytest.warns(UserWarning, match="cannot write the autotune cache"):
        assert _pick(tuner) == CONFIGS[2]
    assert _pick(tuner, timer=_timer(best=CONFIGS[0])[0]) == CONFIGS[2]


def test_bad_mode_warns_and_tunes(monkeypatch):
    monkeypatch.setenv("TRITONIC_AUTOTUNE", "sometimes")
    with pytest.warns(UserWarning, match="not one of off, cached, full"):
        assert at.mode() == "full"


def test_progress_line_when_tuning_is_slow(monkeypatch, capsys):
    monkeypatch.setattr(at, "_PROGRESS_AFTER_S", 0.0)
    _pick(at.Autotuner("k", CONFIGS))
    assert f"tuning k [4096]: {len(CONFIGS)}/{len(CONFIGS)} configs" in capsys.readouterr().err


def test_a_failing_config_is_skipped():
    def time_config(c):
        if c == CONFIGS[0]:
            raise RuntimeError("out of resources")
        return 1.0 if c == CONFIGS[1] else 2.0
    with pytest.warns(UserWarning, match="failed"):
        assert _pick(at.Autotuner("k", CONFIGS), timer=time_config) == CONFIGS[1]


def _writer(cache_dir, worker):
    import os

    os.environ["TRITONIC_CACHE_DIR"] = cache_dir
    from tritonic.runtime import autotune

    for i in range(20):
        autotune._cache_for(GPU, TRITON).put(f"k{worker}|[{i}]", CONFIGS[i % len(CONFIGS)].to_json())


def test_several_processes_writing_at_once_lose_nothing():
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_writer, args=(str(at.cache_dir()), w)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    data = json.loads((at.cache_dir() / "autotune-h100-80gb-hbm3-triton3.6.0.json").read_text())
    assert len(data) == 80


def test_bucket_and_config_roundtrip():
    assert [at.bucket(n) for n in (0, 1, 2, 3, 768, 4096, 4097)] == [1, 1, 2, 4, 1024, 4096, 8192]
    c = at.Config.of(num_warps=8, num_stages=2, BLOCK_M=4, BLOCK_N=1024)
    assert at.Config.from_json(json.loads(json.dumps(c.to_json()))) == c
    assert c.meta() == {"BLOCK_M": 4, "BLOCK_N": 1024, "num_warps": 8, "num_stages": 2}


def test_no_tuning_when_not_allowed_and_nothing_remembered():
    tuner = at.Autotuner("k", CONFIGS)
    t, calls = _timer()
    assert tuner.pick((4096,), t, device_name=GPU, triton_version=TRITON, may_tune=False) == CONFIGS[0]
    assert calls == [] and tuner.chosen == {}
    assert _pick(tuner, timer=t) == CONFIGS[2]  # tuned later, when allowed


def test_untuned_blocks_take_what_is_known_or_the_first_config():
    """Inside ``untuned()`` (BERT's pooler: a few rows, where tuning would cost a cold first call
    seconds of compiles) nothing is timed or remembered, in any thread's own block only; a
    choice known from before is still used."""
    tuner = at.Autotuner("k", CONFIGS)
    t, calls = _timer()
    with at.untuned():
        with at.untuned():  # nests
            assert _pick(tuner, timer=t) == CONFIGS[0]
        assert _pick(tuner, timer=t) == CONFIGS[0] and calls == []
        seen = []
        other = threading.Thread(target=lambda: seen.append(_pick(at.Autotuner("k2", CONFIGS), timer=t)))
        other.start()
        other.join()
        assert seen == [CONFIGS[2]] and len(calls) == len(CONFIGS)  # another thread tunes as usual
    assert tuner.chosen == {}
    n = len(calls)
    assert _pick(tuner, timer=t) == CONFIGS[2] and len(calls) == n + len(CONFIGS)  # tuned once allowed
    with at.untuned():
        assert _pick(tuner, timer=t) == CONFIGS[2]  # the choice known now


def test_nothing_is_timed_while_torch_compiles(monkeypatch):
    """torch.compile traces the ops with fake tensors: a timing run there would put every
    timed launch (and do_bench's cache flushes) into the compiled graph, and persist a
    meaningless choice. (On the H200 an optimize(training=True) GPT-2 under torch.compile
    took 2.1 s per step.)"""
    tuner = at.Autotuner("k", CONFIGS)
    t, calls = _timer()
    monkeypatch.setattr(at, "_compiling", lambda: True)
    assert _pick(tuner, timer=t) == CONFIGS[0] and calls == [] and tuner.chosen == {}
    monkeypatch.setattr(at, "_compiling", lambda: False)
    assert _pick(tuner, timer=t) == CONFIGS[2] and calls


def test_traced_ops_do_not_tune(monkeypatch):
    """The ops that tune in their own code path (attention, the activation gradient of
    linear) ask not to when their tensors are traced (a tensor subclass stands for torch's
    fake tensors; the kernels themselves are not launched here)."""
    import importlib

    import torch

    mm = importlib.import_module("tritonic.ops.linear")
    attn = importlib.import_module("tritonic.ops.attention")
    seen = []

    class Tuner:
        chosen = {}
        configs = [mm._ACT_GRAD_INTERPRETER]

        def pick(self, key, time_config, may_tune=True):
            seen.append(may_tune)
            return self.configs[0]

    class Traced(torch.Tensor):
        pass

    monkeypatch.setattr(attn, "interpreter_active", lambda: False)
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: False)  # (a CPU build raises)
    attn._tuned_run(Tuner(), lambda c: None, (torch.float16, 64, 64, 64, ()), traced=True)
    attn._tuned_run(Tuner(), lambda c: None, (torch.float16, 64, 64, 64, ()), traced=False)
    assert seen == [False, True]
    seen.clear()
    monkeypatch.setattr(mm, "interpreter_active", lambda: False)
    monkeypatch.setattr(mm, "_act_grad_tuner", Tuner())
    monkeypatch.setattr(mm, "launch", lambda *a, **k: None)
    x, w, dy = torch.randn(4, 8), torch.randn(6, 8), torch.randn(4, 6)
    for t in (dy.as_subclass(Traced), dy):
        mm._linear_bwd(t, torch.randn(4, 6), x, w, 1, False, False, False)
    assert seen == [False, True]


def test_precompiling_runs_every_config_and_keeps_no_choice(monkeypatch):
    """Under precompile() every config's launch only submits its compile: the tuner runs
    them all, times nothing, remembers nothing and writes nothing; the real call tunes."""
    from tritonic.runtime import launcher

    monkeypatch.setattr(launcher, "_precompiling", threading.get_ident())
    t, calls = _timer()
    tuner = at.Autotuner("k", CONFIGS)
    assert _pick(tuner, timer=t) == CONFIGS[0] and calls == CONFIGS
    assert tuner.chosen == {} and not list(at.cache_dir().glob("*.json"))
    monkeypatch.setattr(launcher, "_precompiling", 0)
    t2, calls2 = _timer()
    assert _pick(tuner, timer=t2) == CONFIGS[2] and calls2 == CONFIGS


def test_precompile_holds_back_only_its_own_threads_launches(monkeypatch):
    """A server thread's launches run while another thread compiles configs under precompile."""
    from tritonic.runtime import launcher, precompile as pc

    class Kernel:
        def __init__(self):
            self.ran, self.warmed = [], []

        def __getitem__(self, grid):
            return lambda *a, **k: self.ran.append(threading.get_ident())

        def warmup(self, *a, grid=None, **k):
            self.warmed.append(threading.get_ident())

    monkeypatch.setattr(launcher, "FAST", False)
    monkeypatch.setattr(launcher, "_precompiling", threading.get_ident())
    k = Kernel()
    launcher._launch_py(k, (1,), 1.0)
    other = threading.Thread(target=lambda: (launcher._launch_py(k, (1,), 1.0),
                                             k.warmed.append(("other sees", pc.precompiling()))))
    other.start()
    other.join()
    assert k.warmed[0] == threading.get_ident() and k.warmed[1] == ("other sees", False)
    assert k.ran == [other.ident] and pc.precompiling()


def test_run_with_fallback_keeps_the_first_config_that_builds():
    """A config that does not build here (shared memory, ptxas, the compiler) gives way to the
    next that does; the key keeps it (None: nothing kept); nothing builds: the first error."""
    import triton.runtime.errors as terr
    from triton.compiler.errors import CompilationError

    from tritonic.runtime.autotune import Autotuner, Config, run_with_fallback

    a, b, c = (Config.of(num_warps=w, BLOCK=16) for w in (1, 2, 4))
    tuner = Autotuner("fallback_test", [a, b, c])
    ran = []

    def run(config):
        ran.append(config)
        if config is a:
            raise terr.OutOfResources(300000, 232448, "shared memory")
        if config is b:
            raise CompilationError("src", None, "no")
        return config.meta()["num_warps"]

    assert run_with_fallback(tuner, ("k",), a, run) == (4, c) and ran == [a, b, c]
    assert tuner.chosen[("k",)] is c
    assert run_with_fallback(tuner, None, c, run) == (4, c) and tuner.chosen == {("k",): c}

    def never(config):
        raise terr.OutOfResources(1, 0, "shared memory")
    with pytest.raises(terr.OutOfResources):
        run_with_fallback(tuner, ("j",), a, never)
    assert ("j",) not in tuner.chosen
