"""Result tables as Markdown (what the CLI prints and the output folder keeps)."""

from __future__ import annotations

import numpy as np


def results_table(results: dict, nec: int, protocol: str = "vlg") -> str:
    """`protocol` names how accuracy at `nec` was measured (see evaluate_at_nec), so a table
    never hides which comparison it makes."""
    head = ["method", "top-1", "top-5", "per-class", "ECE", "NEC"]
    if nec:
        head.append(f"top-1 @ NEC={nec} ({protocol})")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, r in results.items():
        cells = [name, f"{100 * r['top1']:.1f}", f"{100 * r['top5']:.1f}",
                 f"{100 * r['mean_per_class']:.1f}", f"{r['ece']:.3f}", f"{r['nec']:.1f}"]
        if nec:
            cells.append(f"{100 * r['top1_at_nec']:.1f}" if "top1_at_nec" in r else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def few_shot_table(rows: dict) -> str:
    shots = list(next(iter(rows.values())).keys())
    lines = ["| method | " + " | ".join(f"{s}-shot" if s != "all" else "all" for s in shots) + " |",
             "|" + "---|" * (len(shots) + 1)]
    for name, by_shot in rows.items():
        cells = []
        for s in shots:
            v = 100 * np.asarray(by_shot[s])
            cells.append(f"{v.mean():.1f} ± {v.std():.1f}" if len(v) > 1 else f"{v.mean():.1f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
