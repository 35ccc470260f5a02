"""An autotuner whose choices persist on disk.

A kernel's launch parameters (block sizes, ``num_warps``...) are a :class:`Config`. An
:class:`Autotuner` holds a kernel's candidate configs and picks one per *key* (a tuple the
op computes from its shapes, usually bucketed with :func:`bucket`):

1. a choice made earlier in this process;
2. the on-disk cache (``~/.cache/tritonic``, or ``TRITONIC_CACHE_DIR``), one JSON file per
   GPU and Triton version, so a process never re-tunes what an earlier one tuned;
3. the table shipped inside the package for this GPU (``runtime/tables/<gpu>.json``), and
   for keys it lacks, the table of a GPU of the same architecture (an H100's for an H200);
4. otherwise, by ``TRITONIC_AUTOTUNE``:

   - ``full`` (default): time every config and keep the fastest, in memory and on disk (with
     ``TRITONIC_TUNE_POOL=1`` the configs are first compiled side by side in a thread pool,
     see runtime/precompile.py);
   - ``cached``: use what 1-3 know, else the first config, never time (also inside an
     :func:`untuned` block, whatever the mode);
   - ``off``: the shipped table or the first config; the disk cache is not read or written;
   - ``retune``: as ``full``, but steps 2 and 3 are skipped: every key this process meets is
     timed again and the disk cache overwritten (after a kernel changed, before exporting a
     new table with ``tritonic tune --export``).

The cache file is rewritten atomically (temporary file + rename) under an exclusive lock,
merging with what other processes wrote meanwhile, so processes tuning at once never lose
or corrupt entries. A file that cannot be read is reported once and rebuilt.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from tritonic.runtime.checks import warn_once

MODES = ("off", "cached", "full", "retune")
TABLES = Path(__file__).with_name("tables")
_PROGRESS_AFTER_S = 1.0  # tuning that takes longer than this shows a progress line
tuning_seconds = 0.0  # time this process has spent timing configs (0 with a warm cache)
tuned: list = []  # (kernel name, key, seconds) of each key this process tuned, in order


_untuned = threading.local()


@contextlib.contextmanager
def untuned():
    """Inside this block a key with no choice yet (none in this process, the disk cache or the
    shipped table) takes its tuner's first config, untimed and not remembered, as under
    ``TRITONIC_AUTOTUNE=cached``. For a tiny launch whose tuning would cost a cold first call
    seconds (several compiles) to save a microsecond. Per thread; nests."""
    depth = getattr(_untuned, "depth", 0)
    _untuned.depth = depth + 1
    try:
        yield
    finally:
        _untuned.depth = depth


def _compiling() -> bool:
    """Is torch.compile (dynamo, or AOT autograd's tracing) running right now?"""
    try:
        import torch

        return bool(torch.compiler.is_compiling())
    except Exception:  # a torch without torch.compiler.is_compiling
        return False


def mode() -> str:
    m = os.environ.get("TRITONIC_AUTOTUNE", "full").strip().lower()
    if m not in MODES:
        warn_once(("autotune-mode", m), f"TRITONIC_AUTOTUNE={m!r} is not one of {', '.join(MODES)}; using 'full'")
        return "full"
    return m


def _retuned(name: str) -> bool:
    """Under TRITONIC_AUTOTUNE=retune, TRITONIC_RETUNE_ONLY=name,name... limits the re-timing to
    those tuners (the rest take the cache and the tables as under "full")."""
    only = os.environ.get("TRITONIC_RETUNE_ONLY", "").strip()
    return not only or name in {n.strip() for n in only.split(",")}


def cache_dir() -> Path:
    return Path(os.environ.get("TRITONIC_CACHE_DIR") or Path.home() / ".cache" / "tritonic")


def bucket(n: int) -> int:
    """Round a size up to a power of two, so nearby shapes share one tuning result."""
    return 1 if n <= 1 else 1 << (int(n) - 1).bit_length()


@dataclass(frozen=True)
class Config:
    """Constexpr meta-parameters plus launch options of one candidate launch."""

    kwargs: tuple = ()  # sorted (name, value) pairs
    num_warps: int = 4
    num_stages: int = 3

    @staticmethod
    def of(num_warps: int = 4, num_stages: int = 3, **kwargs) -> "Config":
        return Config(tuple(sorted(kwargs.items())), num_warps, num_stages)

    def meta(self) -> dict:
        """Keyword arguments for the launch: the constexprs and the options (a fresh dict)."""
        return dict(self.kwargs, num_warps=self.num_warps, num_stages=self.num_stages)

    def to_json(self) -> dict:
        return {"kwargs": dict(self.kwargs), "num_warps": self.num_warps, "num_stages": self.num_stages}

    @staticmethod
    def from_json(d: dict) -> "Config":
        return Config.of(int(d.get("num_warps", 4)), int(d.get("num_stages", 3)), **d.get("kwargs", {}))


def _key_str(name: str, key: tuple) -> str:
    return name + "|" + json.dumps(list(key), separators=(",", ":"))


class CacheFile:
    """One JSON file of tuning results: ``{"<kernel>|<key>": config, ...}``."""

    def __init__(self, path: Path):
        self.path = path
        self._data: dict | None = None

    def _read(self) -> dict:
        try:
            data = json.loads(self.path.read_text())
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
            return data
        except (FileNotFoundError, NotADirectoryError):
            return {}
        except (OSError, ValueError) as e:
            warn_once(("autotune-cache", str(self.path)),
                      f"tritonic: the autotune cache {self.path} could not be read ({e}); it will be rebuilt")
            return {}

    def get(self, k: str):
        if self._data is None:
            self._data = self._read()
        return self._data.get(k)

    def put(self, k: str, value) -> None:
        """Add one entry, merged with whatever other processes wrote since we read."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with _locked(self.path.with_suffix(".lock")):
                data = self._read()
                data[k] = value
                fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=self.path.name, suffix=".tmp")
                with os.fdopen(fd, "w") as f:
                    json.dump(data, f, indent=0, sort_keys=True)
                os.replace(tmp, self.path)
            self._data = data
        except OSError as e:  # a read-only home, a full disk: keep the result in memory only
            warn_once(("autotune-write", str(self.path)),
                      f"tritonic: cannot write the autotune cache {self.path} ({e}); results stay in memory")
            if self._data is not None:
                self._data[k] = value


@contextlib.contextmanager
def _locked(lock_path: Path):
    with open(lock_path, "a+") as f:
        try:
            import fcntl

            fcntl.flock(f, fcntl.LOCK_EX)
        except ImportError:  # no fcntl (Windows): the atomic rename still prevents torn files
            pass
        yield


_files: dict = {}


def _cache_for(device_name: str, triton_version: str) -> CacheFile:
    from tritonic.runtime.device import gpu_slug

    path = cache_dir() / f"autotune-{gpu_slug(device_name)}-triton{triton_version}.json"
    if path not in _files:
        _files[path] = CacheFile(path)
    return _files[path]


def _table(slug: str) -> dict:
    path = TABLES / f"{slug}.json"
    if path not in _files:
        try:
            _files[path] = json.loads(path.read_text()) if path.exists() else {}
        except (OSError, ValueError) as e:
            warn_once(("autotune-table", str(path)), f"tritonic: shipped table {path} is unreadable ({e})")
            _files[path] = {}
    return _files[path]


# GPUs of one architecture, with the same shared memory per SM, lend each other their tables for
# the keys their own lacks: every config of an H100's table runs on an H200 (and the other way),
# and is a far better first choice than the first config, or than tuning inside a model's first call.
_FAMILIES = (re.compile(r"^g?h(100|200|800|20)(-|$)"), re.compile(r"^a(100|800)(-|$)"))


def _siblings(slug: str) -> list[str]:
    """The shipped tables of ``slug``'s family other than its own, in name order."""
    family = next((f for f in _FAMILIES if f.match(slug)), None)
    return [] if family is None else [g for g in shipped_gpus() if g != slug and family.match(g)]


def _shipped(device_name: str, k: str):
    """The shipped entry for key string ``k``: this GPU's table, else a sibling's (see _FAMILIES)."""
    from tritonic.runtime.device import gpu_slug

    slug = gpu_slug(device_name)
    entry = _table(slug).get(k)
    if entry is None:
        for other in _siblings(slug):
            entry = _table(other).get(k)
            if entry is not None:
                break
    return entry


def shipped_gpus() -> list[str]:
    return sorted(p.stem for p in TABLES.glob("*.json"))


@dataclass
class Autotuner:
    """Candidate configs of one kernel and the choice made per key.

    ``pick(key, time_config)`` returns the config for ``key``; ``time_config(config)``
    runs the kernel with that config and returns its time in milliseconds (only called in
    ``full`` mode, for keys nobody has tuned yet).
    """

    name: str
    configs: list
    chosen: dict = field(default_factory=dict)

    def pick(self, key: tuple, time_config: Callable[[Config], float], *, device_name: str | None = None,
             triton_version: str | None = None, may_tune: bool = True) -> Config:
        """``may_tune=False`` (e.g. during CUDA-graph capture, where timing is impossible)
        uses what is known, else the first config, without remembering that choice. Nothing
        is timed while torch.compile traces either: its graph would record every timed launch
        (and the timings of fake tensors mean nothing)."""
        if key in self.chosen:
            return self.chosen[key]
        if may_tune and (_compiling() or getattr(_untuned, "depth", 0)):
            may_tune = False
        if device_name is None or triton_version is None:
            from tritonic.runtime.device import device_name as _dev
            import triton

            device_name, triton_version = device_name or _dev(), triton_version or triton.__version__
        m, k = mode(), _key_str(self.name, key)
        if m == "retune" and not _retuned(self.name):
            m = "full"
        entry = None
        cache = _cache_for(device_name, triton_version)
        if m not in ("off", "retune"):
            entry = cache.get(k)
        if entry is None and m != "retune":
            entry = _shipped(device_name, k)
        if entry is not None:
            config = Config.from_json(entry)
        elif m in ("full", "retune") and len(self.configs) > 1:
            if not may_tune:
                return self.configs[0]
            from tritonic.runtime.precompile import precompiling

            if precompiling():  # every config's launch submits its compile; nothing is timed or kept
                for c in self.configs:
                    try:
                        time_config(c)
                    except Exception:
                        pass
                return self.configs[0]
            config = self._tune(key, time_config)
            cache.put(k, config.to_json())
        else:
            config = self.configs[0]
        self.chosen[key] = config
        return config

    def _tune(self, key, time_config) -> Config:
        start, best, best_ms = time.perf_counter(), None, float("inf")
        _compile_all(self.configs, time_config)
        shown = False
        for i, config in enumerate(self.configs):
            try:
                ms = time_config(config)
            except Exception as e:  # e.g. out of shared memory: not a candidate here
                warn_once((self.name, "config", config), f"tritonic: {self.name} config {config.meta()} failed "
                          f"({type(e).__name__}); skipped")
                continue
            if ms < best_ms:
                best, best_ms = config, ms
            _log_timing(self.name, key, config, ms)
            if time.perf_counter() - start > _PROGRESS_AFTER_S:
                shown = True
                print(f"\rtritonic: tuning {self.name} {list(key)}: {i + 1}/{len(self.configs)} configs",
                      end="", file=sys.stderr, flush=True)
        global tuning_seconds
        spent = time.perf_counter() - start
        tuning_seconds += spent
        tuned.append((self.name, key, round(spent, 3)))
        if shown:
            print(file=sys.stderr)
        if best is None:
            raise RuntimeError(f"tritonic: no config of {self.name} ran for key {list(key)}")
        return best


def _log_timing(name, key, config, ms) -> None:
    """TRITONIC_TUNE_LOG=<file>: one JSON line per timed config (kernel, key, config, ms), for
    seeing how close the configs came (benchmarks/NOTES.md)."""
    path = os.environ.get("TRITONIC_TUNE_LOG")
    if path:
        try:
            with open(path, "a") as f:
                f.write(json.dumps({"kernel": name, "key": list(key), "config": config.to_json(), "ms": ms},
                                   default=str) + "\n")
        except OSError:
            pass


def _compile_all(configs, time_config) -> None:
    """Compile every config side by side before any is timed: under ``precompile()`` a
    launch only submits its compile to a thread pool (``time_run`` launches once), and
    leaving the block waits for them all. A no-op where precompile is (the interpreter,
    an older Triton, inside another precompile)."""
    from tritonic.runtime.precompile import precompile

    # opt-in (TRITONIC_TUNE_POOL=1) until a GPU run has timed it: off, each config compiles as it is timed
    if os.environ.get("TRITONIC_TUNE_POOL", "0").strip() != "1":
        return
    with precompile() as p:
        if not p.active:
            return
        for config in configs:
            try:
                time_config(config)
            except Exception:  # the timing run reports it
                pass


@functools.lru_cache(maxsize=None)
def _build_errors() -> tuple:
    """Exceptions that mean "this config does not build here": out of shared memory, a ptxas or
    compiler failure (whichever of them this Triton has). Found once: every tuned launch asks."""
    import triton.runtime.errors as errors

    found = [getattr(errors, n, None) for n in ("OutOfResources", "PTXASError")]
    try:
        from triton.compiler.errors import CompilationError

        found.append(CompilationError)
    except ImportError:
        pass
    return tuple(e for e in found if e is not None)


def run_with_fallback(tuner: "Autotuner", key, config, run: Callable[[Config], object]):
    """``(run(config), the config that ran)``. A config that does not build on this machine (a
    tuned or shipped one: out of shared memory, a ptxas or compiler failure) gives way to the
    first of the tuner's configs that does, which ``key`` then keeps (``key`` None: nothing
    kept); a compiler failure warns once. ``run`` must write its outputs afresh each time, so
    that a retry after a partial run is safe. Raises the first error if none builds."""
    errors = _build_errors()
    try:
        return run(config), config
    except errors as first:
        if type(first).__name__ != "OutOfResources":
            warn_once((tuner.name, "build", str(config)), f"tritonic: {tuner.name} config {config} did not compile "
                      f"here ({type(first).__name__}); trying the others")
        for other in tuner.configs:
            if other is config:
                continue
            try:
                out = run(other)
            except errors:
                continue
            if key is not None:
                tuner.chosen[key] = other
            return out, other
        raise


def time_run(run: Callable[[Config], object], config: Config) -> float:
    """Median milliseconds of ``run(config)`` (Triton's do_bench); under ``precompile()``
    one launch, which only compiles, and 0."""
    from tritonic.runtime.precompile import precompiling

    if precompiling():
        run(config)
        return 0.0
    from triton.testing import do_bench

    return do_bench(lambda: run(config), warmup=5, rep=20, return_mode="median")
