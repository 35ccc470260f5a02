"""Print a committed result file as the README's Markdown table.

    python scripts/results_table.py benchmarks/results/h100-80gb-hbm3/norm.json

The benchmark definition (providers, baselines) comes from ``benchmarks/<bench>.py``.
"""

import importlib.util
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from tritonic.bench.harness import format_table  # noqa: E402


def main(path: str) -> None:
    rows = json.loads(Path(path).read_text())
    name = rows[0]["bench"]
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    r = rows[0]
    print(f"{r['device']}, torch {r['torch']}, triton {r['triton']}, commit {r['commit']}, {r['date'][:10]}; "
          f"speedup = baseline ms / tritonic ms\n")
    print(format_table(module.BENCH, rows, markdown=True))


if __name__ == "__main__":
    main(sys.argv[1])
