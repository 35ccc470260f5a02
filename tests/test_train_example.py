"""examples/train.py end to end on the CPU (kernels in Triton's interpreter): it trains,
resumes exactly from a checkpoint, and two processes (DDP, or FSDP2, over gloo) report the
losses of one."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "train.py"
COMMON = ["--cpu", "--steps", "4", "--batch", "4", "--seq", "12", "--vocab", "64", "--quiet"]
pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="CPU (interpreter) runs of the example")


def _run(tmp_path, *args, launcher=()):
    env = {**os.environ, "TRITON_INTERPRET": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, *launcher, str(SCRIPT), *COMMON, *args]
    if not launcher:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
        return r
    # Two processes over gloo (~18 s alone on 2 cores). Beside the suite's other workers gloo
    # has aborted a rank ("terminate called without an active exception", SIGABRT: one in five
    # fresh-clone CI runs) and once left a rank waiting past 300 s (4 workers on 2 cores). The
    # run is deterministic otherwise (its losses are compared below), so either gets one more
    # try; any other failure, or a second abort or hang, fails the test.
    for attempt in (1, 2):
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path, env=env,
                             start_new_session=True)  # (its own process group: a hung rank goes with the launcher)
        try:
            out, err = p.communicate(timeout=180)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            out, err = p.communicate()
            assert attempt == 1, "two-process run hung past 180 s twice: " + err[-4000:]
            print("two-process run hung past 180 s; running it once more:", err[-300:], file=sys.stderr)
            continue
        if p.returncode == 0 or attempt == 2 or "Signal 6 (SIGABRT)" not in err:
            break
        print("two-process run aborted by gloo; running it once more:", err[-300:], file=sys.stderr)
    assert p.returncode == 0, out[-2000:] + err[-4000:]
    return p


def _losses(path):
    return json.loads(Path(path).read_text())["losses"]


@pytest.fixture(scope="module")
def one(tmp_path_factory):
    """The single process's losses (shared: each run of the example costs ~10 s in CI)."""
    path = tmp_path_factory.mktemp("one")
    _run(path, "--losses", "one.json")
    losses = _losses(path / "one.json")
    assert len(losses) == 4 and all(l == l for l in losses)
    return losses


def test_trains_resumes_and_scales_out(tmp_path, one):
    # interrupted after 2 steps, then resumed: the same losses, bit for bit
    _run(tmp_path, "--ckpt", "ck", "--ckpt-every", "2", "--stop-after", "2")
    _run(tmp_path, "--ckpt", "ck", "--ckpt-every", "2", "--resume", "--losses", "resumed.json")
    assert _losses(tmp_path / "resumed.json") == one
    # two processes, each with half of the batch
    _run(tmp_path, "--dist", "ddp", "--losses", "two.json",
         launcher=("-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"))
    two = _losses(tmp_path / "two.json")
    assert max(abs(a - b) for a, b in zip(one, two)) < 1e-5, (one, two)


def test_fsdp2_over_gloo_matches_one_process_and_resumes(tmp_path, one):
    """FSDP2 (fully_shard per block) on two CPU processes: the single process's losses, and an
    exact resume through a torch.distributed.checkpoint checkpoint of the sharded state."""
    two = ("-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2")
    _run(tmp_path, "--dist", "fsdp", "--losses", "fsdp.json", launcher=two)
    fsdp = _losses(tmp_path / "fsdp.json")
    assert max(abs(a - b) for a, b in zip(one, fsdp)) < 1e-5, (one, fsdp)
    _run(tmp_path, "--dist", "fsdp", "--ckpt", "ck", "--ckpt-every", "2", "--stop-after", "2", launcher=two)
    _run(tmp_path, "--dist", "fsdp", "--ckpt", "ck", "--ckpt-every", "2", "--resume", "--losses", "resumed.json",
         launcher=two)
    assert _losses(tmp_path / "resumed.json") == fsdp
    # two blocks per FSDP unit, every unit kept gathered after forward: the same losses
    _run(tmp_path, "--dist", "fsdp", "--fsdp-unit", "2", "--fsdp-keep-gathered", "--losses", "units.json",
         launcher=two)
    assert max(abs(a - b) for a, b in zip(one, _losses(tmp_path / "units.json"))) < 1e-5


def test_hugging_face_model(tmp_path):
    pytest.importorskip("transformers")
    from transformers import LlamaConfig

    LlamaConfig(vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2,
                intermediate_size=64).save_pretrained(tmp_path / "cfg")
    _run(tmp_path, "--model", f"hf:{tmp_path / 'cfg'}", "--losses", "hf.json")
    assert len(_losses(tmp_path / "hf.json")) == 4


def test_cuda_graph_needs_a_gpu(tmp_path):
    env = {**os.environ, "TRITON_INTERPRET": "1", "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, str(SCRIPT), *COMMON, "--cuda-graph"], capture_output=True, text=True,
                       timeout=300, cwd=tmp_path, env=env)
    assert r.returncode != 0 and "--cuda-graph: one CUDA GPU" in r.stderr, r.stderr[-2000:]


def test_convergence_summary_and_corpus(tmp_path):
    """scripts/convergence.py: the corpus is the standard library's text cut at the size asked,
    and the summary compares each seed's final losses and last-20 means of the two backends."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("convergence", SCRIPT.parents[1] / "scripts" / "convergence.py")
    conv = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(conv)
    size = conv.make_corpus(tmp_path / "c.txt", 0.01)
    assert size == (tmp_path / "c.txt").stat().st_size == int(0.01 * 2**20)
    assert b"def " in (tmp_path / "c.txt").read_bytes()
    runs = {"tritonic_s0": {"losses": [5.0] * 10 + [2.0] * 20}, "torch_s0": {"losses": [5.0] * 10 + [2.0] * 19 + [2.02]},
            "tritonic_s1": {"losses": [3.0]}}  # seed 1 has no twin run: left out
    s = conv.summarise(runs, [0, 1])
    assert list(s) == ["seed 0"]
    assert s["seed 0"]["final_rel_diff"] == pytest.approx(0.02 / 2.02)
    assert s["seed 0"]["last20_rel_diff"] == pytest.approx(0.001 / 2.001)
