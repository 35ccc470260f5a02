"""Charts of benchmark results: the subject's speedup over each baseline, per case and mode."""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["speedups", "draw"]


def speedups(rows: list[dict], subject: str = "tritonic") -> dict:
    """{(case, mode): {baseline: baseline ms / subject ms}} from a result file's rows."""
    by = {(r["case"], r["mode"], r["provider"]): r["ms"] for r in rows if "ms" in r}
    out: dict = {}
    for (case, mode, prov), ms in by.items():
        sub = by.get((case, mode, subject))
        if prov != subject and sub:
            out.setdefault((case, mode), {})[prov] = ms / sub
    return out


def draw(result_json: str | Path, png: str | Path, subject: str = "tritonic") -> Path | None:
    """A grouped bar chart of ``speedups`` (1.0 marked); None when matplotlib is missing or
    there is nothing to draw."""
    rows = json.loads(Path(result_json).read_text())
    data = speedups(rows, subject)
    if not data:
        return None
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    labels = [f"{c} {m}" for c, m in data]
    baselines = sorted({b for v in data.values() for b in v})
    width = 0.8 / max(1, len(baselines))
    fig, ax = plt.subplots(figsize=(min(16, max(6, 0.45 * len(labels) + 2)), 4.5))
    for i, base in enumerate(baselines):
        xs = [j + (i - (len(baselines) - 1) / 2) * width for j in range(len(labels))]
        ax.bar(xs, [v.get(base, 0.0) for v in data.values()], width, label=f"vs {base}")
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel(f"speedup ({subject} faster above 1)")
    device = rows[0].get("device", "")
    ax.set_title(f"{rows[0].get('bench', '')} on {device}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    plt.close(fig)
    return Path(png)
