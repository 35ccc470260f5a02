"""examples/train.py on a GPU: the CUDA-graph step gives the losses of the plain step."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "train.py"
pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("backend", ["tritonic", "torch"])
def test_cuda_graph_step_matches_plain_step(tmp_path, backend):
    common = ["--model", "gpt2-tiny", "--backend", backend, "--steps", "12", "--batch", "8", "--seq", "64",
              "--dtype", "bf16", "--quiet"]
    for name, extra in (("plain", []), ("graph", ["--cuda-graph"])):
        r = subprocess.run([sys.executable, str(SCRIPT), *common, *extra, "--losses", f"{name}.json"],
                           capture_output=True, text=True, timeout=600, cwd=tmp_path)
        assert r.returncode == 0, r.stderr[-4000:]
    plain, graph = (json.loads((tmp_path / f"{n}.json").read_text())["losses"] for n in ("plain", "graph"))
    assert len(graph) == 12
    # same data, same parameters, same kernels: equal up to the order of floating-point sums
    assert max(abs(a - b) for a, b in zip(plain, graph)) < 2e-2 * max(plain), (plain, graph)
    assert graph[-1] < graph[0]
